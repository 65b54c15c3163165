//! A TLS front for a plain-HTTP service: HTTPS on the outside, the
//! [`crate::DropProxy`] (or a registry) on the inside.
//!
//! # Why
//!
//! A client's security rules for HTTPS (refusing a redirect to plain HTTP,
//! not sending credentials in clear) can only be tested against a TLS server
//! that misbehaves, and the misbehaving part ([`crate::Canned`] responses)
//! lives in the plain-HTTP proxy, which cannot see inside TLS. This front
//! terminates TLS and hands each request to that proxy, so every canned lie
//! can be told over HTTPS too.
//!
//! # The model
//!
//! [`TlsFront`] listens on `127.0.0.1` (port bound as 0) with a certificate
//! for `127.0.0.1` signed by a throw-away CA of its own (the same kind
//! [`crate::Registry`] makes; clients trust it via [`TlsFront::cert_dir`]).
//! Each connection carries one exchange: the request head is read from the
//! TLS stream, forwarded upstream with `Connection: close`, and the answer is
//! copied back until the upstream closes; then the TLS connection is closed.
//! Requests with bodies are not supported (a pull sends none). One thread
//! per connection, plain blocking I/O, through the `openssl` crate the token
//! server links already.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use crate::proxy::{force_close, read_head};

/// How long a stuck peer may keep a connection thread.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

pub struct TlsFront {
    addr: String,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    /// Serves HTTPS on a free loopback port, forwarding to `upstream`
    /// (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> Result<TlsFront> {
        let dir = crate::tempdir();
        crate::registry::make_certificate(dir.path())?;
        let tls = dir.path().join("tls");
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        acceptor.set_private_key_file(tls.join("key.pem"), SslFiletype::PEM)?;
        acceptor.set_certificate_chain_file(tls.join("cert.pem"))?;
        acceptor.check_private_key()?;
        let acceptor = Arc::new(acceptor.build());
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the TLS front")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, accept_stop) = (upstream.to_string(), stop.clone());
        let accept_thread =
            std::thread::Builder::new()
                .name("tls-front".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if accept_stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(client) = conn else { continue };
                        let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                        std::thread::spawn(move || {
                            if let Err(e) = relay(client, &acceptor, &upstream) {
                                eprintln!("tls-front: {e:#}");
                            }
                        });
                    }
                })?;
        Ok(TlsFront {
            addr,
            dir,
            stop,
            accept_thread: Some(accept_thread),
        })
    }

    /// `127.0.0.1:PORT` of the front.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn image_ref(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// A directory holding the front's CA as `ca.crt` (for `--cert-dir`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees `stop`; a failed
        // connect means the listener is gone already.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept_thread.take() {
            // A panicked accept thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

/// One exchange: TLS in, plain HTTP to `upstream`, the answer back.
fn relay(client: TcpStream, acceptor: &SslAcceptor, upstream: &str) -> Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut tls = match acceptor.accept(client) {
        Ok(s) => s,
        // The wake-up connect of Drop, or a client that gave up on our
        // certificate: nothing to relay.
        Err(_) => return Ok(()),
    };
    let Some((head, body)) = read_head(&mut tls)? else {
        return Ok(());
    };
    if !body.is_empty() {
        bail!("a request with a body; the TLS front relays only GET and HEAD");
    }
    let mut up =
        TcpStream::connect(upstream).with_context(|| format!("connecting to {upstream}"))?;
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    up.write_all(force_close(&head).as_bytes())?;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // The client hanging up (it stopped at a cap, say) ends the relay.
        if tls.write_all(&buf[..n]).is_err() {
            return Ok(());
        }
    }
    tls.flush()?;
    // The client may already be gone; there is nothing left to tell it.
    let _ = tls.shutdown();
    Ok(())
}
