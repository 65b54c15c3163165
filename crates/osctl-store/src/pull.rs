//! A pull: resolve (the signature policy decides here, before any blob) →
//! config → layers (concurrent) → EROFS image → refs → record.
//!
//! Order is what makes a pull crash-safe: nothing that names the image (the
//! GC refs, then the record) is written until everything it names is in the
//! store and synced. An interrupted or failed pull leaves at most verified
//! layers (reused by the next attempt) and unreferenced objects (`gc` food),
//! never a record of a partial image.
//!
//! Layers run as separate tokio tasks so that inflating and hashing two
//! layers uses both cores; [`LAYER_CONCURRENCY`] bounds how many are in flight.

use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::sync::Arc;

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use oci_spec::image::{Descriptor, ImageConfiguration};
use osctl_image::manifest::layer_compression;
use osctl_image::{FetchOptions, ImageRef, Source};

use crate::import::{import_layer, register_layers};
use crate::record::{ImageRecord, LayerRecord, RECORD_VERSION, gc_ref_name, record_key};
use crate::writeback::{WRITEBACK_STEP, Writeback};
use crate::{REPO_PATH, Store, StoreError, check, error};

/// Layers imported at once. Two keeps both cores of the reference machine
/// busy (inflate + hashing are CPU-bound); three was no faster there and
/// raised peak memory by ~5 MiB; one was 10% slower (docs/performance.md).
pub const LAYER_CONCURRENCY: usize = 2;

/// Largest config blob accepted (configs are a few KiB; history-heavy ones
/// reach hundreds). The limit keeps a hostile registry from filling memory.
const MAX_CONFIG: u64 = 8 * 1024 * 1024;

/// Hears about a pull's progress. All methods have empty defaults; reporting
/// (bars, lines, JSON) lives in the CLI, not here.
pub trait PullObserver: Send + Sync {
    fn resolved(&self, _reference: &str, _manifest_digest: &str, _layers: usize) {}
    fn up_to_date(&self) {}
    fn layer_started(&self, _index: usize, _digest: &str, _size: u64) {}
    fn layer_progress(&self, _index: usize, _read: u64) {}
    fn layer_finished(&self, _index: usize, _reused: bool) {}
    fn building_image(&self) {}
}

/// An observer that ignores everything (`--quiet`, library use).
pub struct Silent;
impl PullObserver for Silent {}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    record: ImageRecord,
    layers_fetched: usize,
    layers_reused: usize,
    up_to_date: bool,
}

impl PullOutcome {
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }
    /// Layers downloaded and imported by this pull.
    pub fn layers_fetched(&self) -> usize {
        self.layers_fetched
    }
    /// Layers already in the store.
    pub fn layers_reused(&self) -> usize {
        self.layers_reused
    }
    /// The reference already pointed at this manifest: nothing was done.
    pub fn up_to_date(&self) -> bool {
        self.up_to_date
    }
}

impl Store {
    /// Pulls `imgref` into the store and records it.
    pub async fn pull(
        &self,
        imgref: &ImageRef,
        opts: &FetchOptions,
        observer: Arc<dyn PullObserver>,
    ) -> Result<PullOutcome, StoreError> {
        self.pull_checked(imgref, None, opts, observer).await
    }

    /// Pulls `imgref` only if it resolves to the manifest `digest`: the
    /// digest is compared as soon as the manifest is read, before anything
    /// is written, so a tag that moved (an `oci:` layout, an archive, local
    /// storage cannot be asked for a digest) changes nothing in the store.
    pub async fn pull_digest(
        &self,
        imgref: &ImageRef,
        digest: &str,
        opts: &FetchOptions,
        observer: Arc<dyn PullObserver>,
    ) -> Result<PullOutcome, StoreError> {
        self.pull_checked(imgref, Some(digest), opts, observer)
            .await
    }

