//! Layer indexes that do not check out are refused by name and made again
//! from the splitstream; fsck reports them, `--repair` and gc remove them.

use std::path::{Path, PathBuf};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use osctl_image::ImageRef;
use osctl_testutil::images;

use super::{HEADER_LEN, LAYER_INDEX_PATH, check, index_path};
use crate::{ImageRecord, Store};

/// A store with the edge-case image pulled (which indexes its layers).
async fn pulled() -> (tempfile::TempDir, Store, ImageRef, ImageRecord) {
    let p = crate::test_pull::pull_layers("the edge-case image", images::edge_case_layers()).await;
    (p.dir, p.store, p.imgref, p.record)
}

/// The image built from the indexes (`Some`) or the splitstreams.
fn image(store: &Store, record: &ImageRecord, indexes: bool) -> Vec<u8> {
    let (diff_ids, shown, layers) = store.layer_inputs(record).unwrap();
    let dir = store.sysroot().join(LAYER_INDEX_PATH);
    let dir = indexes.then_some(dir.as_path());
    let mut tree =
        crate::image::build_compact(store.repo(), dir, &diff_ids, &shown, &layers).unwrap();
    let mut bytes = Vec::new();
    crate::erofs_write::write_image(&mut tree, &mut bytes).unwrap();
    bytes
}

/// The top layer's index file and splitstream.
fn top_index(store: &Store, record: &ImageRecord) -> (PathBuf, Sha256HashValue) {
    let verity = store
        .layer_stream(record, record.layers().len() - 1)
        .unwrap()
        .unwrap();
    let path = index_path(&store.sysroot().join(LAYER_INDEX_PATH), &verity);
    (path, verity)
}

