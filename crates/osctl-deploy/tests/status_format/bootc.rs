//! bootc compatibility: the names and JSON types of bootc's host object
//! (`org.containers.bootc/v1`, kind `BootcHost`, as bootc's published
//! `host-v1` schema and status fixtures define it) that osctl's output
//! promises, written here as tables. Tools written for bootc
//! (`jq .status.booted.image.imageDigest`, fleet dashboards) rely on these.
//!
//! A row is checked wherever its parent is an object: the key must be there
//! with that type. Where bootc's schema lets a key be absent but osctl always
//! writes it (`image.version`, `composefs.bootDigest`, …), the row holds
//! osctl to writing it. bootc's `format: date-time` on timestamps is checked
//! by osctl's own schema (`schema.rs`), which says the same.

use std::collections::BTreeSet;

use osctl_deploy::status::Host;
use serde_json::{Value, json};

use super::schema::renders;
use super::{full_view, json_of, shapes};

/// The JSON type (and for bootc's enums, the values) a key must have.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Exactly this string.
    Const(&'static str),
    /// One of bootc's enum spellings.
    OneOf(&'static [&'static str]),
    Str,
    Bool,
    Object,
    Array,
    /// `null` (bootc's value for a backend osctl does not have).
    Null,
    StrOrNull,
    ObjectOrNull,
    OneOfOrNull(&'static [&'static str]),
}

impl Want {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Want::Const(s) => v == s,
            Want::OneOf(values) => v.as_str().is_some_and(|s| values.contains(&s)),
            Want::Str => v.is_string(),
            Want::Bool => v.is_boolean(),
            Want::Object => v.is_object(),
            Want::Array => v.is_array(),
            Want::Null => v.is_null(),
            Want::StrOrNull => v.is_string() || v.is_null(),
            Want::ObjectOrNull => v.is_object() || v.is_null(),
            Want::OneOfOrNull(values) => v.is_null() || Want::OneOf(values).accepts(v),
        }
    }

    /// May be `null` or something else: the fixtures must show both.
    fn nullable(self) -> bool {
        matches!(
            self,
            Want::StrOrNull | Want::ObjectOrNull | Want::OneOfOrNull(_)
        )
    }
}

use Want::*;

/// bootc's host object, paths from the top.
const HOST: &[(&str, Want)] = &[
    ("apiVersion", Const("org.containers.bootc/v1")),
    ("kind", Const("BootcHost")),
    ("metadata", Object),
    ("metadata.name", Str),
    ("spec", Object),
    ("spec.image", ObjectOrNull),
    ("spec.image.image", Str),
    ("spec.image.transport", Str),
    ("spec.bootOrder", OneOf(&["default", "rollback"])),
    ("status", Object),
    ("status.staged", ObjectOrNull),
    ("status.booted", ObjectOrNull),
    ("status.rollback", ObjectOrNull),
    ("status.otherDeployments", Array),
    ("status.rollbackQueued", Bool),
    ("status.type", OneOfOrNull(&["bootcHost"])),
];

/// Where boot entries sit; `[]` is every element of the array.
const ENTRIES: &[&str] = &[
    "status.staged",
    "status.booted",
    "status.rollback",
    "status.otherDeployments[]",
];

/// bootc's `BootEntry`, paths from the entry.
const ENTRY: &[(&str, Want)] = &[
    // bootc: object or null; osctl always knows the image.
    ("image", Object),
    ("cachedUpdate", ObjectOrNull),
    ("incompatible", Bool),
    ("pinned", Bool),
    ("softRebootCapable", Bool),
    ("downloadOnly", Bool),
    // bootc's only value is `ostreeContainer`, its ostree store.
    ("store", Null),
    // bootc: object or null (null for ostree entries); osctl is composefs only.
    ("composefs", Object),
    ("composefs.verity", Str),
    ("composefs.bootType", OneOf(&["Bls", "Uki"])),
    (
        "composefs.bootloader",
        OneOf(&["grub", "grub-cc", "systemd", "none"]),
    ),
    ("composefs.missingVerityAllowed", Bool),
    ("composefs.bootDigest", StrOrNull),
];