    async fn pull_checked(
        &self,
        imgref: &ImageRef,
        want: Option<&str>,
        opts: &FetchOptions,
        observer: Arc<dyn PullObserver>,
    ) -> Result<PullOutcome, StoreError> {
        let reference = imgref.to_string();
        let key = record_key(&reference);
        let source = Arc::new(Source::open(imgref, opts).await?);
        let resolved = source.resolve().await?;
        if let Some(want) = want
            && resolved.digest() != want
        {
            return Err(StoreError::NotTheExpectedImage {
                reference,
                want: want.to_string(),
                got: resolved.digest().to_string(),
            });
        }
        let manifest = resolved.manifest();
        let layers = manifest.layers();
        observer.resolved(&reference, resolved.digest(), layers.len());

        let shown = layer_names(layers, &reference);
        // Refuse what cannot be imported before downloading anything.
        let mut compressions = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let c = layer_compression(l.media_type()).ok_or_else(|| {
                StoreError::from(osctl_image::FetchError::UnsupportedMediaType {
                    what: shown[i].clone(),
                    media_type: l.media_type().to_string(),
                })
            })?;
            compressions.push(c);
        }

        let records = self.records()?;
        if let Some(r) = records
            .iter()
            .find(|r| r.key() == key && r.manifest_digest() == resolved.digest())
        {
            // "Up to date" only when everything the record needs is still
            // there; otherwise the pull goes on and fetches what is missing.
            match self.verify_image(r) {
                Ok(()) => {
                    // The policy was applied again just now; a record that
                    // says something else (an older policy, or none) is
                    // brought up to date, so status shows today's verdict.
                    let mut record = r.clone();
                    if record.signature.as_ref() != Some(resolved.signature()) {
                        self.ensure_writable()?;
                        let _naming = self.naming_lock(false)?;
                        record.signature = Some(resolved.signature().clone());
                        self.write_record(&record)?;
                    }
                    observer.up_to_date();
                    return Ok(PullOutcome {
                        record,
                        layers_fetched: 0,
                        layers_reused: layers.len(),
                        up_to_date: true,
                    });
                }
                Err(e) => tracing::warn!("{}; fetching what is missing", error::one_line(&e)),
            }
        }
        self.ensure_writable()?;

        let config_desc = manifest.config();
        let config_what = format!("config {} of {reference}", config_desc.digest());
        let config_raw = match records
            .iter()
            .find(|r| r.config_digest() == config_desc.digest().to_string())
        {
            Some(r) => r.config_raw().as_bytes().to_vec(),
            None => {
                source
                    .read_small_blob(config_desc, &config_what, MAX_CONFIG)
                    .await?
            }
        };
        let config: ImageConfiguration =
            serde_json::from_slice(&config_raw).map_err(|e| StoreError::Unparsable {
                what: format!("{config_what} is not valid JSON"),
                source: Box::new(e),
            })?;
        let diff_ids: Vec<String> = config.rootfs().diff_ids().to_vec();
        if diff_ids.len() != layers.len() {
            return Err(StoreError::Malformed {
                what: config_what,
                why: format!(
                    "lists {} diff_ids but the manifest has {} layers",
                    diff_ids.len(),
                    layers.len()
                ),
            });
        }

        let (layer_verities, fetched) = self
            .import_layers(
                &source,
                layers,
                &compressions,
                &diff_ids,
                &reference,
                &observer,
            )
            .await?;

        tracing::debug!(fetched, "layers imported");
        crate::failpoint::hit("pull:after-layers");
        observer.building_image();
        let naming = self.naming_lock(false)?;
        let repo = self.repo().clone();
        let cfg = config_raw.clone();
        let ref_name = gc_ref_name(&key);
        let ids = diff_ids.clone();
        let store_path = self.sysroot().join(REPO_PATH);
        let index_dir = self.sysroot().join(crate::layer_index::LAYER_INDEX_PATH);
        let image_id = tokio::task::spawn_blocking(move || {
            crate::image::build_image(
                &repo,
                crate::image::BuildPaths {
                    store: &store_path,
                    index_dir: &index_dir,
                },
                &cfg,
                &ids,
                &shown,
                layer_verities,
                &ref_name,
            )
        })
        .await
        .map_err(|e| StoreError::Task {
            step: "building the EROFS image",
            source: e,
        })??;
        crate::failpoint::hit("pull:after-image");

