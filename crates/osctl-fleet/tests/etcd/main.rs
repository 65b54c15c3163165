//! The etcd layer against real etcd members (osctl-testutil's EtcdCluster):
//! compare-and-swap records, resuming watches, kept leases, the election and
//! its fence, reboot slots, and the client under member failures.

mod client;
mod election;
mod fleetlock;
mod kv;
mod lease;
mod metrics;
mod slots;
mod watch;

use std::future::Future;
use std::time::Duration;

use osctl_fleet::etcd::Etcd;
use osctl_testutil::EtcdCluster;

/// The prefix tests use: not the default, as a second fleet sharing a
/// cluster would.
pub const PREFIX: &str = "/test/fleet/";

/// One HTTP answer: status, Content-Type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// One HTTP/1.1 request to `addr` over a fresh connection, as a plain
/// client (Zincati's, Prometheus') sends it.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    HttpAnswer {
        status,
        content_type,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

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
