//! Creating a store probes fs-verity once and fixes the store's mode
//! forever, so only "this filesystem has no fs-verity" may make it
//! insecure; any other failure of the probe refuses to create the store
//! (issue 9, #9). The host kernel has no fs-verity: the insecure path is
//! the one that works here; the failures are real ones (a read-only and a
//! full filesystem) or an obstacle where the probe writes its scratch file.

use osctl_store::{Store, VerityMode};
use osctl_testutil::ScratchFs;

const MIB: u64 = 1024 * 1024;

/// The error and its causes on one line, as the CLI prints them.
fn chain(e: osctl_store::StoreError) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

fn no_store_created(sysroot: &std::path::Path) {
    assert!(!sysroot.join("sysroot/composefs/meta.json").exists());
    assert!(!sysroot.join("sysroot/osctl/images").exists());
}

#[test]
fn a_filesystem_without_verity_makes_an_insecure_store() {
    let fs = ScratchFs::tmpfs(16 * MIB).unwrap();
    let store = Store::open_or_create(fs.path()).unwrap();
    assert_eq!(store.verity(), VerityMode::Insecure);
    let leftovers: Vec<_> = std::fs::read_dir(fs.path().join("sysroot"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "composefs and osctl only: {leftovers:?}"
    );
}

#[test]
fn a_failed_probe_refuses_to_create_the_store() {
    // The probe's scratch file cannot be written: a directory is in its way.
    let dir = tempfile::tempdir().unwrap();
    let probe = dir
        .path()
        .join(format!("sysroot/.verity-probe-{}", std::process::id()));
    std::fs::create_dir_all(&probe).unwrap();
    let err = Store::open_or_create(dir.path()).err().expect("refused");
    let msg = chain(err);
    assert!(
        msg.contains(&format!(
            "cannot create a store at {}",
            dir.path().join("sysroot").display()
        )) && msg.contains("probing fs-verity support failed: Is a directory"),
        "{msg}"
    );
    no_store_created(dir.path());

    // A read-only filesystem.
    let ro = ScratchFs::tmpfs(16 * MIB).unwrap();
    std::fs::create_dir(ro.path().join("sysroot")).unwrap();
    ro.remount(true).unwrap();
    let msg = chain(Store::open_or_create(ro.path()).err().expect("refused"));
    assert!(
        msg.contains("probing fs-verity support failed: Read-only file system"),
        "{msg}"
    );
    no_store_created(ro.path());

    // A full one.
    let full = ScratchFs::tmpfs(16 * MIB).unwrap();
    full.fill("filler", 0).unwrap();
    let msg = chain(Store::open_or_create(full.path()).err().expect("refused"));
    assert!(
        msg.contains("probing fs-verity support failed: No space left on device"),
        "{msg}"
    );
    no_store_created(full.path());
    assert_eq!(msg.lines().count(), 1);
}
