//! The target of `install to-disk`: a raw image file or a whole block
//! device, inspected without writing ([`inspect`]) and then partitioned and
//! filled ([`write`]).
//!
//! Model: the partitions are written by tools that address the target
//! directly, so nothing is mounted and no loop device is attached:
//! `sfdisk` writes the GPT; on an image file `mkfs.ext4 -E offset=` and
//! `mkfs.vfat --offset` create the filesystems inside the file and mtools
//! (`mcopy -i FILE@@OFFSET`) fills the ESP; on a block device the same
//! tools work on the partition nodes, which `partx -u` makes the kernel
//! create (it may have no GPT parser of its own, and udev may be absent).
//! Success is reported only after every node written through (partitions
//! and disk) is fsynced: each has its own page cache.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tools::{self, ContentSize, run};
use crate::{ESP_TYPE, Ids, InstallError, PartitionInfo};

pub(super) const MIB: u64 = 1 << 20;

/// The smallest ESP osctl creates: FAT32 needs 65525 clusters.
pub const MIN_ESP_MIB: u64 = 64;

/// What the target path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Nothing there yet: an image file is created.
    NewFile,
    /// An existing image file.
    File,
    /// A whole block device.
    BlockDevice,
}

/// The target, as found before anything is written.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub path: PathBuf,
    pub kind: Kind,
    /// Bytes; for a new file, the `--size` asked for (0: not given).
    pub size: u64,
    /// Logical sector size (512 for files).
    pub sector: u64,
    /// The device's kernel name (`sdb`, `loop0`, `nvme0n1`).
    pub dev_name: Option<String>,
}

impl Target {
    fn err(&self, why: impl Into<String>) -> InstallError {
        InstallError::Target {
            path: self.path.clone(),
            why: why.into(),
        }
    }
}

/// `4G`, `4096M`, `512MiB`, `1T`, or bytes; powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size '{text}': expected a number with K, M, G or T"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "size '{text}': unknown unit '{unit}' (use K, M, G or T)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("size '{text}' is out of range"))
}

/// Looks at the target without writing: what it is, how big, whether it
/// is in use, and (unless `wipe`) that it holds nothing.
pub(super) fn inspect(path: &Path, wipe: bool, size: Option<u64>) -> Result<Target, InstallError> {
    let mut target = Target {
        path: path.to_path_buf(),
        kind: Kind::NewFile,
        size: size.unwrap_or(0),
        sector: 512,
        dev_name: None,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                return Err(target.err("its directory does not exist"));
            }
            return Ok(target);
        }
        Err(e) => return Err(target.err(e.to_string())),
    };
    if meta.file_type().is_block_device() {
        if size.is_some() {
            return Err(target.err("--size applies to image files, not block devices"));
        }
        target.kind = Kind::BlockDevice;
        inspect_device(&mut target, meta.rdev())?;
    } else if meta.is_file() {
        target.kind = Kind::File;
        target.size = meta.len();
        if let Some(asked) = size.filter(|s| *s != meta.len() && !wipe) {
            return Err(target.err(format!(
                "exists with {} bytes; --size ({asked}) sets the size of a new file only (add --wipe to recreate it)",
                meta.len()
            )));
        }
        if wipe && let Some(asked) = size {
            target.size = asked;
        }
        if let Some(loop_dev) = backing_loop_device(path) {
            return Err(target.err(format!("is in use: it backs {loop_dev}")));
        }
    } else {
        return Err(target.err("is neither a block device nor a regular file"));
    }
    if !wipe {
        refuse_if_not_empty(&target)?;
    }
    Ok(target)
}

