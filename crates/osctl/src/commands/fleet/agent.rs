//! `osctl fleet agent --etcd URL… --node NAME [--labels k=v,…]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use osctl_fleet::agent::machine::Machine;
use osctl_fleet::agent::state::{self, AgentState};
use osctl_fleet::agent::{Agent, AgentOptions, error_chain};
use osctl_fleet::metrics;
use osctl_image::FetchOptions;

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
    /// Serve Prometheus metrics of this agent on ADDR:PORT (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
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
    let etcd = args.etcd.connect_waiting().await?;
    let metrics = match &args.metrics {
        Some(addr) => Some(osctl_fleet::http::bind(addr).await?),
        None => None,
    };
    let fetch = args.fetch.options()?;
    let machine = Machine::open(sysroot, boot, fetch.clone())?;
    let agent = Agent::new(
        etcd,
        AgentOptions {
            node: node.clone(),
            labels,
            poll: args.poll,
        },
        machine,
    )?;
    match metrics {
        None => agent.run().await?,
        // Either ending is the end (see the controller).
        Some(listener) => {
            let scrape = AgentScrape {
                node,
                sysroot: sysroot.to_path_buf(),
                boot: boot.map(Path::to_path_buf),
                fetch,
            };
            let scrape = Arc::new(scrape);
            let serve = osctl_fleet::metrics::serve(listener, move || {
                let scrape = Arc::clone(&scrape);
                async move { scrape.read() }
            });
            tokio::select! {
                r = agent.run() => r?,
                r = serve => r?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a scrape of the agent reads: its state file and the booted image.
struct AgentScrape {
    node: String,
    sysroot: PathBuf,
    boot: Option<PathBuf>,
    fetch: FetchOptions,
}

impl AgentScrape {
    fn read(&self) -> Result<String, String> {
        let state = state::load(&self.sysroot, &self.node)
            .map_err(|e| error_chain(&e))?
            .unwrap_or_else(|| AgentState::new(&self.node));
        let machine = Machine::open(&self.sysroot, self.boot.as_deref(), self.fetch.clone())
            .map_err(|e| error_chain(&e))?;
        let view = machine.view().map_err(|e| error_chain(&e))?;
        let digest = view.booted.map(|b| b.digest).unwrap_or_default();
        Ok(metrics::agent_metrics(&state, &digest))
    }
}
