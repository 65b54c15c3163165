//! Reading and writing the record files, `sysroot/osctl/images/<key>.json`.
//!
//! One unreadable record (truncated by a crash of something else, edited by
//! hand, written by a newer osctl) must not take the whole store down:
//! [`Store::scan_records`] returns the good records and names the bad files,
//! listing commands skip the bad ones with a warning, `fsck` reports them,
//! and `image rm REF` or a re-pull of the reference replaces the file. A bad
//! record still counts as *present* for `gc`: its GC roots stay until it is
//! removed or replaced, so nothing its image needs is collected meanwhile.

use std::io::Write;
use std::path::PathBuf;

use osctl_image::ImageRef;

use crate::record::{ImageRecord, is_hex_id, record_key};
use crate::{RECORDS_PATH, Store, StoreError, atomic};

/// Suffix of record files.
const RECORD_SUFFIX: &str = ".json";

/// A record file that cannot be used.
#[derive(Debug, Clone)]
pub struct BrokenRecord {
    /// The file, under the sysroot.
    pub path: PathBuf,
    /// Its key (the file name without `.json`), when the name has the form
    /// of one: the key of the reference it was written for.
    pub key: Option<String>,
    /// Why it cannot be used.
    pub why: String,
}

impl std::fmt::Display for BrokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {}: {}", self.path.display(), self.why)
    }
}

/// Every record file, sorted into usable and broken ones.
#[derive(Debug, Clone, Default)]
pub struct RecordScan {
    /// Usable records, sorted by reference.
    pub records: Vec<ImageRecord>,
    pub broken: Vec<BrokenRecord>,
}

impl RecordScan {
    /// Keys that have a record file, usable or not: the keys whose GC roots
    /// `gc` must keep.
    pub fn present_keys(&self) -> std::collections::HashSet<String> {
        self.records
            .iter()
            .map(ImageRecord::key)
            .chain(self.broken.iter().filter_map(|b| b.key.clone()))
            .collect()
    }
}

impl Store {
    /// Reads every record file. Fails only when the directory itself cannot
    /// be read; a bad file is listed in [`RecordScan::broken`].
    pub fn scan_records(&self) -> Result<RecordScan, StoreError> {
        let dir_path = self.sysroot().join(RECORDS_PATH);
        let io = |path: PathBuf, e: std::io::Error| StoreError::Io {
            step: "listing",
            path,
            source: e,
        };
        let mut scan = RecordScan::default();
        for entry in self
            .records_dir()
            .entries()
            .map_err(|e| io(dir_path.clone(), e))?
        {
            let entry = entry.map_err(|e| io(dir_path.clone(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(RECORD_SUFFIX) else {
                continue;
            };
            if name.starts_with(atomic::TMP_PREFIX) {
                continue;
            }
            match self.read_record_file(&name) {
                Ok(record) => scan.records.push(record),
                Err(why) => scan.broken.push(BrokenRecord {
                    path: dir_path.join(&name),
                    key: is_hex_id(stem).then(|| stem.to_string()),
                    why,
                }),
            }
        }
        scan.records
            .sort_by(|a, b| a.reference().cmp(b.reference()));
        scan.broken.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(scan)
    }

    /// Every usable image, sorted by reference. Unusable record files are
    /// skipped with a warning on stderr (`fsck` reports them).
    pub fn records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let scan = self.scan_records()?;
        warn_broken(&scan.broken);
        Ok(scan.records)
    }

    /// The record for `imgref`, if it was pulled and its record is usable.
    /// An unusable record of `imgref` reads as absent, with a warning: a
    /// pull of `imgref` then replaces it.
    pub fn find(&self, imgref: &ImageRef) -> Result<Option<ImageRecord>, StoreError> {
        let reference = imgref.to_string();
        let name = record_file(&record_key(&reference));
        match self.records_dir().try_exists(&name) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => {
                return Err(StoreError::Io {
                    step: "looking for",
                    path: self.sysroot().join(RECORDS_PATH).join(&name),
                    source: e,
                });
            }
        }
        match self.read_record_file(&name) {
            Ok(record) => Ok(Some(record)),
            Err(why) => {
                warn_broken(&[BrokenRecord {
                    path: self.sysroot().join(RECORDS_PATH).join(&name),
                    key: Some(record_key(&reference)),
                    why,
                }]);
                Ok(None)
            }
        }
    }

    /// Like [`Self::find`], but a missing image is an error.
    pub fn get(&self, imgref: &ImageRef) -> Result<ImageRecord, StoreError> {
        self.find(imgref)?
            .ok_or_else(|| StoreError::NotInStore(imgref.to_string()))
    }

    /// Parses one record file; the error says why it cannot be used.
    fn read_record_file(&self, name: &str) -> Result<ImageRecord, String> {
        let data = self.records_dir().read(name).map_err(|e| e.to_string())?;
        let record: ImageRecord =
            serde_json::from_slice(&data).map_err(|e| format!("unreadable: {e}"))?;
        let expected = record_file(&record.key());
        if name != expected {
            return Err(format!(
                "names {} (whose record is {expected}); a record must be stored under its reference's key",
                record.reference()
            ));
        }
        Ok(record)
    }

    pub(crate) fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let mut data = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Encode {
            reference: record.reference().to_string(),
            source: e,
        })?;
        data.write_all(b"\n").expect("writing to a Vec cannot fail");
        atomic::write_atomic(self.records_dir(), &record_file(&record.key()), &data).map_err(|e| {
            crate::error::write_error(
                &self.sysroot().join(RECORDS_PATH),
                &format!("writing the record of {}", record.reference()),
                e,
            )
        })
    }
}

/// The file name of the record with `key`.
pub(crate) fn record_file(key: &str) -> String {
    format!("{key}{RECORD_SUFFIX}")
}

fn warn_broken(broken: &[BrokenRecord]) {
    for b in broken {
        tracing::warn!(
            "skipping {b} (osctl fsck reports it; `osctl image rm` or a re-pull of its reference replaces it)"
        );
    }
}
