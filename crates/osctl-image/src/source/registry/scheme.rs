//! HTTP or HTTPS: for a registry that may be spoken to in plain HTTP (marked
//! insecure, or on loopback without `--tls-verify`), the first request
//! decides.
//!
//! Model: that first request goes out in plain HTTP, once, without any
//! `Authorization` (none is known before a registry's `401` asks for one),
//! so no secret travels unencrypted to find out. If an HTTP answer comes
//! back, the registry speaks HTTP and that answer is the request's answer;
//! otherwise (no connection, a TLS alert or a hang-up instead of HTTP, or
//! the "HTTP request to an HTTPS server" `400` TLS servers give) the
//! registry is spoken to in HTTPS from then on. Asking in the first real
//! request instead of a separate `GET /v2/` probe saves a round trip on
//! every pull of such a registry. A registry that must be verified never
//! gets here: its scheme is HTTPS from the start ([`RegistryClient::new`]).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use super::client::RegistryClient;
use super::response::{ReadError, read_capped};
use super::retry::{retry_after, retryable_status};
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

impl RegistryClient {
    /// Sends `GET path` in plain HTTP and sets [`RegistryClient::scheme`]
    /// from what comes back. Returns the answer (with 1 attempt) when the
    /// registry spoke HTTP and the answer is final; `None` when the request
    /// is still to be sent in the scheme now set (HTTPS, or HTTP again
    /// after an answer worth retrying or a `400` whose body was read).
    pub(super) async fn decide_scheme(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<(Response, u32)> {
        let _deciding = self.deciding.lock().await;
        if self.scheme.get().is_some() {
            return None; // decided by another request while this one waited
        }
        let url = format!("http://{}{path}", self.registry);
        let sent = tokio::time::timeout(
            FIRST_ANSWER_TIMEOUT,
            self.http.get(&url).headers(headers.clone()).send(),
        )
        .await;
        let (scheme, answer) = match sent {
            Ok(Ok(resp)) => self.judge(resp).await,
            Ok(Err(e)) => {
                tracing::debug!(registry = %self.registry, "no HTTP answer, using HTTPS: {}", error_chain(&e));
                (Scheme::Https, None)
            }
            Err(_) => {
                tracing::debug!(registry = %self.registry, timeout = ?FIRST_ANSWER_TIMEOUT, "no HTTP answer in time, using HTTPS");
                (Scheme::Https, None)
            }
        };
        tracing::debug!(registry = %self.registry, scheme = scheme.name(), "registry transport");
        self.scheme
            .set(scheme)
            .expect("only the holder of `deciding` sets the scheme, and it was unset");
        answer
    }

    /// What an HTTP answer to the first request says about the scheme, and
    /// the answer itself if it is the request's final one.
    async fn judge(&self, resp: Response) -> (Scheme, Option<(Response, u32)>) {
        if resp.status() == StatusCode::BAD_REQUEST {
            let https = match read_capped(resp, MAX_COMPLAINT_BYTES).await {
                Ok(body) => String::from_utf8_lossy(&body).contains("HTTPS"),
                // A complaint longer than a few lines is not the TLS
                // server's one-liner; a body that broke off says nothing
                // either way, and the request is sent again in HTTP, where
                // a real registry answers the same 400 for the error.
                Err(ReadError::TooLarge | ReadError::Transfer(_)) => false,
            };
            let scheme = if https { Scheme::Https } else { Scheme::Http };
            return (scheme, None);
        }
        if retryable_status(resp.status()) {
            // An HTTP server, briefly unwell: the retrying send takes over.
            tokio::time::sleep(retry_delay(1, retry_after(resp.headers()))).await;
            return (Scheme::Http, None);
        }
        (Scheme::Http, Some((resp, 1)))
    }
}
