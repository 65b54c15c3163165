//! One registry's HTTP conversation: authorization, bounded retries, capped
//! reads, and errors in words.
//!
//! Model: every request osctl sends a registry is an idempotent `GET`, so
//! each may be repeated. [`RegistryClient::get`] sends one with the current
//! authorization, repeats it on answers and failures a retry can fix (see
//! [`crate::limits::RETRY_ATTEMPTS`]), answers one `401` by authorizing again
//! (an expired token, a scope the first token lacked) and turns any other
//! failure into a one-line [`FetchError`]. Authorization starts lazily with
//! one `GET /v2/` (as docker and podman do): its challenge says whether to
//! send Basic credentials or trade them for a bearer token.
//!
//! Whatever is read whole goes through [`read_capped`], so no answer can make
//! osctl buffer more than the caps in [`crate::limits`].

use std::time::Duration;

use base64::Engine;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::challenge::{Challenge, parse_challenge, parse_token};
use super::tls::{self, TlsFailure};
use crate::auth::AuthLookup;
use crate::limits::{
    MAX_ERROR_BODY_BYTES, MAX_TOKEN_RESPONSE_BYTES, RETRY_ATTEMPTS, human_size, retry_delay,
};
use crate::registries::TlsPolicy;
use crate::{FetchError, error_chain};

/// Time allowed to open a TCP connection. A registry that does not answer
/// within this is down or filtered; waiting longer only delays the error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest silence tolerated while reading a response. Generous for slow
/// links, but bounded, so a stalled transfer fails instead of hanging forever.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Time allowed for the plain-HTTP probe of a loopback/insecure registry.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed for one request. Registries redirect a blob once, to
/// their storage; ten is what browsers allow and ends any loop quickly.
const MAX_REDIRECTS: usize = 10;

pub(super) struct RegistryClient {
    http: reqwest::Client,
    /// `https://host:port` or `http://host:port`.
    base: String,
    registry: String,
    repository: String,
    use_http: bool,
    /// Verified TLS is required: no redirect to plain HTTP, no plain-HTTP
    /// token service (the registry is neither insecure nor on loopback).
    https_only: bool,
    lookup: AuthLookup,
    /// How the system CA store was found, for the no-CA error.
    system_store: String,
    auth: tokio::sync::Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    /// `GET /v2/` was asked and answered.
    pinged: bool,
    header: Option<HeaderValue>,
    /// Bumped whenever `header` changes, so that concurrent requests failing
    /// with the same stale token authorize again only once.
    generation: u64,
}

/// Why a whole-body read stopped.
pub(super) enum ReadError {
    /// The body is (or declares itself) longer than the cap.
    TooLarge,
    Transfer(reqwest::Error),
}