        let record = ImageRecord {
            version: RECORD_VERSION,
            reference: reference.clone(),
            transport: imgref.transport().to_string(),
            manifest_digest: resolved.digest().to_string(),
            index_digest: resolved.index_digest().map(str::to_string),
            config_digest: config_desc.digest().to_string(),
            image_id: image_id.to_hex(),
            layers: layers
                .iter()
                .zip(&diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: l.digest().to_string(),
                    diff_id: d.clone(),
                    media_type: l.media_type().to_string(),
                    size: l.size(),
                })
                .collect(),
            created: config.created().clone(),
            architecture: config.architecture().to_string(),
            os: config.os().to_string(),
            labels: config
                .config()
                .as_ref()
                .and_then(|c| c.labels().clone())
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
            pulled: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            manifest: String::from_utf8(resolved.raw().to_vec()).map_err(|e| {
                StoreError::Unparsable {
                    what: format!("manifest of {reference} is not UTF-8"),
                    source: Box::new(e),
                }
            })?,
            config: String::from_utf8(config_raw).map_err(|e| StoreError::Unparsable {
                what: format!("{config_what} is not UTF-8"),
                source: Box::new(e),
            })?,
            signature: Some(resolved.signature().clone()),
        };
        self.write_record(&record)?;
        crate::failpoint::hit("pull:after-record");
        drop(naming);
        tracing::debug!(image_id = %record.image_id(), "record written");
        Ok(PullOutcome {
            record,
            layers_fetched: fetched,
            layers_reused: layers.len() - fetched,
            up_to_date: false,
        })
    }

    /// Imports the layers not yet in the store, concurrently. Returns the
    /// diff_id → splitstream verity map and how many layers were fetched.
    ///
    /// The layers the store holds are checked ([`reusable`]) while the
    /// ones it lacks already download: an update's check of its reused
    /// layers (a `stat` of every object they name) takes about as long as
    /// fetching its one new layer, and neither needs the other. A stored
    /// layer that fails its check is fetched after the check.
    async fn import_layers(
        &self,
        source: &Arc<Source>,
        layers: &[Descriptor],
        compressions: &[osctl_image::Compression],
        diff_ids: &[String],
        reference: &str,
        observer: &Arc<dyn PullObserver>,
    ) -> Result<(HashMap<Box<str>, Sha256HashValue>, usize), StoreError> {
        let repo = self.repo();
        let store_path = self.sysroot().join(REPO_PATH);
        let shown = layer_names(layers, reference);
        // Looked up before the observer hears of any layer: a bad diff_id
        // or an unreadable store ends the pull before it starts.
        let mut stored = Vec::with_capacity(layers.len());
        for (i, diff_id) in diff_ids.iter().enumerate() {
            let content_id = diff_id_content(diff_id, i, reference)?;
            stored.push(repo.has_stream(&content_id).map_err(|e| StoreError::Repo {
                step: format!("looking up {}", shown[i]),
                path: store_path.clone(),
                source: e,
            })?);
        }
        for (i, desc) in layers.iter().enumerate() {
            observer.layer_started(i, desc.digest().as_ref(), desc.size());
        }

        // Only an optimisation: without it the final sync does all the work.
        let writeback = repo
            .objects_dir()
            .and_then(|objects| Writeback::new(objects.as_fd(), WRITEBACK_STEP));
        let writeback = match writeback {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                tracing::warn!("no early writeback of the store: {e}");
                None
            }
        };
        let mut imports = LayerImports {
            source: source.clone(),
            repo: repo.clone(),
            writeback,
            store_path: store_path.clone(),
            observer: observer.clone(),
            semaphore: Arc::new(tokio::sync::Semaphore::new(LAYER_CONCURRENCY)),
            tasks: tokio::task::JoinSet::new(),
            queued: std::collections::HashSet::new(),
            fetched: 0,
        };
        for (i, diff_id) in diff_ids.iter().enumerate() {
            if stored[i].is_none() {
                imports.spawn(i, &layers[i], compressions[i], diff_id, &shown[i]);
            }
        }

        let present: Vec<(usize, Sha256HashValue)> = stored
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.clone().map(|v| (i, v)))
            .collect();
        let check = {
            let (repo, sysroot, shown) =
                (repo.clone(), self.sysroot().to_path_buf(), shown.clone());
            let present = present.clone();
            tokio::task::spawn_blocking(move || {
                check::in_parallel(present.len(), LAYER_CONCURRENCY, |n| {
                    let (i, v) = &present[n];
                    reusable(&repo, &sysroot, v, &shown[*i])
                })
            })
        };
        let verdicts = check.await.map_err(|e| StoreError::Task {
            step: "checking the stored layers",
            source: e,
        });
        let mut verities: HashMap<Box<str>, Sha256HashValue> = HashMap::new();
        // In layer order: the first failing layer's error decides.
        let mut failed = None;
        match verdicts {
            Ok(verdicts) => {
                for ((i, v), verdict) in present.into_iter().zip(verdicts) {
                    match verdict {
                        Ok(true) => {
                            verities.insert(diff_ids[i].as_str().into(), v);
                            observer.layer_finished(i, true);
                        }
                        Ok(false) => {
                            imports.spawn(i, &layers[i], compressions[i], &diff_ids[i], &shown[i]);
                        }
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => failed = Some(e),
        }
        if failed.is_some() {
            imports.tasks.abort_all();
        }
        let fetched = imports.fetched;

        // Verified layers are registered together after one sync, also when
        // another layer failed: a retried pull then resumes from them.
        let mut verified = Vec::new();
        while let Some(joined) = imports.tasks.join_next().await {
            let joined = match joined {
                Err(e) if e.is_cancelled() && failed.is_some() => continue,
                joined => joined.map_err(|e| StoreError::Task {
                    step: "importing a layer",
                    source: e,
                }),
            };
            match joined.and_then(|j| j) {
                Ok(layer) => verified.push(layer),
                Err(e) => {
                    if failed.is_none() {
                        // The first failure decides; the others are cancelled.
                        imports.tasks.abort_all();
                        failed = Some(e);
                    }
                }
            }
        }
        // The early writeback ends here; the sync in register_layers is
        // the one that counts. (A splitter of an aborted import may still
        // hold it: then its thread ends when that splitter does.) A failed
        // early sync fails the pull: the kernel may not report that error
        // again to the final sync.
        if let Some(writeback) = imports.writeback.take() {
            let early_failure = match Arc::try_unwrap(writeback) {
                Ok(writeback) => {
                    let (early_syncs, failure) =
                        tokio::task::spawn_blocking(move || writeback.finish())
                            .await
                            .map_err(|e| StoreError::Task {
                                step: "stopping the early writeback",
                                source: e,
                            })?;
                    tracing::debug!(early_syncs, "early writeback stopped");
                    failure
                }
                Err(still_held) => still_held.failed(),
            };
            if let Some(e) = early_failure {
                // Nothing is registered; an import's own failure still
                // says why the pull failed first.
                return Err(failed.unwrap_or_else(|| {
                    error::write_error(
                        &store_path,
                        "writing the imported layers back to disk",
                        e.into(),
                    )
                }));
            }
        }
        register_layers(repo, &store_path, &verified).await?;
        if let Some(e) = failed {
            return Err(e);
        }
        for (diff_id, verity, _) in verified {
            verities.insert(diff_id.into(), verity);
        }
        Ok((verities, fetched))
    }
}

/// The imports of one pull's layers: at most [`LAYER_CONCURRENCY`] at
/// once, and one per diff_id (two layers with one diff_id, e.g. two empty
/// layers, import once).
struct LayerImports {
    source: Arc<Source>,
    repo: Arc<crate::import::Repo>,
    writeback: Option<Arc<Writeback>>,
    store_path: std::path::PathBuf,
    observer: Arc<dyn PullObserver>,
    semaphore: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<Result<(String, Sha256HashValue, String), StoreError>>,
    queued: std::collections::HashSet<String>,
    fetched: usize,
}

impl LayerImports {
    /// Starts importing layer `i`, or reports it done when a layer with
    /// its diff_id is already on its way.
    fn spawn(
        &mut self,
        i: usize,
        desc: &Descriptor,
        compression: osctl_image::Compression,
        diff_id: &str,
        what: &str,
    ) {
        if !self.queued.insert(diff_id.to_string()) {
            self.observer.layer_finished(i, true);
            return;
        }
        self.fetched += 1;
        let (source, repo, writeback, observer, sem) = (
            self.source.clone(),
            self.repo.clone(),
            self.writeback.clone(),
            self.observer.clone(),
            self.semaphore.clone(),
        );
        let (desc, diff_id, what) = (desc.clone(), diff_id.to_string(), what.to_string());
        let store_path = self.store_path.clone();
        self.tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let blob = source.open_blob(&desc).await?;
            let obs = observer.clone();
            let verity = import_layer(
                repo,
                writeback,
                &store_path,
                blob,
                compression,
                &diff_id,
                &what,
                Box::new(move |n| obs.layer_progress(i, n)),
            )
            .await?;
            observer.layer_finished(i, false);
            Ok::<_, StoreError>((diff_id, verity, what))
        });
    }
}