fn damage(path: &Path, how: fn(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    how(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// Byte offset of the first entry's first path byte (or, for an empty
/// path, its mode): after the header, the record length and the tag.
const FIRST_PATH_BYTE: usize = HEADER_LEN + 4 + 1 + 4;

type Damage = (&'static str, fn(&mut Vec<u8>), &'static str);

const DAMAGES: [Damage; 7] = [
    ("empty", |b| b.clear(), "cannot read its header"),
    (
        "another splitstream size in the header",
        |b| b[48] ^= 1,
        "its content does not match its digest",
    ),
    (
        "bad magic",
        |b| b[0] ^= 0xff,
        "not a layer index (bad magic)",
    ),
    (
        "another version",
        |b| b[8..12].copy_from_slice(&2u32.to_le_bytes()),
        "format version 2, this osctl reads 1",
    ),
    ("another layer's", |b| b[16] ^= 1, "made for splitstream "),
    (
        "a flipped byte",
        |b| b[FIRST_PATH_BYTE] ^= 0x20,
        "its content does not match its digest",
    ),
    (
        "truncated",
        |b| b.truncate(b.len() - 3),
        "truncated: failed to fill whole buffer",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn damaged_indexes_are_refused_by_name_and_made_again() {
    for (name, how, why) in DAMAGES {
        let (_dir, store, _imgref, record) = pulled().await;
        let want = image(&store, &record, false);
        let (path, verity) = top_index(&store, &record);
        assert!(check(&path, &verity).is_ok(), "{name}: the pull's index");
        damage(&path, how);
        let err = check(&path, &verity).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("layer index {}: ", path.display())) && err.contains(why),
            "{name}: {err}"
        );
        // The build refuses it, reads the splitstream, and writes it again.
        assert!(image(&store, &record, true) == want, "{name}: the image");
        check(&path, &verity).unwrap_or_else(|e| panic!("{name}: not made again: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fsck_reports_bad_and_orphaned_indexes_and_repair_and_gc_remove_them() {
    let (_dir, store, imgref, record) = pulled().await;
    let report = store.fsck().await.unwrap();
    assert!(
        !report.problems.iter().any(|p| p.contains("layer index")),
        "{:?}",
        report.problems
    );
    let (path, _) = top_index(&store, &record);
    damage(&path, |b| b[FIRST_PATH_BYTE] ^= 0x20);
    let orphan = index_path(
        path.parent().unwrap(),
        &Sha256HashValue::from_hex("ab".repeat(32)).unwrap(),
    );
    std::fs::copy(&path, &orphan).unwrap();
    let report = store.fsck().await.unwrap();
    let mut ours: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| p.contains("layer index"))
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        [
            &format!(
                "layer index {}: its content does not match its digest (`fsck --repair` removes it; the next pull makes it again)",
                path.display()
            ),
            &format!(
                "layer index {}: its splitstream is not in the store (`osctl gc` removes it)",
                orphan.display()
            ),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let (_, repair) = store.repair().await.unwrap();
    let mut removed = repair.indexes_removed.clone();
    removed.sort();
    let mut want = vec![path.display().to_string(), orphan.display().to_string()];
    want.sort();
    assert_eq!(removed, want);
    assert!(!path.exists() && !orphan.exists());

    // The next build makes the removed index again; gc removes the indexes
    // of the layers it removes.
    let want = image(&store, &record, false);
    assert!(image(&store, &record, true) == want);
    assert!(path.exists());
    std::fs::copy(&path, &orphan).unwrap();
    store.gc().unwrap();
    assert!(!orphan.exists(), "gc removes an index without its layer");
    assert!(path.exists(), "gc keeps the index of a layer in use");
    store.remove(&imgref).unwrap();
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "after rm: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reuse_check_reads_the_index_and_still_sees_damage() {
    use composefs::generic_tree::LeafContent;
    use composefs::tree::RegularFile;
    use composefs_oci::tar::TarItem;

    let (_dir, store, _imgref, record) = pulled().await;
    let dir = store.sysroot().join(LAYER_INDEX_PATH);
    let objects = store.sysroot().join(crate::REPO_PATH).join("objects");
    // A layer with a stored file, and that file.
    let (verity, object, size) = (0..record.layers().len())
        .find_map(|i| {
            let verity = store.layer_stream(&record, i).unwrap().unwrap();
            let mut index = super::IndexReader::open(&dir, &verity).unwrap().unwrap();
            while let Some(entry) = index.next_entry().unwrap() {
                if let TarItem::Leaf(LeafContent::Regular(RegularFile::External(id, size))) =
                    entry.item
                {
                    return Some((verity, id, size));
                }
            }
            None
        })
        .expect("the edge-case image stores a file");
    let check = |what: &str| {
        crate::check::verify_layer(store.repo(), Some(&dir), &verity)
            .map(|bad| bad.iter().map(|b| b.to_string()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    assert_eq!(check("intact"), Vec::<String>::new());

    let object_path = objects.join(object.to_object_pathname());
    let content = std::fs::read(&object_path).unwrap();
    std::fs::write(&object_path, &content[..content.len() - 1]).unwrap();
    let found = check("from the index");
    assert_eq!(found.len(), 1, "{found:?}");
    let truncated = format!("is truncated: {} of {size} bytes", content.len() - 1);
    assert!(found[0].contains(&truncated), "{found:?}");
    // An index that does not check out: the splitstream says the same.
    let index = index_path(&dir, &verity);
    damage(&index, |b| b[FIRST_PATH_BYTE] ^= 0x20);
    assert_eq!(check("from the splitstream"), found);

    // A truncated splitstream is unreadable, index or not.
    let (_dir2, store, _imgref, record) = pulled().await;
    let verity = store.layer_stream(&record, 0).unwrap().unwrap();
    let stream = store
        .sysroot()
        .join(crate::REPO_PATH)
        .join("objects")
        .join(verity.to_object_pathname());
    let len = std::fs::metadata(&stream).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stream)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let dir = store.sysroot().join(LAYER_INDEX_PATH);
    let err = crate::check::verify_layer(store.repo(), Some(&dir), &verity)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "splitstream {} has {} bytes, its index says {len}",
            verity.to_hex(),
            len - 1
        )
    );
}
