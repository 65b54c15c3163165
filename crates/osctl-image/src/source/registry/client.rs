//! One registry's HTTP conversation: the client and its authorized,
//! retried `GET`.
//!
//! Model: every request osctl sends a registry is an idempotent `GET`, so
//! each may be repeated. [`RegistryClient::get`] sends one with the current
//! authorization, repeats it on answers and failures a retry can fix
//! ([`super::retry`]), answers one `401` by authorizing again
//! ([`super::authorize`]) and turns any other failure into a one-line
//! [`FetchError`] ([`super::response`]).
//!
//! Whatever is read whole goes through [`read_capped`], so no answer can make
//! osctl buffer more than the caps in [`crate::limits`].
//!
//! The scheme is fixed for a registry that must be verified (HTTPS); for
//! one that may be spoken to in plain HTTP it is decided by the first
//! request ([`super::scheme`]), so requests take paths and the base URL is
//! known only once that request is answered.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::authorize::AuthState;
use super::redirect::follow_redirect;
use super::response::{ReadError, header_text, read_capped};
use super::scheme::{FirstTry, Scheme};
use super::tls;
use crate::FetchError;
use crate::auth::AuthLookup;
use crate::limits::{RETRY_ATTEMPTS, retry_delay};
use crate::registries::TlsPolicy;

/// Time allowed to open a TCP connection. A registry that does not answer
/// within this is down or filtered; waiting longer only delays the error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest silence tolerated while reading a response. Generous for slow
/// links, but bounded, so a stalled transfer fails instead of hanging forever.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) struct RegistryClient {
    pub(super) http: reqwest::Client,
    pub(super) registry: String,
    pub(super) repository: String,
    /// HTTP or HTTPS: set from the start for a registry that must be
    /// verified, by the first answer for one that may speak plain HTTP.
    pub(super) scheme: std::sync::OnceLock<Scheme>,
    /// Held while the first request decides [`Self::scheme`], so that
    /// only one request is sent before it is known.
    pub(super) deciding: tokio::sync::Mutex<()>,
    /// Verified TLS is required: no redirect to plain HTTP, no plain-HTTP
    /// token service (the registry is neither insecure nor on loopback).
    pub(super) https_only: bool,
    pub(super) lookup: AuthLookup,
    /// How the system CA store was found, for the no-CA error.
    pub(super) system_store: String,
    pub(super) auth: tokio::sync::Mutex<AuthState>,
}

impl RegistryClient {
    pub(super) fn new(
        registry: &str,
        repository: &str,
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
            .map_err(|e| FetchError::Setup {
                what: format!("the HTTP client for registry {registry}"),
                source: Box::new(e),
            })?;
        let scheme = std::sync::OnceLock::new();
        if https_only {
            scheme.set(Scheme::Https).expect("a new OnceLock is empty");
        }
        Ok(RegistryClient {
            http,
            registry: registry.to_string(),
            repository: repository.to_string(),
            scheme,
            deciding: Default::default(),
            https_only,
            lookup,
            system_store: tls.system_store,
            auth: Default::default(),
        })
    }

    pub(super) fn registry(&self) -> &str {
        &self.registry
    }

    /// `scheme://host:port` once the scheme is known.
    fn base(&self) -> Option<String> {
        let scheme = self.scheme.get()?;
        Some(format!("{}://{}", scheme.name(), self.registry))
    }

    /// Whether `url` is on the registry itself (same scheme, host and
    /// port), not on a host a redirect led to. Nothing is, before the
    /// scheme is known.
    pub(super) fn is_registry(&self, url: &reqwest::Url) -> bool {
        self.base()
            .and_then(|base| reqwest::Url::parse(&base).ok())
            .is_some_and(|base| base.origin() == url.origin())
    }

    /// `/v2/<repository>/<kind>/<reference>`: what [`Self::get`] asks for.
    pub(super) fn path(&self, kind: &str, reference: &str) -> String {
        format!("/v2/{}/{kind}/{reference}", self.repository)
    }

    /// Sends `GET path` with `headers`, authorized and retried; returns the
    /// first successful (2xx) answer. `what` names the thing in errors.
    pub(super) async fn get(
        &self,
        path: &str,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<Response, FetchError> {
        let mut authorized_again = false;
        loop {
            let (auth, generation) = self.authorization().await;
            let sent = match self.scheme.get() {
                Some(&scheme) => self.send_authorized(scheme, path, headers, &auth, 1).await,
                // Only the first request gets here: it decides the scheme,
                // and its answer is used when it came over plain HTTP.
                None => match self.decide_scheme(path, headers).await {
                    FirstTry::Answered(resp) => Ok((resp, 1)),
                    FirstTry::Failed(e) => Err((e, 1)),
                    FirstTry::SendAgain { attempt } => {
                        let scheme = *self.scheme.get().expect("deciding sets the scheme");
                        self.send_authorized(scheme, path, headers, &auth, attempt)
                            .await
                    }
                },
            };
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

    /// `GET <scheme>://<registry><path>` with `headers` and `auth`,
    /// retried from attempt `attempt` on ([`Self::send_retrying_from`]).
    async fn send_authorized(
        &self,
        scheme: Scheme,
        path: &str,
        headers: &HeaderMap,
        auth: &Option<reqwest::header::HeaderValue>,
        attempt: u32,
    ) -> Result<(Response, u32), (reqwest::Error, u32)> {
        let url = format!("{}://{}{path}", scheme.name(), self.registry);
        self.send_retrying_from(attempt, || {
            let req = self.http.get(&url).headers(headers.clone());
            match auth {
                Some(a) => req.header(AUTHORIZATION, a.clone()),
                None => req,
            }
        })
        .await
    }

    /// [`Self::get`] and the whole body, at most `limit` bytes; a transfer
    /// that breaks mid-body is retried like a failed request. `what` names
    /// the thing in errors, `body_what` its body in the over-the-limit one.
    pub(super) async fn get_whole(
        &self,
        path: &str,
        headers: &HeaderMap,
        (what, body_what): (&str, &str),
        limit: u64,
    ) -> Result<(HeaderMap, Vec<u8>), FetchError> {
        let mut attempt = 1;
        loop {
            let resp = self.get(path, headers, what).await?;
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
                    return Err(FetchError::Transfer {
                        registry: self.registry.clone(),
                        what: what.to_string(),
                        attempts: attempt,
                        source: e,
                    });
                }
            }
        }
    }
}
