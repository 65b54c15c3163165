//! BLS type 1 entries (`loader/entries/osctl-<id>.conf`), the default entry
//! in `loader/loader.conf`, and the os-release name used in titles.

use std::io::Read;
use std::path::Path;

use cap_std::fs::Dir;
use osctl_store::ImageTree;
use osctl_store::atomic::{remove_durably, write_atomic};

use super::kargs::split_cmdline;
use super::kernel::{INITRAMFS, VMLINUZ};
use super::{BootError, ensure_dir, open_dir_opt, remove_temporaries};
use crate::layout::cmdline::{self, ComposefsArg, Verity};
use crate::layout::{DeploymentId, ENTRIES_DIR, ENTRY_PREFIX, KERNELS_DIR, LOADER_CONF};

/// `sort-key` of osctl's entries: boot menus group them together and order
/// them by `version` within the group.
pub const SORT_KEY: &str = "osctl";

/// One BLS type 1 entry. Empty `title`, `version` and `sort_key` are not
/// written; `options` are single kernel-command-line words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlsEntry {
    pub title: String,
    pub version: String,
    pub sort_key: String,
    /// The kernel, relative to the root of the boot partition.
    pub linux: String,
    /// The initramfs, relative to the root of the boot partition.
    pub initrd: String,
    pub options: Vec<String>,
}

impl BlsEntry {
    /// The entry of deployment `id`: kernel and initramfs from
    /// `/osctl/<boot_digest>/`, options `composefs=<id>` (`composefs=?<id>`
    /// when fs-verity is optional) then `kargs`, title from
    /// [`entry_title`], version the image's version label or the short id.
    pub fn for_deployment(
        id: &DeploymentId,
        verity: Verity,
        boot_digest: &str,
        os_name: Option<&str>,
        image_version: Option<&str>,
        kargs: impl IntoIterator<Item: AsRef<str>>,
    ) -> BlsEntry {
        let composefs = ComposefsArg {
            id: id.clone(),
            verity,
        };
        let mut options = vec![composefs.render()];
        options.extend(kargs.into_iter().map(|k| k.as_ref().to_owned()));
        BlsEntry {
            title: entry_title(os_name, image_version, id),
            version: image_version
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .unwrap_or(id.short())
                .to_owned(),
            sort_key: SORT_KEY.to_owned(),
            linux: format!("/{KERNELS_DIR}/{boot_digest}/{VMLINUZ}"),
            initrd: format!("/{KERNELS_DIR}/{boot_digest}/{INITRAMFS}"),
            options,
        }
    }

    /// The deployment the `composefs=` option names, if there is exactly
    /// one well-formed one (read as the root setup reads it).
    pub fn composefs_id(&self) -> Option<DeploymentId> {
        cmdline::find(&self.options.join(" "))
            .ok()
            .flatten()
            .map(|arg| arg.id)
    }

    /// The entry file's text. Control characters (newlines included) in a
    /// value become spaces, so each key stays on its one line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let options = self.options.join(" ");
        for (key, value) in [
            ("title", &self.title),
            ("version", &self.version),
            ("sort-key", &self.sort_key),
            ("linux", &self.linux),
            ("initrd", &self.initrd),
            ("options", &options),
        ] {
            let value: String = value
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let value = value.trim();
            if !value.is_empty() {
                out.push_str(&format!("{key} {value}\n"));
            }
        }
        out
    }

    /// Parses entry text: `key value` lines, `#` comments; `options` lines
    /// add up; other keys (`machine-id`, `architecture`, …) are ignored.
    /// `linux` and one `initrd` are required; a repeated single-valued key
    /// is an error. The error is the reason, without the file name.
    pub fn parse(text: &str) -> Result<BlsEntry, String> {
        let mut entry = BlsEntry {
            title: String::new(),
            version: String::new(),
            sort_key: String::new(),
            linux: String::new(),
            initrd: String::new(),
            options: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(k, v)| (k, v.trim()));
            let field = match key {
                "title" => &mut entry.title,
                "version" => &mut entry.version,
                "sort-key" => &mut entry.sort_key,
                "linux" => &mut entry.linux,
                "initrd" => &mut entry.initrd,
                "options" => {
                    entry
                        .options
                        .extend(split_cmdline(value).into_iter().map(str::to_owned));
                    continue;
                }
                _ => continue,
            };
            if !field.is_empty() {
                return Err(format!("line {}: second `{key}` line", n + 1));
            }
            *field = value.to_owned();
        }
        for (key, value) in [("linux", &entry.linux), ("initrd", &entry.initrd)] {
            if value.is_empty() {
                return Err(format!("no `{key}` line"));
            }
        }
        Ok(entry)
    }
}

