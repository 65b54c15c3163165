//! `osctl fleet pause|resume|promote|abort|undo ROLLOUT`.

use std::process::ExitCode;

use clap::Args;
use osctl_fleet::admin;
use osctl_fleet::model::ControlAction;

use super::EtcdArgs;

#[derive(Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The rollout.
    pub rollout: String,
}

pub async fn run(args: ControlArgs, action: ControlAction) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect().await?;
    admin::control(&etcd, &args.rollout, action).await?;
    let verb = match action {
        ControlAction::Pause => "pause",
        ControlAction::Resume => "resume",
        ControlAction::Promote => "promote",
        ControlAction::Abort => "abort",
        ControlAction::Undo => "undo",
    };
    println!(
        "rollout/{}: {verb} requested (the controller applies it; `osctl fleet status {}` shows it)",
        args.rollout, args.rollout
    );
    Ok(ExitCode::SUCCESS)
}