/// Where image statuses sit in a boot entry.
const IMAGES: &[&str] = &["image", "cachedUpdate"];

/// bootc's `ImageStatus`, paths from the image status.
const IMAGE: &[(&str, Want)] = &[
    ("image", Object),
    ("image.image", Str),
    ("image.transport", Str),
    ("imageDigest", Str),
    ("version", StrOrNull),
    ("timestamp", StrOrNull),
    ("architecture", Str),
];

/// What the rows saw, so that a row no fixture reaches fails the test.
#[derive(Default)]
struct Seen {
    checked: BTreeSet<String>,
    null: BTreeSet<String>,
    not_null: BTreeSet<String>,
}

/// The value at a dotted `path` below `v`; `Ok(None)` when a parent on the
/// way is `null` (nothing to check below it), `Err` when a key is missing.
fn lookup<'a>(v: &'a Value, path: &str) -> Result<Option<&'a Value>, String> {
    let mut here = v;
    let mut walked = String::new();
    for key in path.split('.') {
        if here.is_null() {
            return Ok(None);
        }
        let obj = here
            .as_object()
            .ok_or_else(|| format!("{walked}: not an object"))?;
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(key);
        here = obj.get(key).ok_or_else(|| "missing".to_owned())?;
    }
    Ok(Some(here))
}

/// Checks `rows` below `base` (named `at`); appends problems as
/// `path: what`.
fn check_rows(
    base: &Value,
    at: &str,
    table: &str,
    rows: &[(&str, Want)],
    seen: &mut Seen,
    problems: &mut Vec<String>,
) {
    for &(path, want) in rows {
        let full = if at.is_empty() {
            path.to_owned()
        } else {
            format!("{at}.{path}")
        };
        match lookup(base, path) {
            Err(e) => problems.push(format!("{full}: {e}")),
            Ok(None) => {}
            Ok(Some(v)) => {
                let row = format!("{table}:{path}");
                seen.checked.insert(row.clone());
                if v.is_null() {
                    seen.null.insert(row);
                } else {
                    seen.not_null.insert(row);
                }
                if !want.accepts(v) {
                    problems.push(format!("{full}: want {want:?}, got {v}"));
                }
            }
        }
    }
}

/// Every problem of `host` against the tables.
fn bootc_problems(host: &Value, seen: &mut Seen) -> Vec<String> {
    let mut problems = Vec::new();
    check_rows(host, "", "host", HOST, seen, &mut problems);
    let mut entries = Vec::new();
    for &slot in ENTRIES {
        if let Some(array) = slot.strip_suffix("[]") {
            if let Ok(Some(Value::Array(items))) = lookup(host, array) {
                entries.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (format!("{array}[{i}]"), e)),
                );
            }
        } else if let Ok(Some(e)) = lookup(host, slot) {
            entries.push((slot.to_owned(), e));
        }
    }
    for (at, entry) in entries.into_iter().filter(|(_, e)| e.is_object()) {
        check_rows(entry, &at, "entry", ENTRY, seen, &mut problems);
        for &key in IMAGES {
            if let Some(image) = entry.get(key).filter(|i| i.is_object()) {
                let at = format!("{at}.{key}");
                check_rows(image, &at, "image", IMAGE, seen, &mut problems);
            }
        }
    }
    problems
}

