//! The store's write ordering under crashes (lib.rs, pull.rs, gc.rs): a
//! pull publishes its GC refs and then its record only after everything
//! they name is in the store and synced; `rm` deletes the record, then the
//! refs; `gc` prunes refs that have no record before it sweeps.
//!
//! For every store fail point ([`osctl_store::failpoint::ALL`]) this test
//! runs the operation in a child process that aborts at that point (as
//! `kill -9` would leave it), then checks:
//! - the record set is what the ordering promises (no record of a pull
//!   that did not reach its record; none of a removal that did);
//! - `fsck` finds nothing damaged;
//! - re-running the operation leaves the same store, file for file (names,
//!   link targets and content digests of the whole `sysroot/` tree), as a
//!   run that was never interrupted; where the crash leaves a temporary
//!   only `gc` may remove, the same store but for that temporary, and the
//!   same store after a `gc`.
//!
//! The child is this test binary itself, re-run on the [`child`] test with
//! the operation in [`CHILD_ENV`].

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::atomic::TMP_PREFIX;
use osctl_store::{Silent, Store, StoreError, failpoint};
use osctl_testutil::{Entry, ImageSpec, Layer};
use sha2::{Digest, Sha256};

/// Tells this binary, run on [`child`], which operation to run where.
const CHILD_ENV: &str = "OSCTL_STORE_CRASH_CHILD";

/// One store operation, as the child runs it and as the parent re-runs it.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Pull the second image.
    Pull,
    /// Remove the second image.
    Remove,
    /// Collect garbage.
    Gc,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Pull => "pull",
            Op::Remove => "rm",
            Op::Gc => "gc",
        }
    }

    fn parse(s: &str) -> Op {
        match s {
            "pull" => Op::Pull,
            "rm" => Op::Remove,
            "gc" => Op::Gc,
            other => panic!("unknown operation {other}"),
        }
    }

    fn run(self, sysroot: &Path, second: &ImageRef) {
        let store = Store::open_or_create(sysroot).unwrap();
        match self {
            Op::Pull => pull(&store, second),
            Op::Remove => drop(store.remove(second).unwrap()),
            Op::Gc => drop(store.gc().unwrap()),
        }
    }

    /// What an admin does after a crash: the same command again. An `rm`
    /// that got past its refs has nothing left to name: it says so, and
    /// what it had left to do is a `gc`.
    fn rerun(self, sysroot: &Path, second: &ImageRef) {
        if !matches!(self, Op::Remove) {
            return self.run(sysroot, second);
        }
        let store = Store::open(sysroot).unwrap();
        match store.remove(second) {
            Ok(_) => {}
            Err(StoreError::NotInStore(_)) => drop(store.gc().unwrap()),
            Err(e) => panic!("rm again: {e:?}"),
        }
    }
}

/// What the store holds before the operation under test.
#[derive(Debug, Clone, Copy)]
enum Before {
    /// The first image.
    First,
    /// Both images.
    Both,
    /// Both images pulled, then the second removed by an `rm` that crashed
    /// after deleting its record (its refs are left for `gc` to prune).
    SecondHalfRemoved,
}

struct Case {
    failpoint: &'static str,
    before: Before,
    op: Op,
    /// Whether the second image has a record right after the crash.
    recorded_after_crash: bool,
    /// Whether the crash leaves a temporary file that only `gc` removes
    /// (a pull cannot tell it from one a concurrent pull is writing): the
    /// re-run is then followed by a `gc`.
    leaves_a_temporary: bool,
}