fn sys_read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn inspect_device(target: &mut Target, rdev: u64) -> Result<(), InstallError> {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .map_err(|e| target.err(format!("no sysfs entry for device {major}:{minor}: {e}")))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if sys.join("partition").exists() {
        return Err(target.err(format!(
            "is a partition ({name}); give the whole disk, or use install to-filesystem on a mounted filesystem"
        )));
    }
    if sys_read(sys.join("ro")).as_deref() == Some("1") {
        return Err(target.err("is read-only"));
    }
    let sectors: u64 = sys_read(sys.join("size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if sectors == 0 {
        return Err(target.err("is empty (0 bytes; a loop device without a backing file?)"));
    }
    target.size = sectors * 512;
    target.sector = sys_read(sys.join("queue/logical_block_size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    match device_in_use(&target.path, &sys, &name) {
        Ok(None) => {}
        Ok(Some(why)) => return Err(target.err(format!("is in use: {why}"))),
        Err(why) => {
            return Err(target.err(format!(
                "cannot tell whether it is in use ({why}); refusing to write to it"
            )));
        }
    }
    target.dev_name = Some(name);
    Ok(())
}

/// The device's partitions as (kernel name, "major:minor").
fn partitions_of(sys: &Path) -> Result<Vec<(String, String)>, String> {
    let rd = std::fs::read_dir(sys).map_err(|e| format!("listing {}: {e}", sys.display()))?;
    let mut parts = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("listing {}: {e}", sys.display()))?;
        if e.path().join("partition").exists() {
            let dev = read_required(&e.path().join("dev"))?;
            parts.push((e.file_name().to_string_lossy().into_owned(), dev));
        }
    }
    parts.sort();
    Ok(parts)
}

/// A file the in-use check cannot do without, trimmed; the error names it.
fn read_required(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Why the device (or one of its partitions) is busy, if it is: opened
/// exclusively (mounted, swap, held), mounted, a holder's slave, or swap.
/// What the check cannot read is an error (the `String`): a device is never
/// taken for unused because `/proc` or `/sys` could not be read.
fn device_in_use(node: &Path, sys: &Path, name: &str) -> Result<Option<String>, String> {
    use rustix::fs::{Mode, OFlags};
    if let Err(rustix::io::Errno::BUSY) = rustix::fs::open(
        node,
        OFlags::RDONLY | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        return Ok(Some(format!(
            "{name} is open exclusively (mounted, swap or held)"
        )));
    }
    let mut devs = vec![(name.to_owned(), read_required(&sys.join("dev"))?)];
    devs.extend(partitions_of(sys)?);
    let mountinfo = read_required(Path::new(MOUNTINFO))?;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if let (Some(dev), Some(at)) = (fields.get(2), fields.get(4))
            && let Some((n, _)) = devs.iter().find(|(_, d)| d == dev)
        {
            return Ok(Some(format!("{n} is mounted at {at}")));
        }
    }
    for (n, _) in &devs {
        let holders = if n == name {
            sys.join("holders")
        } else {
            sys.join(n).join("holders")
        };
        let mut entries = std::fs::read_dir(&holders)
            .map_err(|e| format!("listing {}: {e}", holders.display()))?;
        if let Some(h) = entries.next() {
            let h = h.map_err(|e| format!("listing {}: {e}", holders.display()))?;
            return Ok(Some(format!(
                "{n} is held by {}",
                h.file_name().to_string_lossy()
            )));
        }
    }
    let swaps = read_required(Path::new(SWAPS))?;
    for line in swaps.lines().skip(1) {
        let Some(dev) = line.split_whitespace().next() else {
            continue;
        };
        // A swap file (not a device node) cannot be one of ours.
        let dev = std::fs::canonicalize(dev).unwrap_or_else(|_| dev.into());
        if let Some((n, _)) = devs.iter().find(|(n, _)| dev == Path::new("/dev").join(n)) {
            return Ok(Some(format!("{n} is used as swap")));
        }
    }
    Ok(None)
}

/// Where the mounts of this process are listed.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Where active swap areas are listed.
const SWAPS: &str = "/proc/swaps";

