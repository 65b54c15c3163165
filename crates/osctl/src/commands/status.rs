//! `osctl status [--format human|json|yaml] [--booted]`.
//!
//! Like bootc, YAML is the default when stdout is not a terminal, so a
//! script piping the output gets something parseable.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use osctl_deploy::status;

use super::deploy_common;

#[derive(Clone, Copy, ValueEnum)]
pub enum StatusFormat {
    Human,
    Json,
    Yaml,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Output format (default: human on a terminal, YAML otherwise).
    #[arg(long, value_enum)]
    pub format: Option<StatusFormat>,
    /// Only the booted deployment.
    #[arg(long)]
    pub booted: bool,
}

pub fn run(args: StatusArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut view = match deploy_common::open_existing(sysroot, boot)? {
        Some(sysroot) => sysroot.host_view()?,
        None => status::HostView::default(),
    };
    if args.booted {
        view = status::booted_only(&view);
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        StatusFormat::Human
    } else {
        StatusFormat::Yaml
    });
    match format {
        StatusFormat::Human => print!("{}", status::render_human(&view)),
        StatusFormat::Json => print!("{}", status::render_json(&status::to_host(&view))),
        StatusFormat::Yaml => print!("{}", status::render_yaml(&status::to_host(&view))),
    }
    Ok(ExitCode::SUCCESS)
}
