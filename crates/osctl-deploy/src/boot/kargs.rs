//! Kernel arguments from an image's kargs.d files, and how an update changes
//! a machine's arguments.

use std::path::Path;

use osctl_store::{EntryKind, ImageTree};
use serde::Deserialize;

use super::BootError;

/// The kargs.d directories, in the order their files apply.
pub const KARGS_DIRS: [&str; 2] = ["/usr/lib/bootc/kargs.d", "/usr/lib/osctl/kargs.d"];

/// One kargs.d file. Strict, as bootc's: `kargs` is required and any other
/// key is an error, so a typo (`karg =`, `match-architecture =`) fails the
/// deployment instead of silently dropping arguments.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct KargsFile {
    kargs: Vec<String>,
    /// Rust architecture names (`x86_64`, `aarch64`, …); the file applies
    /// only on those. Absent: everywhere; empty: nowhere.
    match_architectures: Option<Vec<String>>,
}

/// The image's kernel arguments for architecture `arch` (a Rust name, as
/// [`std::env::consts::ARCH`]): the `kargs` of every `*.toml` file in
/// `/usr/lib/bootc/kargs.d` then `/usr/lib/osctl/kargs.d`, each directory's
/// files in name order, skipping files whose `match-architectures` does not
/// list `arch`. Other names in those directories are ignored; a `*.toml`
/// that is not a regular file, not UTF-8 or not a valid kargs file is an
/// error naming it. Each argument must be exactly one command-line word
/// (`foo="a b"` is one; `a b` is not). `image` names the image in errors.
pub fn image_kargs(tree: &ImageTree, image: &str, arch: &str) -> Result<Vec<String>, BootError> {
    let mut kargs = Vec::new();
    for dir in KARGS_DIRS {
        let dir = Path::new(dir);
        for (name, kind) in tree.list(dir) {
            if !name.ends_with(".toml") {
                continue;
            }
            let path = dir.join(&name);
            let bad = |why: String| BootError::ImageFile {
                image: image.to_owned(),
                path: path.clone(),
                why,
            };
            if kind != EntryKind::Regular {
                return Err(bad("not a regular file".into()));
            }
            let bytes = tree.read(&path)?.ok_or_else(|| bad("unreadable".into()))?;
            let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
            match parse_kargs_file(&text, arch).map_err(bad)? {
                Some(file_kargs) => kargs.extend(file_kargs),
                None => {
                    tracing::debug!(path = %path.display(), arch, "kargs.d file skipped: other architectures");
                }
            }
        }
    }
    Ok(kargs)
}

/// Parses one kargs.d file: its arguments for architecture `arch`, or
/// `None` when its `match-architectures` leaves `arch` out. The error is one
/// line (position included) saying what is wrong. Staging and
/// `osctl container lint` both read kargs.d files through this.
pub fn parse_kargs_file(text: &str, arch: &str) -> Result<Option<Vec<String>>, String> {
    let file: KargsFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    for karg in &file.kargs {
        if split_cmdline(karg) != [karg.as_str()] {
            return Err(format!(
                "kargs entry {karg:?} is not exactly one kernel argument"
            ));
        }
    }
    match &file.match_architectures {
        Some(arches) if !arches.iter().any(|a| a == arch) => Ok(None),
        _ => Ok(Some(file.kargs)),
    }
}

/// `line L, column C: message`, on one line.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid kargs.d TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid kargs.d TOML: {message}"),
    }
}

/// Applies an image update to a machine's arguments, as bootc does: the
/// arguments the old image had and the new one lacks are removed from
/// `current` (every exact occurrence), the new image's arguments the old
/// one lacked are appended in the new image's order (unless `current`
/// already holds them), and everything else in `current` (machine-local
/// arguments, and image arguments the administrator removed) stays as it
/// is, in its order. Arguments compare as exact strings.
pub fn diff_kargs(old_image: &[String], new_image: &[String], current: &[String]) -> Vec<String> {
    let removed: Vec<&String> = old_image
        .iter()
        .filter(|k| !new_image.contains(k))
        .collect();
    let mut result: Vec<String> = current
        .iter()
        .filter(|k| !removed.contains(k))
        .cloned()
        .collect();
    for karg in new_image {
        if !old_image.contains(karg) && !result.contains(karg) {
            result.push(karg.clone());
        }
    }
    result
}

/// Splits a kernel command line into arguments at unquoted whitespace;
/// double quotes group (`opt="a b"` is one argument) and are kept.
pub fn split_cmdline(line: &str) -> Vec<&str> {
    let mut args = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        match (c.is_whitespace() && !quoted, start) {
            (true, Some(s)) => {
                args.push(&line[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        args.push(&line[s..]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_quotes() {
        assert_eq!(
            split_cmdline("  a=1\tb  c=\"x y\" \"d e\"f "),
            ["a=1", "b", "c=\"x y\"", "\"d e\"f"]
        );
        assert!(split_cmdline(" \n").is_empty());
    }

    #[test]
    fn parses_kargs_files() {
        let some = |v: &[&str]| Ok(Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        type Parsed = Result<Option<Vec<String>>, String>;
        let cases: [(&str, Parsed); 6] = [
            ("kargs = [\"panic=10\", \"quiet\"]", some(&["panic=10", "quiet"])),
            ("kargs = []", some(&[])),
            (
                "kargs = [\"a\"]\nmatch-architectures = [\"x86_64\"]",
                some(&["a"]),
            ),
            ("kargs = [\"a\"]\nmatch-architectures = [\"aarch64\"]", Ok(None)),
            (
                "kargs = [\"a b\"]",
                Err("kargs entry \"a b\" is not exactly one kernel argument".into()),
            ),
            (
                "karg = [\"a\"]",
                Err("invalid kargs.d TOML at line 1, column 1: unknown field `karg`, expected `kargs` or `match-architectures`".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_kargs_file(text, "x86_64"), want, "{text}");
        }
    }

    #[test]
    fn toml_errors_are_one_line_with_position() {
        let text = "kargs = [\"a\"]\nbogus = 1\n";
        let e = toml::from_str::<KargsFile>(text).err().unwrap();
        let msg = toml_error(text, &e);
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with("invalid kargs.d TOML at line 2, column 1: "),
            "{msg}"
        );
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn diff_kargs_applies_only_the_image_change() {
        let v = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let cases = [
            // old image, new image, current, expected
            ("a b", "a b", "a b local", "a b local"),
            ("a b", "a c", "a b local", "a local c"),
            (
                "a console=ttyS0",
                "a console=ttyS1",
                "console=ttyS0 a x",
                "a x console=ttyS1",
            ),
            ("", "q", "local", "local q"),
            ("q", "", "local q", "local"),
            // the admin removed an image karg: it stays removed while unchanged
            ("a b", "a b c", "a local", "a local c"),
            // the admin added what the image now adds: not duplicated
            ("a", "a z", "a z", "a z"),
            // removal takes every copy; machine-local order is kept
            ("dup", "", "x dup y dup", "x y"),
            ("", "", "", ""),
        ];
        for (old, new, current, want) in cases {
            assert_eq!(
                diff_kargs(&v(old), &v(new), &v(current)),
                v(want),
                "old={old:?} new={new:?} current={current:?}"
            );
        }
    }
}