impl RegistryClient {
    pub(super) fn new(
        registry: &str,
        repository: &str,
        use_http: bool,
        policy: &TlsPolicy,
        lookup: AuthLookup,
    ) -> Result<Self, FetchError> {
        let tls = tls::setup(policy)?;
        let https_only = !policy.allow_http;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.config)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                follow_redirect(attempt, https_only)
            }))
            .user_agent(concat!("osctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                FetchError::Other(format!(
                    "setting up the HTTP client for registry {registry}: {}",
                    error_chain(&e)
                ))
            })?;
        let scheme = if use_http { "http" } else { "https" };
        Ok(RegistryClient {
            http,
            base: format!("{scheme}://{registry}"),
            registry: registry.to_string(),
            repository: repository.to_string(),
            use_http,
            https_only,
            lookup,
            system_store: tls.system_store,
            auth: Default::default(),
        })
    }

    pub(super) fn registry(&self) -> &str {
        &self.registry
    }

    /// Whether `url` is on the registry itself (same scheme, host and
    /// port), not on a host a redirect led to.
    fn is_registry(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&self.base).is_ok_and(|base| base.origin() == url.origin())
    }

    /// `<base>/v2/<repository>/<kind>/<reference>`.
    pub(super) fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// Sends `GET url` with `headers`, authorized and retried; returns the
    /// first successful (2xx) answer. `what` names the thing in errors.
    pub(super) async fn get(
        &self,
        url: &str,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<Response, FetchError> {
        let mut authorized_again = false;
        loop {
            let (auth, generation) = self.authorization(what).await?;
            let sent = self
                .send_retrying(|| {
                    let req = self.http.get(url).headers(headers.clone());
                    match &auth {
                        Some(a) => req.header(AUTHORIZATION, a.clone()),
                        None => req,
                    }
                })
                .await;
            let (resp, attempts) = match sent {
                Ok(answer) => answer,
                Err((e, attempts)) => return Err(self.transport_error(e, attempts, what).await),
            };
            // Only the registry's own 401 is answered: one from a host it
            // redirected to (a storage backend) must not name a token
            // service that then receives the registry's credentials.
            if resp.status() == StatusCode::UNAUTHORIZED
                && !authorized_again
                && self.is_registry(resp.url())
            {
                authorized_again = true;
                let challenge = header_text(resp.headers(), WWW_AUTHENTICATE);
                if self
                    .authorize_again(generation, challenge.as_deref(), what)
                    .await?
                {
                    continue;
                }
            }
            if resp.status().is_success() {
                return Ok(resp);
            }
            return Err(self.status_error(resp, what, attempts).await);
        }
    }

    /// [`Self::get`] and the whole body, at most `limit` bytes; a transfer
    /// that breaks mid-body is retried like a failed request. `what` names
    /// the thing in errors, `body_what` its body in the over-the-limit one.
    pub(super) async fn get_whole(
        &self,
        url: &str,
        headers: &HeaderMap,
        (what, body_what): (&str, &str),
        limit: u64,
    ) -> Result<(HeaderMap, Vec<u8>), FetchError> {
        let mut attempt = 1;
        loop {
            let resp = self.get(url, headers, what).await?;
            let headers = resp.headers().clone();
            match read_capped(resp, limit).await {
                Ok(body) => return Ok((headers, body)),
                Err(ReadError::TooLarge) => {
                    return Err(FetchError::TooLarge {
                        what: format!("{body_what} from registry {}", self.registry),
                        limit,
                        note: String::new(),
                    });
                }
                Err(ReadError::Transfer(e)) if attempt < RETRY_ATTEMPTS => {
                    tracing::debug!(what, attempt, "body transfer failed, retrying: {e}");
                    tokio::time::sleep(retry_delay(attempt, None)).await;
                    attempt += 1;
                }
                Err(ReadError::Transfer(e)) => {
                    return Err(FetchError::Registry {
                        registry: self.registry.clone(),
                        what: what.to_string(),
                        detail: format!("transfer failed: {}{}", error_chain(&e), gave_up(attempt)),
                    });
                }
            }
        }
    }

    /// Sends what `build` makes until it gets an answer that is not worth
    /// retrying, or the attempts run out. Returns the answer (whatever its
    /// status) or the last transport error, with the number of attempts.
    async fn send_retrying(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(Response, u32), (reqwest::Error, u32)> {
        let mut attempt = 1;
        loop {
            let delay = match build().send().await {
                Ok(resp) if retryable_status(resp.status()) && attempt < RETRY_ATTEMPTS => {
                    let after = retry_after(resp.headers());
                    tracing::debug!(status = %resp.status(), url = %resp.url(), attempt, "retrying");
                    retry_delay(attempt, after)
                }
                Ok(resp) => return Ok((resp, attempt)),
                Err(e) if retryable_error(&e) && attempt < RETRY_ATTEMPTS => {
                    tracing::debug!(attempt, "retrying after: {}", error_chain(&e));
                    retry_delay(attempt, None)
                }
                Err(e) => return Err((e, attempt)),
            };
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The header to send now, asking `GET /v2/` first if nobody has yet.
    async fn authorization(&self, what: &str) -> Result<(Option<HeaderValue>, u64), FetchError> {
        let mut state = self.auth.lock().await;
        if !state.pinged {
            let url = format!("{}/v2/", self.base);
            let (resp, _) = match self.send_retrying(|| self.http.get(&url)).await {
                Ok(answer) => answer,
                Err((e, attempts)) => return Err(self.transport_error(e, attempts, what).await),
            };
            // 200: no auth needed. Anything but 401 is left for the real
            // request to report; its body is not needed. A 401 from a host
            // the check was redirected to is not the registry's challenge
            // (see `get`); the real request then meets the registry's own.
            if resp.status() == StatusCode::UNAUTHORIZED
                && self.is_registry(resp.url())
                && let Some(challenge) = header_text(resp.headers(), WWW_AUTHENTICATE)
                && let Some(challenge) = parse_challenge(&challenge)
            {
                state.header = self.answer(&challenge).await?;
                state.generation += 1;
            }
            state.pinged = true;
        }
        Ok((state.header.clone(), state.generation))
    }

    /// After a `401`: authorizes again from its challenge. `Ok(true)` if
    /// there is something new to try, `Ok(false)` if the `401` stands.
    async fn authorize_again(
        &self,
        generation: u64,
        challenge: Option<&str>,
        what: &str,
    ) -> Result<bool, FetchError> {
        let mut state = self.auth.lock().await;
        if state.generation != generation {
            return Ok(true); // another request already authorized again
        }
        let Some(challenge) = challenge.and_then(parse_challenge) else {
            return Ok(false);
        };
        tracing::debug!(what, ?challenge, "authorizing again after 401");
        let header = self.answer(&challenge).await?;
        if header == state.header {
            return Ok(false);
        }
        state.header = header;
        state.generation += 1;
        Ok(true)
    }

    /// The `Authorization` header that answers `challenge`.
    async fn answer(&self, challenge: &Challenge) -> Result<Option<HeaderValue>, FetchError> {
        match challenge {
            Challenge::Basic => match self.lookup.credentials() {
                Some(c) => {
                    let (user, password) = c.user_password();
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{password}"));
                    self.sensitive(&format!("Basic {token}")).map(Some)
                }
                None => Ok(None),
            },
            Challenge::Bearer { realm, service, .. } => {
                let token = self.fetch_token(realm, service.as_deref()).await?;
                self.sensitive(&format!("Bearer {token}")).map(Some)
            }
        }
    }

    /// Asks the token service `realm` for a pull token for this repository,
    /// with the auth file's credentials if there are any. Only `pull` is
    /// asked for, whatever the challenge named: osctl never pushes.
    async fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String, FetchError> {
        let what = format!("a pull token for {} from {realm}", self.repository);
        let mut url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| FetchError::Registry {
                registry: self.registry.clone(),
                what: "authorization".into(),
                detail: format!("its token service realm {realm:?} is not an http(s) URL"),
            })?;
        if self.https_only && url.scheme() != "https" {
            return Err(FetchError::Registry {
                registry: self.registry.clone(),
                what: "authorization".into(),
                detail: format!(
                    "its token service realm {realm:?} is plain HTTP; osctl sends credentials \
                     to, and takes tokens from, a verified registry's token service only over \
                     HTTPS (mark the registry insecure in registries.conf to allow it)"
                ),
            });
        }
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("scope", &format!("repository:{}:pull", self.repository));
            if let Some(s) = service {
                query.append_pair("service", s);
            }
        }
        let (resp, attempts) = match self
            .send_retrying(|| {
                let req = self.http.get(url.clone());
                match self.lookup.credentials() {
                    Some(c) => {
                        let (user, password) = c.user_password();
                        req.basic_auth(user, Some(password))
                    }
                    None => req,
                }
            })
            .await
        {
            Ok(answer) => answer,
            Err((e, attempts)) => return Err(self.transport_error(e, attempts, &what).await),
        };
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what, attempts).await);
        }
        let body = match read_capped(resp, MAX_TOKEN_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Err(FetchError::TooLarge {
                    what: format!(
                        "the answer of token service {realm} for registry {}",
                        self.registry
                    ),
                    limit: MAX_TOKEN_RESPONSE_BYTES,
                    note: String::new(),
                });
            }
            Err(ReadError::Transfer(e)) => return Err(self.transport_error(e, 1, &what).await),
        };
        parse_token(&body).map_err(|why| FetchError::Registry {
            registry: self.registry.clone(),
            what: format!("authorization by token service {realm}"),
            detail: why,
        })
    }

    /// An `Authorization` value, kept out of debug output. Base64 and the
    /// printable-ASCII tokens `parse_token` lets through always fit a
    /// header; the error is for safety, not an expected path.
    fn sensitive(&self, value: &str) -> Result<HeaderValue, FetchError> {
        let mut v = HeaderValue::from_str(value).map_err(|_| FetchError::Registry {
            registry: self.registry.clone(),
            what: "authorization".into(),
            detail: "its credentials cannot be sent as an HTTP header".into(),
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// A non-2xx answer in words: the status, the registry's own error
    /// message (from a body read up to [`MAX_ERROR_BODY_BYTES`]) and how
    /// often it was tried.
    pub(super) async fn status_error(
        &self,
        resp: Response,
        what: &str,
        attempts: u32,
    ) -> FetchError {
        let status = resp.status();
        let resp_url = resp.url().clone();
        let (codes, message) = match read_capped(resp, MAX_ERROR_BODY_BYTES).await {
            Ok(body) => error_envelope(&body),
            Err(ReadError::TooLarge) => (
                Vec::new(),
                format!(
                    "its error body is over the {} limit and was not read",
                    human_size(MAX_ERROR_BODY_BYTES)
                ),
            ),
            Err(ReadError::Transfer(e)) => (
                Vec::new(),
                format!("its error body broke off: {}", error_chain(&e)),
            ),
        };
        let registry = self.registry.clone();
        let has = |c: &[&str]| codes.iter().any(|code| c.contains(&code.as_str()));
        let from = if self.is_registry(&resp_url) {
            String::new()
        } else {
            format!(" from {resp_url}, where the registry redirected it")
        };
        let denied = |status: &str| FetchError::Unauthorized {
            registry: registry.clone(),
            what: what.to_string(),
            status: format!("{status}{from}"),
            auth: self.lookup.describe(),
        };
        if status == StatusCode::UNAUTHORIZED {
            denied("401 unauthorized")
        } else if status == StatusCode::FORBIDDEN || has(&["DENIED"]) {
            denied("403 denied")
        } else if status == StatusCode::NOT_FOUND
            || has(&[
                "MANIFEST_UNKNOWN",
                "NAME_UNKNOWN",
                "BLOB_UNKNOWN",
                "NOT_FOUND",
            ])
        {
            FetchError::NotFound {
                reference: what.to_string(),
                detail: if message.is_empty() {
                    format!("{registry} answered {status}")
                } else {
                    format!("{registry} says: {message}")
                },
            }
        } else {
            let message = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            FetchError::Registry {
                registry,
                what: what.to_string(),
                detail: format!("HTTP {status}{message}{}", gave_up(attempts)),
            }
        }
    }

    /// A failed request (no answer) in words.
    pub(super) async fn transport_error(
        &self,
        e: reqwest::Error,
        attempts: u32,
        what: &str,
    ) -> FetchError {
        let registry = self.registry.clone();
        match tls::tls_failure(&e) {
            Some(TlsFailure::NoCa) => {
                return FetchError::NoCaCertificates {
                    registry,
                    store: self.system_store.clone(),
                };
            }
            Some(TlsFailure::NotTls) => return FetchError::PlainHttp { registry },
            Some(TlsFailure::UnknownIssuer(why)) => {
                return FetchError::Tls {
                    detail: format!(
                        "{why}; trust its CA with --cert-dir DIR or \
                         /etc/containers/certs.d/{registry}/ca.crt"
                    ),
                    registry,
                };
            }
            Some(TlsFailure::Certificate(why)) => {
                return FetchError::Tls {
                    registry,
                    detail: why,
                };
            }
            Some(TlsFailure::Handshake(why)) => {
                // A server that is not TLS may also just hang up on a
                // ClientHello; ask it in plain HTTP before blaming TLS.
                if !self.use_http && speaks_plain_http(&registry).await {
                    return FetchError::PlainHttp { registry };
                }
                return FetchError::Tls {
                    registry,
                    detail: why,
                };
            }
            None => {}
        }
        let detail = format!("{}{}", error_chain(&e), gave_up(attempts));
        if e.is_connect() || e.is_timeout() {
            FetchError::Connect { registry, detail }
        } else {
            FetchError::Registry {
                registry,
                what: what.to_string(),
                detail,
            }
        }
    }
}

/// Reads a whole body, failing as soon as it passes `limit` bytes (or
/// declares more in `Content-Length`), so memory stays bounded whatever the
/// server sends.
pub(super) async fn read_capped(mut resp: Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transfer)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a redirect was not followed.
#[derive(Debug)]
enum RedirectRefused {
    TooMany,
    /// To this plain-HTTP URL, from a registry that must be verified HTTPS.
    ToPlainHttp(String),
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedirectRefused::TooMany => write!(f, "too many redirects (over {MAX_REDIRECTS})"),
            RedirectRefused::ToPlainHttp(to) => write!(
                f,
                "redirected from HTTPS to plain HTTP ({to}); a verified registry's answers \
                 are taken only over HTTPS"
            ),
        }
    }
}

