//! The TLS side of the registry client: which certificates are trusted, and
//! what a TLS failure means in words.
//!
//! osctl builds the rustls configuration itself instead of letting the HTTP
//! client load the platform's roots, because that loader fails (and, through
//! one library's `Default`, panics) when the system has no CA bundle at all,
//! as a minimal image without `ca-certificates` does. Here a missing or
//! empty store is never an error on its own:
//! - an insecure registry (`--tls-verify=false`, `insecure = true`) does not
//!   verify certificates, so it needs no CA;
//! - `--cert-dir` / `certs.d` CAs are trusted with or without system roots;
//! - a registry that needs verification and finds no CA at all gets a
//!   verifier that refuses with [`NoCaAvailable`], which becomes the error
//!   that names the cause and the fix. It is a verifier, not an early error,
//!   so that a registry that turns out to speak plain HTTP is still reported
//!   as such (the TLS handshake fails before any certificate is seen).
//!
//! System roots come from `rustls-native-certs`, which reads `SSL_CERT_FILE`
//! and `SSL_CERT_DIR` when set and OpenSSL's usual locations otherwise.
//! They are loaded by the first certificate check, not when the client is
//! built ([`SystemRoots`]): reading and parsing the ~150 certificates of a
//! distribution's bundle is wasted on a pull that never makes a verified
//! TLS connection (a plain-HTTP or insecure registry). The `--cert-dir` /
//! `certs.d` files are still read up front, so a bad one is reported by
//! name before any request.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::registries::TlsPolicy;
use crate::{BoxError, FetchError};

/// The environment variables the system store honours, for messages.
const CERT_ENV: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// The rustls configuration for one registry, and a description of the
/// system CA store for error messages.
pub(super) struct TlsSetup {
    pub config: rustls::ClientConfig,
    pub system_store: String,
}

pub(super) fn setup(policy: &TlsPolicy) -> Result<TlsSetup, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Setup {
            what: "TLS".into(),
            source: Box::new(e),
        })?;
    let system_store = describe_system_store();
    let verifier: Arc<dyn ServerCertVerifier> = if policy.insecure {
        Arc::new(WithoutChain {
            verdict: Verdict::AcceptAny,
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let mut roots = RootCertStore::empty();
        for file in &policy.ca_files {
            add_ca_file(&mut roots, file)?;
        }
        Arc::new(SystemRoots {
            extra: roots,
            provider: provider.clone(),
            verifier: OnceLock::new(),
        })
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(TlsSetup {
        config,
        system_store,
    })
}

/// The verifier of a registry that needs verification: the `--cert-dir`
/// CAs (`extra`) and the system store, which is loaded the first time a
/// certificate is to be checked, then kept for the client's life.
#[derive(Debug)]
struct SystemRoots {
    extra: RootCertStore,
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: OnceLock<Result<Arc<dyn ServerCertVerifier>, rustls::Error>>,
}

impl SystemRoots {
    fn verifier(&self) -> Result<&Arc<dyn ServerCertVerifier>, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                let mut roots = self.extra.clone();
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    // Not fatal: --cert-dir CAs may be all this registry
                    // needs, and with no CA at all the verifier says so.
                    tracing::debug!("system CA store: {e}");
                }
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Ok(Arc::new(WithoutChain {
                        verdict: Verdict::NoCa,
                        algorithms: self.provider.signature_verification_algorithms,
                    }) as Arc<dyn ServerCertVerifier>);
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map(|v| v as Arc<dyn ServerCertVerifier>)
                    // Refused in the handshake, with the reason in words;
                    // the roots are non-empty, so only a rustls change
                    // could bring this about.
                    .map_err(|e| rustls::Error::General(format!("TLS verification set-up: {e}")))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // The handshake signatures are checked with the provider's algorithms,
    // as the WebPKI verifier does; they need no roots, so no loading.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn add_ca_file(roots: &mut RootCertStore, file: &Path) -> Result<(), FetchError> {
    let bad = |why: &str, source: Option<BoxError>| FetchError::Config {
        path: file.to_path_buf(),
        why: why.to_string(),
        source,
    };
    let data = std::fs::read(file).map_err(|e| FetchError::config_io(file, "", e))?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&data) {
        let cert = cert.map_err(|e| bad("not a PEM certificate file", Some(Box::new(e))))?;
        roots
            .add(cert)
            .map_err(|e| bad("unusable CA certificate", Some(Box::new(e))))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("holds no PEM certificate", None));
    }
    Ok(())
}