const CASES: &[Case] = &[
    Case {
        failpoint: "pull:after-layers",
        before: Before::First,
        op: Op::Pull,
        recorded_after_crash: false,
        leaves_a_temporary: false,
    },
    Case {
        failpoint: "pull:after-layer-index-written",
        before: Before::First,
        op: Op::Pull,
        recorded_after_crash: false,
        leaves_a_temporary: true,
    },
    Case {
        failpoint: "pull:after-layer-index",
        before: Before::First,
        op: Op::Pull,
        recorded_after_crash: false,
        leaves_a_temporary: false,
    },
    Case {
        failpoint: "pull:after-image",
        before: Before::First,
        op: Op::Pull,
        recorded_after_crash: false,
        leaves_a_temporary: false,
    },
    Case {
        failpoint: "pull:after-record",
        before: Before::First,
        op: Op::Pull,
        recorded_after_crash: true,
        leaves_a_temporary: false,
    },
    Case {
        failpoint: "rm:after-record",
        before: Before::Both,
        op: Op::Remove,
        recorded_after_crash: false,
        leaves_a_temporary: false,
    },
    Case {
        failpoint: "rm:after-refs",
        before: Before::Both,
        op: Op::Remove,
        recorded_after_crash: false,
        leaves_a_temporary: false,
    },
    Case {
        failpoint: "gc:after-refs-pruned",
        before: Before::SecondHalfRemoved,
        op: Op::Gc,
        recorded_after_crash: false,
        leaves_a_temporary: false,
    },
];

/// Two images that share a layer, so a removal or gc has something to
/// keep as well as something to free.
fn images(dir: &Path) -> (ImageRef, ImageRef) {
    let base = Layer::new(vec![
        Entry::dir("usr"),
        Entry::file("usr/lib/os-release", "ID=test\n"),
        Entry::large_file("usr/lib/shared", 200_000, 3),
    ]);
    let mut refs = Vec::new();
    for tag in ["first", "second"] {
        let own = Layer::new(vec![
            Entry::dir("usr/share"),
            Entry::file(&format!("usr/share/{tag}"), format!("{tag}\n").repeat(100)),
            Entry::large_file(&format!("usr/share/{tag}.bin"), 150_000, tag.len() as u64),
        ]);
        let layout = dir.join(tag);
        let spec = ImageSpec::new(vec![base.clone(), own]);
        osctl_testutil::write_layout(&layout, "v1", &spec).unwrap();
        refs.push(ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap());
    }
    let second = refs.pop().unwrap();
    (refs.pop().unwrap(), second)
}

fn pull(store: &Store, imgref: &ImageRef) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.pull(imgref, &FetchOptions::default(), Arc::new(Silent)))
        .unwrap();
}

fn fsck_problems(sysroot: &Path) -> Vec<String> {
    let store = Store::open(sysroot).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.fsck()).unwrap().problems
}

fn references(sysroot: &Path) -> Vec<String> {
    Store::open(sysroot)
        .unwrap()
        .records()
        .unwrap()
        .iter()
        .map(|r| r.reference().to_string())
        .collect()
}

/// Runs `op` in a child process that aborts at `failpoint`; asserts that it
/// did abort there (a fail point never reached would prove nothing).
fn crash(op: Op, failpoint: &str, sysroot: &Path, second: &ImageRef) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}\n{}\n{second}", op.name(), sysroot.display()),
        )
        .env(failpoint::ENV, failpoint)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "{failpoint}: the child must abort at the fail point, got {:?}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("fail point {failpoint} reached")),
        "{stderr}"
    );
}

fn libc_sigabrt() -> i32 {
    6
}

/// Not a test of its own: the body of the child process [`crash`] starts.
/// Without [`CHILD_ENV`] it does nothing.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '\n');
    let (op, sysroot, second) = (
        Op::parse(parts.next().unwrap()),
        PathBuf::from(parts.next().unwrap()),
        ImageRef::parse(parts.next().unwrap()).unwrap(),
    );
    op.run(&sysroot, &second);
    panic!("{} finished without reaching its fail point", op.name());
}

