//! Deployment GC roots: `images/refs/deploy/<id>` and `streams/refs/deploy/<id>`.
//!
//! One per deployment, so an image stays in the store while a deployment
//! boots it, whatever happens to the reference it was pulled as (re-pulled
//! to a newer digest, or removed with `image rm`).

use std::path::Path;

use crate::record::is_hex_id;
use crate::{ImageRecord, REPO_PATH, Store, StoreError};

/// Where deployment GC roots live (relative to the repository).
const DEPLOY_REF_DIRS: [&str; 2] = ["streams/refs/deploy", "images/refs/deploy"];

impl Store {
    /// Roots `record`'s image (EROFS, config, layers) under `name` (a
    /// deployment id: 64 lowercase hex digits), so `gc` keeps it until
    /// [`Store::remove_root`].
    pub fn add_root(&self, name: &str, record: &ImageRecord) -> Result<(), StoreError> {
        check_root_name(name)?;
        let bad = |e: anyhow::Error| StoreError::Repo {
            step: format!("rooting deployment {name}"),
            path: self.sysroot().join(REPO_PATH),
            source: e,
        };
        self.repo()
            .symlink(
                format!("images/refs/deploy/{name}"),
                format!("images/{}", record.image_id()),
            )
            .map_err(bad)?;
        self.repo()
            .name_stream(
                &format!("oci-config-{}", record.config_digest()),
                &format!("deploy/{name}"),
            )
            .map_err(bad)?;
        Ok(())
    }

    /// Drops the root named `name`; a missing root is not an error.
    pub fn remove_root(&self, name: &str) -> Result<(), StoreError> {
        check_root_name(name)?;
        let repo_dir = self.repo_dir()?;
        for d in DEPLOY_REF_DIRS {
            let p = Path::new(d).join(name);
            match repo_dir.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        step: "removing",
                        path: self.sysroot().join(REPO_PATH).join(p),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Names of the deployment roots present. A name that is not a
    /// deployment id is left out (`fsck` reports it).
    pub fn roots(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .root_names()?
            .into_iter()
            .filter(|n| is_hex_id(n))
            .collect())
    }

    /// The EROFS image id the deployment root `id` names, read from the
    /// link text (the image itself may be gone); `None` when there is no
    /// such root or its link does not end in an image id.
    pub(crate) fn root_image(&self, id: &str) -> Result<Option<String>, StoreError> {
        let link = Path::new(DEPLOY_REF_DIRS[1]).join(id);
        match self.repo_dir()?.read_link(&link) {
            Ok(target) => Ok(target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| is_hex_id(n))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                step: "reading the link",
                path: self.sysroot().join(REPO_PATH).join(link),
                source: e,
            }),
        }
    }

    /// Every name under `images/refs/deploy`, valid or not, sorted.
    pub(crate) fn root_names(&self) -> Result<Vec<String>, StoreError> {
        let repo_dir = self.repo_dir()?;
        let dir = match repo_dir.open_dir(DEPLOY_REF_DIRS[1]) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    step: "opening",
                    path: self.sysroot().join(REPO_PATH).join(DEPLOY_REF_DIRS[1]),
                    source: e,
                });
            }
        };
        let listing = |e: std::io::Error| StoreError::Io {
            step: "listing",
            path: self.sysroot().join(REPO_PATH).join(DEPLOY_REF_DIRS[1]),
            source: e,
        };
        let mut names = Vec::new();
        for entry in dir.entries().map_err(listing)? {
            let entry = entry.map_err(listing)?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

fn check_root_name(name: &str) -> Result<(), StoreError> {
    if !is_hex_id(name) {
        return Err(StoreError::BadRootName(name.to_string()));
    }
    Ok(())
}
