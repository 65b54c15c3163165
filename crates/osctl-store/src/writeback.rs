//! Starting the writeback of a pull's objects while the pull goes on.
//!
//! A cold pull writes a few hundred MiB of objects, and the kernel leaves
//! them dirty: a machine with GiBs of RAM is far from its background
//! writeback threshold, so everything waited for the one sync before the
//! layers are registered, which then wrote it all while the cores idled
//! (0.4–0.55 s of a 1.9 s cold pull of the benchmark image). Here a thread
//! calls `syncfs` each time another [`WRITEBACK_STEP`] has been written, so
//! the disk works while the cores inflate and hash, and the final sync finds
//! little left (docs/performance.md, "osctl's early writeback").
//!
//! It changes no promise: the sync before registration still decides what
//! is durable. An early `syncfs` that fails ends the early writeback and
//! its error is kept: the pull fails with it rather than register layers
//! (the kernel reports some writeback errors only once, to whichever sync
//! asks first, so the final sync might not see it again).
//! tests/pull_writeback.rs shows this on a disk whose writeback fails.
//!
//! `syncfs` writes
//! and waits for the whole filesystem, and flushes the device's cache: on
//! a root filesystem busy with other work, a cold pull of ~460 MiB adds
//! about seven such syncs.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// Bytes written between two early syncs. On the reference machine 32 and
/// 64 MiB did equally well (16 MiB was slower); fewer syncs cost less.
pub(crate) const WRITEBACK_STEP: u64 = 64 << 20;

/// Counts a pull's written bytes and starts the writeback every `step`.
pub(crate) struct Writeback {
    /// The store's objects directory, opened for reading: `syncfs` refuses
    /// the `O_PATH` descriptors composefs-rs keeps.
    dir: OwnedFd,
    step: u64,
    written: AtomicU64,
    shared: Arc<Shared>,
    thread: Mutex<Thread>,
}

/// What the syncing thread and the pull both see.
#[derive(Default)]
struct Shared {
    syncs: AtomicUsize,
    failed: Mutex<Option<Errno>>,
}

/// The syncing thread: started at the first step, at most once.
enum Thread {
    NotStarted,
    Running(SyncSender<()>, JoinHandle<()>),
    CouldNotStart,
}

impl Writeback {
    /// Early writeback for the filesystem of `objects` (any descriptor of
    /// the directory, `O_PATH` too), every `step` bytes.
    pub(crate) fn new(objects: BorrowedFd<'_>, step: u64) -> Result<Self, Errno> {
        let dir = rustix::fs::openat(
            objects,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Writeback {
            dir,
            step: step.max(1),
            written: AtomicU64::new(0),
            shared: Arc::default(),
            thread: Mutex::new(Thread::NotStarted),
        })
    }

    /// Notes `n` more bytes written; past a step, asks for a sync.
    pub(crate) fn wrote(&self, n: u64) {
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        if (before + n) / self.step == before / self.step {
            return;
        }
        let mut thread = self.thread.lock().expect("writeback lock");
        if let Thread::NotStarted = *thread {
            *thread = match self.start() {
                Ok((kick, handle)) => Thread::Running(kick, handle),
                Err(e) => {
                    // Only the early start is lost; the final sync remains.
                    tracing::warn!("cannot start the early writeback of the store: {e}");
                    Thread::CouldNotStart
                }
            };
        }
        if let Thread::Running(kick, _) = &*thread {
            // Full: a sync is pending already and covers these bytes too.
            // Closed: the thread stopped after a failed sync (kept in
            // `failed`).
            let _ = kick.try_send(());
        }
    }

    fn start(&self) -> std::io::Result<(SyncSender<()>, JoinHandle<()>)> {
        let (kick, kicked) = sync_channel::<()>(1);
        let dir = self.dir.try_clone()?;
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("osctl-writeback".into())
            .spawn(move || {
                while kicked.recv().is_ok() {
                    if let Err(e) = rustix::fs::syncfs(&dir) {
                        *shared.failed.lock().expect("writeback lock") = Some(e);
                        break;
                    }
                    shared.syncs.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        Ok((kick, handle))
    }

    /// The error of a failed early sync, if one failed.
    pub(crate) fn failed(&self) -> Option<Errno> {
        *self.shared.failed.lock().expect("writeback lock")
    }

    /// Stops the thread after the syncs asked for so far, at most two: the
    /// one running and one waiting (blocking: it waits for them; what they
    /// write back, the final sync need not). Returns how many early syncs
    /// completed, and the error of the one that failed.
    pub(crate) fn finish(self) -> (usize, Option<Errno>) {
        if let Thread::Running(kick, handle) = self.thread.into_inner().expect("writeback lock") {
            drop(kick);
            if handle.join().is_err() {
                tracing::warn!("the early writeback thread panicked");
            }
        }
        let failed = *self.shared.failed.lock().expect("writeback lock");
        (self.shared.syncs.load(Ordering::Relaxed), failed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    /// An `O_PATH` descriptor of a fresh directory, as composefs-rs keeps
    /// its objects directory (`syncfs` on it fails with EBADF).
    fn o_path_dir(dir: &std::path::Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    /// (bytes per write, writes, step) → the steps crossed: at most that many
    /// syncs (kicks while one runs and one waits are merged), at least one
    /// when any step was crossed (`finish` waits for the syncs asked for),
    /// none when none was. The directory is given as `O_PATH`, as
    /// composefs-rs keeps it.
    #[test]
    fn a_sync_starts_each_time_a_step_is_crossed() {
        let cases: [(u64, u64, u64, usize); 4] = [
            (1000, 4, 4096, 0),
            (4096, 1, 4096, 1),
            (1000, 10, 4096, 2),
            (1 << 20, 4, 1 << 20, 4),
        ];
        for (size, writes, step, crossed) in cases {
            let dir = tempfile::tempdir().unwrap();
            let objects = o_path_dir(dir.path());
            let wb = Writeback::new(objects.as_fd(), step).unwrap();
            for _ in 0..writes {
                wb.wrote(size);
            }
            let (syncs, failed) = wb.finish();
            assert_eq!(failed, None, "{size}×{writes}/{step}");
            assert!(syncs <= crossed, "{size}×{writes}/{step}: {syncs} syncs");
            assert_eq!(
                syncs > 0,
                crossed > 0,
                "{size}×{writes}/{step}: {syncs} syncs"
            );
        }
    }
}
