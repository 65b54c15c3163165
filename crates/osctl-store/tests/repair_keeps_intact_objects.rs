//! `fsck --repair` removes what was damaged at rest, and nothing else. An
//! EROFS image is an object named by its own fs-verity digest: when the
//! digest still matches, the bytes are exactly what was written, and an
//! image composefs-rs cannot parse (a stricter parser than the one that
//! wrote it, say) is reported, never deleted — it may be all a deployment
//! boots from, and a re-pull by another writer would not give the same id.

use std::path::Path;
use std::sync::Arc;

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, compute_verity};
use osctl_image::FetchOptions;
use osctl_store::Silent;

mod common;
use common::PulledStore;

/// Stores `bytes` as an intact object and links it as image and as the
/// image of deployment `deployment`. Returns the object's path.
fn intact_image_of_deployment(repo: &Path, bytes: &[u8], deployment: &str) -> std::path::PathBuf {
    let id: Sha256HashValue = compute_verity(bytes);
    let object = repo.join("objects").join(id.to_object_pathname());
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, bytes).unwrap();
    let hex = id.to_hex();
    std::os::unix::fs::symlink(
        Path::new("../objects").join(id.to_object_pathname()),
        repo.join("images").join(&hex),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("images/refs/deploy")).unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../").join(&hex),
        repo.join("images/refs/deploy").join(deployment),
    )
    .unwrap();
    object
}

#[tokio::test(flavor = "multi_thread")]
async fn an_intact_image_the_parser_refuses_is_reported_not_removed() {
    let PulledStore {
        dir: _dir,
        sysroot,
        store,
        ..
    } = PulledStore::new().await;
    let repo = sysroot.join("sysroot/composefs");
    let object = intact_image_of_deployment(
        &repo,
        b"bytes this composefs-rs does not parse as EROFS",
        &"e".repeat(64),
    );

    let (report, repair) = store.repair().await.unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("image")),
        "fsck reports the image: {:?}",
        report.problems
    );
    assert!(
        object.exists(),
        "the intact image object was removed: {repair:?}"
    );
    assert!(repair.objects_removed.is_empty(), "{repair:?}");
    assert!(
        repair
            .to_repull
            .contains(&"deployment eeeeeeeeeeee".to_string()),
        "{repair:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_image_object_is_removed_and_rebuilt_by_a_re_pull() {
    let PulledStore {
        dir: _dir,
        sysroot,
        store,
        imgref,
    } = PulledStore::new().await;
    let opts = FetchOptions::default();
    let pull = || store.pull(&imgref, &opts, Arc::new(Silent));
    let id = store.get(&imgref).unwrap().image_id().to_string();
    let link = sysroot.join("sysroot/composefs/images").join(&id);
    let object = link
        .parent()
        .unwrap()
        .join(std::fs::read_link(&link).unwrap());
    let bytes = std::fs::read(&object).unwrap();
    std::fs::write(&object, &bytes[..bytes.len() / 2]).unwrap();

    let (_, repair) = store.repair().await.unwrap();
    assert!(!object.exists(), "{repair:?}");
    assert_eq!(repair.to_repull, [imgref.to_string()]);
    pull().await.unwrap();
    assert_eq!(std::fs::read(&object).unwrap(), bytes);
    assert!(store.fsck().await.unwrap().is_ok());
}
