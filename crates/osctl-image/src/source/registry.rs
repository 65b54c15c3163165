//! Pulling from an OCI distribution registry with `oci-client`.
//!
//! osctl asks for manifests raw (`pull_manifest_raw`) and parses them itself,
//! because the raw bytes are what the digest covers and `oci-client`'s own
//! platform resolution only applies to its parsed-manifest calls. Blobs are
//! streamed with `pull_blob_stream`, which verifies the digest as the bytes
//! pass; osctl adds a size check on top so a short or overlong body fails
//! with a message that says so.

use std::time::Duration;

use futures_util::TryStreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::Descriptor;

use super::{BlobReader, FetchOptions, ResolvedManifest};
use crate::FetchError;
use crate::auth::{self, AuthLookup};
use crate::manifest::{self, ACCEPTED_MANIFEST_TYPES, ParsedManifest, Platform};
use crate::registries::{self, TlsPolicy};
use crate::verify::{DigestReader, Expected};

/// Time allowed to open a TCP connection. A registry that does not answer
/// within this is down or filtered; waiting longer only delays the error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest silence tolerated while reading a response. Generous for slow
/// links, but bounded, so a stalled transfer fails instead of hanging forever.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Time allowed for the plain-HTTP probe of a loopback/insecure registry.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RegistrySource {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    lookup: AuthLookup,
    platform: Platform,
}

impl RegistrySource {
    pub async fn open(reference: Reference, opts: &FetchOptions) -> Result<Self, FetchError> {
        install_crypto_provider();
        let registry = reference.resolve_registry().to_string();
        let policy = registries::policy_for(&registry, opts.tls_verify, opts.cert_dir.as_deref())?;
        let lookup = auth::lookup(opts.authfile.as_deref(), &registry, reference.repository())?;
        let auth = lookup
            .credentials()
            .map(|c| c.to_registry_auth())
            .unwrap_or(RegistryAuth::Anonymous);
        let use_http = policy.allow_http && speaks_plain_http(&registry).await;
        tracing::debug!(%registry, use_http, insecure = policy.insecure, ca_files = ?policy.ca_files, "registry transport");
        let client = build_client(&registry, &policy, use_http)?;
        Ok(RegistrySource {
            client,
            reference,
            auth,
            lookup,
            platform: opts.platform.clone().unwrap_or_else(Platform::host),
        })
    }

    pub fn registry(&self) -> &str {
        self.reference.resolve_registry()
    }

    async fn fetch_manifest(&self, r: &Reference) -> Result<(Vec<u8>, String), FetchError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(r, &self.auth, ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(|e| self.classify(e, &r.whole()))?;
        Ok((bytes.to_vec(), digest))
    }

    pub async fn resolve(&self) -> Result<ResolvedManifest, FetchError> {
        let (raw, digest) = self.fetch_manifest(&self.reference).await?;
        let what = format!("manifest of {}", self.reference.whole());
        match manifest::parse_manifest(&raw, None, &what)? {
            ParsedManifest::Image(m) => Ok(ResolvedManifest {
                raw,
                digest,
                manifest: *m,
                index_digest: None,
            }),
            ParsedManifest::Index(idx) => {
                let chosen = manifest::select_platform(&idx, &self.platform, &what)?;
                let by_digest = self
                    .reference
                    .clone_with_digest(chosen.digest().to_string());
                // oci-client checks the body against the digest in the reference.
                let (raw2, digest2) = self.fetch_manifest(&by_digest).await?;
                let what2 = format!("manifest {} of {}", digest2, self.reference.whole());
                match manifest::parse_manifest(&raw2, None, &what2)? {
                    ParsedManifest::Image(m) => Ok(ResolvedManifest {
                        raw: raw2,
                        digest: digest2,
                        manifest: *m,
                        index_digest: Some(digest),
                    }),
                    ParsedManifest::Index(_) => Err(FetchError::Malformed {
                        what: what2,
                        why: "an index nested in an index".into(),
                    }),
                }
            }
        }
    }

