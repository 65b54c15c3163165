//! A blob download that survives interruptions.
//!
//! Model: the body of a blob `GET` is handed on chunk by chunk while a count
//! of bytes handed on is kept. When the transfer breaks (an error, or the
//! connection closing before the blob's size is reached) the download is
//! asked for again from that count on, `Range: bytes=<count>-`:
//! - `206` starting at the count: its body continues the stream;
//! - `200` (the registry or its storage ignores `Range`): the whole blob
//!   again, and the bytes already handed on are skipped;
//! - anything else fails the download.
//!
//! At most [`MAX_BLOB_RESUMES`] interruptions per blob. Nothing here checks
//! content: the consumer's [`crate::verify::DigestReader`] hashes every byte
//! handed on, across resumptions, and fails at the end unless the whole blob
//! has its digest and size, so a resumed blob is verified exactly like one
//! that arrived in one piece.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};

use super::client::RegistryClient;
use crate::limits::{MAX_BLOB_RESUMES, retry_delay};
use crate::{FetchError, error_chain};

/// Why a blob's body broke off.
#[derive(Debug, thiserror::Error)]
enum Interruption {
    #[error(transparent)]
    Transfer(reqwest::Error),
    #[error("the connection closed after {at} of {size} bytes")]
    Closed { at: u64, size: u64 },
    #[error("no body")]
    NoBody,
}

/// Why asking for the rest of a blob failed.
#[derive(Debug, thiserror::Error)]
enum ResumeError {
    #[error(transparent)]
    Request(#[from] FetchError),
    /// The registry's answer, in words.
    #[error("{0}")]
    Answer(String),
}

/// Why a blob download stopped for good (the reader's `io::Error` carries
/// it, so the chain reaches the consumer).
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("transfer failed: interrupted {times} times, the last at byte {at} of {size}")]
    Interrupted {
        times: u32,
        at: u64,
        size: u64,
        #[source]
        last: Interruption,
    },
    /// `interruption` is the break that resuming was to mend, in words;
    /// the source is why resuming failed.
    #[error("transfer failed: {interruption}; resuming at byte {at} failed")]
    Resume {
        interruption: String,
        at: u64,
        #[source]
        source: ResumeError,
    },
}

struct Download {
    client: Arc<RegistryClient>,
    path: String,
    what: String,
    size: u64,
    /// Bytes handed on so far.
    offset: u64,
    /// Bytes of the current body still to drop (a `200` to a resumption).
    skip: u64,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    interruptions: u32,
    done: bool,
}

/// The blob's bytes, starting with the body of `first` (a `200` to the
/// plain `GET path`). `what` names the blob in errors.
pub(super) fn resumable(
    client: Arc<RegistryClient>,
    path: String,
    what: String,
    first: reqwest::Response,
    size: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static {
    let state = Download {
        client,
        path,
        what,
        size,
        offset: 0,
        skip: 0,
        body: Some(first.bytes_stream().boxed()),
        interruptions: 0,
        done: false,
    };
    futures_util::stream::unfold(state, next).boxed()
}

async fn next(mut d: Download) -> Option<(io::Result<Bytes>, Download)> {
    loop {
        if d.done {
            return None;
        }
        let cause = match d.body.as_mut() {
            Some(body) => match body.next().await {
                Some(Ok(mut chunk)) => {
                    if d.skip > 0 {
                        let drop = usize::try_from(d.skip)
                            .unwrap_or(usize::MAX)
                            .min(chunk.len());
                        chunk = chunk.slice(drop..);
                        d.skip -= drop as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    d.offset += chunk.len() as u64;
                    return Some((Ok(chunk), d));
                }
                Some(Err(e)) => Interruption::Transfer(e),
                // Complete, or longer than declared: the digest reader judges.
                None if d.offset >= d.size && d.skip == 0 => {
                    d.done = true;
                    return None;
                }
                None => Interruption::Closed {
                    at: d.offset,
                    size: d.size,
                },
            },
            None => Interruption::NoBody,
        };
        d.body = None;
        d.interruptions += 1;
        if d.interruptions > MAX_BLOB_RESUMES {
            d.done = true;
            let e = io::Error::other(Stopped::Interrupted {
                times: d.interruptions,
                at: d.offset,
                size: d.size,
                last: cause,
            });
            return Some((Err(e), d));
        }
        tracing::debug!(what = %d.what, offset = d.offset, "resuming after: {}", error_chain(&cause));
        tokio::time::sleep(retry_delay(d.interruptions, None)).await;
        match resume(&d.client, &d.path, &d.what, d.offset, d.size).await {
            Ok((body, skip)) => {
                d.body = Some(body);
                d.skip = skip;
            }
            Err(source) => {
                d.done = true;
                let e = io::Error::other(Stopped::Resume {
                    interruption: error_chain(&cause),
                    at: d.offset,
                    source,
                });
                return Some((Err(e), d));
            }
        }
    }
}

/// Asks for the blob from `offset` on; returns the body and how many of
/// its leading bytes to skip.
async fn resume(
    client: &RegistryClient,
    path: &str,
    what: &str,
    offset: u64,
    size: u64,
) -> Result<(BoxStream<'static, reqwest::Result<Bytes>>, u64), ResumeError> {
    let mut headers = HeaderMap::new();
    let range = format!("bytes={offset}-");
    headers.insert(
        RANGE,
        HeaderValue::from_str(&range).expect("a numeric range is a valid header value"),
    );
    let resp = client.get(path, &headers, what).await?;
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let answered = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match parse_content_range(answered) {
                Some((start, total)) if start == offset && total.is_none_or(|t| t == size) => {
                    Ok((resp.bytes_stream().boxed(), 0))
                }
                _ => Err(ResumeError::Answer(format!(
                    "the registry answered {range} with Content-Range {answered:?}"
                ))),
            }
        }
        StatusCode::OK => Ok((resp.bytes_stream().boxed(), offset)),
        other => Err(ResumeError::Answer(format!(
            "the registry answered {other}"
        ))),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        for (value, expected) in [
            ("bytes 100-199/200", Some((100, Some(200)))),
            ("bytes 0-0/*", Some((0, None))),
            (" bytes 5-9/10 ", Some((5, Some(10)))),
            ("bytes 9-5/10", None),
            ("bytes */10", None),
            ("items 0-1/2", None),
            ("bytes a-b/c", None),
            ("", None),
        ] {
            assert_eq!(parse_content_range(value), expected, "{value:?}");
        }
    }
}