impl std::error::Error for RedirectRefused {}

/// At most [`MAX_REDIRECTS`] hops; with `https_only`, none to anything but
/// HTTPS for what is vouched for by TLS alone (a manifest by tag, a token):
/// a plain HTTP hop would let anyone on the path replace it. Content asked
/// for by digest is checked against it wherever it comes from, so a blob
/// may be redirected to a plain-HTTP storage backend. (reqwest drops the
/// `Authorization` header itself on a hop to another scheme, host or port.)
fn follow_redirect(
    attempt: reqwest::redirect::Attempt<'_>,
    https_only: bool,
) -> reqwest::redirect::Action {
    // `previous` starts with the original URL, which is not a hop.
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error(RedirectRefused::TooMany);
    }
    let verified = attempt.previous().first().is_some_and(by_digest);
    if https_only && attempt.url().scheme() != "https" && !verified {
        let to = attempt.url().to_string();
        return attempt.error(RedirectRefused::ToPlainHttp(to));
    }
    attempt.follow()
}

/// Whether `url` asks for content by its sha256 digest (`…/blobs/sha256:…`,
/// `…/manifests/sha256:…`), which osctl checks against that digest.
fn by_digest(url: &reqwest::Url) -> bool {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .is_some_and(|last| last.starts_with("sha256:"))
}