    pub async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, FetchError> {
        let d = OciDescriptor {
            media_type: desc.media_type().to_string(),
            digest: desc.digest().to_string(),
            size: desc.size() as i64,
            urls: desc.urls().clone(),
            annotations: None,
            artifact_type: None,
        };
        let what = format!("blob {} of {}", desc.digest(), self.reference.whole());
        let sized = self
            .client
            .pull_blob_stream(&self.reference, &d)
            .await
            .map_err(|e| self.classify(e, &what))?;
        let stream = sized.stream.map_err(|e| {
            // Say plainly what went wrong, whichever layer reported it: bad
            // content (the verifying stream) or a broken transfer.
            let chain = error_chain(&e);
            let what = if chain.contains("Invalid digest") {
                "digest mismatch"
            } else {
                "transfer failed"
            };
            std::io::Error::new(e.kind(), format!("{what}: {chain}"))
        });
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::new(DigestReader::verifying(
            reader,
            Expected {
                digest: None,
                size: Some(desc.size()),
            },
        )))
    }

    /// Turns a registry client error into one line that names the registry,
    /// the thing being fetched and, for auth failures, where credentials came
    /// from.
    fn classify(&self, e: OciDistributionError, what: &str) -> FetchError {
        let registry = self.registry().to_string();
        let denied = |status: &str| FetchError::Unauthorized {
            registry: registry.clone(),
            what: what.to_string(),
            status: status.to_string(),
            auth: self.lookup.describe(),
        };
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => denied("401 unauthorized"),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    FetchError::NotFound {
                        reference: what.to_string(),
                        detail: format!("{registry} says: {}", envelope_text(&envelope)),
                    }
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    denied("403 denied")
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    denied("401 unauthorized")
                } else {
                    FetchError::Registry {
                        registry,
                        what: what.to_string(),
                        detail: envelope_text(&envelope),
                    }
                }
            }
            OciDistributionError::ServerError { code: 403, .. } => denied("403 denied"),
            OciDistributionError::ServerError { code: 404, .. } => FetchError::NotFound {
                reference: what.to_string(),
                detail: format!("{registry} answered 404"),
            },
            OciDistributionError::ServerError { code, message, .. } => FetchError::Registry {
                registry,
                what: what.to_string(),
                detail: format!("HTTP {code}: {}", first_line(&message)),
            },
            OciDistributionError::DigestError(d) => FetchError::Blob {
                what: what.to_string(),
                detail: d.to_string(),
            },
            OciDistributionError::RequestError(r) => {
                let chain = error_chain(&r);
                let lower = chain.to_lowercase();
                if [
                    "certificate",
                    "ssl",
                    "tls",
                    "corrupt message",
                    "invalidcontenttype",
                ]
                .iter()
                .any(|k| lower.contains(k))
                {
                    let hint = if lower.contains("wrong version number")
                        || lower.contains("corrupt message")
                        || lower.contains("invalidcontenttype")
                    {
                        " (the registry speaks plain HTTP; allow it with --tls-verify=false)"
                    } else {
                        ""
                    };
                    FetchError::Tls {
                        registry,
                        detail: format!("{chain}{hint}"),
                    }
                } else if r.is_connect() || r.is_timeout() {
                    FetchError::Connect {
                        registry,
                        detail: chain,
                    }
                } else {
                    FetchError::Registry {
                        registry,
                        what: what.to_string(),
                        detail: chain,
                    }
                }
            }
            other => FetchError::Registry {
                registry,
                what: what.to_string(),
                detail: error_chain(&other),
            },
        }
    }
}

fn envelope_text(env: &oci_client::errors::OciEnvelope) -> String {
    env.errors
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                format!("{:?}", e.code)
            } else {
                e.message.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// An error and its causes on one line, without repeating identical texts.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// rustls needs one process-wide crypto provider; osctl uses ring's. A
/// provider installed earlier by the embedding program is kept.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn build_client(registry: &str, policy: &TlsPolicy, use_http: bool) -> Result<Client, FetchError> {
    let mut certs = Vec::new();
    for f in &policy.ca_files {
        let data = std::fs::read(f).map_err(|e| FetchError::Config {
            path: f.clone(),
            why: e.to_string(),
        })?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let config = ClientConfig {
        protocol: if use_http {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: policy.insecure,
        extra_root_certificates: certs,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..Default::default()
    };
    Client::try_from(config).map_err(|e| FetchError::Tls {
        registry: registry.to_string(),
        detail: error_chain(&e),
    })
}

/// Whether a registry that may be spoken to in plain HTTP actually speaks it.
///
/// The probe is one unauthenticated `GET /v2/` over plain HTTP/1.0 on a bare
/// TCP connection, so no secret ever travels unencrypted and no HTTP client
/// (with its TLS set-up) is built for it. A TLS-only server either drops the
/// connection, answers with a TLS alert, or answers 400 ("client sent an HTTP
/// request to an HTTPS server"); in every such case osctl uses HTTPS with
/// full verification.
async fn speaks_plain_http(registry: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(registry).await.ok()?;
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {registry}\r\nUser-Agent: osctl\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while answer.len() < 4096 {
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
