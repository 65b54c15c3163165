//! `Store::check_image`, which `switch` runs before staging: an image whose
//! objects are missing or truncated is refused with one line naming the
//! image and the first bad object, and an intact image passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{ImageRecord, Silent, Store};
use osctl_testutil::{Entry, ImageSpec, Layer};

const MARK_SIZE: u64 = 30_011;

/// The error and its causes on one line, as the CLI prints them.
fn chain(e: osctl_store::StoreError) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

async fn pulled(dir: &Path) -> (Store, ImageRecord) {
    let layout = dir.join("layout");
    let spec = ImageSpec::new(vec![
        Layer::new(vec![Entry::file("etc/motd", "hi\n")]),
        Layer::new(vec![Entry::file(
            "usr/share/mark",
            vec![b'm'; MARK_SIZE as usize],
        )]),
    ]);
    osctl_testutil::write_layout(&layout, "v1", &spec).unwrap();
    let sysroot = dir.join("root");
    std::fs::create_dir(&sysroot).unwrap();
    let store = Store::open_or_create(&sysroot).unwrap();
    let imgref = ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap();
    let outcome = store
        .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    (store, outcome.record().clone())
}

fn mark_object(sysroot: &Path) -> (PathBuf, String) {
    let objects = sysroot.join("root/sysroot/composefs/objects");
    for sub in std::fs::read_dir(&objects).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap();
            if f.metadata().unwrap().len() == MARK_SIZE {
                let p = f.path();
                let hex = format!(
                    "{}{}",
                    p.parent().unwrap().file_name().unwrap().to_string_lossy(),
                    p.file_name().unwrap().to_string_lossy()
                );
                return (p, hex);
            }
        }
    }
    panic!("no object of {MARK_SIZE} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_truncated_objects_are_refused_by_name() {
    type Damage = fn(&Path);
    let cases: [(Damage, String); 2] = [
        (
            |p| std::fs::remove_file(p).unwrap(),
            "is missing".to_string(),
        ),
        (
            |p| std::fs::write(p, vec![b'm'; 100]).unwrap(),
            format!("is truncated: 100 of {MARK_SIZE} bytes"),
        ),
    ];
    for (damage, fault) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (store, record) = pulled(dir.path()).await;
        store.check_image(&record).unwrap();
        let (object, hex) = mark_object(dir.path());
        damage(&object);
        let err = chain(store.check_image(&record).unwrap_err());
        assert_eq!(err.lines().count(), 1, "{err}");
        let expected = format!(
            "image {0} is damaged (see `osctl fsck`; `osctl image pull {0}` repairs it): \
             layer 2 ({1}): object {hex} (/usr/share/mark) {fault}",
            record.reference(),
            record.layers()[1].digest
        );
        assert!(err.starts_with(&expected), "{err}\nwant: {expected}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_erofs_image_or_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, record) = pulled(dir.path()).await;
    let repo = dir.path().join("root/sysroot/composefs");
    let layer = repo.join(format!("streams/oci-layer-{}", record.layers()[0].diff_id));
    std::fs::remove_file(&layer).unwrap();
    let err = chain(store.check_image(&record).unwrap_err());
    assert!(
        err.contains(&format!(
            "layer 1 ({}) is missing from the store",
            record.layers()[0].digest
        )),
        "{err}"
    );
    let image = repo.join("images").join(record.image_id());
    std::fs::remove_file(&image).unwrap();
    let err = chain(store.check_image(&record).unwrap_err());
    assert!(
        err.contains(&format!(
            "its EROFS image {} cannot be read",
            record.image_id()
        )),
        "{err}"
    );
}
