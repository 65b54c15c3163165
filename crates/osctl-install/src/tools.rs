//! External tools (sfdisk, mkfs, mtools, …), random identifiers and
//! content sizes.
//!
//! Every tool runs through [`run`]: its stdout is returned, and a failure
//! becomes one [`InstallError::Tool`] line naming the step, the tool and its
//! stderr. [`require`] checks that the tools exist before anything is
//! written, so a missing package never leaves a half-written disk.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::InstallError;

/// The Debian package that provides `tool`, for "not found" messages.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "sfdisk" => "fdisk",
        "mkfs.ext4" | "dumpe2fs" => "e2fsprogs",
        "mkfs.vfat" => "dosfstools",
        "mcopy" | "mmd" => "mtools",
        "findmnt" => "mount",
        _ => "util-linux",
    }
}

/// Fails, naming every missing tool and its package, unless all of
/// `tools` are found on the PATH.
pub(super) fn require(tools: &[&str]) -> Result<(), InstallError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| format!("{t} ({})", package_of(t)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Invalid(format!(
            "missing tools: {}; install them first",
            missing.join(", ")
        )))
    }
}

/// Runs `cmd` for `step`, feeding it `input` if given; returns stdout.
pub(super) fn run(
    step: &str,
    cmd: &mut Command,
    input: Option<&str>,
) -> Result<String, InstallError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    tracing::debug!(step, command = ?cmd, "running");
    let fail = |why: String| InstallError::Tool {
        step: step.to_owned(),
        tool: tool.clone(),
        stderr: why,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail(format!("not found (install {})", package_of(&tool))),
        _ => fail(e.to_string()),
    })?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let stderr = one_line(&String::from_utf8_lossy(&out.stderr));
        let why = if stderr.is_empty() {
            out.status.to_string()
        } else {
            format!("{stderr} ({})", out.status)
        };
        return Err(fail(why));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Joins a tool's output lines with "; " so an error stays on one line.
pub(super) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A random (version 4) UUID, lowercase, from the kernel's random source.
pub(super) fn random_uuid() -> Result<String, InstallError> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| InstallError::Io {
            step: "reading",
            path: "/dev/urandom".into(),
            source,
        })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// What a tree takes on a filesystem with 4 KiB blocks: bytes (each file
/// rounded up to whole blocks, hard links counted once, a block per
/// directory) and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ContentSize {
    pub bytes: u64,
    pub inodes: u64,
}

/// Measures the tree at `root` without following symlinks.
pub(super) fn content_size(root: &Path) -> Result<ContentSize, InstallError> {
    let mut size = ContentSize::default();
    let mut seen = HashSet::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    let io = |p: &Path, source: std::io::Error| InstallError::Io {
        step: "measuring",
        path: p.to_path_buf(),
        source,
    };
    while let Some(dir) = stack.pop() {
        size.bytes += 4096;
        size.inodes += 1;
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            size.inodes += 1;
            size.bytes += meta.len().div_ceil(4096) * 4096;
        }
    }
    Ok(size)
}

/// Sizes for people: `256 MiB`, `1.5 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{} MiB", bytes.div_ceil(MIB))
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, random_uuid().unwrap());
    }

    #[test]
    fn tool_errors_are_one_line() {
        let err = run(
            "testing",
            Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("testing: sh failed: one; two"), "{err}");
        assert!(!err.contains('\n'));
        let err = run("testing", &mut Command::new("no-such-tool-here"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(256 << 20), "256 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(1000), "1 KiB");
    }
}
