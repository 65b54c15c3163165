//! HTTP or HTTPS: for a registry that may be spoken to in plain HTTP (marked
//! insecure, or on loopback without `--tls-verify`), the first request
//! decides.
//!
//! Model: that first request goes out in plain HTTP, once, without any
//! `Authorization` (none is known before a registry's `401` asks for one),
//! so no secret travels unencrypted to find out. If an HTTP answer comes
//! back, the registry speaks HTTP and that answer is the request's answer
//! (or its first attempt, when it is one worth retrying). The
//! "HTTP request to an HTTPS server" `400` TLS servers give means HTTPS.
//! No answer at all (a TLS alert, a hang-up, a dropped connection) is
//! ambiguous, so the old question is asked then, and only then: one bare
//! `GET /v2/` ([`speaks_plain_http`]). Asking in the first real request
//! instead of probing first saves a round trip on every pull of such a
//! registry. A registry that must be verified never gets here: its scheme
//! is HTTPS from the start ([`RegistryClient::new`]).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use super::client::RegistryClient;
use super::probe::speaks_plain_http;
use super::response::{ReadError, read_capped};
use super::retry::{retry_after, retryable_error, retryable_status};
use crate::error_chain;
use crate::limits::retry_delay;

/// Time allowed for the answer (status and headers) to the plain-HTTP
/// first request. A TLS server usually answers a plain request at once or
/// hangs up; one that waits for a handshake forever must not hold the pull
/// for the full read timeout before HTTPS is tried.
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a `400`'s body is read to see whether it is a TLS server's
/// complaint about plain HTTP.
const MAX_COMPLAINT_BYTES: u64 = 4096;

/// How a registry is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(super) fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What became of the first request, sent in plain HTTP to decide the
/// scheme ([`RegistryClient::decide_scheme`]).
pub(super) enum FirstTry {
    /// The registry's answer, final: no retry is due.
    Answered(Response),
    /// It failed over HTTP in a way no retry fixes.
    Failed(reqwest::Error),
    /// Send it (again) in the scheme now decided, as attempt `attempt`.
    SendAgain { attempt: u32 },
}

impl RegistryClient {
    /// Sends `GET path` in plain HTTP and sets [`RegistryClient::scheme`]
    /// from what comes back; see the module docs. Another request that was
    /// waiting while this decided gets `SendAgain { attempt: 1 }`.
    pub(super) async fn decide_scheme(&self, path: &str, headers: &HeaderMap) -> FirstTry {
        let _deciding = self.deciding.lock().await;
        if self.scheme.get().is_some() {
            return FirstTry::SendAgain { attempt: 1 };
        }
        let url = format!("http://{}{path}", self.registry);
        let request = self.http.get(&url).headers(headers.clone());
        let sent = tokio::time::timeout(FIRST_ANSWER_TIMEOUT, request.send()).await;
        let (scheme, first) = match sent {
            Ok(Ok(resp)) => self.judge(resp).await,
            Ok(Err(e)) => {
                tracing::debug!(registry = %self.registry, "no HTTP answer: {}", error_chain(&e));
                self.ask_probe(Some(e)).await
            }
            Err(_) => {
                tracing::debug!(registry = %self.registry, timeout = ?FIRST_ANSWER_TIMEOUT, "no HTTP answer in time");
                self.ask_probe(None).await
            }
        };
        tracing::debug!(registry = %self.registry, scheme = scheme.name(), "registry transport");
        self.scheme
            .set(scheme)
            .expect("only the holder of `deciding` sets the scheme, and it was unset");
        first
    }

    /// What an HTTP answer to the first request says about the scheme, and
    /// what is left to do.
    async fn judge(&self, resp: Response) -> (Scheme, FirstTry) {
        if resp.status() == StatusCode::BAD_REQUEST {
            let https = match read_capped(resp, MAX_COMPLAINT_BYTES).await {
                Ok(body) => String::from_utf8_lossy(&body).contains("HTTPS"),
                // A complaint longer than a few lines is not the TLS
                // server's one-liner; a body that broke off says nothing
                // either way. Sent again in HTTP, a real registry answers
                // the same 400, which is then reported with its body.
                Err(ReadError::TooLarge | ReadError::Transfer(_)) => false,
            };
            let scheme = if https { Scheme::Https } else { Scheme::Http };
            return (scheme, FirstTry::SendAgain { attempt: 1 });
        }
        if retryable_status(resp.status()) {
            // An HTTP server, briefly unwell: the retrying send goes on.
            tokio::time::sleep(retry_delay(1, retry_after(resp.headers()))).await;
            return (Scheme::Http, FirstTry::SendAgain { attempt: 2 });
        }
        (Scheme::Http, FirstTry::Answered(resp))
    }

    /// After a first request that got no HTTP answer (`failure`: its
    /// error; `None`: it timed out): the probe decides, and an HTTP
    /// registry's request goes on as a retry would.
    async fn ask_probe(&self, failure: Option<reqwest::Error>) -> (Scheme, FirstTry) {
        if !speaks_plain_http(&self.registry).await {
            return (Scheme::Https, FirstTry::SendAgain { attempt: 1 });
        }
        match failure {
            Some(e) if !retryable_error(&e) => (Scheme::Http, FirstTry::Failed(e)),
            _ => {
                tokio::time::sleep(retry_delay(1, None)).await;
                (Scheme::Http, FirstTry::SendAgain { attempt: 2 })
            }
        }
    }
}