/// The loop device backed by the file at `path`, if any.
fn backing_loop_device(path: &Path) -> Option<String> {
    let want = std::fs::canonicalize(path).ok()?;
    for entry in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let Some(backing) = sys_read(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim_end_matches(" (deleted)")) == want {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}

/// Refuses a target with a partition table, a filesystem signature or any
/// data in its first MiB, naming what was found.
fn refuse_if_not_empty(target: &Target) -> Result<(), InstallError> {
    let out = run(
        "looking for signatures on the target",
        Command::new("wipefs")
            .args(["--noheadings", "--output", "TYPE,OFFSET"])
            .arg(&target.path),
        None,
    )?;
    let found: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(format!("{} at {}", w.next()?, w.next().unwrap_or("?")))
        })
        .collect();
    if !found.is_empty() {
        return Err(target.err(format!(
            "is not empty: {}; give --wipe to erase it",
            found.join(", ")
        )));
    }
    let mut head = Vec::new();
    std::fs::File::open(&target.path)
        .and_then(|f| f.take(MIB).read_to_end(&mut head))
        .map_err(|e| target.err(format!("reading: {e}")))?;
    if head.iter().any(|b| *b != 0) {
        return Err(target.err(
            "is not empty: its first MiB holds data (no known signature); give --wipe to overwrite it",
        ));
    }
    Ok(())
}

/// Where the two partitions go, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub total: u64,
    pub sector: u64,
    pub esp: (u64, u64),
    pub root: (u64, u64),
}

/// The root partition's minimum for `content`: ×1.2 + 128 MiB (journal,
/// inode tables, room for the first update).
pub(super) fn root_minimum(content: ContentSize) -> u64 {
    (content.bytes * 6 / 5 + 128 * MIB).next_multiple_of(MIB)
}

/// A new image file's size when `--size` is not given: the ESP, the root
/// content ×1.5 and 512 MiB, plus 2 MiB for the GPT; rounded to MiB.
pub(super) fn default_size(esp: u64, content: ContentSize) -> u64 {
    (2 * MIB + esp + content.bytes * 3 / 2 + 512 * MIB).next_multiple_of(MIB)
}

/// ESP at 1 MiB, root right after it up to the last whole MiB before the
/// backup GPT (which needs the last 33 sectors).
pub(super) fn layout(
    target: &Target,
    total: u64,
    esp: u64,
    root_min: u64,
) -> Result<Layout, InstallError> {
    let root_start = MIB + esp;
    let root_end = (total.saturating_sub(MIB) / MIB) * MIB;
    let root_size = root_end.saturating_sub(root_start);
    if root_size < root_min {
        return Err(target.err(format!(
            "is too small: {} bytes ({}), needs at least {} bytes ({}: 1 MiB + {} ESP + {} root + 1 MiB)",
            total,
            tools::human(total),
            root_start + root_min + MIB,
            tools::human(root_start + root_min + MIB),
            tools::human(esp),
            tools::human(root_min),
        )));
    }
    Ok(Layout {
        total,
        sector: target.sector,
        esp: (MIB, esp),
        root: (root_start, root_size),
    })
}

/// Makes the target ready for the partition table: creates a new file
/// (sparse), empties a file given with `--wipe`, erases the signatures of
/// a block device given with `--wipe`. Returns whether the file is new.
pub(super) fn prepare(target: &Target, total: u64, wipe: bool) -> Result<bool, InstallError> {
    let io = |e: std::io::Error| target.err(e.to_string());
    match target.kind {
        Kind::NewFile => {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target.path)
                .map_err(io)?;
            f.set_len(total).map_err(io)?;
            Ok(true)
        }
        Kind::File if wipe => {
            let f = OpenOptions::new()
                .write(true)
                .open(&target.path)
                .map_err(io)?;
            f.set_len(0).map_err(io)?;
            f.set_len(total).map_err(io)?;
            Ok(false)
        }
        Kind::File => Ok(false),
        Kind::BlockDevice => {
            if wipe {
                let sys = PathBuf::from("/sys/class/block")
                    .join(target.dev_name.as_deref().unwrap_or(""));
                let parts = partitions_of(&sys).map_err(|why| {
                    target.err(format!("cannot list its partitions to wipe them ({why})"))
                })?;
                for (part, _) in parts {
                    let node = Path::new("/dev").join(&part);
                    if node.exists() {
                        run(
                            "erasing old signatures",
                            Command::new("wipefs").args(["-a", "-q"]).arg(&node),
                            None,
                        )?;
                    }
                }
                run(
                    "erasing old signatures",
                    Command::new("wipefs").args(["-a", "-q"]).arg(&target.path),
                    None,
                )?;
            }
            Ok(false)
        }
    }
}