/// Whether a layer already in the store can be used as it is: its
/// splitstream reads and every object it names exists with the right
/// size. If not, the damaged pieces are removed (composefs-rs keeps an
/// existing object rather than rewrite it, so a truncated one would
/// survive a re-import) and the caller imports the layer again.
fn reusable(
    repo: &crate::import::Repo,
    sysroot: &std::path::Path,
    verity: &Sha256HashValue,
    what: &str,
) -> Result<bool, StoreError> {
    let store_path = sysroot.join(REPO_PATH);
    let remove = |id: &Sha256HashValue| {
        crate::image::remove_object(repo, id)
            .map_err(|e| error::write_error(&store_path, &format!("repairing {what}"), e))
    };
    let index_dir = sysroot.join(crate::layer_index::LAYER_INDEX_PATH);
    match check::verify_layer(repo, Some(&index_dir), verity) {
        Ok(bad) if bad.is_empty() => Ok(true),
        Ok(bad) => {
            tracing::warn!(
                "{what} is damaged in the store ({}{}); fetching it again",
                bad[0],
                if bad.len() > 1 {
                    format!(" and {} more", bad.len() - 1)
                } else {
                    String::new()
                }
            );
            for b in &bad {
                if !matches!(b.fault, check::Fault::Missing) {
                    remove(&b.id)?;
                }
            }
            Ok(false)
        }
        Err(why) => {
            tracing::warn!(
                "{what} cannot be read from the store ({}); fetching it again",
                error::one_line(&*why)
            );
            remove(verity)?;
            Ok(false)
        }
    }
}

/// Each layer as errors and logs name it: "layer N (digest) of REFERENCE".
fn layer_names(layers: &[Descriptor], reference: &str) -> Vec<String> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| format!("layer {} ({}) of {reference}", i + 1, l.digest()))
        .collect()
}

fn diff_id_content(diff_id: &str, i: usize, reference: &str) -> Result<String, StoreError> {
    let d: oci_spec::image::Digest = diff_id.parse().map_err(|e| StoreError::Unparsable {
        what: format!(
            "config of {reference}: diff_id {} ('{diff_id}') is not a digest",
            i + 1
        ),
        source: Box::new(e),
    })?;
    Ok(composefs_oci::layer_content_id(&d))
}
