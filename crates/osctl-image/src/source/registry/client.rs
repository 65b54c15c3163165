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

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::authorize::AuthState;
use super::redirect::follow_redirect;
use super::response::{ReadError, header_text, read_capped};
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
    /// `https://host:port` or `http://host:port`.
    pub(super) base: String,
    pub(super) registry: String,
    pub(super) repository: String,
    pub(super) use_http: bool,
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
            .map_err(|e| FetchError::Setup {
                what: format!("the HTTP client for registry {registry}"),
                source: Box::new(e),
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
    pub(super) fn is_registry(&self, url: &reqwest::Url) -> bool {
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
