//! `osctl-root-setup`: run by the initramfs after it mounted the root
//! partition, before it switches root. See the library docs and docs/boot.md.
//!
//! ```text
//! osctl-root-setup [--root DIR] [--stash DIR] [--cmdline FILE] [--kmsg]
//!                  [--on-failure reboot|shell|exit]
//! ```
//! - `--root`: where the root partition is mounted (initramfs-tools: `/root`,
//!   dracut: `/sysroot`; default `/root`);
//! - `--stash`: a directory on the initramfs's root for the partition while
//!   the new root is assembled (default `/.osctl-root`);
//! - `--cmdline`: read the command line from FILE instead of `/proc/cmdline`;
//! - `--kmsg`: log to the kernel log (timestamps on the console) instead of
//!   stderr;
//! - `--on-failure`: overrides `osctl.on-failure=` on the command line.
//!   Rebooting is only ever done inside an initramfs; anywhere else a failure
//!   exits with status 1.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use osctl_rootsetup::cmdline::{OnFailure, on_failure_of};
use osctl_rootsetup::{BootTarget, RootSetup, Verity};

/// Printed on the console when the root cannot be set up; test harnesses and
/// admins grep for it.
const FAILURE_MARKER: &str = "OSCTL-ROOT-SETUP-FAILED";
/// Seconds between the failure message and the reboot, so a person watching
/// the console can read it.
const REBOOT_DELAY_SECS: u64 = 5;

struct Args {
    root: PathBuf,
    stash: PathBuf,
    cmdline: PathBuf,
    kmsg: bool,
    on_failure: Option<Failure>,
}

#[derive(Clone, Copy)]
enum Failure {
    Reboot,
    Shell,
    Exit,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        root: PathBuf::from("/root"),
        stash: PathBuf::from("/.osctl-root"),
        cmdline: PathBuf::from("/proc/cmdline"),
        kmsg: false,
        on_failure: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--root" => args.root = value("--root")?.into(),
            "--stash" => args.stash = value("--stash")?.into(),
            "--cmdline" => args.cmdline = value("--cmdline")?.into(),
            "--kmsg" => args.kmsg = true,
            "--on-failure" => {
                args.on_failure = Some(match value("--on-failure")?.as_str() {
                    "reboot" => Failure::Reboot,
                    "shell" => Failure::Shell,
                    "exit" => Failure::Exit,
                    other => {
                        return Err(format!(
                            "--on-failure {other}: expected reboot, shell or exit"
                        ));
                    }
                })
            }
            "-h" | "--help" => {
                println!(
                    "usage: osctl-root-setup [--root DIR] [--stash DIR] [--cmdline FILE] [--kmsg] [--on-failure reboot|shell|exit]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Log lines: to the kernel log (`--kmsg`), so they carry kernel timestamps
/// on the console and in the journal, else to stderr.
struct Log {
    kmsg: Option<std::fs::File>,
}

impl Log {
    fn line(&mut self, level: u8, text: &str) {
        if !self.kmsg(level, text) {
            eprintln!("osctl-root-setup: {text}");
        }
    }

    /// Writes to the kernel log if `--kmsg` opened it; returns whether it did.
    fn kmsg(&mut self, level: u8, text: &str) -> bool {
        self.kmsg.as_mut().is_some_and(|k| {
            k.write_all(format!("<{level}>osctl-root-setup: {text}\n").as_bytes())
                .is_ok()
        })
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{FAILURE_MARKER}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = Log {
        kmsg: args
            .kmsg
            .then(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/kmsg")
                    .ok()
            })
            .flatten(),
    };
    let cmdline = std::fs::read_to_string(&args.cmdline);
    let result = cmdline
        .as_ref()
        .map_err(|e| format!("reading {}: {e}", args.cmdline.display()))
        .and_then(|line| BootTarget::parse(line).map_err(one_line))
        .and_then(|target| {
            log.line(
                6,
                &format!(
                    "setting up image {} at {}",
                    target.id(),
                    args.root.display()
                ),
            );
            RootSetup::new(&args.root, &args.stash)
                .run(&target)
                .map_err(one_line)
        });
    match result {
        Ok(report) => {
            if let Some(seal) = report.sealed() {
                log.line(
                    5,
                    &format!(
                        "sealed the store: fs-verity enabled on {} of {} objects in {} ms (first boot)",
                        seal.enabled(),
                        seal.objects(),
                        seal.elapsed().as_millis()
                    ),
                );
            }
            if report.seeded_var() {
                log.line(5, "seeded /var from the image");
            }
            let verity = match report.verity() {
                Verity::Required => "verity=require",
                Verity::Optional => "verity optional",
            };
            log.line(
                6,
                &format!(
                    "root is composefs image {} ({verity}); set up in {} ms",
                    report.id(),
                    report.elapsed().as_millis()
                ),
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            let line = format!("{FAILURE_MARKER}: {why}");
            // The console for people and harnesses; with --kmsg also the
            // kernel log, for the journal.
            eprintln!("{line}");
            log.kmsg(2, &line);
            let from_cmdline = match cmdline.as_deref().map(on_failure_of) {
                Ok(OnFailure::Shell) => Failure::Shell,
                _ => Failure::Reboot,
            };
            match args.on_failure.unwrap_or(from_cmdline) {
                Failure::Reboot if in_initramfs() => reboot(&mut log),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line (the console shows one line).
fn one_line(e: osctl_rootsetup::SetupError) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

/// Whether this process runs in an initramfs (initramfs-tools or dracut):
/// the only place a failure may reboot the machine.
fn in_initramfs() -> bool {
    Path::new("/conf/initramfs.conf").exists() || Path::new("/etc/initrd-release").exists()
}

fn reboot(log: &mut Log) -> ExitCode {
    log.line(2, &format!("rebooting in {REBOOT_DELAY_SECS} s"));
    std::thread::sleep(std::time::Duration::from_secs(REBOOT_DELAY_SECS));
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::Restart) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.line(2, &format!("reboot failed: {e}"));
            ExitCode::FAILURE
        }
    }
}
