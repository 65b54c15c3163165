//! The importer must not drift from composefs-oci's format: every test
//! layer is imported with `composefs_oci::tar::split_async` into one store
//! and with [`split_layer`] into another, and the splitstreams, the objects
//! and the EROFS image built from them must be identical. The new importer
//! also runs with chunk sizes that put chunk boundaries inside headers,
//! extensions, verity blocks and padding.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use composefs::erofs::writer::ValidatedFileSystem;
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, compute_verity};
use composefs::repository::{Repository, RepositoryConfig};
use composefs_oci::LAYER_CONTENT_TYPE;
use osctl_testutil::{Entry, Layer, images};

use super::{SplitError, split_layer};
use crate::import::Repo;

/// Chunk sizes for the new importer: whole-layer-ish, odd sizes that cut
/// headers and verity blocks, and one byte at a time (small layers only).
const CHUNK_SIZES: [usize; 4] = [256 * 1024, 4097, 511, 1];

/// Layers above this size skip the one-byte chunking (it only re-tests the
/// same boundaries, slowly).
const BYTEWISE_MAX: usize = 2 * 1024 * 1024;

fn store(path: &Path) -> Arc<Repo> {
    let (repo, _) = Repository::init_path(
        rustix::fs::CWD,
        path,
        RepositoryConfig::default().set_insecure(),
    )
    .unwrap();
    Arc::new(repo)
}

fn chunks(tar: &[u8], size: usize) -> impl FnMut() -> Option<Vec<u8>> + '_ {
    let mut parts = tar.chunks(size);
    move || parts.next().map(<[u8]>::to_vec)
}

fn old_split(repo: &Arc<Repo>, tar: &[u8]) -> Sha256HashValue {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(composefs_oci::tar::split_async(
        tar,
        repo.clone(),
        LAYER_CONTENT_TYPE,
    ))
    .unwrap()
    .0
}

/// Every object file in `repo` and its size; each new object's content
/// must hash to its name.
fn objects(repo: &Repo, check_names: bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let root = repo.objects_dir().unwrap();
    let dir = std::fs::read_dir(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(root)
    ))
    .unwrap();
    for fanout in dir {
        let fanout = fanout.unwrap();
        if !fanout.file_type().unwrap().is_dir() {
            continue;
        }
        for obj in std::fs::read_dir(fanout.path()).unwrap() {
            let obj = obj.unwrap();
            let name = format!(
                "{}/{}",
                fanout.file_name().to_string_lossy(),
                obj.file_name().to_string_lossy()
            );
            if check_names {
                let data = std::fs::read(obj.path()).unwrap();
                let id: Sha256HashValue = compute_verity(&data);
                assert_eq!(
                    id.to_object_pathname(),
                    name,
                    "object content matches its name"
                );
            }
            out.insert(name, obj.metadata().unwrap().len());
        }
    }
    out
}

/// The image id of `layers` (splitstream ids, in order) built in `repo`.
fn image_id(repo: &Arc<Repo>, layers: &[Sha256HashValue]) -> Sha256HashValue {
    let diff_ids: Vec<String> = (0..layers.len()).map(|i| format!("layer-{i}")).collect();
    let map: HashMap<Box<str>, Sha256HashValue> = diff_ids
        .iter()
        .zip(layers)
        .map(|(d, v)| (Box::from(d.as_str()), v.clone()))
        .collect();
    let fs = crate::image::build_tree(repo, &diff_ids, &diff_ids, &map).unwrap();
    let fs = ValidatedFileSystem::new(fs).unwrap();
    fs.compute_image_bytes(repo.format_config().default).1
}

/// Imports `tars` both ways and asserts identical results.
fn assert_equivalent(name: &str, tars: &[Vec<u8>]) {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        store(&dir.path().join("old")),
        store(&dir.path().join("new")),
    );
    let mut old_ids = Vec::new();
    let mut new_ids = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let old_id = old_split(&old, tar);
        for size in CHUNK_SIZES {
            if size == 1 && tar.len() > BYTEWISE_MAX {
                continue;
            }
            let new_id = split_layer(&new, None, chunks(tar, size)).unwrap();
            assert_eq!(
                new_id.to_hex(),
                old_id.to_hex(),
                "{name}: layer {i}, chunks of {size}: splitstream differs"
            );
        }
        old_ids.push(old_id);
        new_ids.push(split_layer(&new, None, chunks(tar, CHUNK_SIZES[0])).unwrap());
    }
    assert_eq!(
        objects(&new, true),
        objects(&old, false),
        "{name}: the stores hold different objects"
    );
    assert_eq!(
        image_id(&new, &new_ids).to_hex(),
        image_id(&old, &old_ids).to_hex(),
        "{name}: EROFS image id differs"
    );
}

fn tars(layers: &[Layer]) -> Vec<Vec<u8>> {
    layers
        .iter()
        .map(|l| osctl_testutil::layer_tar(&l.entries).unwrap())
        .collect()
}

#[test]
fn edge_case_image_imports_identically() {
    assert_equivalent("edge cases", &tars(&images::edge_case_layers()));
}

