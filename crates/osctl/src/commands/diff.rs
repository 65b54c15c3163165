//! `osctl diff [FROM] [TO] [--files] [--format human|json]`: what an update
//! changes on this machine — files under `/usr` and `/etc`, Debian
//! packages. Which images FROM and TO name (and their defaults) is
//! osctl-deploy's `diff_target`; the comparison and its rendering are
//! osctl-diff's. Read-only like `status`, except that a cached update not
//! yet in the store is pulled into it first (said on stderr; docs/diff.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use osctl_deploy::{DeployError, DeploymentRole, DiffTarget, Sysroot};
use osctl_diff::report::{self, Endpoint, Role};
use osctl_store::{ImageRecord, Store};

use super::deploy_common::{self, FetchArgs};
use crate::progress::{self, ProgressMode};

#[derive(Clone, Copy, ValueEnum)]
pub enum DiffFormat {
    Human,
    Json,
}

#[derive(Args)]
pub struct DiffArgs {
    /// Deployment id (6+ digits) or image reference in the store
    /// (default: the booted deployment).
    pub from: Option<String>,
    /// Deployment id or image reference in the store (default: the staged
    /// deployment, else the update `osctl upgrade --check` found).
    pub to: Option<String>,
    /// List every added (+), removed (-) and changed (M) path.
    #[arg(long)]
    pub files: bool,
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    pub format: DiffFormat,
    /// Registry options for pulling the cached update, if it must be.
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub async fn run(args: DiffArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let deployments = deploy_common::open_existing(sysroot, boot)?;
    // Without any deployment, only images in the store can be named.
    let bare_store;
    let store = match &deployments {
        Some(s) => s.store(),
        None => {
            bare_store = Store::open(sysroot)?;
            &bare_store
        }
    };
    let target =
        |arg: Option<&str>, default: fn(&Sysroot) -> Result<DiffTarget, DeployError>| match (
            &deployments,
            arg,
        ) {
            (Some(s), Some(a)) => s.diff_target(a),
            (Some(s), None) => default(s),
            (None, Some(a)) => osctl_deploy::image_diff_target(store, a),
            (None, None) => default_without_deployments(),
        };
    let from = target(args.from.as_deref(), Sysroot::diff_default_from)?;
    let to = target(args.to.as_deref(), Sysroot::diff_default_to)?;
    let (from_record, from_end) = resolved(store, from, &args).await?;
    let (to_record, to_end) = resolved(store, to, &args).await?;
    let from_tree = store.image_tree(&from_record)?;
    let to_tree = store.image_tree(&to_record)?;
    let diff = osctl_diff::diff_images(&from_tree, &from_end.image, &to_tree, &to_end.image)?;
    match args.format {
        DiffFormat::Human => print!(
            "{}",
            report::render_human(&from_end, &to_end, &diff, args.files)
        ),
        DiffFormat::Json => print!("{}", report::render_json(&from_end, &to_end, &diff)),
    }
    Ok(ExitCode::SUCCESS)
}

fn default_without_deployments() -> Result<DiffTarget, DeployError> {
    Err(DeployError::NoDiffDefault(
        "nothing is deployed here; name what to compare: osctl diff FROM TO",
    ))
}

/// The record to compare and how to name it; pulls the cached update if
/// it is not in the store yet.
async fn resolved(
    store: &Store,
    target: DiffTarget,
    args: &DiffArgs,
) -> anyhow::Result<(ImageRecord, Endpoint)> {
    let endpoint = |role, deployment, record: &ImageRecord| Endpoint {
        role,
        deployment,
        image: record.reference().to_string(),
        manifest_digest: record.manifest_digest().to_string(),
    };
    Ok(match target {
        DiffTarget::Deployment { role, deployment } => {
            let role = match role {
                DeploymentRole::Booted => Role::Booted,
                DeploymentRole::Staged => Role::Staged,
                DeploymentRole::Rollback => Role::Rollback,
                DeploymentRole::Other => Role::Deployment,
            };
            let record = deployment.record().clone();
            let end = endpoint(role, Some(deployment.id().as_str().to_string()), &record);
            (record, end)
        }
        DiffTarget::Image(record) => {
            let end = endpoint(Role::Image, None, &record);
            (*record, end)
        }
        DiffTarget::CachedUpdate(record) => {
            let end = endpoint(Role::CachedUpdate, None, &record);
            (*record, end)
        }
        DiffTarget::Pull { imgref, digest } => {
            eprintln!(
                "The update `osctl upgrade --check` found is not in the store: pulling {imgref} \
                 (as `osctl image pull` would; `osctl upgrade` reuses it)"
            );
            let fetch = args.fetch.options()?;
            // By digest: a tag that moved since the check is refused
            // before anything is written to the store.
            let outcome = store
                .pull_digest(&imgref, &digest, &fetch, progress::observer(args.progress))
                .await
                .with_context(|| {
                    format!(
                        "pulling the update {digest} `osctl upgrade --check` recorded \
                         (run the check again)"
                    )
                })?;
            let record = outcome.record().clone();
            let end = endpoint(Role::CachedUpdate, None, &record);
            (record, end)
        }
    })
}
