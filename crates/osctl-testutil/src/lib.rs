//! Test support for osctl's integration tests.
//!
//! # The model
//!
//! osctl's tests should fail for the reasons a user's pull would fail, so this
//! crate drives *real* components instead of mocks:
//!
//! * [`registry::Registry`] runs Debian's `docker-registry` (CNCF distribution
//!   v2.8) on `127.0.0.1` and a free port, optionally behind htpasswd basic
//!   auth or bearer-token auth ([`token::TokenServer`], a Docker token
//!   server in the test process), and/or a self-signed TLS certificate. Its storage is a plain
//!   directory, so tests can corrupt a stored blob in place.
//! * [`spec`] describes images as data ([`ImageSpec`], [`Layer`], [`Entry`])
//!   and encodes layers with our own tar writer, so tests control every
//!   header byte, hostile names included; [`layout`] writes them as OCI image
//!   layouts. [`build_layout_with_umoci`] makes a layout with umoci instead,
//!   so at least one path uses an independent tool. Images reach the registry
//!   through `skopeo copy`, the client people use, never through our own
//!   upload code, except for the deliberately broken blobs and manifests
//!   skopeo refuses to write ([`Registry::put_blob`], [`Registry::put_manifest`]).
//! * [`tree`] snapshots a real directory and compares it with the tree the
//!   layers must produce ([`expected_tree`]), with a readable diff.
//! * [`scratch::ScratchFs`] mounts a size-limited tmpfs, to fill up or
//!   remount read-only: real `ENOSPC` and `EROFS` for fault tests.
//! * [`proxy::DropProxy`] sits between a client and the registry: it cuts
//!   blob downloads part way, fails chosen requests with an HTTP error or a
//!   dropped connection ([`Fault`]), answers chosen paths with made-up
//!   responses no real registry sends ([`Canned`]: endless bodies, lying
//!   lengths, redirect loops, manifests the registry would refuse to store),
//!   and logs every request with its `Range` and the status it got.
//! * [`tls_front::TlsFront`] puts HTTPS in front of such a proxy, so the same
//!   lies can be told over TLS (redirects to plain HTTP, token services
//!   asking for credentials in clear).
//!
//! * [`sigstore`] signs images the way cosign/skopeo sigstore signing does
//!   (a `sha256-<hex>.sig` tag next to the image), because Debian's skopeo
//!   cannot and there is no cosign here; written from the format's
//!   description, independently of osctl's verifier. The `osctl-test-sign`
//!   binary exposes it to shell tests.
//! * [`api`] holds the few registry calls the harness makes itself (blob
//!   upload, manifest PUT/GET), for a started [`Registry`] and for an
//!   existing plain-HTTP one ([`PlainHttpRegistry`]) alike.
//!
//! * [`etcd::EtcdCluster`] runs real `etcd` members on loopback for the fleet
//!   code, and kills, restarts, pauses and resumes them.
//!
//! Everything listens on loopback only; nothing here touches another network.
//!
//! Errors are `anyhow` errors with context: this is test code, and the message
//! a failing test prints is what matters.

pub mod api;
pub mod etcd;
pub mod generated_doc;
pub mod images;
pub mod layout;
pub mod proxy;
pub mod registry;
pub mod scratch;
pub mod sigstore;
pub mod spec;
pub mod tls_front;
pub mod token;
pub mod tree;

mod expected;
mod http;
mod tarwriter;
mod umoci;

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

