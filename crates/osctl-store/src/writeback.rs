//! Starting the writeback of a pull's objects while the pull goes on.
//!
//! A cold pull writes a few hundred MiB of objects, and the kernel leaves
//! them dirty: a machine with GiBs of RAM is far from its background
//! writeback threshold, so everything waited for the one sync before the
//! layers are registered, which then wrote it all while the cores idled
//! (0.4–0.55 s of a 1.9 s cold pull of the benchmark image). Here a thread
//! calls `syncfs` each time another [`WRITEBACK_STEP`] has been written, so
//! the disk works while the cores inflate and hash, and the final sync finds
//! little left (docs/performance.md: 1.86–1.94 s → 1.60–1.66 s).
//!
//! It changes no promise: the sync before registration still decides what
//! is durable, and it reports a writeback error again even if an early
//! `syncfs` saw it first (the kernel tracks writeback errors per open file,
//! and that sync uses the store's own descriptor). An early sync that fails
//! is logged and ends the early writeback; the pull goes on.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};

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
    syncs: Arc<AtomicUsize>,
    thread: Mutex<Thread>,
}

/// The syncing thread: started at the first step, at most once.
enum Thread {
    NotStarted,
    Running(SyncSender<()>, JoinHandle<()>),
    CouldNotStart,
}

impl Writeback {
    /// Early writeback for the filesystem of `objects`, every `step` bytes.
    pub(crate) fn new(objects: BorrowedFd<'_>, step: u64) -> std::io::Result<Self> {
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
            syncs: Arc::new(AtomicUsize::new(0)),
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
                    tracing::warn!("cannot start the early writeback of the store: {e}");
                    Thread::CouldNotStart
                }
            };
        }
        if let Thread::Running(kick, _) = &*thread {
            // Full: a sync is pending already and covers these bytes too.
            // Closed: the thread stopped after a failed sync (logged there).
            let _ = kick.try_send(());
        }
    }

    fn start(&self) -> std::io::Result<(SyncSender<()>, JoinHandle<()>)> {
        let (kick, kicked) = sync_channel::<()>(1);
        let dir = self.dir.try_clone()?;
        let syncs = self.syncs.clone();
        let handle = std::thread::Builder::new()
            .name("osctl-writeback".into())
            .spawn(move || {
                while kicked.recv().is_ok() {
                    if let Err(e) = rustix::fs::syncfs(&dir) {
                        tracing::warn!(
                            "early writeback of the store failed: {e}; the sync before the \
                             layers are registered decides"
                        );
                        break;
                    }
                    syncs.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        Ok((kick, handle))
    }

    /// Stops the thread after the sync it may be running; returns how many
    /// early syncs completed.
    pub(crate) fn finish(self) -> usize {
        if let Thread::Running(kick, handle) = self.thread.into_inner().expect("writeback lock") {
            drop(kick);
            if handle.join().is_err() {
                tracing::warn!("the early writeback thread panicked");
            }
        }
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    /// (bytes per write, writes, step) → the steps crossed: at most that many
    /// syncs (a kick while one runs is merged), at least one when any step
    /// was crossed, none when none was.
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
            let handle = std::fs::File::open(dir.path()).unwrap();
            let wb = Writeback::new(handle.as_fd(), step).unwrap();
            for _ in 0..writes {
                wb.wrote(size);
            }
            let syncs = wb.finish();
            assert!(syncs <= crossed, "{size}×{writes}/{step}: {syncs} syncs");
            assert_eq!(
                syncs > 0,
                crossed > 0,
                "{size}×{writes}/{step}: {syncs} syncs"
            );
        }
    }
}
