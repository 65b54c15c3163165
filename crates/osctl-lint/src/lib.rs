//! `osctl container lint`: checks an image's root filesystem, at build time,
//! for what would make it fail as an operating system under osctl.
//!
//! It is meant as the last `RUN` of a Containerfile (`RUN osctl container
//! lint`), where a fatal finding fails the build before the image is pushed,
//! or run on an unpacked image with `--rootfs DIR`.
//!
//! # The model
//!
//! A lint is one row of [`LINTS`]: a stable name (what `--skip` takes and
//! scripts match on), a [`Level`], one line saying what it checks and why it
//! matters on a machine, one line saying how to fix it, and a check that
//! returns the offending paths or values. The table is the list `--list`
//! prints and docs/lints.md shows (a test keeps the two equal).
//!
//! - **Fatal** lints find what makes a machine unbootable or an update
//!   wrong: no kernel or two, an initramfs without osctl's root setup,
//!   kargs.d files staging would refuse, no `/etc` or `/sysroot` to mount
//!   onto. A fatal lint that cannot finish its check fails too.
//! - **Warnings** find what works but surprises an admin later: content in
//!   `/var` that never reaches machines already installed, build leftovers,
//!   a shared machine-id.
//!
//! Checks only read, through a [`Rootfs`] handle that cannot leave the
//! rootfs, and they never stop at the first problem: a [`Report`] holds
//! every lint's findings, and reporting them (text, JSON, the per-lint cap)
//! is the caller's job.

mod initramfs;
mod rootfs;
mod rules;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use rootfs::{Kind, Rootfs};
pub use rules::LINTS;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The image must not be shipped: the build fails.
    Fatal,
    /// Worth knowing; fails the build only with `--fatal-warnings`.
    Warning,
}

/// One lint: see the module doc.
pub struct Lint {
    /// Stable name, e.g. `kernel`.
    pub name: &'static str,
    pub level: Level,
    /// What it checks and why, one line.
    pub summary: &'static str,
    /// How to fix a finding, one line.
    pub fix: &'static str,
    check: fn(&Rootfs) -> Result<Vec<String>, LintError>,
}

/// What one lint found.
pub struct Outcome {
    pub lint: &'static Lint,
    /// Each problem, one line (a path, or a path and what is wrong with it);
    /// empty when the lint passed.
    pub problems: Vec<String>,
}

/// Every lint's outcome, in [`LINTS`] order.
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Lints left out with `--skip`.
    pub skipped: Vec<&'static str>,
}

impl Report {
    /// How many lints of `level` found something.
    pub fn failed(&self, level: Level) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.lint.level == level && !o.problems.is_empty())
            .count()
    }

    /// Whether the build must fail: a fatal finding, or any finding when
    /// warnings are fatal.
    pub fn fails(&self, fatal_warnings: bool) -> bool {
        self.failed(Level::Fatal) > 0 || (fatal_warnings && self.failed(Level::Warning) > 0)
    }
}

/// Why lint could not run (a finding is not an error: it is in the
/// [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("cannot open the rootfs {}", path.display())]
    OpenRootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {limit} bytes", show(path))]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("--skip {0}: no such lint (see osctl container lint --list)")]
    UnknownLint(String),
}

/// A path as a problem line shows it: control characters escaped, so a
/// hostile name cannot forge a line of the report; cut when very long.
pub fn show(path: &Path) -> String {
    osctl_store::limits::shown(path.as_os_str().as_bytes())
}

/// Looks a lint up by name.
pub fn find(name: &str) -> Option<&'static Lint> {
    LINTS.iter().find(|l| l.name == name)
}

/// Runs every lint but those named in `skip` on `rootfs`. A lint that
/// cannot finish (a file it must read is unreadable, a path it must follow
/// leaves the rootfs) does not stop the others: what stopped it is its
/// finding, so a fatal lint that could not check fails the build (fail
/// closed) and every other lint still reports.
pub fn run(rootfs: &Rootfs, skip: &[String]) -> Result<Report, LintError> {
    let mut skipped = Vec::new();
    for name in skip {
        let lint = find(name).ok_or_else(|| LintError::UnknownLint(name.clone()))?;
        if !skipped.contains(&lint.name) {
            skipped.push(lint.name);
        }
    }
    let mut outcomes = Vec::new();
    for lint in LINTS.iter().filter(|l| !skipped.contains(&l.name)) {
        let problems = (lint.check)(rootfs)
            .unwrap_or_else(|e| vec![format!("could not check: {}", osctl_store::one_line(&e))]);
        outcomes.push(Outcome { lint, problems });
    }
    Ok(Report { outcomes, skipped })
}