/// `<os name> <image version> (osctl <short id>)`, leaving out what is
/// unknown: `Debian GNU/Linux 13 (trixie) 2.0 (osctl 1a2b3c4d5e6f)`.
pub fn entry_title(
    os_name: Option<&str>,
    image_version: Option<&str>,
    id: &DeploymentId,
) -> String {
    let mut parts: Vec<&str> = [os_name, image_version]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let tag = format!("(osctl {})", id.short());
    parts.push(&tag);
    parts.join(" ")
}

/// A boot-counting suffix (`+LEFT` or `+LEFT-DONE` before `.conf`), as
/// systemd-boot's automatic boot assessment renames entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

impl Tries {
    /// A fresh counter: `left` attempts, none made.
    pub fn fresh(left: u32) -> Tries {
        Tries { left, done: 0 }
    }

    /// No attempts left: systemd-boot considers the entry bad and boots
    /// another one.
    pub fn exhausted(&self) -> bool {
        self.left == 0
    }
}

/// `osctl-<id>.conf`, or with a counter `osctl-<id>+LEFT.conf` /
/// `osctl-<id>+LEFT-DONE.conf` (systemd-boot's syntax).
pub fn entry_file_name(id: &DeploymentId, tries: Option<Tries>) -> String {
    match tries {
        None => id.entry_file_name(),
        Some(Tries { left, done: 0 }) => format!("{ENTRY_PREFIX}{id}+{left}.conf"),
        Some(Tries { left, done }) => format!("{ENTRY_PREFIX}{id}+{left}-{done}.conf"),
    }
}

/// One of osctl's entry files, as found in `loader/entries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFile {
    pub id: DeploymentId,
    /// The file name, counter included.
    pub file_name: String,
    pub entry: BlsEntry,
    pub tries: Option<Tries>,
}

/// `osctl-<id>[+LEFT[-DONE]].conf` → id and counter; `None` if not ours.
fn parse_entry_name(name: &str) -> Option<(DeploymentId, Option<Tries>)> {
    let stem = name.strip_prefix(ENTRY_PREFIX)?.strip_suffix(".conf")?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (id, tries) = match stem.split_once('+') {
        None => (stem, None),
        Some((id, counter)) => {
            let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
            let tries = Tries {
                left: number(left)?,
                done: number(done)?,
            };
            (id, Some(tries))
        }
    };
    Some((DeploymentId::parse(id)?, tries))
}

/// One of osctl's entry files that does not parse (an empty file after a
/// power cut, a hand edit gone wrong): reported, ignored for decisions, and
/// rewritten or removed by the next operation that changes deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub id: DeploymentId,
    pub file_name: String,
    pub tries: Option<Tries>,
    /// Why it does not parse, one line.
    pub why: String,
}

/// osctl's entries (`osctl-<id>[+LEFT[-DONE]].conf`), sorted by id then
/// file name; other entries and temporaries are ignored. Files of ours that
/// do not parse are left out (see [`read_all_entries`]).
pub fn read_entries(boot: &Dir) -> Result<Vec<EntryFile>, BootError> {
    Ok(read_all_entries(boot)?.0)
}

