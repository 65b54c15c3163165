//! A Docker token server, so a real registry can demand bearer tokens.
//!
//! # The model
//!
//! With `auth: token:` in its config, distribution v2.8 answers an
//! unauthenticated request with `401` and
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="repository:NAME:pull"`.
//! The client then asks the *realm* for a token
//! (`GET /token?service=…&scope=…`, HTTP Basic credentials if it has any) and
//! retries with `Authorization: Bearer <JWT>`. The registry accepts the JWT
//! when it is signed by a key whose certificate (`x5c` in the JWT header)
//! chains to its `rootcertbundle`, names the configured issuer and service
//! (`iss`, `aud`), is within `nbf`..`exp` (60 s leeway), and its `access`
//! claim grants the actions the request needs.
//!
//! [`TokenServer`] is that realm, written here rather than borrowed so the
//! tests depend on nothing but the registry and the protocol:
//!
//! * a thread in the test process accepting on `127.0.0.1` and an ephemeral
//!   port (bound before the registry's config is written, so no race), one
//!   short-lived thread per connection, `Connection: close`;
//! * one RSA key and self-signed certificate per registry, made with the
//!   `openssl` CLI; the certificate is both the registry's root bundle and the
//!   JWT's `x5c`. RS256, because libtrust (which distribution v2.8 verifies
//!   with) takes an RSA PKCS#1 v1.5 signature exactly as OpenSSL's `Signer`
//!   produces it, while ES256 would need DER → `r‖s` conversion;
//! * one user. Right credentials get every action asked for, for every scope
//!   asked for (a single all-powerful account is all tests need). Wrong
//!   credentials, or an `Authorization` that is not Basic, get `401` and no
//!   token. **No credentials get a token with an empty `access` list**, as
//!   Docker Hub does for a private repository: the token server does not
//!   refuse, the *registry* does (`401 insufficient_scope`). That exercises
//!   the path where a client holds a valid token that simply does not grant
//!   the pull, and it lets an anonymous `GET /v2/` succeed, as it does on
//!   real token registries.
//!
//! Every token served over HTTP is logged ([`TokenServer::issued`]) and every
//! refusal counted ([`TokenServer::refused`]), so a test can prove a client
//! really went through the token server. Tokens the harness mints for its
//! own API requests ([`crate::Registry::request`]) are not logged.
//!
//! The realm is plain HTTP even when the registry serves TLS: this is a
//! loopback-only test service.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::{Value, json};

/// The `service` the registry names in its challenges (and the JWT `aud`).
pub const SERVICE: &str = "osctl-testutil-registry";
/// The JWT `iss` the registry trusts.
pub const ISSUER: &str = "osctl-testutil-token-issuer";
/// Lifetime of a token, in seconds (`expires_in`).
pub const EXPIRES_IN: u64 = 300;

/// One resource a token grants actions on (an element of the JWT `access`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `repository` or `registry`.
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// A token the server handed out over HTTP.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The authenticated user; `None` for an anonymous (no-access) token.
    pub user: Option<String>,
    /// The `scope` parameters as requested, decoded.
    pub scopes: Vec<String>,
    pub granted: Vec<Grant>,
}

impl IssuedToken {
    /// Whether this token grants `action` on repository `repo`.
    pub fn grants(&self, repo: &str, action: &str) -> bool {
        self.granted.iter().any(|g| {
            g.kind == "repository" && g.name == repo && g.actions.iter().any(|a| a == action)
        })
    }
}

struct Shared {
    user: String,
    password: String,
    key: PKey<Private>,
    /// Standard base64 of the certificate's DER, the JWT `x5c` entry.
    cert_b64: String,
    issued: Mutex<Vec<IssuedToken>>,
    refused: AtomicUsize,
}

/// A running token server; dropping it stops the accept thread.
pub struct TokenServer {
    addr: SocketAddr,
    cert_path: PathBuf,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TokenServer {
    /// Makes a key pair under `dir` and starts serving tokens for `user`.
    pub(crate) fn start(dir: &Path, user: &str, password: &str) -> Result<TokenServer> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("key.pem");
        let cert_path = dir.join("cert.pem");
        crate::run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
                .args(["-days", "7", "-subj", "/CN=osctl-testutil token issuer"])
                .arg("-keyout")
                .arg(&key_path)
                .arg("-out")
                .arg(&cert_path),
        )?;
        let key = PKey::private_key_from_pem(&std::fs::read(&key_path)?)
            .context("reading the token signing key")?;
        let cert = openssl::x509::X509::from_pem(&std::fs::read(&cert_path)?)
            .context("reading the token certificate")?;
        let shared = Arc::new(Shared {
            user: user.into(),
            password: password.into(),
            key,
            cert_b64: openssl::base64::encode_block(&cert.to_der()?),
            issued: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the token server")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, shared, stop))
        };
        Ok(TokenServer {
            addr,
            cert_path,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`, the realm in the registry's challenges.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry trusts (its `rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Every token served over HTTP so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.shared.issued.lock().expect("token log").clone()
    }

    /// How many token requests were refused (wrong credentials).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// The `auth:` section of the registry's config.
    pub(crate) fn config_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.cert_path.display()
        )
    }

    /// A token for the harness's own API request to `target` (path and
    /// query), granting what that path needs: everything on the repository it
    /// names, the catalog for `/v2/_catalog`, nothing for `/v2/`. Not logged.
    pub(crate) fn mint_for_target(&self, target: &str) -> Result<String> {
        let path = target.split('?').next().unwrap_or_default();
        let rest = path.strip_prefix("/v2/").unwrap_or_default();
        let mut granted = Vec::new();
        if rest == "_catalog" {
            granted.push(grant("registry", "catalog", &["*"]));
        } else if let Some(name) = ["/blobs/", "/manifests/", "/tags/"]
            .iter()
            .filter_map(|m| rest.rfind(m).map(|i| &rest[..i]))
            .max_by_key(|n| n.len())
        {
            granted.push(grant("repository", name, &["pull", "push", "delete"]));
        }
        sign_jwt(&self.shared, &self.shared.user, &granted)
    }
}

