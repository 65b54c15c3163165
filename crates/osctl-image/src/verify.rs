//! Readers that hash and count what flows through them.
//!
//! Model: verification happens *in the stream*, never by re-reading a file,
//! so a layer is read from the network or disk exactly once. A reader that
//! knows its expected digest and size fails the read that hits end-of-file
//! when they do not match, which makes a corrupt or truncated blob an I/O
//! error at the point where the consumer would otherwise accept it.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// What a blob must turn out to be.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `sha256:<hex>`; `None` when another layer already verifies the digest
    /// (the registry client does) and only the size is checked here.
    pub digest: Option<String>,
    pub size: Option<u64>,
}

/// Hashes (sha256) and counts the bytes read through it; with an
/// [`Expected`], fails at end-of-file on a mismatch.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Option<Expected>,
    checked: bool,
}

impl<R> DigestReader<R> {
    /// Hashes without judging; read the result with [`Self::finish`].
    pub fn new(inner: R) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            expected: None,
            checked: false,
        }
    }

    /// Hashes and fails at end-of-file unless digest and size match.
    pub fn verifying(inner: R, expected: Expected) -> Self {
        DigestReader {
            expected: Some(expected),
            ..Self::new(inner)
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `sha256:<hex>` digest and size of everything read.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }

    fn check_at_eof(&mut self) -> std::io::Result<()> {
        self.checked = true;
        let Some(exp) = &self.expected else {
            return Ok(());
        };
        if let Some(size) = exp.size
            && size != self.count
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("truncated: {} of {size} bytes", self.count),
            ));
        }
        let Some(digest) = &exp.digest else {
            return Ok(());
        };
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != *digest {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("digest mismatch: content hashes to {actual}"),
            ));
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DigestReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    if buf.remaining() > 0 && !this.checked {
                        this.check_at_eof()?;
                    }
                    return Poll::Ready(Ok(()));
                }
                if this.expected.as_ref().is_none_or(|e| e.digest.is_some()) {
                    this.hasher.update(new);
                }
                this.count += new.len() as u64;
                if let Some(Expected {
                    size: Some(size), ..
                }) = &this.expected
                    && this.count > *size
                {
                    // Stop early: a blob longer than its descriptor is never valid,
                    // and reading on would let a server stream without end. An
                    // erroring read must not hand out bytes, so un-fill them.
                    buf.set_filled(before);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("more than the {size} bytes the descriptor declares"),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn verifies_digest_and_size_at_eof() {
        let data = b"hello world".to_vec();
        let good = Expected {
            digest: Some(sha256_digest(&data)),
            size: Some(data.len() as u64),
        };
        let mut out = Vec::new();
        DigestReader::verifying(&data[..], good.clone())
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, data);

        let e = DigestReader::verifying(&data[..5], good.clone())
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("truncated: 5 of 11"), "{e}");

        let e = DigestReader::verifying(&b"hello WORLD"[..], good.clone())
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");

        let e = DigestReader::verifying(&b"hello world, and more"[..], good)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("more than the 11 bytes"), "{e}");
    }

    #[tokio::test]
    async fn plain_hashing_reports_digest() {
        let mut r = DigestReader::new(&b"abc"[..]);
        r.read_to_end(&mut Vec::new()).await.unwrap();
        let (d, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(d, sha256_digest(b"abc"));
    }
}
