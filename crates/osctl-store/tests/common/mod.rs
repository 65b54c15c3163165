//! What several store tests start from: a scratch sysroot whose store holds
//! one small image, pulled from an OCI layout.

use std::path::PathBuf;
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{Silent, Store};
use osctl_testutil::{Entry, ImageSpec, Layer};

/// A sysroot with one image pulled into its store.
pub struct PulledStore {
    /// Holds the layout and the sysroot; both go with it.
    pub dir: tempfile::TempDir,
    pub sysroot: PathBuf,
    pub store: Store,
    /// `oci:<layout>:v1`, one layer holding `usr/ok`.
    pub imgref: ImageRef,
}

impl PulledStore {
    pub async fn new() -> PulledStore {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("usr/ok", "fine\n")])]);
        osctl_testutil::write_layout(&layout, "v1", &spec).unwrap();
        let sysroot = dir.path().join("root");
        std::fs::create_dir(&sysroot).unwrap();
        let store = Store::open_or_create(&sysroot).unwrap();
        let imgref = ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap();
        store
            .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
            .await
            .unwrap();
        PulledStore {
            dir,
            sysroot,
            store,
            imgref,
        }
    }
}