#[test]
fn odd_layers_import_identically() {
    for (name, layers) in images::layers_that_pull_into_the_spec() {
        assert_equivalent(name, &tars(&layers));
    }
}

#[test]
fn sizes_around_the_inline_limit_and_verity_blocks_import_identically() {
    // 64 bytes stay inline, 65 go to an object; verity blocks are 4 KiB and
    // a Merkle tree level holds 128 of them.
    let sizes = [
        0usize,
        1,
        63,
        64,
        65,
        511,
        512,
        513,
        4095,
        4096,
        4097,
        8192,
        128 * 4096,
        128 * 4096 + 1,
        300_000,
    ];
    let mut entries = vec![Entry::dir("usr")];
    for (i, size) in sizes.iter().enumerate() {
        let content: Vec<u8> = (0..*size).map(|b| (b * 7 + i) as u8).collect();
        entries.push(Entry::file(&format!("usr/f{size}"), content.clone()));
        // The same content twice: the second object already exists.
        entries.push(Entry::file(&format!("usr/g{size}"), content));
    }
    entries.push(Entry::file(
        &format!("usr/{}", "n".repeat(255)),
        "a long name",
    ));
    entries.push(Entry::symlink("usr/long-target", &"t/".repeat(1000)));
    assert_equivalent("sizes", &tars(&[Layer::new(entries)]));
}

#[test]
fn gnu_tar_archives_import_identically() {
    // GNU tar's own encodings: 'L'/'K' long-name headers, hardlinks, and the
    // end-of-archive padded to a 10 KiB record (kept in the splitstream).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let deep = root.join("usr").join("d".repeat(120)).join("e".repeat(120));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f".repeat(200)), "x".repeat(5000)).unwrap();
    std::fs::write(root.join("usr/small"), "s").unwrap();
    std::fs::hard_link(root.join("usr/small"), deep.join("hl")).unwrap();
    std::os::unix::fs::symlink("l".repeat(150), root.join("usr/longlink")).unwrap();
    let mut tars = Vec::new();
    for format in ["gnu", "posix", "ustar"] {
        let out = dir.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        cmd.arg(format!("--format={format}"))
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&out)
            .arg("usr");
        let run = osctl_testutil::run_unchecked(&mut cmd).unwrap();
        if format == "ustar" {
            // ustar cannot hold the long names: tar refuses, nothing to compare.
            assert!(!run.status.success(), "ustar with 200-byte names must fail");
            continue;
        }
        assert!(run.status.success(), "tar --format={format} failed");
        tars.push(std::fs::read(&out).unwrap());
    }
    assert_equivalent("GNU tar", &tars);
}

#[test]
fn broken_tars_are_refused_and_leave_no_object_behind() {
    let tar =
        osctl_testutil::layer_tar(&[Entry::dir("usr"), Entry::file("usr/big", vec![9u8; 10_000])])
            .unwrap();
    // Offsets: directory header 0..512, file header 512..1024, content
    // 1024..11024, padding to 11264, then the end marker.
    let mut bad_sum = tar.clone();
    bad_sum[512] ^= 1;
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "inside a header",
            &tar[..700],
            "unexpected EOF in tar stream",
        ),
        (
            "inside a file",
            &tar[..5000],
            "unexpected EOF reading tar entry",
        ),
        (
            "inside padding",
            &tar[..11100],
            "unexpected EOF reading tar padding",
        ),
        (
            "a header with a bad checksum",
            &bad_sum,
            "checksum mismatch",
        ),
    ];
    for (what, bytes, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let repo = store(dir.path());
        let err = split_layer(&repo, None, chunks(bytes, 4096)).unwrap_err();
        assert!(matches!(err, SplitError::Tar(_)), "{what}: {err:?}");
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert!(
            shown.starts_with("not a valid tar stream: ") && shown.contains(needle),
            "{what}: {shown}"
        );
        let stored = objects(&repo, true).len();
        let expected = usize::from(what == "inside padding");
        assert_eq!(stored, expected, "{what}: objects left behind");
    }
}

#[test]
fn objects_link_through_proc_when_a_link_by_fd_is_refused() {
    // Kernels before 6.10 refuse linkat(AT_EMPTY_PATH) without
    // CAP_DAC_READ_SEARCH; the writer then links through /proc/self/fd.
    // Both ways must give the object its name, in a fan-out directory that
    // does not exist yet.
    let content = vec![5u8; 10_000];
    let want: Sha256HashValue = compute_verity(&content);
    for refused in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let repo = store(dir.path());
        let writer = super::ObjectWriter::new(&repo, None).unwrap();
        writer.empty_path_refused.set(refused);
        let mut input = super::Input::new(chunks(&content, 3000));
        let id = writer.store(&mut input, content.len()).unwrap();
        assert_eq!(id.to_hex(), want.to_hex(), "refused={refused}");
        let stored = objects(&repo, true);
        assert_eq!(
            stored.get(&want.to_object_pathname()),
            Some(&(content.len() as u64)),
            "refused={refused}: {stored:?}"
        );
    }
}
