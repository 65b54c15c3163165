//! Is a stored image complete? The cheap check behind re-pulls and staging.
//!
//! `fsck` re-hashes every object; this only looks at what exists and how big
//! it is, which is what a deletion or a truncation changes: each layer's
//! splitstream opens and parses (or, for a layer with a valid index,
//! [`crate::layer_index`], exists with the size the index recorded), each
//! object it names exists as a regular file of the size its tar header
//! gives, and the EROFS image opens and parses. A re-pull runs it before saying "up to date" and on every layer it
//! would reuse; `switch` runs it (through [`Store::check_image`]) before it
//! stages anything.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::generic_tree::LeafContent;
use composefs::tree::RegularFile;
use composefs_oci::LAYER_CONTENT_TYPE;
use composefs_oci::tar::{TarEntry, TarItem};
use rustix::fs::{AtFlags, FileType};

use crate::import::Repo;
use crate::layer_index::{self, IndexError, IndexReader, LAYER_INDEX_PATH};
use crate::{BoxError, Damage, ImageRecord, Store, StoreError};

/// Directories whose contents staging copies onto the machine.
const EXPORTED_DIRS: [&str; 2] = ["/etc", "/var"];

/// What is wrong with one object a layer names.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Missing,
    WrongSize { have: u64, want: u64 },
    NotAFile,
}

/// One object a layer needs that is not there intact.
#[derive(Debug, Clone)]
pub(crate) struct BadObject {
    pub id: Sha256HashValue,
    /// A path (in the layer) that uses it.
    pub path: PathBuf,
    pub fault: Fault,
}

impl std::fmt::Display for BadObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = format!(
            "object {} ({})",
            self.id.to_hex(),
            Path::new("/").join(&self.path).display()
        );
        match &self.fault {
            Fault::Missing => write!(f, "{what} is missing"),
            Fault::WrongSize { have, want } if have < want => {
                write!(f, "{what} is truncated: {have} of {want} bytes")
            }
            Fault::WrongSize { have, want } => {
                write!(f, "{what} has {have} bytes instead of {want}")
            }
            Fault::NotAFile => write!(f, "{what} is not a regular file"),
        }
    }
}

/// An object of a layer that cannot even be stat'ed.
#[derive(Debug, thiserror::Error)]
#[error("object {id}")]
pub(crate) struct ObjectUnreadable {
    id: String,
    #[source]
    source: std::io::Error,
}

/// Checks one stored layer. `Err` when its splitstream cannot be read;
/// otherwise the objects it names that are missing or of the wrong size.
///
/// With `index_dir`, a layer with a valid index ([`crate::layer_index`])
/// is checked from it: the splitstream must exist with the size the index
/// recorded (what the check asks of every object too), and the objects
/// are the index's. That spares the splitstream's decompression and tar
/// parse; an index that does not check out is passed over (the next image
/// build makes it again) and the splitstream is read instead.
pub(crate) fn verify_layer(
    repo: &Repo,
    index_dir: Option<&Path>,
    verity: &Sha256HashValue,
) -> Result<Vec<BadObject>, BoxError> {
    let objects = repo.objects_dir()?;
    if let Some(dir) = index_dir {
        match IndexReader::open(dir, verity) {
            Ok(Some(index)) => match verify_indexed(objects.as_fd(), verity, index) {
                Ok(checked) => return checked,
                Err(e) => tracing::warn!("{e}; checking the layer from its splitstream"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; checking the layer from its splitstream"),
        }
    }
    let mut stream = repo.open_stream("", Some(verity), Some(LAYER_CONTENT_TYPE))?;
    let mut bad = Vec::new();
    while let Some(entry) = composefs_oci::tar::get_entry(&mut stream)? {
        check_entry(objects.as_fd(), &entry, &mut bad)?;
    }
    Ok(bad)
}

/// [`verify_layer`] from the layer's index. The outer `Err`: the index
/// does not check out; the inner one is [`verify_layer`]'s.
#[allow(clippy::type_complexity)]
fn verify_indexed(
    objects: BorrowedFd<'_>,
    verity: &Sha256HashValue,
    mut index: IndexReader,
) -> Result<Result<Vec<BadObject>, BoxError>, IndexError> {
    let mut bad = Vec::new();
    while let Some(entry) = index.next_entry()? {
        if let Err(e) = check_entry(objects, &entry, &mut bad) {
            return Ok(Err(e));
        }
    }
    // The whole index checked out: its splitstream size can be trusted.
    match layer_index::stream_size(objects, verity) {
        Ok(size) if size == index.stream_size() => Ok(Ok(bad)),
        Ok(size) => Ok(Err(format!(
            "splitstream {} has {size} bytes, its index says {}",
            verity.to_hex(),
            index.stream_size()
        )
        .into())),
        Err(e) => Ok(Err(Box::new(ObjectUnreadable {
            id: verity.to_hex(),
            source: e.into(),
        }))),
    }
}

/// Notes in `bad` the object `entry` names if it is missing or of the
/// wrong size.
fn check_entry(
    objects: BorrowedFd<'_>,
    entry: &TarEntry<Sha256HashValue>,
    bad: &mut Vec<BadObject>,
) -> Result<(), BoxError> {
    let TarItem::Leaf(LeafContent::Regular(
        RegularFile::External(id, want) | RegularFile::ExternalNoVerity(id, want),
    )) = &entry.item
    else {
        return Ok(());
    };
    let fault =
        match rustix::fs::statat(objects, id.to_object_pathname().as_str(), AtFlags::empty()) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
                Some(Fault::NotAFile)
            }
            Ok(st) if st.st_size as u64 != *want => Some(Fault::WrongSize {
                have: st.st_size as u64,
                want: *want,
            }),
            Ok(_) => None,
            Err(rustix::io::Errno::NOENT) => Some(Fault::Missing),
            Err(e) => {
                return Err(ObjectUnreadable {
                    id: id.to_hex(),
                    source: e.into(),
                }
                .into());
            }
        };
    if let Some(fault) = fault {
        bad.push(BadObject {
            id: id.clone(),
            path: entry.path.clone(),
            fault,
        });
    }
    Ok(())
}