#[test]
fn every_status_shape_has_bootcs_names_and_types() {
    let mut seen = Seen::default();
    for (name, view) in shapes() {
        for (which, value) in renders(&view) {
            let problems = bootc_problems(&value, &mut seen);
            assert!(
                problems.is_empty(),
                "{name}, {which}: not what bootc's readers expect:\n{}\n{value:#}",
                problems.join("\n")
            );
        }
    }
    // Every row was reached, nullable ones both as null and as a value, so
    // no row passes because no fixture has its parent.
    let all = [("host", HOST), ("entry", ENTRY), ("image", IMAGE)];
    for (table, rows) in all {
        for &(path, want) in rows {
            let row = format!("{table}:{path}");
            assert!(seen.checked.contains(&row), "{row}: no fixture reaches it");
            if want.nullable() {
                assert!(
                    seen.null.contains(&row),
                    "{row}: never null in the fixtures"
                );
                assert!(
                    seen.not_null.contains(&row),
                    "{row}: always null in the fixtures"
                );
            }
        }
    }
}

/// A change to a valid document.
type Edit = fn(&mut Value);

#[test]
fn bootc_check_names_a_wrong_type_or_a_missing_key() {
    let good = json_of(&full_view());
    assert_eq!(
        bootc_problems(&good, &mut Seen::default()),
        Vec::<String>::new()
    );
    let cases: [(&str, Edit, &str); 6] = [
        (
            "rollbackQueued as a string",
            |v| v["status"]["rollbackQueued"] = json!("false"),
            "status.rollbackQueued: want Bool, got \"false\"",
        ),
        (
            "no imageDigest",
            |v| {
                v["status"]["booted"]["image"]
                    .as_object_mut()
                    .unwrap()
                    .remove("imageDigest");
            },
            "status.booted.image.imageDigest: missing",
        ),
        (
            "v1alpha1",
            |v| v["apiVersion"] = json!("org.containers.bootc/v1alpha1"),
            "apiVersion: want Const(\"org.containers.bootc/v1\")",
        ),
        (
            "bootType in lower case",
            |v| v["status"]["otherDeployments"][0]["composefs"]["bootType"] = json!("bls"),
            "status.otherDeployments[0].composefs.bootType: want OneOf",
        ),
        (
            "a store osctl does not have",
            |v| v["status"]["rollback"]["store"] = json!("ostreeContainer"),
            "status.rollback.store: want Null",
        ),
        (
            "transport missing in a cached update",
            |v| {
                v["status"]["booted"]["cachedUpdate"]["image"]
                    .as_object_mut()
                    .unwrap()
                    .remove("transport");
            },
            "status.booted.cachedUpdate.image.transport: missing",
        ),
    ];
    for (name, edit, want) in cases {
        let mut bad = good.clone();
        edit(&mut bad);
        let problems = bootc_problems(&bad, &mut Seen::default());
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{name}: expected \"{want}…\", got {problems:?}"
        );
    }
}

/// A status document shaped like bootc's own output (ostree backend,
/// `v1alpha1`, a signature, keys osctl does not know), written for this test.
const BOOTC_STYLE_STATUS: &str = "\
apiVersion: org.containers.bootc/v1alpha1
kind: BootcHost
metadata:
  name: host
spec:
  image:
    image: registry.example/os:stable
    transport: registry
    signature: insecure
status:
  staged: null
  booted:
    image:
      image:
        image: registry.example/os:stable
        transport: registry
        signature: insecure
      architecture: amd64
      version: '42.1'
      timestamp: 2026-05-01T12:00:00.25Z
      imageDigest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    incompatible: false
    pinned: true
    ostree:
      checksum: fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210
      deploySerial: 0
      stateroot: default
  rollback: null
  isContainer: false
";

#[test]
fn osctls_model_reads_bootc_style_output() {
    let host: Host = yaml_serde::from_str(BOOTC_STYLE_STATUS).unwrap();
    assert_eq!(host.kind, "BootcHost");
    let booted = host.status.booted.unwrap();
    assert!(booted.pinned);
    assert!(
        booted.composefs.is_none(),
        "an ostree entry has no composefs block"
    );
    let image = booted.image.unwrap();
    assert_eq!(image.version.as_deref(), Some("42.1"));
    assert_eq!(image.timestamp.as_deref(), Some("2026-05-01T12:00:00.25Z"));
    assert_eq!(image.image.transport, "registry");
    assert!(host.status.staged.is_none());
}
