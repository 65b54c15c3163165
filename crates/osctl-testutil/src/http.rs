//! Just enough HTTP/1.1 to poke a registry's API.
//!
//! Plain HTTP goes over a std `TcpStream` (one request per connection,
//! `Connection: close`, so reading to EOF delimits the response). For a TLS
//! registry we shell out to curl instead of linking a TLS stack into the test
//! support crate: a handful of requests per test does not need one, and curl
//! with `--cacert` is an independent check of the certificate too.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// Path and query, e.g. `/v2/` or `/v2/r/blobs/uploads/x?digest=...`.
    pub target: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// Sends `req` to `addr` over plain HTTP.
pub(crate) fn send_plain(addr: &str, req: &Request<'_>) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.target,
        req.body.len()
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(req.body)?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading response from {addr}"))?;
    parse_response(&raw, true)
}

/// Sends `req` to `https://addr` with curl, trusting `ca_cert`.
pub(crate) fn send_curl(addr: &str, ca_cert: &Path, req: &Request<'_>) -> Result<HttpResponse> {
    let mut cmd = Command::new("curl");
    // --http1.1: the Go server would offer h2 over TLS, whose header block
    // curl prints differently. "Expect:" disables 100-continue round trips.
    cmd.args([
        "-sS",
        "-i",
        "--http1.1",
        "--max-time",
        "60",
        "-H",
        "Expect:",
    ])
    .arg("--cacert")
    .arg(ca_cert)
    .args(["-X", req.method]);
    for (k, v) in &req.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if !req.body.is_empty() || matches!(req.method, "PUT" | "POST" | "PATCH") {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("https://{addr}{}", req.target));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning curl")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = req.body.to_vec();
    // Write on a thread so a large body cannot deadlock against curl's output.
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    writer.join().expect("stdin writer panicked").ok();
    if !output.status.success() {
        bail!(
            "curl {} {} failed: {}",
            req.method,
            req.target,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // curl has already undone any chunked encoding.
    parse_response(&output.stdout, false)
}

fn parse_response(raw: &[u8], decode_chunked: bool) -> Result<HttpResponse> {
    let mut rest = raw;
    loop {
        let end = find(rest, b"\r\n\r\n").context("response without end of headers")?;
        let head = std::str::from_utf8(&rest[..end]).context("non-UTF-8 response headers")?;
        rest = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        if (100..200).contains(&status) {
            continue; // an interim response; the real one follows
        }
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        resp.body = if decode_chunked
            && resp
                .header("transfer-encoding")
                .is_some_and(|v| v.contains("chunked"))
        {
            dechunk(rest)?
        } else if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            rest[..len.min(rest.len())].to_vec()
        } else {
            rest.to_vec()
        };
        return Ok(resp);
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// RFC 4648 base64, for a Basic `Authorization` header.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn parses_chunked_and_interim_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let resp = parse_response(raw, true).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"abcde");
    }
}