/// osctl's entries, and those of its files that do not parse.
pub fn read_all_entries(boot: &Dir) -> Result<(Vec<EntryFile>, Vec<BadEntry>), BootError> {
    let Some(entries) = open_dir_opt(boot, ENTRIES_DIR, ENTRIES_DIR)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut found = Vec::new();
    let mut bad = Vec::new();
    for dirent in entries
        .entries()
        .map_err(BootError::io("list", ENTRIES_DIR))?
    {
        let dirent = dirent.map_err(BootError::io("list", ENTRIES_DIR))?;
        let Ok(file_name) = dirent.file_name().into_string() else {
            continue;
        };
        let Some((id, tries)) = parse_entry_name(&file_name) else {
            continue;
        };
        let path = Path::new(ENTRIES_DIR).join(&file_name);
        let text = match read_text(&entries, &file_name, &path) {
            Ok(Some(text)) => text,
            Ok(None) => continue, // removed meanwhile
            Err(BootError::BootFile { why, .. }) => {
                bad.push(BadEntry {
                    id,
                    file_name,
                    tries,
                    why,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        match BlsEntry::parse(&text) {
            Ok(entry) => found.push(EntryFile {
                id,
                file_name,
                entry,
                tries,
            }),
            Err(why) => bad.push(BadEntry {
                id,
                file_name,
                tries,
                why,
            }),
        }
    }
    found.sort_by(|a, b| (&a.id, &a.file_name).cmp(&(&b.id, &b.file_name)));
    bad.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok((found, bad))
}

/// Writes deployment `id`'s entry as `loader/entries/osctl-<id>.conf`, or
/// with `tries` as a boot-counted `osctl-<id>+LEFT[-DONE].conf`
/// (atomically), then removes any other variant of it, so each deployment
/// has one entry file.
pub fn write_entry(
    boot: &Dir,
    id: &DeploymentId,
    entry: &BlsEntry,
    tries: Option<Tries>,
) -> Result<(), BootError> {
    let entries = ensure_dir(boot, ENTRIES_DIR)?;
    remove_temporaries(&entries, ENTRIES_DIR, |n| n.contains(ENTRY_PREFIX))?;
    let name = entry_file_name(id, tries);
    write_atomic(&entries, &name, entry.render().as_bytes())
        .map_err(BootError::io("write", Path::new(ENTRIES_DIR).join(&name)))?;
    for other in entry_files_of(&entries, id)? {
        if other != name {
            remove_durably(&entries, &other)
                .map_err(BootError::io("remove", Path::new(ENTRIES_DIR).join(&other)))?;
        }
    }
    Ok(())
}

/// Marks deployment `id`'s entry good: its boot-counted file is renamed to
/// the plain `osctl-<id>.conf` (what systemd-bless-boot does). Returns
/// whether there was a counter to drop.
pub fn bless_entry(boot: &Dir, id: &DeploymentId) -> Result<bool, BootError> {
    let Some(entries) = open_dir_opt(boot, ENTRIES_DIR, ENTRIES_DIR)? else {
        return Ok(false);
    };
    let plain = id.entry_file_name();
    let counted: Vec<String> = entry_files_of(&entries, id)?
        .into_iter()
        .filter(|n| n != &plain)
        .collect();
    let Some(first) = counted.first() else {
        return Ok(false);
    };
    match entries.rename(first, &entries, &plain) {
        // On FAT the renamed entry is empty on disk until the file itself is
        // written back (osctl_store::atomic).
        Ok(()) => osctl_store::atomic::sync_renamed(&entries, &plain)
            .map_err(BootError::io("sync", Path::new(ENTRIES_DIR).join(&plain)))?,
        // Blessed meanwhile (systemd-bless-boot renamed it first).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && entries.exists(&plain) => {
            return Ok(false);
        }
        Err(e) => {
            return Err(BootError::io("rename", Path::new(ENTRIES_DIR).join(first))(
                e,
            ));
        }
    }
    for extra in &counted[1..] {
        remove_durably(&entries, extra)
            .map_err(BootError::io("remove", Path::new(ENTRIES_DIR).join(extra)))?;
    }
    Ok(true)
}

/// Removes every entry file of deployment `id` (counted or not); returns
/// whether there was one. The caller moves the default away first.
pub fn remove_entry(boot: &Dir, id: &DeploymentId) -> Result<bool, BootError> {
    let Some(entries) = open_dir_opt(boot, ENTRIES_DIR, ENTRIES_DIR)? else {
        return Ok(false);
    };
    let names = entry_files_of(&entries, id)?;
    for name in &names {
        remove_durably(&entries, name)
            .map_err(BootError::io("remove", Path::new(ENTRIES_DIR).join(name)))?;
    }
    Ok(!names.is_empty())
}

pub(super) fn entry_files_of(entries: &Dir, id: &DeploymentId) -> Result<Vec<String>, BootError> {
    let mut names = Vec::new();
    for dirent in entries
        .entries()
        .map_err(BootError::io("list", ENTRIES_DIR))?
    {
        let dirent = dirent.map_err(BootError::io("list", ENTRIES_DIR))?;
        if let Ok(name) = dirent.file_name().into_string()
            && parse_entry_name(&name).is_some_and(|(i, _)| &i == id)
        {
            names.push(name);
        }
    }
    Ok(names)
}

/// The deployment named by loader.conf's `default` line (the last one, as
/// later lines override earlier ones); `None` without loader.conf, without
/// a `default` line, or when it names anything but `osctl-<id>.conf`.
pub fn read_default(boot: &Dir) -> Result<Option<DeploymentId>, BootError> {
    let Some(text) = read_text(boot, LOADER_CONF, Path::new(LOADER_CONF))? else {
        return Ok(None);
    };
    let value = text.lines().filter_map(default_value).next_back();
    if value == Some(super::trial::TRIAL_DEFAULT) {
        return Ok(super::trial::pick(&read_entries(boot)?));
    }
    Ok(value.and_then(|v| match parse_entry_name(v) {
        Some((id, None)) => Some(id),
        _ => None,
    }))
}

/// The raw value of loader.conf's (last) `default` line.
pub(super) fn read_default_value(boot: &Dir) -> Result<Option<String>, BootError> {
    let Some(text) = read_text(boot, LOADER_CONF, Path::new(LOADER_CONF))? else {
        return Ok(None);
    };
    Ok(text
        .lines()
        .filter_map(default_value)
        .next_back()
        .map(str::to_owned))
}

/// Makes `osctl-<id>.conf` the default entry: loader.conf's first `default`
/// line is replaced (later ones dropped), or one is appended; every other
/// line is kept. The file is replaced atomically. A trial (see
/// [`super::trial`]) ends here: the entries' sort keys go back to normal
/// afterwards.
pub fn write_default(boot: &Dir, id: &DeploymentId) -> Result<(), BootError> {
    write_default_value(boot, &id.entry_file_name())?;
    super::trial::normalize_sort_keys(boot)
}

/// Sets loader.conf's `default` to `value` (atomically).
pub(super) fn write_default_value(boot: &Dir, value: &str) -> Result<(), BootError> {
    let (loader_dir, file) = LOADER_CONF.rsplit_once('/').expect("loader/loader.conf");
    let loader = ensure_dir(boot, loader_dir)?;
    remove_temporaries(&loader, loader_dir, |n| n.ends_with(file))?;
    let old = read_text(&loader, file, Path::new(LOADER_CONF))?.unwrap_or_default();
    let ours = format!("default {value}");
    let mut lines = Vec::new();
    let mut placed = false;
    for line in old.lines() {
        if default_value(line).is_none() {
            lines.push(line);
        } else if !placed {
            lines.push(&ours);
            placed = true;
        }
    }
    if !placed {
        lines.push(&ours);
    }
    let text = lines.join("\n") + "\n";
    write_atomic(&loader, file, text.as_bytes()).map_err(BootError::io("write", LOADER_CONF))
}

/// The value of a loader.conf `default` line.
fn default_value(line: &str) -> Option<&str> {
    let line = line.trim();
    let (key, value) = line.split_once(char::is_whitespace)?;
    (key == "default").then(|| value.trim())
}

/// The UTF-8 text of file `name` in `dir` (shown as `shown`); `None` if
/// there is no such file.
fn read_text(dir: &Dir, name: &str, shown: &Path) -> Result<Option<String>, BootError> {
    let mut f = match dir.open(name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BootError::io("open", shown)(e)),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(BootError::io("read", shown))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| BootError::BootFile {
            path: shown.to_owned(),
            why: "not UTF-8".into(),
        })
}

/// The image's `PRETTY_NAME` (or `NAME`) from `/usr/lib/os-release`, or
/// from `/etc/os-release` when the former is not a regular file; `None`
/// when neither file or neither key is there.
pub fn os_release_name(tree: &ImageTree) -> Result<Option<String>, BootError> {
    let mut bytes = None;
    for path in ["/usr/lib/os-release", "/etc/os-release"] {
        bytes = tree.read(Path::new(path))?;
        if bytes.is_some() {
            break;
        }
    }
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| unquote(v.trim()))
            .next_back()
            .filter(|v| !v.trim().is_empty())
    };
    Ok(value("PRETTY_NAME").or_else(|| value("NAME")))
}

