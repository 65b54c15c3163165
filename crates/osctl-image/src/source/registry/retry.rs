//! What is worth retrying, and how a retried request is sent.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::client::RegistryClient;
use super::response::header_text;
use super::tls;
use crate::error_chain;
use crate::limits::{RETRY_ATTEMPTS, retry_delay};

impl RegistryClient {
    /// Sends what `build` makes until it gets an answer that is not worth
    /// retrying, or the attempts run out. Returns the answer (whatever its
    /// status) or the last transport error, with the number of attempts.
    pub(super) async fn send_retrying(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(Response, u32), (reqwest::Error, u32)> {
        self.send_retrying_from(1, build).await
    }

    /// [`Self::send_retrying`] for a request already tried `attempt - 1`
    /// times (the first request of a registry, sent apart to decide its
    /// scheme: `super::scheme`), so the total stays at the limit.
    pub(super) async fn send_retrying_from(
        &self,
        mut attempt: u32,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(Response, u32), (reqwest::Error, u32)> {
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
}

/// HTTP answers that say "try again": timeouts, rate limits, and server
/// trouble that is usually brief (a restarting backend, a proxy hiccup).
pub(super) fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Failures with no answer that a retry can fix: the connection could not
/// be made, timed out, or dropped. Not TLS failures (a certificate does not
/// get better) and not redirect loops.
pub(super) fn retryable_error(e: &reqwest::Error) -> bool {
    !e.is_builder()
        && !e.is_redirect()
        && tls::tls_failure(e).is_none()
        && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
}

/// `Retry-After` in seconds (the HTTP-date form is not worth supporting
/// for pauses this short).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_text(headers, RETRY_AFTER)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

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