/// Brings a fresh sysroot to `before`.
fn prepare(before: Before, sysroot: &Path, first: &ImageRef, second: &ImageRef) {
    let store = Store::open_or_create(sysroot).unwrap();
    pull(&store, first);
    match before {
        Before::First => {}
        Before::Both => pull(&store, second),
        Before::SecondHalfRemoved => {
            pull(&store, second);
            drop(store);
            crash(Op::Remove, "rm:after-record", sysroot, second);
        }
    }
}

/// Every file under `<sysroot>/sysroot`: relative path → what it is
/// (directory, link target, or the sha256 of its content). A record's
/// `pulled` time is the one field two runs cannot share; it is left out.
fn snapshot(sysroot: &Path) -> BTreeMap<String, String> {
    let root = sysroot.join("sysroot");
    let mut out = BTreeMap::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_string()
            } else {
                let mut data = std::fs::read(&path).unwrap();
                if rel.starts_with("osctl/images/") {
                    let mut record: serde_json::Value = serde_json::from_slice(&data).unwrap();
                    record
                        .as_object_mut()
                        .expect("a record is a JSON object")
                        .remove("pulled")
                        .expect("a record says when it was pulled");
                    data = serde_json::to_vec(&record).unwrap();
                }
                format!("file {}", hex::encode(Sha256::digest(&data)))
            };
            out.insert(rel, what);
        }
    }
    out
}

/// The entries in which two snapshots differ, for the failure message.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

#[test]
fn every_store_fail_point_leaves_a_consistent_store_and_a_rerun_matches_a_clean_run() {
    let store_points: Vec<&str> = failpoint::ALL
        .iter()
        .copied()
        .filter(|p| ["pull:", "rm:", "gc:"].iter().any(|op| p.starts_with(op)))
        .collect();
    let covered: Vec<&str> = CASES.iter().map(|c| c.failpoint).collect();
    assert_eq!(covered, store_points, "one case per store fail point");

    let layouts = osctl_testutil::tempdir();
    let (first, second) = images(layouts.path());
    for case in CASES {
        let point = case.failpoint;
        let clean = osctl_testutil::tempdir();
        prepare(case.before, clean.path(), &first, &second);
        case.op.run(clean.path(), &second);

        let crashed = osctl_testutil::tempdir();
        prepare(case.before, crashed.path(), &first, &second);
        crash(case.op, point, crashed.path(), &second);

        let mut expected = vec![first.to_string()];
        if case.recorded_after_crash {
            expected.push(second.to_string());
        }
        expected.sort();
        assert_eq!(references(crashed.path()), expected, "{point}: records");
        let problems = fsck_problems(crashed.path());
        assert!(problems.is_empty(), "{point}: fsck: {problems:#?}");

        case.op.rerun(crashed.path(), &second);
        let temporaries: Vec<String> = snapshot(crashed.path())
            .into_keys()
            .filter(|k| k.rsplit('/').next().unwrap().starts_with(TMP_PREFIX))
            .collect();
        assert_eq!(
            !temporaries.is_empty(),
            case.leaves_a_temporary,
            "{point}: temporaries after the re-run: {temporaries:?}"
        );
        if case.leaves_a_temporary {
            // The temporary is all gc is left to remove.
            let mut rerun = snapshot(crashed.path());
            rerun.retain(|k, _| !temporaries.contains(k));
            assert_eq!(
                differences(&snapshot(clean.path()), &rerun),
                Vec::<String>::new(),
                "{point}: re-run vs clean run, the temporary aside"
            );
            Op::Gc.run(crashed.path(), &second);
        }
        let (want, got) = (snapshot(clean.path()), snapshot(crashed.path()));
        assert!(
            want.keys().any(|k| k.starts_with("composefs/objects/")),
            "{point}: the snapshot sees the objects"
        );
        assert_eq!(
            differences(&want, &got),
            Vec::<String>::new(),
            "{point}: re-run vs clean run"
        );
        assert!(fsck_problems(crashed.path()).is_empty(), "{point}");
    }
}