/// Writes the GPT and both filesystems: root from `root_dir` (ext4,
/// verity feature), ESP from `boot_dir` (FAT32).
pub(super) fn write(
    target: &Target,
    layout: &Layout,
    ids: &Ids,
    root_dir: &Path,
    root_content: ContentSize,
    boot_dir: &Path,
    step: &dyn Fn(&str),
) -> Result<Vec<PartitionInfo>, InstallError> {
    let s = layout.sector;
    step("writing the GPT partition table");
    let script = format!(
        "label: gpt\nlabel-id: {disk}\nunit: sectors\nfirst-lba: {first}\n\
         start={es}, size={en}, type={ESP_TYPE}, uuid={espu}, name=\"ESP\"\n\
         start={rs}, size={rn}, type={rt}, uuid={rootu}, name=\"root\"\n",
        disk = ids.disk,
        first = MIB / s,
        es = layout.esp.0 / s,
        en = layout.esp.1 / s,
        espu = ids.esp_part,
        rs = layout.root.0 / s,
        rn = layout.root.1 / s,
        rt = ids.root_type,
        rootu = ids.root_part,
    );
    run(
        "writing the partition table",
        Command::new("sfdisk")
            .args(["--quiet", "--wipe", "always"])
            .arg(&target.path),
        Some(&script),
    )?;
    let nodes = match target.kind {
        Kind::BlockDevice => Some(partition_nodes(target, layout)?),
        _ => None,
    };

    step("creating the root filesystem (ext4) from the staged sysroot");
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args([
        "-F",
        "-q",
        "-b",
        "4096",
        "-O",
        "verity",
        "-U",
        &ids.root_fs,
        "-L",
        crate::ROOT_LABEL,
    ]);
    let default_inodes = layout.root.1 / 16384;
    let inodes = root_content.inodes * 5 / 4 + 4096;
    if inodes > default_inodes {
        mkfs.arg("-N").arg(inodes.to_string());
    }
    match &nodes {
        Some([_, root]) => {
            mkfs.args(["-E", "root_owner=0:0", "-d"])
                .arg(root_dir)
                .arg(root);
        }
        None => {
            mkfs.arg("-E")
                .arg(format!("root_owner=0:0,offset={}", layout.root.0))
                .arg("-d")
                .arg(root_dir)
                .arg(&target.path)
                .arg(format!("{}k", layout.root.1 / 1024));
        }
    }
    run("creating the root filesystem", &mut mkfs, None)?;

    step("creating the ESP (vfat) and copying the boot files");
    let mut vfat = Command::new("mkfs.vfat");
    vfat.args(["-F", "32", "-n", "ESP", "-i", &ids.esp_volume]);
    if layout.esp.1 < 512 * MIB && s == 512 {
        // Default clusters would leave too few for FAT32 on a small ESP.
        vfat.args(["-s", "1"]);
    }
    let esp_image = match &nodes {
        Some([esp, _]) => {
            vfat.arg(esp);
            esp.as_os_str().to_owned()
        }
        None => {
            vfat.arg(format!("--offset={}", layout.esp.0 / 512))
                .arg(&target.path)
                .arg((layout.esp.1 / 1024).to_string());
            let mut image = target.path.as_os_str().to_owned();
            image.push(format!("@@{}", layout.esp.0));
            image
        }
    };
    run("creating the ESP", &mut vfat, None)?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(boot_dir)
        .map_err(|source| InstallError::Io {
            step: "listing",
            path: boot_dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .collect();
    sources.sort();
    if !sources.is_empty() {
        run(
            "copying the boot files to the ESP",
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .env("MTOOLSRC", "/dev/null")
                .args(["-s", "-Q", "-i"])
                .arg(&esp_image)
                .args(&sources)
                .arg("::/"),
            None,
        )?;
    }
    // The tools write through the page cache, and every block device node
    // has its own: mkfs and mcopy wrote through the partition nodes, sfdisk
    // through the disk's. A node's cache is written back when its last user
    // closes it, but not if another (udev's probe) still holds it open, so
    // each node is fsynced (which also flushes the disk's write cache)
    // before the install counts as done.
    let synced = nodes.iter().flatten().chain([&target.path]);
    for node in synced {
        OpenOptions::new()
            .write(true)
            .open(node)
            .and_then(|f| f.sync_all())
            .map_err(|e| target.err(format!("fsync of {}: {e}", node.display())))?;
    }

    let [esp_node, root_node] = match nodes {
        Some([a, b]) => [Some(a), Some(b)],
        None => [None, None],
    };
    Ok(vec![
        PartitionInfo {
            number: 1,
            name: "ESP".into(),
            node: esp_node,
            start: layout.esp.0,
            size: layout.esp.1,
            type_guid: ESP_TYPE.into(),
            partuuid: ids.esp_part.clone(),
            filesystem: "vfat".into(),
            fs_uuid: ids.esp_fs_uuid(),
            label: "ESP".into(),
        },
        PartitionInfo {
            number: 2,
            name: "root".into(),
            node: root_node,
            start: layout.root.0,
            size: layout.root.1,
            type_guid: ids.root_type.into(),
            partuuid: ids.root_part.clone(),
            filesystem: "ext4".into(),
            fs_uuid: ids.root_fs.clone(),
            label: crate::ROOT_LABEL.into(),
        },
    ])
}

/// The two partition nodes of a block device once the kernel knows the new
/// table: `sfdisk` asks it to re-read, `partx -u` adds what a kernel
/// without a GPT parser missed; then wait (udev may create nodes late).
fn partition_nodes(target: &Target, layout: &Layout) -> Result<[PathBuf; 2], InstallError> {
    let name = target.dev_name.clone().unwrap_or_default();
    let sep = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    let parts = [format!("{name}{sep}1"), format!("{name}{sep}2")];
    let wanted = [layout.esp, layout.root];
    let ready = || {
        parts.iter().zip(wanted).all(|(p, (start, size))| {
            let sys = Path::new("/sys/class/block").join(p);
            let node = Path::new("/dev").join(p);
            sys_read(sys.join("start")) == Some((start / 512).to_string())
                && sys_read(sys.join("size")) == Some((size / 512).to_string())
                && std::fs::metadata(&node).is_ok_and(|m| m.file_type().is_block_device())
        })
    };
    let partx = run(
        "telling the kernel about the partitions",
        Command::new("partx").arg("-u").arg(&target.path),
        None,
    )
    .err();
    // Best effort: waiting for udev only shortens the wait below, which
    // checks the partition nodes itself (and names partx's error if any).
    if let Err(e) = Command::new("udevadm")
        .args(["settle", "--timeout=10"])
        .output()
    {
        tracing::debug!("udevadm settle: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        if Instant::now() > deadline {
            let why = partx.map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(target.err(format!(
                "partitions /dev/{} and /dev/{} did not appear after writing the partition table{why}",
                parts[0], parts[1]
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(parts.map(|p| Path::new("/dev").join(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4096M"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn layout_fills_the_disk_in_whole_mib() {
        let t = Target {
            path: "disk.img".into(),
            kind: Kind::NewFile,
            size: 0,
            sector: 512,
            dev_name: None,
        };
        let l = layout(&t, 1 << 30, 256 * MIB, 100 * MIB).unwrap();
        assert_eq!(l.esp, (MIB, 256 * MIB));
        assert_eq!(l.root, (257 * MIB, 766 * MIB));
        let err = layout(&t, 300 * MIB, 256 * MIB, 100 * MIB)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too small") && err.contains("300 MiB"),
            "{err}"
        );
    }

    #[test]
    fn default_size_leaves_room() {
        let c = ContentSize {
            bytes: 100 * MIB,
            inodes: 10,
        };
        assert_eq!(default_size(256 * MIB, c), (2 + 256 + 150 + 512) * MIB);
        assert!(root_minimum(c) < default_size(256 * MIB, c) - 258 * MIB);
    }
}
