//! The floor of a cold pull on this machine, for `hack/bench-pull`: the
//! least work any importer of these layers must do, done as fast as the
//! machine allows, so that osctl's time can be read against it.
//!
//! For each gzip layer blob given: read it (a file, from the page cache;
//! or a registry URL `http://…/blobs/sha256:…`, fetched by a `curl`
//! child), sha256 it (the blob digest), inflate it with the
//! same zlib-ng osctl links, sha256 the tar (the diff_id) and write the
//! tar into one file under `DIR`; two layers at a time, each with its
//! writer on its own thread (osctl's pipeline shape); then one `syncfs`,
//! the sync osctl's durability promise costs. The writeback starts early:
//! a thread calls `syncfs` after every [`WRITEBACK_STEP`] written, so the
//! disk works while the cores inflate (on this machine that takes the
//! final sync from 0.4 s to 0.01 s and the floor from ~1.35 s to ~1.1 s;
//! osctl's importer does the same, `src/writeback.rs`).
//! What it leaves out, and osctl does: splitting the tar into one file per
//! object, their fs-verity digests, the splitstreams, the EROFS image.
//! `--verity` adds the fs-verity digest of each tar, to price that step.
//!
//! ```text
//! pull_floor [--verity] DIR BLOB...
//! ```
//! Prints one line: the wall time in seconds, and of it the sync's.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Bytes of tar handed to the writer at a time (osctl's chunk size).
const CHUNK: usize = 256 * 1024;
/// Layers in flight at once (osctl's `LAYER_CONCURRENCY`).
const LAYERS_AT_ONCE: usize = 2;
/// Bytes written between two early `syncfs` calls (the best of 16, 32 and
/// 64 MiB measured here).
const WRITEBACK_STEP: u64 = 64 << 20;

/// Starts the writeback of what the writers wrote, on its own thread.
struct Writeback {
    written: AtomicU64,
    kick: SyncSender<()>,
}

impl Writeback {
    fn wrote(&self, n: usize) {
        let before = self.written.fetch_add(n as u64, Ordering::Relaxed);
        if (before + n as u64) / WRITEBACK_STEP != before / WRITEBACK_STEP {
            // Full: a sync is already pending, which covers these bytes too.
            let _ = self.kick.try_send(());
        }
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let verity = args.first().is_some_and(|a| a == "--verity");
    if verity {
        args.remove(0);
    }
    if args.len() < 2 {
        bail!("usage: pull_floor [--verity] DIR BLOB...");
    }
    let dir = PathBuf::from(&args[0]);
    // Given largest first, the two slots end closest together.
    let blobs: Vec<String> = args[1..].to_vec();
    let queue = Mutex::new(blobs.into_iter().enumerate());
    let start = Instant::now();
    let dir_fd = File::open(&dir).with_context(|| dir.display().to_string())?;
    let (kick, kicked) = sync_channel::<()>(1);
    let writeback = Writeback {
        written: AtomicU64::new(0),
        kick,
    };
    let syncer_fd = dir_fd.try_clone()?;
    let syncer = std::thread::spawn(move || -> std::io::Result<()> {
        while kicked.recv().is_ok() {
            rustix::fs::syncfs(&syncer_fd)?;
        }
        Ok(())
    });
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..LAYERS_AT_ONCE)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let next = queue.lock().expect("queue lock").next();
                        let Some((i, blob)) = next else {
                            return Ok(());
                        };
                        import(
                            &blob,
                            &dir.join(format!("layer{i}.tar")),
                            verity,
                            &writeback,
                        )
                        .with_context(|| format!("layer {blob}"))?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker panicked")?;
        }
        Ok(())
    })?;
    drop(writeback);
    syncer.join().expect("syncer panicked")?;
    let synced = Instant::now();
    rustix::fs::syncfs(&dir_fd)?;
    let end = Instant::now();
    println!(
        "floor {:.3} s (sync {:.3} s)",
        (end - start).as_secs_f64(),
        (end - synced).as_secs_f64()
    );
    Ok(())
}

/// One layer: digest check, inflate, diff_id, write (on a second thread).
fn import(blob: &str, out: &Path, verity: bool, writeback: &Writeback) -> Result<()> {
    let want = blob
        .rsplit(['/', ':'])
        .next()
        .context("a blob's name ends in its sha256")?
        .to_string();
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| -> Result<()> {
        let writer = scope.spawn(|| -> Result<()> {
            let mut file = File::create(out)?;
            let mut hasher = verity.then(
                composefs::fsverity::FsVerityHasher::<composefs::fsverity::Sha256HashValue>::new,
            );
            for chunk in rx {
                if let Some(h) = hasher.as_mut() {
                    for block in chunk.chunks(4096) {
                        h.add_block(block);
                    }
                }
                file.write_all(&chunk)?;
                writeback.wrote(chunk.len());
            }
            Ok(())
        });
        let mut compressed = Sha256::new();
        let mut curl = None;
        let inner: Box<dyn Read> = if blob.starts_with("http://") {
            let mut child = std::process::Command::new("curl")
                .args(["-sSf", "--location", blob])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("running curl")?;
            let out = child.stdout.take().context("curl's stdout")?;
            curl = Some(child);
            Box::new(out)
        } else {
            Box::new(File::open(blob)?)
        };
        let reader = Tap {
            inner,
            hasher: &mut compressed,
        };
        let mut gz =
            flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(CHUNK, reader));
        let mut diff_id = Sha256::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let mut len = 0;
            while len < CHUNK {
                let n = gz.read(&mut chunk[len..])?;
                if n == 0 {
                    break;
                }
                len += n;
            }
            chunk.truncate(len);
            if chunk.is_empty() {
                break;
            }
            diff_id.update(&chunk);
            if tx.send(chunk).is_err() {
                // The writer failed: its error (below) says why.
                break;
            }
        }
        drop(tx);
        writer.join().expect("writer panicked")?;
        // The diff_id is computed for its cost; the floor has no config to
        // compare it with.
        let _diff_id = diff_id.finalize();
        if let Some(mut child) = curl
            && !child.wait()?.success()
        {
            bail!("curl failed");
        }
        if hex::encode(compressed.finalize()) != want {
            bail!("blob digest mismatch");
        }
        Ok(())
    })
}

/// Hashes what passes through.
struct Tap<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
