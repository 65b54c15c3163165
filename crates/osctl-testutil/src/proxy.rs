//! A TCP proxy that drops connections in the middle of blob downloads.
//!
//! # The model
//!
//! [`DropProxy`] listens on `127.0.0.1` (a port bound as 0, so no race) and
//! forwards each client connection to the upstream registry, one thread per
//! connection, plain blocking std I/O. It understands just enough HTTP/1.1 to
//! know where a response body starts and which request it answers:
//!
//! * Every request is forwarded with `Connection: close` (and the response
//!   is given one too), so each client connection carries exactly one
//!   exchange and the end of the upstream stream is the end of the response.
//!   Clients simply open a new connection per request; no keep-alive framing
//!   (chunked bodies, pipelining) has to be parsed.
//! * For a `GET` whose path contains `/blobs/` answered with 200 or 206 and a
//!   body longer than `after_bytes`, only the first `after_bytes` bytes of
//!   the body are forwarded, then both connections are shut down. The client
//!   sees a response that ends early, exactly as when a connection drops.
//! * Everything else (manifests, HEAD, uploads, errors) passes through.
//!
//! Only plain-HTTP upstreams work: with TLS the proxy could not see paths.
//! `max_cuts` lets a test cut the first N downloads and then let a retry
//! through, to test resumption. A cut applies to `206` answers too, so a
//! client resuming with `Range` is cut again while cuts remain.
//!
//! # Faults and a request log
//!
//! [`DropProxy::fail_next`] answers the next N requests whose path contains
//! a given text with an HTTP error status (a distribution error body) or by
//! closing the connection without an answer ([`Fault`]); later requests go
//! through again. Every request is logged ([`DropProxy::log`]) with its
//! method, target, `Range` header and the status the client got, so a test
//! can prove that a request was retried, or resumed with `Range`, and that
//! the registry honoured it.
//!
//! # Made-up responses
//!
//! distribution refuses to store a manifest that is not JSON or has an
//! unknown media type (see [`crate::registry`]), and no real registry sends
//! endless bodies, lying lengths or redirect loops, yet osctl must survive a
//! registry that does. [`DropProxy::serve`] makes the proxy answer `GET` and
//! `HEAD` of one path (any query) itself with a [`Canned`] response, written
//! byte for byte as given; [`DropProxy::serve_manifest`] is the common case.
//! These are the only responses in this crate that do not come from the
//! real registry; everything else still does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::http::find;

const MAX_HEAD: usize = 64 * 1024;

/// A response the proxy writes itself instead of asking the registry.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    /// Sent as given, in order (`Connection: close` is added; a body's
    /// framing header is added as [`CannedBody`] says).
    pub headers: Vec<(String, String)>,
    pub body: CannedBody,
}

/// How a [`Canned`] body is framed.
#[derive(Clone, Debug)]
pub enum CannedBody {
    /// With its true `Content-Length`.
    Bytes(Vec<u8>),
    /// With `Content-Length: declared`, whatever the true length is.
    LyingLength { bytes: Vec<u8>, declared: u64 },
    /// `Transfer-Encoding: chunked`, `chunk` again and again until the
    /// client hangs up. As a safety net for clients without a cap, the
    /// proxy stops after `max_bytes` by dropping the connection (no final
    /// chunk), so such a client sees a broken transfer, not an end.
    Endless { chunk: Vec<u8>, max_bytes: u64 },
}

impl Canned {
    /// `200` with `body` as `content_type`.
    pub fn ok(content_type: &str, body: &[u8]) -> Canned {
        Canned {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: CannedBody::Bytes(body.to_vec()),
        }
    }

