//! What an image may carry: the limits osctl enforces on every layer entry.
//!
//! The kernel reads a composefs image through EROFS and overlayfs, and osctl
//! handles image trees in memory; some things a tar can say cannot survive
//! either. Each is refused when a layer is imported (before it is
//! registered), again when a tree is built from stored layers (layers
//! imported by older versions), and `fsck` checks stored EROFS images
//! against the same limits (see docs/store.md, "What an image may carry"):
//!
//! * a file name longer than [`MAX_NAME_BYTES`]: EROFS stores it, but the
//!   kernel refuses the whole directory ("Structure needs cleaning");
//! * a symlink target longer than [`MAX_SYMLINK_TARGET_BYTES`]: the kernel
//!   returns it cut to a page;
//! * a path nested deeper than [`MAX_DEPTH`] directories: composefs-rs walks
//!   and clones image trees recursively, and a 2000-deep chain overflowed the
//!   stack and aborted the pull;
//! * an xattr whose name is longer than [`MAX_XATTR_NAME_BYTES`] or has
//!   nothing after its namespace (`user.`), or whose value is longer than
//!   [`MAX_XATTR_VALUE_BYTES`]: EROFS stores them, and the kernel then fails
//!   to read the file's xattrs; and a `security.capability` that is not a
//!   capability set, which the kernel refuses to read (or exec).

/// Longest file name (one path component), in bytes: Linux's `NAME_MAX`,
/// which is also EROFS's `EROFS_NAME_LEN`.
pub const MAX_NAME_BYTES: usize = 255;

/// Longest symlink target, in bytes: `PATH_MAX` (4096) less its terminating
/// NUL. The kernel's `symlink(2)` refuses anything longer, and EROFS returns a
/// longer target truncated to 4095 bytes (measured on 6.18).
pub const MAX_SYMLINK_TARGET_BYTES: usize = 4095;

/// Deepest directory nesting of any path, in components (`usr/bin/sh` is 3).
///
/// Measured: building the EROFS image of a 1025-deep chain overflows a
/// 2 MiB thread stack (tokio's default, on which pulls and staging run) in a
/// debug build; 1000 still passes. 256 leaves a factor of four for the
/// other recursive walks (staging's export, fsck) and is far above real OS
/// images (a full Debian system nests about 15 deep).
pub const MAX_DEPTH: usize = 256;

/// Longest xattr name, namespace included: Linux's `XATTR_NAME_MAX`.
pub const MAX_XATTR_NAME_BYTES: usize = 255;

/// Largest xattr value: EROFS stores value sizes in 16 bits (Linux itself
/// allows one byte more, `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE_BYTES: usize = 65535;

/// Sizes of the three revisions of `struct vfs_cap_data` (the value of
/// `security.capability`), with the revision each size goes with.
const FILE_CAPS: [(usize, u32); 3] = [(12, 0x0100_0000), (20, 0x0200_0000), (24, 0x0300_0000)];
/// The revision bits of a capability set's first (little-endian) word.
const CAP_REVISION_MASK: u32 = 0xFF00_0000;

/// How much of an offending path an error shows.
const SHOWN_PATH_BYTES: usize = 80;

/// Checks a path's depth and every name in it. `kind` says what the path
/// is ("tar entry", "hardlink target") in the error.
pub(crate) fn check_path(raw: &[u8], kind: &str) -> Result<(), String> {
    let mut depth = 0;
    for name in raw
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        depth += 1;
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "{kind} '{}' has a name of {} bytes; a file name may have at most {MAX_NAME_BYTES}",
                shown(raw),
                name.len()
            ));
        }
    }
    if depth > MAX_DEPTH {
        return Err(format!(
            "{kind} '{}' is nested {depth} directories deep; an image may nest at most {MAX_DEPTH}",
            shown(raw)
        ));
    }
    Ok(())
}

/// Checks a symlink's target length; `path` names the symlink.
pub(crate) fn check_symlink_target(path: &[u8], target: &[u8]) -> Result<(), String> {
    if target.len() > MAX_SYMLINK_TARGET_BYTES {
        return Err(format!(
            "symlink '{}' has a target of {} bytes; at most {MAX_SYMLINK_TARGET_BYTES} are allowed",
            shown(path),
            target.len()
        ));
    }
    Ok(())
}

