//! A scratch sysroot with a real store, a boot dir, and images pulled from
//! OCI layouts written by osctl-testutil.
#![allow(dead_code, clippy::new_without_default)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use osctl_deploy::layout::DeploymentId;
use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{ImageTree, Silent, Store};
use osctl_testutil::{Entry, ImageSpec, Layer};
use sha2::{Digest, Sha256};

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub store: Store,
    pub boot_path: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = osctl_testutil::tempdir();
        let sysroot = tmp.path().join("root");
        let boot_path = tmp.path().join("boot");
        fs::create_dir(&sysroot).unwrap();
        fs::create_dir(&boot_path).unwrap();
        let store = Store::open_or_create(&sysroot).unwrap();
        Env {
            tmp,
            store,
            boot_path,
        }
    }

    /// A fresh handle on the boot dir.
    pub fn boot(&self) -> Dir {
        Dir::open_ambient_dir(&self.boot_path, ambient_authority()).unwrap()
    }

    /// Writes a one-layer image as `oci:<tmp>/layouts/<tag>:<tag>`, pulls
    /// it, and returns its reference and tree.
    pub async fn image(&self, tag: &str, entries: Vec<Entry>) -> (String, ImageTree) {
        let layout = self.tmp.path().join("layouts").join(tag);
        let spec = ImageSpec::new(vec![Layer::new(entries)]);
        osctl_testutil::write_layout(&layout, tag, &spec).unwrap();
        let imgref = ImageRef::parse(&format!("oci:{}:{tag}", layout.display())).unwrap();
        let outcome = self
            .store
            .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
            .await
            .unwrap();
        let record = outcome.record();
        let tree = self.store.image_tree(record).unwrap();
        (record.reference().to_string(), tree)
    }

    /// Digest-named directories under `<boot>/osctl`, sorted.
    pub fn kernel_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.boot_path.join("osctl"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        names.sort();
        names
    }

    /// No `.tmp-*` name anywhere in the boot dir.
    pub fn assert_no_temporaries(&self) {
        fn walk(dir: &Path) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                assert!(
                    !name.starts_with(".tmp-"),
                    "leftover {}",
                    e.path().display()
                );
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path());
                }
            }
        }
        walk(&self.boot_path);
    }
}

/// `/usr/lib/modules/<version>/{vmlinuz,initramfs.img}`.
pub fn kernel(version: &str, vmlinuz: &[u8], initramfs: &[u8]) -> Vec<Entry> {
    let dir = format!("usr/lib/modules/{version}");
    vec![
        Entry::file(&format!("{dir}/vmlinuz"), vmlinuz),
        Entry::file(&format!("{dir}/initramfs.img"), initramfs),
        Entry::file(&format!("{dir}/modules.dep"), ""),
    ]
}

/// sha256 (hex) over the parts in order.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A deployment id of 64 `c`s.
pub fn id(c: char) -> DeploymentId {
    DeploymentId::parse(&c.to_string().repeat(64)).unwrap()
}
