//! A real registry: Debian's `docker-registry` (CNCF distribution v2.8).
//!
//! # The model
//!
//! Each [`Registry`] is its own `docker-registry serve CONFIG.yml` process
//! with everything in one temporary directory: the config, the filesystem
//! storage (so tests can find and tamper with stored blobs), the htpasswd
//! file or the token server's key pair, the TLS key pair and the log. It
//! listens on `127.0.0.1` only, on a port picked just before start; if another
//! process grabs the port first the start is retried on a new one. Dropping
//! the value kills the process (and stops its token server).
//!
//! Images get in through `skopeo copy` from an OCI layout, the way a user
//! would publish them. Two escape hatches exist for content skopeo refuses to
//! write: [`Registry::put_blob`] (any bytes as a blob, e.g. malformed config
//! JSON or a layer whose diff_id will not match) and [`Registry::put_manifest`]
//! (any manifest bytes with any Content-Type). Note that distribution itself
//! validates manifests on PUT: the body must parse as the type the
//! Content-Type names (400 otherwise, also for unknown types), and every
//! referenced blob must already be stored. What it does not check: layer
//! media types, config contents, layer contents against diff_ids. Stored
//! manifests are blobs too ([`Registry::blob_path`] of the manifest digest):
//! overwriting one with *different valid* JSON makes the registry serve bytes
//! that do not match the digest they are served under; unparseable content
//! gets a 500 instead. So a manifest that is not JSON, or of an unknown media
//! type, cannot be served by this registry at all.
//!
//! Auth is htpasswd basic auth ([`RegistryOptions::with_auth`]) or bearer
//! tokens from a [`TokenServer`] running in the test process
//! ([`RegistryOptions::with_token_auth`]; see [`crate::token`] for the model).
//! Either way [`Registry::creds`] gives skopeo the user and password, and
//! [`Registry::request`] authenticates the harness's own requests.
//!
//! The registry log (`log_path()`) is the first thing to read when a test
//! fails; set `OSCTL_TESTUTIL_KEEP=1` to keep the directory.
//!
//! Start one registry per test (it takes ~0.1 s): a registry kept in a
//! `static` is never dropped, so its process would outlive the test binary.

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::api;
use crate::http::{self, HttpResponse, Request};
use crate::token::TokenServer;

#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub auth: Option<(String, String)>,
    /// Require bearer tokens from a token server that knows this user and
    /// password (see [`crate::token`]). Exclusive with `auth`.
    pub token_auth: Option<(String, String)>,
    /// Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 and
    /// localhost; see [`Registry::ca_cert_path`].
    pub tls: bool,
}

impl RegistryOptions {
    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }
    pub fn with_token_auth(mut self, user: &str, password: &str) -> Self {
        self.token_auth = Some((user.into(), password.into()));
        self
    }
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// Manifest format skopeo should write (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    /// Docker schema 2 (`v2s2`).
    V2s2,
}

#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Convert to this manifest format; `None` pushes the layout's as is.
    pub format: Option<ManifestFormat>,
    /// Push an image index with every image it lists (`--all`), instead of
    /// only the one matching this host.
    pub all: bool,
}