fn grant(kind: &str, name: &str, actions: &[&str]) -> Grant {
    Grant {
        kind: kind.into(),
        name: name.into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            // A client that hangs up early is its own problem.
            let _ = serve(stream, &shared);
        });
    }
}

/// The request line and headers of one HTTP request.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
}

impl Request {
    /// Every value of query parameter `name`, decoded.
    fn params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &mut TcpStream) -> Result<Request> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = crate::http::find(&raw, b"\r\n\r\n") {
            break i;
        }
        if raw.len() > 64 * 1024 {
            bail!("request headers too long");
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed before the end of the headers");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&raw[..end]).context("non-UTF-8 request")?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    Ok(Request {
        method,
        path: path.to_string(),
        query,
        authorization,
    })
}

fn serve(mut stream: TcpStream, shared: &Shared) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = read_request(&mut stream)?;
    let (status, extra, body) = answer(&req, shared);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Method Not Allowed",
    };
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    Ok(())
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"errors": [{"code": code, "message": message}]})
}

/// Status, extra headers and JSON body for one token request.
fn answer(req: &Request, shared: &Shared) -> (u16, Vec<(&'static str, String)>, Value) {
    if req.path != "/token" {
        return (404, vec![], error_body("NOT_FOUND", "no such endpoint"));
    }
    if req.method != "GET" {
        // The OAuth2 POST form (refresh tokens) is not implemented.
        return (405, vec![], error_body("UNSUPPORTED", "only GET /token"));
    }
    if let Some(service) = req.params("service").find(|s| *s != SERVICE) {
        let why = format!("unknown service {service:?}");
        return (400, vec![], error_body("DENIED", &why));
    }
    let user = match req.authorization.as_deref() {
        None => None,
        Some(value) => match check_basic(value, shared) {
            Some(user) => Some(user),
            None => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                let challenge = ("WWW-Authenticate", "Basic realm=\"osctl-testutil\"".into());
                let body = error_body("UNAUTHORIZED", "invalid username or password");
                return (401, vec![challenge], body);
            }
        },
    };
    let scopes: Vec<String> = req
        .params("scope")
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut granted = Vec::new();
    if user.is_some() {
        for scope in &scopes {
            // type:name:actions; the name may itself contain ':' (ports).
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            granted.push(grant(kind, name, &actions));
        }
    }
    let subject = user.clone().unwrap_or_default();
    let token = match sign_jwt(shared, &subject, &granted) {
        Ok(t) => t,
        Err(e) => return (500, vec![], error_body("UNKNOWN", &format!("{e:#}"))),
    };
    shared.issued.lock().expect("token log").push(IssuedToken {
        user,
        scopes,
        granted,
    });
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": EXPIRES_IN,
        "issued_at": rfc3339(now_secs()),
    });
    (200, vec![], body)
}

/// The user name if `value` is `Basic base64(user:password)` with the
/// right user and password.
fn check_basic(value: &str, shared: &Shared) -> Option<String> {
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = openssl::base64::decode_block(b64.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == shared.user && password == shared.password).then(|| user.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A compact RS256 JWT as distribution v2.8 verifies it.
fn sign_jwt(shared: &Shared, subject: &str, granted: &[Grant]) -> Result<String> {
    let now = now_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [shared.cert_b64]});
    let mut jti = [0u8; 16];
    openssl::rand::rand_bytes(&mut jti)?;
    let access: Vec<Value> = granted
        .iter()
        .map(|g| json!({"type": g.kind, "name": g.name, "actions": g.actions}))
        .collect();
    let claims = json!({
        "iss": ISSUER,
        "sub": subject,
        // A string, not a list: v2.8's ClaimSet reads `aud` as one string.
        "aud": SERVICE,
        "exp": now + EXPIRES_IN,
        "nbf": now,
        "iat": now,
        "jti": hex::encode(jti),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), &shared.key)?;
    signer.update(signing_input.as_bytes())?;
    let signature = signer.sign_to_vec()?;
    Ok(format!("{signing_input}.{}", base64url(&signature)))
}

/// Unpadded base64url (RFC 7515 §2).
fn base64url(bytes: &[u8]) -> String {
    crate::http::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            {
                Some(hex) => {
                    out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian calendar),
    // counting in 400-year eras that start on 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
    }

    #[test]
    fn base64url_is_unpadded_and_url_safe() {
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
