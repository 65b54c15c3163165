//! `osctl fleet agent --etcd URL… --node NAME [--labels k=v,…]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use osctl_fleet::agent::machine::Machine;
use osctl_fleet::agent::{Agent, AgentOptions};

use super::EtcdArgs;
use crate::commands::deploy_common::FetchArgs;

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This machine's name in the fleet (default: its host name).
    #[arg(long, env = "OSCTL_FLEET_NODE")]
    pub node: Option<String>,
    /// Labels rollouts select nodes by: k=v,k=v.
    #[arg(long, env = "OSCTL_FLEET_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// How often the agent looks for work when nothing changes (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub poll: Duration,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `k=v`, both non-empty.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not KEY=VALUE")),
    }
}

pub async fn run(args: AgentArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let node = match args.node {
        Some(n) => n,
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let etcd = args.etcd.connect().await?;
    let machine = Machine::open(sysroot, boot, args.fetch.options()?)?;
    let agent = Agent::new(
        etcd,
        AgentOptions {
            node,
            labels,
            poll: args.poll,
        },
        machine,
    )?;
    agent.run().await?;
    Ok(ExitCode::SUCCESS)
}