pub struct Registry {
    // Field order matters for Drop: the process goes before its directory.
    child: Child,
    addr: String,
    options: RegistryOptions,
    token: Option<TokenServer>,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Errors mean it already exited; nothing else to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry and returns once `GET /v2/` answers 200 or 401.
    pub fn start(options: RegistryOptions) -> Result<Registry> {
        if options.auth.is_some() && options.token_auth.is_some() {
            bail!("RegistryOptions: auth and token_auth are exclusive");
        }
        let dir = crate::tempdir();
        fs::create_dir_all(dir.path().join("storage"))?;
        if let Some((user, password)) = &options.auth {
            let out = crate::run(Command::new("htpasswd").args(["-Bbn", user, password]))?;
            fs::write(dir.path().join("htpasswd"), out.stdout)?;
        }
        let token_dir = dir.path().join("token");
        let token = (options.token_auth.as_ref())
            .map(|(user, password)| TokenServer::start(&token_dir, user, password))
            .transpose()?;
        if options.tls {
            make_certificate(dir.path())?;
        }
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(&dir, &options, token.as_ref()) {
                Ok((child, addr)) => {
                    return Ok(Registry {
                        child,
                        addr,
                        options,
                        token,
                        dir,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start(
        dir: &tempfile::TempDir,
        options: &RegistryOptions,
        token: Option<&TokenServer>,
    ) -> Result<(Child, String)> {
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let config = dir.path().join("config.yml");
        fs::write(&config, config_yaml(dir.path(), &addr, options, token))?;
        let log_path = dir.path().join("registry.log");
        let log = File::options().create(true).append(true).open(&log_path)?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning docker-registry (apt-get install docker-registry)")?;
        let registry_log = || fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "docker-registry exited with {status} on {addr}; log:\n{}",
                    registry_log()
                );
            }
            // "listening on ADDR" proves the port is ours: if another
            // process took it first, that one could answer the probe below
            // while our registry is still on its way to exiting.
            if registry_log().contains(&format!("listening on {addr}"))
                && TcpStream::connect(&addr).is_ok()
            {
                let target = Target {
                    addr: &addr,
                    dir: dir.path(),
                    options,
                    token,
                };
                let probe = request(&target, "GET", "/v2/", vec![], &[]);
                if let Ok(resp) = probe
                    && matches!(resp.status, 200 | 401)
                {
                    return Ok((child, addr));
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "docker-registry on {addr} did not answer /v2/ in 30s; log:\n{}",
                    registry_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`, an image reference for this registry.
    pub fn image_ref(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn base_url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// The filesystem driver's root directory.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the stored blob `digest` lives; overwrite or truncate it to make
    /// the registry serve corrupt content. Works for manifest digests too
    /// (see the module docs for what the registry does with a changed one).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = crate::digest_hex(digest).unwrap_or_else(|e| panic!("{e}"));
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The self-signed certificate to trust (TLS registries only).
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.options
            .tls
            .then(|| self.cert_dir().expect("tls").join("ca.crt"))
    }

    /// A directory holding only `ca.crt`, the layout skopeo's `--cert-dir`
    /// and containers-certs.d expect (TLS registries only).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("certs"))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The token server of a token-auth registry.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// `user:password` if the registry requires auth (basic or token).
    pub fn creds(&self) -> Option<String> {
        let auth = self.options.auth.as_ref();
        auth.or(self.options.token_auth.as_ref())
            .map(|(u, p)| format!("{u}:{p}"))
    }

    /// skopeo flags to reach this registry as a *source* or for inspect:
    /// TLS trust (or no verification for plain HTTP) and credentials.
    pub fn skopeo_src_args(&self) -> Vec<String> {
        self.skopeo_args("--src-")
    }

    /// Flags for `skopeo inspect` (no `--src-` prefix).
    pub fn skopeo_inspect_args(&self) -> Vec<String> {
        self.skopeo_args("--")
    }

    fn skopeo_args(&self, prefix: &str) -> Vec<String> {
        let mut args = Vec::new();
        match self.cert_dir() {
            Some(dir) => args.push(format!("{prefix}cert-dir={}", dir.display())),
            None => args.push(format!("{prefix}tls-verify=false")),
        }
        if let Some(creds) = self.creds() {
            args.push(format!("{prefix}creds={creds}"));
        }
        args
    }

    /// Pushes `oci:<layout_dir>:<tag_in_layout>` to `<dest_repo_tag>` here
    /// and returns the digest of what was pushed. Images with Docker media
    /// types go through skopeo's `dir:` transport instead (see
    /// [`crate::layout::write_dir_transport`]), byte for byte the same.
    pub fn push_oci_layout(
        &self,
        layout_dir: &Path,
        tag_in_layout: &str,
        dest_repo_tag: &str,
    ) -> Result<String> {
        self.push_oci_layout_with(
            layout_dir,
            tag_in_layout,
            dest_repo_tag,
            &PushOptions::default(),
        )
    }

    /// Pushes an image index and all the images it lists (`skopeo copy --all`);
    /// returns the index digest.
    pub fn push_oci_index(
        &self,
        layout_dir: &Path,
        tag_in_layout: &str,
        dest_repo_tag: &str,
    ) -> Result<String> {
        let options = PushOptions {
            all: true,
            ..PushOptions::default()
        };
        self.push_oci_layout_with(layout_dir, tag_in_layout, dest_repo_tag, &options)
    }

    pub fn push_oci_layout_with(
        &self,
        layout_dir: &Path,
        tag_in_layout: &str,
        dest_repo_tag: &str,
        options: &PushOptions,
    ) -> Result<String> {
        let media_type = crate::layout::tagged_media_type(layout_dir, tag_in_layout)?;
        if media_type.starts_with("application/vnd.docker.") {
            // skopeo's oci: transport ignores Docker-typed index entries; see
            // layout::write_dir_transport.
            let dir = crate::tempdir();
            crate::layout::write_dir_transport(layout_dir, tag_in_layout, dir.path())?;
            let src = format!("dir:{}", dir.path().display());
            return self.skopeo_copy_to(&src, dest_repo_tag, options);
        }
        let src = format!("oci:{}:{tag_in_layout}", layout_dir.display());
        self.skopeo_copy_to(&src, dest_repo_tag, options)
    }

    /// `skopeo copy <src> docker://ADDR/<dest_repo_tag>` for any source
    /// transport (`oci-archive:`, `dir:`, ...). Returns the pushed digest.
    pub fn skopeo_copy_to(
        &self,
        src: &str,
        dest_repo_tag: &str,
        options: &PushOptions,
    ) -> Result<String> {
        let digest_file = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new("skopeo");
        // --insecure-policy: don't depend on the host's policy.json.
        // --preserve-digests: fail instead of silently rewriting the manifest,
        // so the digest a test built is the digest the registry serves.
        cmd.args(["--insecure-policy", "copy", "--quiet"]);
        if options.format.is_none() {
            cmd.arg("--preserve-digests");
        }
        cmd.args(self.skopeo_args("--dest-"))
            .arg("--digestfile")
            .arg(digest_file.path());
        match options.format {
            Some(ManifestFormat::Oci) => {
                cmd.args(["--format", "oci"]);
            }
            Some(ManifestFormat::V2s2) => {
                cmd.args(["--format", "v2s2"]);
            }
            None => {}
        }
        if options.all {
            // skopeo 1.9.3 has both `--all` and `--multi-arch all`; `--all`
            // is the older, documented-everywhere spelling.
            cmd.arg("--all");
        }
        cmd.arg(src)
            .arg(format!("docker://{}", self.image_ref(dest_repo_tag)));
        crate::run(&mut cmd)?;
        let digest = fs::read_to_string(digest_file.path())?;
        Ok(digest.trim().to_string())
    }

    /// `skopeo inspect` of `repo_and_tag` (with `--raw` the manifest itself).
    pub fn inspect(&self, repo_and_tag: &str, raw: bool) -> Result<Value> {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").args(self.skopeo_inspect_args());
        if raw {
            cmd.arg("--raw");
        }
        cmd.arg(format!("docker://{}", self.image_ref(repo_and_tag)));
        let out = crate::run(&mut cmd)?;
        serde_json::from_slice(&out.stdout).context("parsing skopeo inspect output")
    }

    /// Sends one request to the registry API, with basic auth or a bearer
    /// token if configured. `target` is path and query, e.g. `/v2/_catalog`.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let to = Target {
            addr: &self.addr,
            dir: self.dir.path(),
            options: &self.options,
            token: self.token.as_ref(),
        };
        request(&to, method, target, headers, body)
    }

    /// PUTs `body` as the manifest `<repo>:<reference>` with `content_type`,
    /// without checking the answer (for tests of what the registry refuses).
    pub fn put_manifest_raw(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<HttpResponse> {
        api::put_manifest_raw(self, repo, reference, content_type, body)
    }

    /// PUTs a manifest and returns its digest; fails unless the registry
    /// answers 201 (see the module docs for what it validates).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<String> {
        api::put_manifest(self, repo, reference, content_type, body)
    }

    /// Points `to` (`repo:tag`) at the manifest `from` (`repo:tag`, the same
    /// repository) names, byte for byte; returns its digest. How tests move
    /// a tag to another image without pushing anything again.
    pub fn copy_tag(&self, from: &str, to: &str) -> Result<String> {
        let split = |s: &str| -> Result<(String, String)> {
            s.rsplit_once(':')
                .map(|(r, t)| (r.to_owned(), t.to_owned()))
                .with_context(|| format!("{s}: expected repo:tag"))
        };
        let ((repo, from_tag), (to_repo, to_tag)) = (split(from)?, split(to)?);
        if repo != to_repo {
            bail!("copy_tag: {from} and {to} are in different repositories");
        }
        let manifest = api::get_manifest(self, &repo, &from_tag)?
            .with_context(|| format!("manifest {from} not found (404)"))?;
        self.put_manifest(&repo, &to_tag, &manifest.content_type, &manifest.body)
    }

    /// Uploads `bytes` as a blob of `repo` in one go (POST an upload, then
    /// PUT `?digest=`) and returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        api::put_blob(self, repo, bytes)
    }
}

/// Where a harness request goes and how it authenticates.
struct Target<'a> {
    addr: &'a str,
    dir: &'a Path,
    options: &'a RegistryOptions,
    token: Option<&'a TokenServer>,
}

fn request(
    to: &Target<'_>,
    method: &str,
    target: &str,
    mut headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<HttpResponse> {
    let (addr, options) = (to.addr, to.options);
    if let Some((user, password)) = &options.auth {
        let token = http::base64(format!("{user}:{password}").as_bytes());
        headers.push(("Authorization".into(), format!("Basic {token}")));
    }
    if let Some(server) = to.token {
        let jwt = server.mint_for_target(target)?;
        headers.push(("Authorization".into(), format!("Bearer {jwt}")));
    }
    let req = Request {
        method,
        target,
        headers,
        body,
    };
    if options.tls {
        http::send_curl(addr, &to.dir.join("certs/ca.crt"), &req)
    } else {
        http::send_plain(addr, &req)
    }
}

fn config_yaml(
    dir: &Path,
    addr: &str,
    options: &RegistryOptions,
    token: Option<&TokenServer>,
) -> String {
    let d = dir.display();
    // Upload purging and the storage health check are background work we
    // don't want racing with tests; delete is enabled so tests can use it.
    let mut yaml = format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {d}/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: osctl-testutil-not-a-secret
"
    );
    if options.tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {d}/tls/cert.pem\n    key: {d}/tls/key.pem\n"
        ));
    }
    if options.auth.is_some() {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: osctl-testutil\n    path: {d}/htpasswd\n"
        ));
    }
    if let Some(server) = token {
        yaml.push_str(&server.config_yaml());
    }
    yaml
}

