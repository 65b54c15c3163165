//! osctl's own schema of the status object, `docs/status.schema.json`: it is
//! exactly what the status types generate now, every status shape validates
//! against it (JSON and YAML, full and `--booted`), and it refuses a wrong
//! type, a missing required field, an unknown key, a bad enum value.

use std::fs;
use std::path::{Path, PathBuf};

use osctl_testutil::generated_doc;

use osctl_deploy::status::{
    SCHEMA_DOC, booted_only, render_json, render_schema, render_yaml, to_host,
};
use serde_json::{Value, json};

use super::{assessed_view, full_view, json_of, shapes};

/// The command that rewrites [`SCHEMA_DOC`] from the status types.
const REGENERATE: &str =
    "OSCTL_UPDATE_DOCS=1 cargo test -p osctl-deploy --test status_format schema::committed_schema";

fn schema_doc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(SCHEMA_DOC)
}

#[test]
fn committed_schema_is_what_the_types_generate() {
    let path = schema_doc();
    generated_doc::update_if_asked(&path, &render_schema());
    let committed = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with:\n  {REGENERATE}", path.display()));
    let committed: Value = serde_json::from_str(&committed)
        .unwrap_or_else(|e| panic!("{SCHEMA_DOC}: not JSON ({e}); regenerate it:\n  {REGENERATE}"));
    // Compared as JSON values, not text: key order is not part of the
    // schema (and depends on serde_json's features).
    let generated: Value = serde_json::from_str(&render_schema()).unwrap();
    if let Some((at, old, new)) = first_difference("", &committed, &generated) {
        panic!(
            "{SCHEMA_DOC} is not what the status types generate; first difference at '{at}':\n  \
             committed: {old}\n  generated: {new}\n\
             If the status format change is intended, regenerate and commit the file:\n  {REGENERATE}"
        );
    }
}

/// The first JSON pointer where `a` and `b` differ, with both sides there
/// (`(absent)` for a missing key).
fn first_difference(at: &str, a: &Value, b: &Value) -> Option<(String, String, String)> {
    const ABSENT: &str = "(absent)";
    let show = |v: Option<&Value>| v.map_or(ABSENT.to_owned(), Value::to_string);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let here = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(&here, p, q),
                    (p, q) => Some((here, show(p), show(q))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(&format!("{at}/{i}"), p, q)),
        _ => (a != b).then(|| (at.to_owned(), a.to_string(), b.to_string())),
    }
}

/// The committed schema, compiled with `format` assertions on (so
/// `date-time` counts, as it does for bootc's readers).
pub(super) struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Schema {
    pub(super) fn load() -> Schema {
        let path = schema_doc();
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; create it with:\n  {REGENERATE}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("the schema is JSON");
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource("status.schema.json", doc).unwrap();
        let index = compiler
            .compile("status.schema.json", &mut schemas)
            .expect("the committed schema compiles");
        Schema { schemas, index }
    }

    /// The validator's complaint about `instance`, if any, in one string.
    pub(super) fn errors(&self, instance: &Value) -> Option<String> {
        self.schemas
            .validate(instance, self.index)
            .err()
            .map(|e| format!("{e:#}"))
    }

    fn check(&self, what: &str, instance: &Value) {
        if let Some(e) = self.errors(instance) {
            panic!("{what} does not validate against {SCHEMA_DOC}:\n{e}\n{instance:#}");
        }
    }
}

/// What `osctl status --format json` and `--format yaml` print for `view`,
/// and for `--booted`, each parsed to a JSON value.
pub(super) fn renders(view: &osctl_deploy::status::HostView) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (which, v) in [("full", view.clone()), ("--booted", booted_only(view))] {
        let host = to_host(&v);
        let json: Value = serde_json::from_str(&render_json(&host)).unwrap();
        let yaml: Value = yaml_serde::from_str(&render_yaml(&host)).unwrap();
        assert_eq!(json, yaml, "{which}: JSON and YAML differ");
        out.push((format!("{which} JSON"), json));
        out.push((format!("{which} YAML"), yaml));
    }
    out
}

#[test]
fn every_status_shape_validates() {
    let schema = Schema::load();
    let shapes = shapes();
    assert!(shapes.len() >= 15, "too few shapes: {}", shapes.len());
    for (name, view) in &shapes {
        for (which, value) in renders(view) {
            schema.check(&format!("{name}, {which}"), &value);
        }
    }
}