/// Checks one xattr of the entry at `path`.
pub(crate) fn check_xattr(path: &[u8], name: &[u8], value: &[u8]) -> Result<(), String> {
    let what = || format!("xattr '{}' of '{}'", shown(name), shown(path));
    if name.len() > MAX_XATTR_NAME_BYTES {
        return Err(format!(
            "{} has a name of {} bytes; at most {MAX_XATTR_NAME_BYTES} are allowed",
            what(),
            name.len()
        ));
    }
    match name.iter().position(|b| *b == b'.') {
        Some(dot) if dot + 1 < name.len() => {}
        _ => return Err(format!("{} is not a namespace.name xattr name", what())),
    }
    if value.len() > MAX_XATTR_VALUE_BYTES {
        return Err(format!(
            "{} has a value of {} bytes; at most {MAX_XATTR_VALUE_BYTES} are allowed",
            what(),
            value.len()
        ));
    }
    if name == b"security.capability" {
        let revision = value
            .get(..4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")) & CAP_REVISION_MASK);
        if !FILE_CAPS
            .iter()
            .any(|(len, rev)| value.len() == *len && revision == Some(*rev))
        {
            return Err(format!(
                "{} is not a file capability set ({} bytes)",
                what(),
                value.len()
            ));
        }
    }
    Ok(())
}

/// A path for an error line: lossy UTF-8, control characters escaped (a
/// name may hold a newline), cut to [`SHOWN_PATH_BYTES`].
pub fn shown(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(SHOWN_PATH_BYTES)];
    let mut s: String = String::from_utf8_lossy(cut)
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if raw.len() > SHOWN_PATH_BYTES {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_within_and_beyond_the_limits() {
        let long = "n".repeat(MAX_NAME_BYTES);
        let too_long = "n".repeat(MAX_NAME_BYTES + 1);
        let deep = vec!["d"; MAX_DEPTH].join("/");
        let too_deep = vec!["d"; MAX_DEPTH + 1].join("/");
        let cases: [(&str, Option<&str>); 6] = [
            ("usr/bin/sh", None),
            ("./", None),
            (&long, None),
            (&deep, None),
            (&too_long, Some("has a name of 256 bytes")),
            (&too_deep, Some("is nested 257 directories deep")),
        ];
        for (path, want) in cases {
            match (check_path(path.as_bytes(), "tar entry"), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", shown(path.as_bytes())),
            }
        }
        // "./" prefixes and doubled slashes are not levels.
        let dotted = format!("./{}", vec!["d"; MAX_DEPTH].join("//"));
        assert!(check_path(dotted.as_bytes(), "tar entry").is_ok());
    }

    #[test]
    fn symlink_targets_up_to_path_max() {
        let ok = vec![b'a'; MAX_SYMLINK_TARGET_BYTES];
        let bad = vec![b'a'; MAX_SYMLINK_TARGET_BYTES + 1];
        assert!(check_symlink_target(b"l", &ok).is_ok());
        let e = check_symlink_target(b"l", &bad).unwrap_err();
        assert!(e.contains("target of 4096 bytes"), "{e}");
    }

    #[test]
    fn xattrs_the_kernel_can_read() {
        let cap_v2 = {
            let mut v = 0x0200_0000u32.to_le_bytes().to_vec();
            v.resize(20, 0);
            v
        };
        let long_name = format!("user.{}", "n".repeat(MAX_XATTR_NAME_BYTES - 4));
        let cases: [(&str, Vec<u8>, Option<&str>); 7] = [
            ("user.note", b"v".to_vec(), None),
            ("security.capability", cap_v2.clone(), None),
            (
                "user.big",
                vec![0; MAX_XATTR_VALUE_BYTES + 1],
                Some("value of 65536 bytes"),
            ),
            (&long_name, b"v".to_vec(), Some("name of 256 bytes")),
            ("user.", b"v".to_vec(), Some("not a namespace.name")),
            (
                "security.capability",
                vec![0xff; 7],
                Some("not a file capability set"),
            ),
            (
                "security.capability",
                cap_v2[..12].to_vec(),
                Some("not a file capability set"),
            ),
        ];
        for (name, value, want) in cases {
            match (check_xattr(b"usr/x", name.as_bytes(), &value), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn shown_paths_are_one_short_line() {
        assert_eq!(shown(b"a\nb"), "a\\nb");
        let long = shown(&[b'x'; 200]);
        assert!(long.ends_with('…') && long.chars().count() == SHOWN_PATH_BYTES + 1);
    }
}