/// An os-release value: `"…"` with `\` escapes, `'…'` verbatim, or bare.
fn unquote(v: &str) -> String {
    let mut chars = v.chars();
    match chars.next() {
        Some('\'') => chars.take_while(|&c| c != '\'').collect(),
        Some('"') => {
            let mut out = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        _ => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osctl_store::atomic::TMP_PREFIX;

    #[test]
    fn entry_names() {
        let id = "ab".repeat(32);
        let parse = |n: &str| parse_entry_name(n).map(|(i, t)| (i.to_string(), t));
        assert_eq!(parse(&format!("osctl-{id}.conf")), Some((id.clone(), None)));
        let tries = |left, done| Some(Tries { left, done });
        assert_eq!(
            parse(&format!("osctl-{id}+3.conf")),
            Some((id.clone(), tries(3, 0)))
        );
        assert_eq!(
            parse(&format!("osctl-{id}+0-2.conf")),
            Some((id.clone(), tries(0, 2)))
        );
        for bad in [
            "+.conf",
            "+-1.conf",
            "+1-.conf",
            "+a.conf",
            "+1-2-3.conf",
            ".conf.bak",
            "",
        ] {
            assert_eq!(parse(&format!("osctl-{id}{bad}")), None, "{bad}");
        }
        assert_eq!(parse(&format!("{TMP_PREFIX}1-osctl-{id}.conf")), None);
        assert_eq!(parse(&format!("other-{id}.conf")), None);
    }

    #[test]
    fn os_release_values() {
        assert_eq!(
            unquote(r#""Debian \"GNU\"/Linux" # x"#),
            r#"Debian "GNU"/Linux"#
        );
        assert_eq!(unquote("'a \\b'"), "a \\b");
        assert_eq!(unquote("Fedora"), "Fedora");
    }

    #[test]
    fn parses_hand_written_entries() {
        let parsed = BlsEntry::parse(
            "# written by hand\ntitle\tT\nlinux  /k\ninitrd /i\noptions a b\nmachine-id 123\noptions c\n",
        )
        .unwrap();
        assert_eq!(parsed.options, ["a", "b", "c"]);
        assert_eq!((parsed.title.as_str(), parsed.version.as_str()), ("T", ""));
        assert_eq!(
            BlsEntry::parse("linux /k\n").unwrap_err(),
            "no `initrd` line"
        );
        assert_eq!(
            BlsEntry::parse("linux /k\ninitrd /i\ninitrd /j\n").unwrap_err(),
            "line 3: second `initrd` line"
        );
    }
}