    /// A redirect (`307`) to `location`.
    pub fn redirect(location: &str) -> Canned {
        Canned {
            status: 307,
            headers: vec![("Location".into(), location.into())],
            body: CannedBody::Bytes(Vec::new()),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What [`DropProxy::fail_next`] does to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a distribution error body.
    Status(u16),
    /// Close the connection without answering.
    Drop,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `Range` header, if the client sent one.
    pub range: Option<String>,
    /// The status the client got (0: the connection was closed unanswered).
    pub status: u16,
    /// The body was cut short.
    pub cut: bool,
    /// Answered by a fault or a canned response, not by the registry.
    pub made_up: bool,
}

struct PendingFault {
    path_contains: String,
    fault: Fault,
    remaining: u64,
}

pub struct DropProxy {
    addr: String,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    /// `u64::MAX` means: never cut.
    after_bytes: AtomicU64,
    /// Cut at most this many responses (`u64::MAX`: no limit).
    max_cuts: u64,
    cuts: AtomicU64,
    requests: AtomicU64,
    stop: AtomicBool,
    /// Request path → response answered by the proxy itself.
    canned: Mutex<HashMap<String, Canned>>,
    /// Repositories every request for which is answered 403 DENIED.
    denied: Mutex<Vec<String>>,
    faults: Mutex<Vec<PendingFault>>,
    log: Mutex<Vec<LoggedRequest>>,
    /// Forward requests without their `Range` header.
    ignore_ranges: AtomicBool,
}

impl DropProxy {
    /// A proxy that cuts nothing (for [`DropProxy::serve_manifest`]).
    pub fn passthrough(upstream_addr: &str) -> Result<DropProxy> {
        Self::start(upstream_addr, u64::MAX)
    }

    /// Proxies to `upstream_addr` (`127.0.0.1:PORT`), cutting every blob
    /// download after `after_bytes` bytes of body.
    pub fn start(upstream_addr: &str, after_bytes: u64) -> Result<DropProxy> {
        Self::start_limited(upstream_addr, after_bytes, u64::MAX)
    }

    /// Like [`DropProxy::start`] but cuts only the first `max_cuts` blob
    /// downloads; later ones pass through whole.
    pub fn start_limited(
        upstream_addr: &str,
        after_bytes: u64,
        max_cuts: u64,
    ) -> Result<DropProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            upstream: upstream_addr.to_string(),
            after_bytes: AtomicU64::new(after_bytes),
            max_cuts,
            cuts: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            canned: Mutex::new(HashMap::new()),
            denied: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            ignore_ranges: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name("drop-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let shared = accept_shared.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = handle(client, &shared) {
                            eprintln!("drop-proxy: {e:#}");
                        }
                    });
                }
            })?;
        Ok(DropProxy {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `127.0.0.1:PROXYPORT/<repo_and_tag>`.
    pub fn image_ref(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// How many responses were cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many requests went through (cut or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Answers `GET`/`HEAD /v2/<repo>/manifests/<reference>` with `body` as
    /// `content_type` (and its sha256 as Docker-Content-Digest) instead of
    /// asking the registry. See the module docs for why this exists.
    pub fn serve_manifest(&self, repo: &str, reference: &str, content_type: &str, body: &[u8]) {
        let canned = Canned::ok(content_type, body)
            .with_header("Docker-Content-Digest", &crate::sha256_digest(body));
        self.serve(&format!("/v2/{repo}/manifests/{reference}"), canned);
    }

    /// Answers `GET`/`HEAD` of `path` (whatever the query) with `canned`
    /// from now on, instead of asking the registry.
    pub fn serve(&self, path: &str, canned: Canned) {
        let mut all = self.shared.canned.lock().expect("poisoned");
        all.insert(path.to_string(), canned);
    }

    /// Stops answering `path` itself: the registry answers it again.
    pub fn unserve(&self, path: &str) {
        self.shared.canned.lock().expect("poisoned").remove(path);
    }

    /// Applies `fault` to the next `count` requests whose path contains
    /// `path_contains` (`u64::MAX`: to all of them).
    pub fn fail_next(&self, path_contains: &str, fault: Fault, count: u64) {
        self.shared
            .faults
            .lock()
            .expect("poisoned")
            .push(PendingFault {
                path_contains: path_contains.to_string(),
                fault,
                remaining: count,
            });
    }

    /// From now on, forwards requests without their `Range` header, so the
    /// registry answers every one with the whole blob (`200`), as a registry
    /// or storage backend without range support does.
    pub fn ignore_ranges(&self) {
        self.shared.ignore_ranges.store(true, Ordering::SeqCst);
    }

    /// Every request so far, in the order they were answered.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().expect("poisoned").clone()
    }

    /// Answers every request under `/v2/<repo>/` with `403 Forbidden` and a
    /// distribution-spec `DENIED` error, as an authorising front (or a
    /// registry's access policy) does for a known user without access.
    /// distribution itself only ever answers 401, so this is the one way to
    /// see a 403 here.
    pub fn deny_repository(&self, repo: &str) {
        self.shared
            .denied
            .lock()
            .expect("poisoned")
            .push(format!("/v2/{repo}/"));
    }

    /// Changes the cut point for new connections; `None` stops cutting.
    pub fn set_after_bytes(&self, after_bytes: Option<u64>) {
        self.shared
            .after_bytes
            .store(after_bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Drop for DropProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees `stop`.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut client: TcpStream, shared: &Shared) -> Result<()> {
    // Timeouts so a stuck peer cannot keep a thread forever.
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let (head, leftover) = match read_head(&mut client)? {
        Some(v) => v,
        // Closed without a request (e.g. our own wake-up), or a TLS hello.
        None => return Ok(()),
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );

    let path = target.split('?').next().unwrap_or_default();
    let range = header_value(&head, "range").map(str::to_string);
    let record = |status: u16, cut: bool, made_up: bool| {
        shared.log.lock().expect("poisoned").push(LoggedRequest {
            method: method.to_string(),
            target: target.to_string(),
            range: range.clone(),
            status,
            cut,
            made_up,
        });
    };
    let denied = shared
        .denied
        .lock()
        .expect("poisoned")
        .iter()
        .any(|prefix| path.starts_with(prefix.as_str()));
    if denied {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let head = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        record(403, false, true);
        client.write_all(head.as_bytes())?;
        client.write_all(body)?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    if let Some(fault) = take_fault(shared, path) {
        match fault {
            Fault::Status(status) => {
                let body = br#"{"errors":[{"code":"UNKNOWN","message":"fault injected by the test proxy"}]}"#;
                let head = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                record(status, false, true);
                client.write_all(head.as_bytes())?;
                client.write_all(body)?;
            }
            Fault::Drop => record(0, false, true),
        }
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let canned = shared.canned.lock().expect("poisoned").get(path).cloned();
    if let Some(canned) = canned
        && matches!(method, "GET" | "HEAD")
    {
        record(canned.status, false, true);
        write_canned(&mut client, &canned, method == "HEAD")?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }

    let mut upstream = TcpStream::connect(&shared.upstream)
        .with_context(|| format!("connecting to {}", shared.upstream))?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let forwarded = if shared.ignore_ranges.load(Ordering::SeqCst) {
        without_header(&head, "range")
    } else {
        head.clone()
    };
    upstream.write_all(force_close(&forwarded).as_bytes())?;
    upstream.write_all(&leftover)?;
    // The rest of a request body (uploads) flows on its own thread.
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    std::thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });

    let Some((resp_head, body_start)) = read_head(&mut upstream)? else {
        bail!("upstream closed without answering {request_line}");
    };
    let status: u16 = resp_head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_length =
        header_value(&resp_head, "content-length").and_then(|v| v.parse::<u64>().ok());
    client.write_all(force_close(&resp_head).as_bytes())?;

    let after = shared.after_bytes.load(Ordering::SeqCst);
    let eligible = method == "GET"
        && target.contains("/blobs/")
        && matches!(status, 200 | 206)
        && content_length.is_none_or(|len| len > after);
    let cut = eligible
        && shared
            .cuts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < shared.max_cuts).then_some(n + 1)
            })
            .is_ok();
    record(status, cut, false);
    if cut {
        let first = body_start
            .len()
            .min(usize::try_from(after).unwrap_or(usize::MAX));
        client.write_all(&body_start[..first])?;
        let remaining = after - first as u64;
        io::copy(&mut (&mut upstream).take(remaining), &mut client)?;
    } else {
        client.write_all(&body_start)?;
        io::copy(&mut upstream, &mut client)?;
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    Ok(())
}

/// The first pending fault for `path`, used up by one.
fn take_fault(shared: &Shared, path: &str) -> Option<Fault> {
    let mut faults = shared.faults.lock().expect("poisoned");
    let pending = faults
        .iter_mut()
        .find(|f| f.remaining > 0 && path.contains(f.path_contains.as_str()))?;
    pending.remaining = pending.remaining.saturating_sub(1);
    Some(pending.fault)
}

fn write_canned(client: &mut TcpStream, canned: &Canned, head_only: bool) -> Result<()> {
    let mut head = format!("HTTP/1.1 {} Canned\r\n", canned.status);
    for (k, v) in &canned.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framing = match &canned.body {
        CannedBody::Bytes(b) => format!("Content-Length: {}", b.len()),
        CannedBody::LyingLength { declared, .. } => format!("Content-Length: {declared}"),
        CannedBody::Endless { .. } => "Transfer-Encoding: chunked".to_string(),
    };
    head.push_str(&format!("{framing}\r\nConnection: close\r\n\r\n"));
    client.write_all(head.as_bytes())?;
    if head_only {
        return Ok(());
    }
    match &canned.body {
        CannedBody::Bytes(bytes) | CannedBody::LyingLength { bytes, .. } => {
            client.write_all(bytes)?;
        }
        CannedBody::Endless { chunk, max_bytes } => {
            let framed = [
                format!("{:x}\r\n", chunk.len()).as_bytes(),
                chunk.as_slice(),
                b"\r\n",
            ]
            .concat();
            let mut sent = 0u64;
            while sent < *max_bytes {
                // The client hanging up ends the loop through this error.
                if client.write_all(&framed).is_err() {
                    return Ok(());
                }
                sent += chunk.len() as u64;
            }
        }
    }
    client.flush()?;
    Ok(())
}

/// Reads up to the end of an HTTP head; returns it and whatever body bytes
/// came along in the same reads. `None` if the peer closed before any byte
/// or started a TLS handshake (this proxy speaks plain HTTP only).
pub(crate) fn read_head(stream: &mut impl Read) -> Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside an HTTP head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] == 0x16 {
            // A TLS ClientHello: clients like skopeo try https before falling
            // back to http. Closing at once makes the fallback immediate
            // (waiting for an HTTP head would stall until their timeout).
            return Ok(None);
        }
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Ok(Some((head, buf[end + 4..].to_vec())));
        }
        if buf.len() > MAX_HEAD {
            bail!("HTTP head larger than {MAX_HEAD} bytes");
        }
    }
}

/// The head with any connection-management headers replaced by
/// `Connection: close`.
pub(crate) fn force_close(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection"
        ) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// The head without any `name` header (case-insensitive).
fn without_header(head: &str, name: &str) -> String {
    head.split_inclusive("\r\n")
        .filter(|line| {
            line.split_once(':')
                .is_none_or(|(k, _)| !k.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_can_be_left_out() {
        let head = "GET /v2/x HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n";
        assert_eq!(
            without_header(head, "range"),
            "GET /v2/x HTTP/1.1\r\nHost: x\r\n\r\n"
        );
    }

    #[test]
    fn force_close_replaces_keep_alive() {
        let head =
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n";
        assert_eq!(
            force_close(head),
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
    }
}