enum Edit {
    /// Replace the value at a pointer that exists.
    Set(&'static str, Value),
    /// Add a key to the object at a pointer.
    Add(&'static str, &'static str, Value),
    Remove(&'static str),
}

/// Applies `edit` to `v`; the path must exist, so a table row cannot pass
/// because it names nothing.
fn apply(v: &mut Value, edit: &Edit) {
    match edit {
        Edit::Set(pointer, value) => {
            *v.pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{pointer} not in the document")) = value.clone();
        }
        Edit::Add(pointer, key, value) => {
            let obj = v
                .pointer_mut(pointer)
                .and_then(Value::as_object_mut)
                .unwrap_or_else(|| panic!("{pointer}: no object there"));
            assert!(
                obj.insert((*key).to_owned(), value.clone()).is_none(),
                "{key} was there"
            );
        }
        Edit::Remove(pointer) => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let removed = v
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .and_then(|o| o.remove(key));
            assert!(removed.is_some(), "{pointer} not in the document");
        }
    }
}

#[test]
fn schema_refuses_what_osctl_never_prints() {
    let schema = Schema::load();
    let mut good = json_of(&full_view());
    // A booted entry with a health block and a counter, as a trial boot has.
    good["status"]["rollback"] = json_of(&assessed_view())["status"]["booted"].clone();
    assert_eq!(schema.errors(&good), None, "the unedited document is valid");
    let table = [
        (
            Edit::Set("/status/booted/pinned", json!("no")),
            "/status/booted/pinned",
            "want boolean, but got string",
        ),
        (
            Edit::Set("/status/rollbackQueued", json!(0)),
            "/status/rollbackQueued",
            "want boolean, but got number",
        ),
        (
            Edit::Set("/status/otherDeployments", json!({})),
            "/status/otherDeployments",
            "want array, but got object",
        ),
        (
            Edit::Set("/status/booted/image/image", Value::Null),
            "/status/booted/image/image",
            "want object, but got null",
        ),
        (
            Edit::Set("/status/rollback/osctl/bootTries/left", json!(-1)),
            "/status/rollback/osctl/bootTries/left",
            "must be >=0",
        ),
        (
            Edit::Remove("/status/booted/incompatible"),
            "/status/booted",
            "missing properties 'incompatible'",
        ),
        (
            Edit::Remove("/status/staged"),
            "/status",
            "missing properties 'staged'",
        ),
        (
            Edit::Remove("/status/booted/image/imageDigest"),
            "/status/booted/image",
            "missing properties 'imageDigest'",
        ),
        (
            Edit::Remove("/status/booted/osctl/deploymentId"),
            "/status/booted/osctl",
            "missing properties 'deploymentId'",
        ),
        (
            Edit::Add("/status/booted", "imageDigest", json!("sha256:00")),
            "/status/booted",
            "additionalProperties 'imageDigest' not allowed",
        ),
        (
            Edit::Set("/status/booted/composefs/bootType", json!("bls")),
            "/status/booted/composefs/bootType",
            "must be one of",
        ),
        (
            Edit::Set("/status/rollback/osctl/health/state", json!("unknown")),
            "/status/rollback/osctl/health/state",
            "oneOf failed, none matched",
        ),
        (
            Edit::Set("/apiVersion", json!("org.containers.bootc/v1alpha1")),
            "/apiVersion",
            "value must be 'org.containers.bootc/v1'",
        ),
        (
            Edit::Set(
                "/status/booted/image/timestamp",
                json!("2026-02-30T00:00:00Z"),
            ),
            "/status/booted/image/timestamp",
            "is not valid date-time",
        ),
        (
            Edit::Set("/status/booted/composefs/verity", json!("2".repeat(63))),
            "/status/booted/composefs/verity",
            "does not match pattern",
        ),
    ];
    for (edit, at, why) in &table {
        let mut bad = good.clone();
        apply(&mut bad, edit);
        let err = schema
            .errors(&bad)
            .unwrap_or_else(|| panic!("{at}: accepted:\n{bad:#}"));
        // boon names the instance location as `at '<pointer>'`.
        let located = format!("at '{at}'");
        assert!(
            err.lines().any(|l| l.contains(&located) && l.contains(why)),
            "{at}: expected \"{why}\" there, got:\n{err}"
        );
    }
}
