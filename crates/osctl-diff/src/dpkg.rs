//! Reading dpkg's database, `/var/lib/dpkg/status`: deb822 paragraphs, one
//! per package dpkg knows. A package counts as present when its files are
//! on the system, i.e. its `Status` state (the third word) is anything but
//! `not-installed` and `config-files` — the two states dpkg(1) describes
//! as "not installed" / "only its configuration files exist". So
//! `installed`, `triggers-pending`, `triggers-awaited` (configured, with
//! triggers to run), `unpacked`, `half-configured` and `half-installed`
//! all count: their files are unpacked.
//!
//! The format (deb822(5)): paragraphs separated by blank lines; a field is
//! `Name: value` at the start of a line, continued by lines starting with a
//! space or tab. Only `Package`, `Architecture`, `Version` and `Status` are
//! used. A line that is neither is refused with its number: a status file
//! osctl cannot read is not silently read as "no packages".
//!
//! Packages are returned as they are, without a display name: whether a
//! package is shown as `name` or `name:arch` depends on both images, and
//! is decided when they are compared ([`crate::packages`]).

use crate::DpkgError;

/// Where dpkg keeps its database in an image.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";

/// A package whose files are on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub architecture: String,
    pub version: String,
}

/// The present packages of one database, sorted by name then
/// architecture; each (name, architecture) at most once.
pub type Installed = Vec<Package>;

/// One field's name and (unfolded, trimmed) value, with its line number.
type Field<'a> = (&'a str, String, usize);

/// Parses a status file's text into the installed packages. Errors name
/// the line at fault (1-based); the caller adds the file.
pub fn parse_status(text: &str) -> Result<Installed, DpkgError> {
    let mut packages = Vec::new();
    for paragraph in paragraphs(text)? {
        if let Some(p) = installed(&paragraph)? {
            packages.push((p, paragraph[0].2));
        }
    }
    // Stable sort: of two equal packages the later paragraph comes second,
    // and its line is the one named.
    packages.sort_by(|(a, _), (b, _)| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    for pair in packages.windows(2) {
        let ((a, _), (b, line)) = (&pair[0], &pair[1]);
        if (&a.name, &a.architecture) == (&b.name, &b.architecture) {
            return Err(DpkgError::Status {
                line: *line,
                why: format!("package {}:{} is installed twice", b.name, b.architecture),
            });
        }
    }
    Ok(packages.into_iter().map(|(p, _)| p).collect())
}

/// Splits `text` into paragraphs of fields.
fn paragraphs(text: &str) -> Result<Vec<Vec<Field<'_>>>, DpkgError> {
    let mut out = Vec::new();
    let mut current: Vec<Field<'_>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            let Some(last) = current.last_mut() else {
                return Err(DpkgError::Status {
                    line: n,
                    why: "a continuation line outside a field".into(),
                });
            };
            last.1.push('\n');
            last.1.push_str(line.trim());
        } else {
            let Some((name, value)) = line.split_once(':') else {
                return Err(DpkgError::Status {
                    line: n,
                    why: "neither a field (Name: value) nor a continuation line".into(),
                });
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(DpkgError::Status {
                    line: n,
                    why: format!("{name:?} is not a field name"),
                });
            }
            current.push((name, value.trim().to_string(), n));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// The package a paragraph describes, if its files are on the system.
fn installed(paragraph: &[Field<'_>]) -> Result<Option<Package>, DpkgError> {
    // Field names are case-insensitive in deb822.
    let get = |name: &str| {
        paragraph
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
    };
    let first_line = paragraph[0].2;
    let need = |name: &str| {
        get(name)
            .map(|(_, v, _)| v.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| DpkgError::Status {
                line: first_line,
                why: format!("the paragraph has no {name} field"),
            })
    };
    let status = need("Status")?;
    // "want flag state", e.g. "install ok installed".
    let words: Vec<&str> = status.split_whitespace().collect();
    let [_, _, state] = words.as_slice() else {
        let line = get("Status").map_or(first_line, |f| f.2);
        return Err(DpkgError::Status {
            line,
            why: format!("Status {status:?} is not \"want flag state\""),
        });
    };
    if matches!(*state, "not-installed" | "config-files") {
        return Ok(None);
    }
    Ok(Some(Package {
        name: need("Package")?,
        architecture: need("Architecture")?,
        version: need("Version")?,
    }))
}
