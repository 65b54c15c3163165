//! `osctl`: the command line. Each command lives in its own file under
//! `commands/`, parses its arguments and calls a library crate; how progress
//! and results are shown is in `progress.rs` and `output.rs`, apart from the
//! operations they report on.
#![forbid(unsafe_code)]

mod commands;
mod output;
mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turn an OCI container image into the operating system of a machine.
#[derive(Parser)]
#[command(name = "osctl", version, about, propagate_version = true)]
struct Cli {
    /// Root of the machine's filesystem tree; the store lives in
    /// <SYSROOT>/sysroot/composefs.
    #[arg(long, global = true, env = "OSCTL_SYSROOT", default_value = "/")]
    sysroot: PathBuf,

    /// Where boot entries and kernels go (the ESP or /boot);
    /// default <SYSROOT>/boot.
    #[arg(long, global = true, env = "OSCTL_BOOT_DIR")]
    boot_dir: Option<PathBuf>,

    /// Log detail on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "OSCTL_LOG", default_value = "warn")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image and stage it as the next boot's deployment.
    Switch(commands::switch::SwitchArgs),
    /// Fetch the tracked image again and stage it if it changed.
    Upgrade(commands::upgrade::UpgradeArgs),
    /// Boot the previous deployment next (drops a staged one).
    Rollback(commands::rollback::RollbackArgs),
    /// Show the booted, staged and rollback deployments.
    Status(commands::status::StatusArgs),
    /// What an update changes: files under /usr and /etc, Debian packages.
    Diff(commands::diff::DiffArgs),
    /// Never prune this deployment.
    Pin(commands::pin::PinArgs),
    /// Allow pruning this deployment again.
    Unpin(commands::pin::PinArgs),
    /// Merge /etc and make the staged deployment the default (run at shutdown).
    Finalize(commands::finalize::FinalizeArgs),
    /// Boot assessment: run the health checks, mark the booted deployment good.
    #[command(subcommand)]
    Health(commands::health::HealthCommand),
    /// Install an image onto a new disk or a mounted root filesystem.
    #[command(subcommand)]
    Install(commands::install::InstallCommand),
    /// Manage images in the store.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Check every object, stream, image and record in the store.
    Fsck(commands::fsck::FsckArgs),
    /// Remove everything in the store that no image references.
    Gc(commands::gc::GcArgs),
    /// Build-time checks for OS images (run inside the image).
    #[command(subcommand)]
    Container(commands::container::ContainerCommand),
    /// Fleet rollouts on etcd: controller, agent, rollouts, FleetLock.
    #[command(subcommand)]
    Fleet(commands::fleet::FleetCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls-platform-verifier logs every rejected certificate at ERROR; osctl
    // reports the same failure in its one-line error, so silence the echo
    // unless the user asks for that target explicitly.
    let mut filter = cli.log_level.clone();
    if !filter.contains("rustls_platform_verifier") {
        filter.push_str(",rustls_platform_verifier=off");
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log-level '{}': {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: logs captured by a unit,
        // a pipe or a file stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    osctl_deploy::test_hooks::announce();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let boot = cli.boot_dir.as_deref();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Switch(a) => commands::switch::run(a, &cli.sysroot, boot).await,
            Command::Upgrade(a) => commands::upgrade::run(a, &cli.sysroot, boot).await,
            Command::Rollback(a) => commands::rollback::run(a, &cli.sysroot, boot),
            Command::Status(a) => commands::status::run(a, &cli.sysroot, boot),
            Command::Diff(a) => commands::diff::run(a, &cli.sysroot, boot).await,
            Command::Pin(a) => commands::pin::run(a, true, &cli.sysroot, boot),
            Command::Unpin(a) => commands::pin::run(a, false, &cli.sysroot, boot),
            Command::Finalize(a) => commands::finalize::run(a, &cli.sysroot, boot),
            Command::Health(cmd) => commands::health::run(cmd, &cli.sysroot, boot),
            Command::Install(cmd) => commands::install::run(cmd, &cli.sysroot, boot).await,
            Command::Image(cmd) => commands::image::run(cmd, &cli.sysroot).await,
            Command::Fsck(args) => commands::fsck::run(args, &cli.sysroot, boot).await,
            Command::Gc(args) => commands::gc::run(args, &cli.sysroot, boot),
            Command::Container(cmd) => commands::container::run(cmd),
            Command::Fleet(cmd) => commands::fleet::run(cmd, &cli.sysroot, boot).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, the whole cause chain: what failed and why.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
