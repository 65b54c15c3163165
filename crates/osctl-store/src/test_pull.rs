//! For the store's unit tests: a fresh store in a temporary directory with
//! one test image pulled into it from an OCI layout, as a machine pulls.

use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_testutil::{ImageSpec, Layer};

use crate::{ImageRecord, Silent, Store};

/// What [`pull_layers`] made; the directory lives as long as this does.
pub(crate) struct Pulled {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub imgref: ImageRef,
    pub record: ImageRecord,
}

/// A new store with the image of `layers` pulled (tag `v1` of a layout
/// beside it); `name` names the image in a failed pull's panic.
pub(crate) async fn pull_layers(name: &str, layers: Vec<Layer>) -> Pulled {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    osctl_testutil::write_layout(&layout, "v1", &ImageSpec::new(layers)).unwrap();
    let sysroot = dir.path().join("root");
    std::fs::create_dir(&sysroot).unwrap();
    let store = Store::open_or_create(&sysroot).unwrap();
    let imgref = ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap();
    let outcome = store
        .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
        .await
        .unwrap_or_else(|e| panic!("pulling {name}: {e}"));
    let record = outcome.record().clone();
    Pulled {
        dir,
        store,
        imgref,
        record,
    }
}
