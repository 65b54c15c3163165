//! A small plain-HTTP/1.1 server for the fleet's endpoints: FleetLock
//! (`/v1/pre-reboot`, `/v1/steady-state`) and Prometheus `/metrics`.
//!
//! The model is one request in, one whole response out: every endpoint here
//! reads a small JSON body (or none) and answers with a small body, so the
//! handler gets the body collected (up to [`MAX_BODY`]) and returns bytes —
//! no streaming, no routing framework. Plain HTTP only: Zincati's FleetLock
//! client and Prometheus both speak it, and TLS belongs to a proxy in front.
//! Each connection runs on a task of its own, so one slow client holds up
//! nobody else.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The largest request body read; FleetLock bodies are under 200 bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The content type of JSON answers.
pub const JSON: &str = "application/json";

/// What the server can fail on (per connection failures are only logged).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("listening on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the listening socket's address")]
    LocalAddr(#[source] std::io::Error),
    #[error("accepting a connection on {addr}")]
    Accept {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One request, its body read whole.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The path without the query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: StatusCode,
    /// `None`: no Content-Type (an empty body).
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with an empty body (FleetLock's success).
    pub fn empty_ok() -> Response {
        Response {
            status: StatusCode::OK,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// `status` with a body of `content_type`.
    pub fn with(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: Some(content_type),
            body,
        }
    }
}

/// Binds `addr` (`HOST:PORT`, port 0 for any free one).
pub async fn bind(addr: &str) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serves `handler` on `listener` until accepting fails.
pub async fn serve<H, F>(listener: TcpListener, handler: H) -> Result<(), HttpError>
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let local = listener.local_addr().map_err(HttpError::LocalAddr)?;
    loop {
        let (stream, peer) = listener
            .accept()
            .await
            .map_err(|source| HttpError::Accept {
                addr: local,
                source,
            })?;
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(answer(&*handler, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                // A client that hangs up mid-request is its own business.
                tracing::debug!(%peer, error = %e, "http connection");
            }
        });
    }
}

async fn answer<H, F>(handler: &H, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let (parts, body) = req.into_parts();
    let response = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            handler(Request {
                method: parts.method,
                path: parts.uri.path().to_string(),
                headers: parts.headers,
                body: collected.to_bytes(),
            })
            .await
        }
        Err(e) => Response::with(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            format!("reading the request body (at most {MAX_BODY} bytes): {e}\n").into_bytes(),
        ),
    };
    let mut out = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = response.status;
    if let Some(ct) = response.content_type {
        out.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    out
}
