//! Asking a registry whether it speaks plain HTTP, when a request got no
//! answer that says: the first request of a registry that may speak HTTP
//! got none (`scheme.rs`), or a TLS handshake failed and the server may be
//! an HTTP one that hung up on the ClientHello.

use std::time::Duration;

/// Time allowed for the plain-HTTP probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a registry actually speaks plain HTTP.
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
