//! Rendering a diff: the human text and the JSON object of
//! `osctl diff --format json` (documented in docs/diff.md; fields are only
//! ever added).
//!
//! Paths come from the images, so they can hold any byte but `/` and NUL.
//! Both renderers show them through [`shown_path`]: like the rest of osctl
//! (`osctl_store::limits::shown`) control characters are escaped, so a
//! name cannot forge a report line; unlike it, nothing is lost — bytes
//! that are not UTF-8 become `\xNN` instead of U+FFFD and `\` is doubled,
//! so two different paths never print the same.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use crate::dpkg::Package;
use crate::{Aspect, ImageDiff, Kind, Packages, TreeDiff, VersionChange};

/// How one side of the comparison was chosen (JSON: camelCase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Booted,
    Staged,
    Rollback,
    /// A deployment in none of the roles above.
    Deployment,
    /// An image named by reference.
    Image,
    /// The update `osctl upgrade --check` recorded.
    CachedUpdate,
}

impl Role {
    /// The role in words, as the human report names it.
    fn words(self) -> &'static str {
        match self {
            Role::Booted => "booted",
            Role::Staged => "staged",
            Role::Rollback => "rollback",
            Role::Deployment => "deployment",
            Role::Image => "image",
            Role::CachedUpdate => "cached update",
        }
    }
}

/// One side of the comparison, as the caller resolved it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub role: Role,
    /// The deployment id, for a deployment.
    pub deployment: Option<String>,
    /// The image reference.
    pub image: String,
    pub manifest_digest: String,
}

impl Endpoint {
    /// `booted deployment 1a2b3c4d5e6f (reg/os:v1)`, `image reg/os:v2`.
    fn describe(&self) -> String {
        let role = self.role.words();
        match &self.deployment {
            Some(id) if self.role == Role::Deployment => {
                format!("deployment {} ({})", short(id), self.image)
            }
            Some(id) => format!("{role} deployment {} ({})", short(id), self.image),
            None => format!("{role} {}", self.image),
        }
    }
}

/// Deployment ids are long hex digests; 12 digits name one for people.
const SHORT_ID: usize = 12;

fn short(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

/// `path` as text, without loss and on one line: valid UTF-8 is kept but
/// for `\` (written `\\`) and control characters (`\n`, `\t`, `\r`,
/// other ASCII ones `\xNN`, others `\u{NNNN}`); each byte that is not
/// valid UTF-8 is `\xNN`.
pub fn shown_path(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_ascii_control() => {
                    write!(out, "\\x{:02x}", u32::from(c)).expect("writing to a String");
                }
                c if c.is_control() => {
                    write!(out, "\\u{{{:x}}}", u32::from(c)).expect("writing to a String");
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}").expect("writing to a String");
        }
    }
    out
}

/// The human report; with `files`, every differing path is listed with a
/// marker (`+` added, `-` removed, `M` changed, with what changed).
pub fn render_human(from: &Endpoint, to: &Endpoint, diff: &ImageDiff, files: bool) -> String {
    let mut out = format!("From: {}\nTo:   {}\n\n", from.describe(), to.describe());
    for t in &diff.trees {
        out.push_str(&format!("{}: {}\n", t.tree, counts(t)));
        if files {
            for c in &t.changes {
                let marker = match c.kind {
                    Kind::Added => "+",
                    Kind::Removed => "-",
                    Kind::Changed => "M",
                };
                out.push_str(&format!("  {marker} {}", shown_path(&c.path)));
                if !c.what.is_empty() {
                    let what: Vec<&str> = c.what.iter().map(|a| a.as_str()).collect();
                    out.push_str(&format!(" ({})", what.join(", ")));
                }
                out.push('\n');
            }
        }
    }
    match &diff.packages {
        Packages::NotCompared { missing } => {
            out.push_str(&format!(
                "Packages: {}\n",
                crate::packages::no_database(missing)
            ));
        }
        Packages::Compared(p) => {
            out.push_str(&format!(
                "Packages: {} added, {} removed, {} upgraded, {} downgraded\n",
                p.added.len(),
                p.removed.len(),
                p.upgraded.len(),
                p.downgraded.len()
            ));
            for (name, pkg) in &p.added {
                out.push_str(&format!("  added       {name} {}\n", pkg.version));
            }
            for (name, pkg) in &p.removed {
                out.push_str(&format!("  removed     {name} {}\n", pkg.version));
            }
            for c in &p.upgraded {
                out.push_str(&format!("  upgraded    {} {} → {}\n", c.name, c.from, c.to));
            }
            for c in &p.downgraded {
                out.push_str(&format!("  downgraded  {} {} → {}\n", c.name, c.from, c.to));
            }
        }
    }
    out
}

fn counts(t: &TreeDiff) -> String {
    format!(
        "{} added, {} removed, {} changed",
        t.count(Kind::Added),
        t.count(Kind::Removed),
        t.count(Kind::Changed)
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonDiff<'a> {
    from: &'a Endpoint,
    to: &'a Endpoint,
    files: Vec<JsonTree<'a>>,
    packages: JsonPackages<'a>,
}

#[derive(Serialize)]
struct JsonTree<'a> {
    tree: &'static str,
    added: usize,
    removed: usize,
    changed: usize,
    changes: Vec<JsonChange<'a>>,
}

#[derive(Serialize)]
struct JsonChange<'a> {
    path: String,
    kind: Kind,
    what: &'a [Aspect],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPackages<'a> {
    compared: bool,
    not_compared: Option<String>,
    added: Vec<JsonPackage<'a>>,
    removed: Vec<JsonPackage<'a>>,
    upgraded: &'a [VersionChange],
    downgraded: &'a [VersionChange],
}

#[derive(Serialize)]
struct JsonPackage<'a> {
    name: &'a str,
    architecture: &'a str,
    version: &'a str,
}

impl Serialize for VersionChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("VersionChange", 4)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("architecture", &self.architecture)?;
        st.serialize_field("from", &self.from)?;
        st.serialize_field("to", &self.to)?;
        st.end()
    }
}

fn json_packages(list: &[(String, Package)]) -> Vec<JsonPackage<'_>> {
    list.iter()
        .map(|(name, p)| JsonPackage {
            name,
            architecture: &p.architecture,
            version: &p.version,
        })
        .collect()
}

/// The JSON object (pretty-printed, with a final newline).
pub fn render_json(from: &Endpoint, to: &Endpoint, diff: &ImageDiff) -> String {
    let files = diff
        .trees
        .iter()
        .map(|t| JsonTree {
            tree: t.tree,
            added: t.count(Kind::Added),
            removed: t.count(Kind::Removed),
            changed: t.count(Kind::Changed),
            changes: t
                .changes
                .iter()
                .map(|c| JsonChange {
                    path: shown_path(&c.path),
                    kind: c.kind,
                    what: &c.what,
                })
                .collect(),
        })
        .collect();
    let empty = crate::PackageDiff::default();
    let p = match &diff.packages {
        Packages::Compared(p) => p,
        Packages::NotCompared { .. } => &empty,
    };
    let doc = JsonDiff {
        from,
        to,
        files,
        packages: JsonPackages {
            compared: matches!(diff.packages, Packages::Compared(_)),
            not_compared: diff.packages.not_compared(),
            added: json_packages(&p.added),
            removed: json_packages(&p.removed),
            upgraded: &p.upgraded,
            downgraded: &p.downgraded,
        },
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("a diff always serializes");
    text.push('\n');
    text
}
