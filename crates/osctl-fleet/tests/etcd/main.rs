//! The etcd layer against real etcd members (osctl-testutil's EtcdCluster):
//! compare-and-swap records, resuming watches, kept leases, the election and
//! its fence, reboot slots, and the client under member failures.

mod client;
mod election;
mod kv;
mod lease;
mod slots;
mod watch;

use std::future::Future;
use std::time::Duration;

use osctl_fleet::etcd::Etcd;
use osctl_testutil::EtcdCluster;

/// The prefix tests use: not the default, as a second fleet sharing a
/// cluster would.
pub const PREFIX: &str = "/test/fleet/";

/// Starts a cluster, failing the test with the reason.
pub fn cluster(members: usize) -> EtcdCluster {
    EtcdCluster::start(members).unwrap_or_else(|e| panic!("starting etcd: {e:#}"))
}

/// Connects to every member of `cluster` under [`PREFIX`].
pub async fn connect(cluster: &EtcdCluster) -> Etcd {
    Etcd::connect(&cluster.endpoints(), PREFIX)
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd: {e}"))
}

/// Awaits `fut`, failing the test if it takes longer than `limit`: a guard
/// against hangs, not a measurement.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {limit:?}"))
}

/// What happens to a member: SIGKILL (restarted with its data after), or
/// SIGSTOP (continued after), which leaves its connections open and silent.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Kill,
    Pause,
}

impl Fault {
    pub fn inflict(self, c: &mut EtcdCluster, i: usize) {
        match self {
            Fault::Kill => blocking(|| c.kill(i)),
            Fault::Pause => blocking(|| c.pause(i)),
        }
    }

    pub fn undo(self, c: &mut EtcdCluster, i: usize) {
        match self {
            Fault::Kill => blocking(|| c.start_member(i)),
            Fault::Pause => blocking(|| {
                c.resume(i)?;
                c.wait_healthy()
            }),
        }
    }
}

/// Runs a blocking cluster operation (process kill/start, etcdctl) from an
/// async test without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> anyhow::Result<T>) -> T {
    tokio::task::block_in_place(f).unwrap_or_else(|e| panic!("{e:#}"))
}