/// HTTP answers that say "try again": timeouts, rate limits, and server
/// trouble that is usually brief (a restarting backend, a proxy hiccup).
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Failures with no answer that a retry can fix: the connection could not
/// be made, timed out, or dropped. Not TLS failures (a certificate does not
/// get better) and not redirect loops.
fn retryable_error(e: &reqwest::Error) -> bool {
    !e.is_builder()
        && !e.is_redirect()
        && tls::tls_failure(e).is_none()
        && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
}

/// `Retry-After` in seconds (the HTTP-date form is not worth supporting
/// for pauses this short).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_text(headers, RETRY_AFTER)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn gave_up(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<EnvelopeError>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The error codes and messages of a distribution error body, or its first
/// line when it is not one.
fn error_envelope(body: &[u8]) -> (Vec<String>, String) {
    if let Ok(env) = serde_json::from_slice::<Envelope>(body)
        && !env.errors.is_empty()
    {
        let codes = env.errors.iter().map(|e| e.code.clone()).collect();
        let text = env
            .errors
            .iter()
            .map(|e| {
                if e.message.is_empty() {
                    e.code.clone()
                } else {
                    e.message.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return (codes, one_line(&text));
    }
    let text = String::from_utf8_lossy(body);
    (Vec::new(), one_line(text.lines().next().unwrap_or("")))
}

/// At most a short line of printable text, so a hostile body cannot flood
/// or garble the one-line error.
fn one_line(s: &str) -> String {
    const MAX_CHARS: usize = 200;
    let clean: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CHARS + 1)
        .collect();
    if clean.chars().count() > MAX_CHARS {
        format!("{}…", clean.chars().take(MAX_CHARS).collect::<String>())
    } else {
        clean
    }
}

/// Whether a registry that may be spoken to in plain HTTP actually speaks it.
///
/// The probe is one unauthenticated `GET /v2/` over plain HTTP/1.0 on a bare
/// TCP connection, so no secret ever travels unencrypted and no HTTP client
/// (with its TLS set-up) is built for it. A TLS-only server either drops the
/// connection, answers with a TLS alert, or answers 400 ("client sent an HTTP
/// request to an HTTPS server"); in every such case osctl uses HTTPS.
pub(super) async fn speaks_plain_http(registry: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_ANSWER: usize = 4096;
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(registry).await.ok()?;
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {registry}\r\nUser-Agent: osctl\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while answer.len() < MAX_ANSWER {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
        Some(answer)
    };
    let Ok(Some(answer)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await else {
        return false;
    };
    let text = String::from_utf8_lossy(&answer);
    let Some(status) = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return false;
    };
    !(status == 400 && text.contains("HTTPS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_short_line() {
        let (codes, text) = error_envelope(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(codes, ["MANIFEST_UNKNOWN"]);
        assert_eq!(text, "manifest unknown");
        let (codes, text) = error_envelope(b"<html>\n<body>bad gateway</body>");
        assert!(codes.is_empty());
        assert_eq!(text, "<html>");
        let (_, text) = error_envelope(&[b'x'; 5000]);
        assert_eq!(text.chars().count(), 201);
        let (_, text) = error_envelope(b"a\x1b[2Jb\tc");
        assert_eq!(text, "a [2Jb c");
    }

    #[test]
    fn content_asked_for_by_digest() {
        for (url, by) in [
            ("https://r/v2/a/b/blobs/sha256:00ff", true),
            ("https://r/v2/a/manifests/sha256:00ff", true),
            ("https://r/v2/a/manifests/v1", false),
            ("https://r/v2/a/manifests/sha512:00ff", false),
            ("https://auth/token?scope=repository:a:pull", false),
            ("https://r/v2/", false),
        ] {
            assert_eq!(by_digest(&reqwest::Url::parse(url).unwrap()), by, "{url}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn what_is_retried() {
        for (code, retried) in [
            (500, true),
            (502, true),
            (503, true),
            (504, true),
            (429, true),
            (408, true),
            (404, false),
            (401, false),
            (400, false),
            (416, false),
        ] {
            assert_eq!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                retried,
                "{code}"
            );
        }
    }
}
