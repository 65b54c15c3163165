//! `osctl image pull REF`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use osctl_image::{FetchOptions, Platform};
use osctl_store::Store;

use super::deploy_common::TransportArg;
use crate::output;
use crate::progress::{self, ProgressMode};

#[derive(Args)]
pub struct PullArgs {
    /// Image reference: registry/repo:tag, registry/repo@sha256:…,
    /// docker://…, oci:/path[:tag], oci-archive:/file.tar[:tag] or
    /// containers-storage:NAME (or containers-storage:[DRIVER@ROOT+RUNROOT]NAME).
    pub reference: String,

    #[command(flatten)]
    pub transport: TransportArg,

    /// Auth file to use instead of the default search list.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// Platform to take from a multi-arch image (default: this host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,

    /// Verify the registry's TLS certificate; false also allows plain HTTP.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,

    /// Directory of extra CA certificates (*.crt) for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Print only the image id.
    #[arg(long, short)]
    pub quiet: bool,

    /// How to show progress: bars on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub async fn run(args: PullArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    let imgref = args.transport.image_ref(&args.reference)?;
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let opts = FetchOptions {
        authfile: args.authfile,
        platform,
        tls_verify: args.tls_verify,
        cert_dir: args.cert_dir,
        // The machine's policy, always: there is no flag to name another.
        signature_policy: None,
    };
    let store = Store::open_or_create(sysroot)?;
    let mode = if args.quiet {
        ProgressMode::None
    } else {
        args.progress
    };
    let observer = progress::observer(mode);
    let outcome = store
        .pull(&imgref, &opts, Arc::clone(&observer))
        .await
        .with_context(|| format!("pulling {imgref}"))?;
    drop(observer);
    if args.quiet {
        println!("{}", outcome.record().image_id());
    } else {
        print!("{}", output::pull_summary(&outcome, &store));
    }
    Ok(ExitCode::SUCCESS)
}
