//! Reading a registry's answers: whole bodies under a cap, and failures
//! (a non-2xx status, no answer at all) in words.

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use super::client::RegistryClient;
use super::probe::speaks_plain_http;
use super::scheme::Scheme;
use super::tls::{self, TlsFailure};
use crate::error::gave_up;
use crate::limits::{MAX_ERROR_BODY_BYTES, human_size};
use crate::{FetchError, error_chain};

/// Why a whole-body read stopped.
pub(super) enum ReadError {
    /// The body is (or declares itself) longer than the cap.
    TooLarge,
    Transfer(reqwest::Error),
}

impl RegistryClient {
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
                    why: format!(
                        "{why}; trust its CA with --cert-dir DIR or \
                         /etc/containers/certs.d/{registry}/ca.crt"
                    ),
                    registry,
                    source: Some(e),
                };
            }
            Some(TlsFailure::Certificate(why)) => {
                return FetchError::Tls {
                    registry,
                    why,
                    source: Some(e),
                };
            }
            Some(TlsFailure::Handshake(why)) => {
                // A server that is not TLS may also just hang up on a
                // ClientHello; ask it in plain HTTP before blaming TLS.
                if self.scheme.get() == Some(&Scheme::Https) && speaks_plain_http(&registry).await {
                    return FetchError::PlainHttp { registry };
                }
                return FetchError::Tls {
                    registry,
                    why,
                    source: Some(e),
                };
            }
            None => {}
        }
        if e.is_connect() || e.is_timeout() {
            FetchError::Connect {
                registry,
                attempts,
                source: e,
            }
        } else {
            FetchError::Transfer {
                registry,
                what: what.to_string(),
                attempts,
                source: e,
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

pub(super) fn header_text(
    headers: &HeaderMap,
    name: reqwest::header::HeaderName,
) -> Option<String> {
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
}