/// A throw-away CA and a server certificate it signed, valid for 127.0.0.1
/// and localhost. Clients trust the CA via `certs/ca.crt`. Two certificates
/// rather than one self-signed one, because strict verifiers (rustls/webpki)
/// refuse a CA certificate presented as the server's own.
pub(crate) fn make_certificate(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("tls"))?;
    fs::create_dir_all(dir.join("certs"))?;
    let tls = dir.join("tls");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    crate::run(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "7", "-subj", "/CN=osctl-testutil CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(tls.join("ca-key.pem"))
            .arg("-out")
            .arg(tls.join("ca.pem")),
    )?;
    crate::run(
        Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(tls.join("key.pem"))
            .arg("-out")
            .arg(tls.join("server.csr")),
    )?;
    fs::write(
        tls.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    crate::run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "7", "-set_serial", "2"])
            .arg("-in")
            .arg(tls.join("server.csr"))
            .arg("-CA")
            .arg(tls.join("ca.pem"))
            .arg("-CAkey")
            .arg(tls.join("ca-key.pem"))
            .arg("-extfile")
            .arg(tls.join("server.ext"))
            .arg("-out")
            .arg(tls.join("cert.pem")),
    )?;
    fs::copy(tls.join("ca.pem"), dir.join("certs/ca.crt"))?;
    Ok(())
}
