//! `osctl fleet controller --etcd URL…`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use osctl_fleet::controller::{self, ControllerOptions};

use super::EtcdArgs;
use crate::commands::deploy_common::FetchArgs;

#[derive(Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// How long a node may hold a reboot slot before it counts as failed
    /// (e.g. 15m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub reboot_deadline: Duration,
    /// How often the leader reconciles (e.g. 1s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub tick: Duration,
    /// The name this controller campaigns under (default: host name and pid).
    #[arg(long)]
    pub id: Option<String>,
    /// Serve Prometheus metrics of the fleet on ADDR:PORT (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect_waiting().await?;
    let id = args.id.unwrap_or_else(|| {
        format!(
            "{}:{}",
            rustix::system::uname().nodename().to_string_lossy(),
            std::process::id()
        )
    });
    let metrics = match &args.metrics {
        Some(addr) => Some(osctl_fleet::http::bind(addr).await?),
        None => None,
    };
    let run = controller::run(
        etcd.clone(),
        ControllerOptions {
            id,
            reboot_deadline: args.reboot_deadline,
            tick: args.tick,
            fetch: args.fetch.options()?,
        },
    );
    match metrics {
        None => run.await?,
        // Either ending is the end: a controller whose metrics died would
        // look dead to monitoring while it still leads.
        Some(listener) => tokio::select! {
            r = run => r?,
            r = osctl_fleet::metrics::serve_fleet(etcd, listener) => r?,
        },
    }
    Ok(ExitCode::SUCCESS)
}