impl Store {
    /// The splitstream verity of `record`'s layer `i`, if registered.
    pub(crate) fn layer_stream(
        &self,
        record: &ImageRecord,
        i: usize,
    ) -> Result<Option<Sha256HashValue>, StoreError> {
        let l = &record.layers()[i];
        let d: oci_spec::image::Digest = l.diff_id.parse().map_err(|e| StoreError::Unparsable {
            what: format!(
                "the record of {}: layer {} has an invalid diff_id {}",
                record.reference(),
                i + 1,
                l.diff_id
            ),
            source: Box::new(e),
        })?;
        self.repo()
            .has_stream(&composefs_oci::layer_content_id(&d))
            .map_err(|e| StoreError::Repo {
                step: format!("looking up layer {} of {}", i + 1, record.reference()),
                path: self.sysroot().join(crate::REPO_PATH),
                source: e,
            })
    }

    /// Existence-and-size check of everything `record` needs: its EROFS
    /// image and every layer with every object the layers name. The error
    /// names the image and the first thing found missing or damaged, in
    /// the order the EROFS image, then the layers, are listed.
    ///
    /// The EROFS image and each layer are checked in parallel, on up to as
    /// many threads as there are cores: the checks share nothing, and the
    /// work (parsing streams, one `stat` per object, ~13k for a Debian
    /// system) is most of a no-op re-pull's time. Every check still runs;
    /// only the wall time changes.
    pub(crate) fn verify_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let damaged = |damage: Damage| StoreError::Damaged {
            image: record.reference().to_string(),
            damage,
        };
        // The stream of each layer, looked up (cheaply) before the work is
        // shared out; its errors are reported in order with the rest.
        let streams: Vec<Result<Option<Sha256HashValue>, StoreError>> = (0..record.layers().len())
            .map(|i| self.layer_stream(record, i))
            .collect();
        let repo = self.repo();
        let index_dir = self.sysroot().join(LAYER_INDEX_PATH);
        // Task 0 is the EROFS image, task i + 1 layer i.
        let results = in_parallel(
            streams.len() + 1,
            usize::MAX,
            |task| -> Result<(), StoreError> {
                let Some(i) = task.checked_sub(1) else {
                    return match repo.objects_for_image(record.image_id()) {
                        Ok(_) => Ok(()),
                        Err(e) => Err(damaged(Damage::ImageUnreadable {
                            id: record.image_id().to_string(),
                            source: e,
                        })),
                    };
                };
                let layer = format!("layer {} ({})", i + 1, record.layers()[i].digest);
                let verity = match &streams[i] {
                    Ok(Some(verity)) => verity,
                    Ok(None) => return Err(damaged(Damage::LayerMissing { layer })),
                    Err(_) => return Ok(()), // reported from `streams` below
                };
                match verify_layer(repo, Some(&index_dir), verity) {
                    Err(source) => Err(damaged(Damage::LayerUnreadable { layer, source })),
                    Ok(bad) if !bad.is_empty() => Err(damaged(Damage::BadObjects {
                        layer,
                        first: bad[0].to_string(),
                        more: bad.len() - 1,
                    })),
                    Ok(_) => Ok(()),
                }
            },
        );
        let mut results = results.into_iter();
        results.next().expect("task 0 ran")?;
        for (stream, result) in streams.into_iter().zip(results) {
            stream?;
            result?;
        }
        Ok(())
    }

    /// Everything the store can tell before `record`'s image is staged,
    /// without writing anything: its objects, layers and EROFS image are
    /// present and of the right size, and `/etc` and `/var` hold nothing
    /// [`crate::ImageTree::export`] refuses (device nodes). The error is one
    /// line naming the image and the first problem.
    pub fn check_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        self.verify_image(record)?;
        let tree = self.image_tree(record)?;
        for dir in EXPORTED_DIRS {
            tree.check_exportable(Path::new(dir))?;
        }
        Ok(())
    }
}

/// Runs `work(0)` … `work(n - 1)` on up to as many threads as there are
/// cores and at most `at_most` (the calling one included), and returns the
/// results in task order. For blocking work that shares nothing; a panic
/// in a task is a panic here.
pub(crate) fn in_parallel<T: Send>(
    n: usize,
    at_most: usize,
    work: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(at_most)
        .min(n);
    if workers <= 1 {
        return (0..n).map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let run = || {
        loop {
            let task = next.fetch_add(1, Ordering::Relaxed);
            if task >= n {
                break;
            }
            let result = work(task);
            *slots[task]
                .lock()
                .expect("a slot is locked by its one task only") = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(run);
        }
        run();
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("a slot is locked by its one task only")
                .expect("every task ran: the workers stop only when none is left")
        })
        .collect()
}
