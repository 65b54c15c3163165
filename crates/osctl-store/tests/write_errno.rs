//! A program tells a full store from a read-only one by walking the error's
//! `source()` chain down to the `io::Error` and its errno, not by reading
//! text; and the same error still renders as one line the way the CLI
//! prints it (anyhow's `{:#}`). If `StoreError::Write` dropped its source
//! (or formatted it into its text) the errno would not be found.
//!
//! Real filesystems, not injected errors: a size-limited tmpfs filled up,
//! and one remounted read-only, so the kernel itself says `ENOSPC` and
//! `EROFS` (needs root, like the rest of the store's fault tests).

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{Silent, Store, StoreError};
use osctl_testutil::{Entry, ImageSpec, Layer, ScratchFs};

const MIB: u64 = 1024 * 1024;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;

/// The first errno on the chain from `e` down through `source()`.
fn errno(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(n) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(n);
        }
        cur = c.source();
    }
    None
}

fn image(dir: &Path, tag: &str) -> ImageRef {
    let mut entries = vec![Entry::dir("usr"), Entry::dir("usr/share")];
    for i in 0..50 {
        entries.push(Entry::file(
            &format!("usr/share/{tag}-{i}"),
            format!("{tag} {i}\n").repeat(200),
        ));
    }
    entries.push(Entry::large_file("usr/share/big", 2 * MIB, 7));
    let spec = ImageSpec::new(vec![Layer::new(entries)]);
    let layout = dir.join(tag);
    osctl_testutil::write_layout(&layout, "v1", &spec).unwrap();
    ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap()
}

fn pull(store: &Store, imgref: &ImageRef) -> Result<(), StoreError> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.pull(imgref, &FetchOptions::default(), Arc::new(Silent)))
        .map(drop)
}

#[test]
fn full_and_read_only_stores_are_told_apart_by_errno() {
    type Break = fn(&ScratchFs);
    let cases: [(&str, Break, i32, &str); 2] = [
        (
            "full",
            |fs| {
                fs.fill("filler", 0).unwrap();
            },
            ENOSPC,
            "No space left on device",
        ),
        (
            "read-only",
            |fs| fs.remount(true).unwrap(),
            EROFS,
            "Read-only file system",
        ),
    ];
    let layouts = osctl_testutil::tempdir();
    let first = image(layouts.path(), "first");
    let second = image(layouts.path(), "second");
    for (name, break_it, want, text) in cases {
        let fs = ScratchFs::tmpfs(32 * MIB).unwrap();
        let store = Store::open_or_create(fs.path()).unwrap();
        pull(&store, &first).unwrap();
        break_it(&fs);

        let err = pull(&store, &second).expect_err(name);
        assert!(matches!(err, StoreError::Write { .. }), "{name}: {err:?}");
        assert_eq!(errno(&err), Some(want), "{name}: {err:?}");
        // The errno is the source, not part of the error's own text.
        assert!(!err.to_string().contains(text), "{name}: {err}");

        let line = format!("{:#}", anyhow::Error::from(err));
        assert!(!line.contains('\n'), "{name}: {line}");
        assert!(
            line.contains(&format!("writing to the store at {}", fs.path().display())),
            "{name}: {line}"
        );
        assert!(
            line.ends_with(&format!("{text} (os error {want})")),
            "{name}: {line}"
        );
        // Nothing was recorded for the refused pull.
        assert_eq!(store.records().unwrap().len(), 1, "{name}");
    }
}