fn describe_system_store() -> String {
    let set: Vec<String> = CERT_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| format!("{k}={}", v.to_string_lossy())))
        .collect();
    if set.is_empty() {
        "the system CA store".into()
    } else {
        format!("the CA store at {}", set.join(", "))
    }
}

/// Why the verifier refused: no certificate authority to check against.
#[derive(Debug)]
pub(super) struct NoCaAvailable;

impl std::fmt::Display for NoCaAvailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no CA certificates to verify the server with")
    }
}

impl std::error::Error for NoCaAvailable {}

/// A verifier for the two cases without a certificate chain to check:
/// an insecure registry ([`Verdict::AcceptAny`], as podman does with
/// `--tls-verify=false`) and a verified one with no CA at all
/// ([`Verdict::NoCa`]). Either way the handshake signatures are still
/// checked, so the connection is at least with the holder of the key.
#[derive(Debug)]
struct WithoutChain {
    verdict: Verdict,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Any certificate is accepted.
    AcceptAny,
    /// Every certificate is refused with [`NoCaAvailable`].
    NoCa,
}

impl ServerCertVerifier for WithoutChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verdict {
            Verdict::AcceptAny => Ok(ServerCertVerified::assertion()),
            Verdict::NoCa => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NoCaAvailable)),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a TLS failure was, as far as osctl tells them apart.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TlsFailure {
    /// The verifier had no CA at all ([`NoCaAvailable`]).
    NoCa,
    /// The peer answered the ClientHello with something that is not TLS.
    NotTls,
    /// The certificate chains to no trusted CA.
    UnknownIssuer(String),
    /// Any other refusal of the certificate, in words.
    Certificate(String),
    /// The handshake failed before a certificate was judged.
    Handshake(String),
}

/// Finds the rustls error in an error's chain and says what it means, or
/// `None` if the error did not come from TLS.
pub(super) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error) -> TlsFailure {
    use rustls::InvalidMessage;
    // In words only: the rustls error itself stays in the failed request's
    // chain, which the FetchError keeps as its source.
    let cert = |why: &str| TlsFailure::Certificate(why.to_string());
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(o))
            if o.0.downcast_ref::<NoCaAvailable>().is_some() =>
        {
            TlsFailure::NoCa
        }
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => TlsFailure::NotTls,
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer(
                "its certificate is signed by an unknown authority".into(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                cert("its certificate is not valid for this host name")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                cert("its certificate has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                cert("its certificate is not valid yet (check the clock)")
            }
            CertificateError::Revoked => cert("its certificate has been revoked"),
            _ => cert("its certificate was refused"),
        },
        _ => TlsFailure::Handshake("the TLS handshake failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_found_through_io_errors() {
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        match tls_failure(&wrapped) {
            Some(TlsFailure::UnknownIssuer(text)) => {
                assert!(text.contains("unknown authority"), "{text}")
            }
            other => panic!("{other:?}"),
        }
        let no_ca = std::io::Error::other(rustls::Error::InvalidCertificate(
            CertificateError::Other(OtherError(Arc::new(NoCaAvailable))),
        ));
        assert_eq!(tls_failure(&no_ca), Some(TlsFailure::NoCa));
        let not_tls = std::io::Error::other(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(tls_failure(&not_tls), Some(TlsFailure::NotTls));
        assert_eq!(tls_failure(&std::io::Error::other("refused")), None);
    }

    #[test]
    fn an_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, "").unwrap();
        let mut roots = RootCertStore::empty();
        let e = add_ca_file(&mut roots, &file).unwrap_err().to_string();
        assert!(
            e.contains("ca.crt") && e.contains("no PEM certificate"),
            "{e}"
        );
    }
}