pub use api::{PlainHttpRegistry, RegistryApi};
pub use etcd::EtcdCluster;
pub use http::HttpResponse;
pub use layout::{
    BuiltImage, BuiltIndex, Compression, EncodedLayer, Entry, ImageSpec, Layer, encode_layer,
    expected_tree, layer_tar, read_layout_image, try_expected_tree, write_index_layout,
    write_layout, write_oci_archive,
};
pub use proxy::{Canned, CannedBody, DropProxy, Fault, LoggedRequest};
pub use registry::{ManifestFormat, PushOptions, Registry, RegistryOptions};
pub use scratch::ScratchFs;
pub use tls_front::TlsFront;
pub use token::{Grant, IssuedToken, TokenServer};
pub use tree::{
    CompareOptions, Node, NodeKind, Tree, assert_trees_equal, diff_trees, diff_trees_with,
    snapshot, try_snapshot,
};
pub use umoci::{UmociStep, build_layout_with_umoci};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and dropping the listener, so another
/// process could take it before the caller binds it; [`Registry::start`]
/// retries with a new port when that happens. Prefer binding port 0 yourself
/// when you own the listener (as [`DropProxy`] does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// A fresh temporary directory named `osctl-test-*`, removed on drop.
///
/// Set `OSCTL_TESTUTIL_KEEP=1` to keep every directory made here (and the
/// registry's) for post-mortem debugging; the path is printed to stderr.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("osctl-test-")
        .tempdir()
        .expect("creating a temporary directory");
    maybe_keep(dir)
}

/// Like [`tempdir`] but under `parent`, e.g. to stay on one filesystem.
pub fn tempdir_in(parent: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("osctl-test-")
        .tempdir_in(parent)
        .expect("creating a temporary directory");
    maybe_keep(dir)
}

fn maybe_keep(mut dir: tempfile::TempDir) -> tempfile::TempDir {
    if std::env::var_os("OSCTL_TESTUTIL_KEEP").is_some_and(|v| v == "1") {
        eprintln!("osctl-testutil: keeping {}", dir.path().display());
        dir.disable_cleanup(true);
    }
    dir
}

/// Runs `cmd`, failing unless it exits 0.
///
/// On failure both streams are printed to stderr (so `cargo test` shows them
/// next to the panic) and included in the error.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let output = run_unchecked(cmd)?;
    if !output.status.success() {
        bail!(
            "{} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Runs `cmd` and returns its output whatever the exit status, for tests that
/// expect a failure. Output of a failed run is still echoed to stderr.
pub fn run_unchecked(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .output()
        .with_context(|| format!("spawning {}", describe(cmd)))?;
    if !output.status.success() {
        let mut err = std::io::stderr().lock();
        // Best effort: this is diagnostics for a human reading test output.
        let _ = writeln!(
            err,
            "--- {} exited with {} ---",
            describe(cmd),
            output.status
        );
        let _ = err.write_all(&output.stdout);
        let _ = err.write_all(&output.stderr);
    }
    Ok(output)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Writes a containers auth file (`auth.json`, as `podman login` does) with
/// one entry: `{"auths": {KEY: {"auth": base64(user:password)}}}`.
pub fn write_auth_json(
    path: &std::path::Path,
    key: &str,
    user: &str,
    password: &str,
) -> Result<()> {
    let auth = http::base64(format!("{user}:{password}").as_bytes());
    let json = serde_json::json!({"auths": {key: {"auth": auth}}});
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, json.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// `sha256:<hex>` of `bytes`, the digest form OCI uses everywhere.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(openssl::sha::sha256(bytes)))
}

/// Streaming SHA-256, also usable as an `io::Write` sink.
///
/// OpenSSL rather than the `sha2` crate: tests are built unoptimised, where
/// `sha2` manages ~45 MB/s and OpenSSL's assembly the usual GB/s; large
/// layers and tree snapshots hash a lot. osctl links OpenSSL already.
#[derive(Clone)]
pub(crate) struct Sha256(openssl::sha::Sha256);

impl Sha256 {
    pub(crate) fn new() -> Self {
        Sha256(openssl::sha::Sha256::new())
    }
    /// Lower-case hex of the digest so far (the hasher stays usable).
    pub(crate) fn hex(&self) -> String {
        hex::encode(self.0.clone().finish())
    }
}

impl std::io::Write for Sha256 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Splits `sha256:<hex>` into its hex part, checking the algorithm and length
/// so a typo in a test fails loudly instead of pointing at a wrong path.
pub(crate) fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {digest:?} is not sha256:<hex>"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("digest {digest:?} does not have 64 hex digits");
    }
    Ok(hex)
}
