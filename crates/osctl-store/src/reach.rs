//! Who needs what: walking the store from its GC roots, tolerating damage.
//!
//! composefs-rs's GC walks the same graph (image roots → the objects an
//! EROFS image names; stream roots → a splitstream's objects and the streams
//! it names) but stops at the first unreadable piece. This walk goes on and
//! records, for every object, stream and image, the roots that reach it —
//! labelled as people know them (the image reference of a record, or a
//! deployment) — plus every root it could not walk. `fsck` uses it to name
//! the images a bad object belongs to; `gc` to explain why it cannot sweep.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};

use crate::record::{is_hex_id, record_key};
use crate::{REPO_PATH, RecordScan, Store, StoreError};

/// Ref directories under `images/refs` and `streams/refs` osctl writes:
/// `osctl/<record key>` and `deploy/<deployment id>`.
pub(crate) const OSCTL_REFS: &str = "osctl";
pub(crate) const DEPLOY_REFS: &str = "deploy";

/// The result of a walk from every root.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    /// Object id → labels of the roots that need it.
    pub objects: HashMap<Sha256HashValue, BTreeSet<String>>,
    /// Stream name (`oci-layer-…`, `oci-config-…`) → labels.
    pub streams: HashMap<String, BTreeSet<String>>,
    /// Image id (hex) → labels.
    pub images: HashMap<String, BTreeSet<String>>,
    /// Ref file (`images/refs/osctl/<key>`) → label.
    pub refs: HashMap<String, String>,
    /// One line per root that could not be walked completely.
    pub broken: Vec<String>,
}

impl Reach {
    /// "REF1, deployment 0123456789ab" or "no image".
    pub fn owners_of(&self, labels: Option<&BTreeSet<String>>) -> String {
        match labels {
            Some(l) if !l.is_empty() => l.iter().cloned().collect::<Vec<_>>().join(", "),
            _ => "no image".to_string(),
        }
    }
}

impl Store {
    /// Walks every root under `images/refs` and `streams/refs`.
    pub(crate) fn reach(&self, scan: &RecordScan) -> Result<Reach, StoreError> {
        let repo_path = self.sysroot().join(REPO_PATH);
        let keys: HashMap<String, String> = scan
            .records
            .iter()
            .map(|r| (record_key(r.reference()), r.reference().to_string()))
            .collect();
        let label = |rel: &Path| -> String {
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match rel.parent().and_then(|p| p.to_str()) {
                Some(OSCTL_REFS) => match keys.get(&name) {
                    Some(reference) => reference.clone(),
                    None => format!("the image of record {name}.json"),
                },
                Some(DEPLOY_REFS) if is_hex_id(&name) => format!("deployment {}", &name[..12]),
                _ => format!("ref {}", rel.display()),
            }
        };
        let stream_names = self.stream_names()?;
        let mut reach = Reach::default();
        for (rel, target) in ref_links(&repo_path.join("images/refs"))? {
            let label = label(&rel);
            reach
                .refs
                .insert(format!("images/refs/{}", rel.display()), label.clone());
            let id = file_name(&target);
            reach
                .images
                .entry(id.clone())
                .or_default()
                .insert(label.clone());
            match self.repo().objects_for_image(&id) {
                Ok(objects) => {
                    for o in objects {
                        reach.objects.entry(o).or_default().insert(label.clone());
                    }
                    if let Some(own) = link_object(&repo_path.join("images").join(&id)) {
                        reach.objects.entry(own).or_default().insert(label.clone());
                    }
                }
                Err(e) => reach.broken.push(format!(
                    "{label}: EROFS image {id} cannot be read: {}",
                    e.root_cause()
                )),
            }
        }
        for (rel, target) in ref_links(&repo_path.join("streams/refs"))? {
            let label = label(&rel);
            reach
                .refs
                .insert(format!("streams/refs/{}", rel.display()), label.clone());
            let mut seen = HashSet::new();
            self.walk_stream(
                &file_name(&target),
                &label,
                &stream_names,
                &mut seen,
                &mut reach,
            );
        }
        Ok(reach)
    }

    /// Records `label` on stream `name`, its object, everything it names.
    fn walk_stream(
        &self,
        name: &str,
        label: &str,
        names: &HashMap<Sha256HashValue, String>,
        seen: &mut HashSet<String>,
        reach: &mut Reach,
    ) {
        // An explicit stack: streams name streams (config → layers).
        let mut todo = vec![name.to_string()];
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            reach
                .streams
                .entry(name.clone())
                .or_default()
                .insert(label.to_string());
            let link = self.sysroot().join(REPO_PATH).join("streams").join(&name);
            if let Some(own) = link_object(&link) {
                reach
                    .objects
                    .entry(own)
                    .or_default()
                    .insert(label.to_string());
            }
            let mut stream = match self.repo().open_stream(&name, None, None) {
                Ok(s) => s,
                Err(e) => {
                    reach.broken.push(format!(
                        "{label}: stream {name} cannot be read: {}",
                        e.root_cause()
                    ));
                    continue;
                }
            };
            let mut objects = Vec::new();
            if let Err(e) = stream.get_object_refs(|id| objects.push(id.clone())) {
                reach.broken.push(format!(
                    "{label}: stream {name} cannot be read: {}",
                    e.root_cause()
                ));
            }
            for (_, id) in stream.iter_named_refs() {
                objects.push(id.clone());
                if let Some(sub) = names.get(id) {
                    todo.push(sub.clone());
                }
            }
            for o in objects {
                reach
                    .objects
                    .entry(o)
                    .or_default()
                    .insert(label.to_string());
            }
        }
    }

    /// Object id → name, for every stream in `streams/`.
    fn stream_names(&self) -> Result<HashMap<Sha256HashValue, String>, StoreError> {
        Ok(self
            .stream_links()?
            .into_iter()
            .filter_map(|(name, link)| link_object(&link).map(|id| (id, name)))
            .collect())
    }

    /// Every entry of `streams/` but `refs`: (stream name, link path).
    pub(crate) fn stream_links(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let dir = self.sysroot().join(REPO_PATH).join("streams");
        let io = |e: std::io::Error| StoreError::Io {
            step: "listing",
            path: dir.clone(),
            source: e,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "refs" {
                out.push((name, entry.path()));
            }
        }
        Ok(out)
    }
}

/// The object a `streams/<name>` or `images/<id>` symlink names, from the
/// link text (the object itself may be gone).
pub(crate) fn link_object(link: &Path) -> Option<Sha256HashValue> {
    let target = std::fs::read_link(link).ok()?;
    Sha256HashValue::from_object_pathname(target.as_os_str().as_encoded_bytes()).ok()
}

/// Every symlink under `refs` (relative path, link text), depth first.
pub(crate) fn ref_links(refs: &Path) -> Result<Vec<(PathBuf, PathBuf)>, StoreError> {
    let io = |path: &Path, e: std::io::Error| StoreError::Io {
        step: "reading",
        path: path.to_path_buf(),
        source: e,
    };
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = refs.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let here = rel.join(entry.file_name());
            let kind = entry.file_type().map_err(|e| io(&entry.path(), e))?;
            if kind.is_dir() {
                todo.push(here);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).map_err(|e| io(&entry.path(), e))?;
                out.push((here, target));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
