//! Signature policy: which images this machine accepts, decided before a
//! single layer is fetched.
//!
//! ```text
//!   Source::open ── Policy::load ($CONTAINERS_POLICY_JSON | /etc | /usr/share)
//!   Source::resolve
//!     manifest (+ index) ──▶ verify(policy, …)
//!        scope → requirements (policy.rs); each must pass:
//!          insecureAcceptAnything ✓   reject ✗   unsupported ✗ (named)
//!          sigstoreSigned: tag sha256-<hex>.sig (attachments.rs)
//!            each simplesigning layer: key verifies the payload bytes (keys.rs)
//!            → payload parsed strictly (payload.rs) → digest is the
//!            manifest's → identity matches the reference (identity.rs)
//!     ──▶ SignatureVerdict, kept in the image record and the deployment
//! ```
//!
//! Model: the policy is the containers tools' policy.json, read the same way,
//! and it is *always* consulted: there is no flag that skips it. A policy
//! that accepts anything is recorded as such ("insecure"), so `status`
//! can say that no signature was checked. Signatures are the classic
//! sigstore attachments skopeo and cosign write; osctl looks for them
//! whenever the policy asks for a signature (registries.d's
//! `use-sigstore-attachments` switch only matters to tools that may find
//! signatures elsewhere). The crypto is `ring`'s, which osctl already links
//! for TLS; no sigstore crate (an experimental API, a second OCI client and
//! TLS stack) is needed for key-based verification.
//!
//! For an index the signature may name the platform manifest osctl pulls
//! (what `skopeo copy --sign-by-sigstore-private-key` and `cosign sign
//! --recursive` write) or the index itself (what `cosign sign` writes for a
//! multi-arch tag): the manifest's signatures are looked up first, the
//! index's after; the verdict records which digest was signed.

mod attachments;
mod identity;
mod keys;
mod payload;
mod policy;
mod strict_json;

use serde::{Deserialize, Serialize};

pub use policy::{POLICY_ENV, POLICY_PATHS, Policy};

use self::identity::DockerRef;
use self::keys::PublicKey;
use self::policy::{KeySource, Requirement};
use crate::source::{Fetched, RegistrySource};
use crate::{FetchError, ImageRef};

/// What the policy decided for one image; kept with the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerdict {
    /// The policy file that decided.
    pub policy: String,
    /// The scope whose requirements applied: `docker scope "<scope>"`,
    /// `oci scope "<path>"`, or `default`.
    pub scope: String,
    #[serde(flatten)]
    pub check: SignatureCheck,
}

/// How an image passed the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum SignatureCheck {
    /// A sigstore signature by a trusted key was accepted.
    #[serde(rename_all = "camelCase")]
    Verified {
        /// `sha256:<hex>` of the key's SubjectPublicKeyInfo.
        key: String,
        /// `ECDSA P-256`, `Ed25519`, …
        key_type: String,
        /// The manifest digest the signature names (the image's, or its
        /// index's).
        signed_digest: String,
        /// The docker reference the signature names.
        identity: String,
    },
    /// The policy accepts the image without any signature.
    Insecure,
}

impl SignatureVerdict {
    /// One line for people: `verified (ECDSA P-256 key sha256:ab12…)` or
    /// `not verified (the policy accepts anything)`.
    pub fn summary(&self) -> String {
        match &self.check {
            SignatureCheck::Verified { key, key_type, .. } => {
                format!("verified ({key_type} key {})", short_digest(key))
            }
            SignatureCheck::Insecure => "not verified (the policy accepts anything)".to_string(),
        }
    }
}

/// `sha256:` and the first 12 hex digits.
fn short_digest(d: &str) -> &str {
    d.get(..7 + 12).unwrap_or(d)
}

/// Signatures live in the registry, next to the image; other sources
/// cannot carry them.
pub(crate) enum SignatureStore<'a> {
    Registry(&'a RegistrySource),
    /// `what` names the source kind in the refusal ("an OCI layout").
    None {
        what: &'static str,
    },
}

/// Applies `policy` to the image `imgref` resolved to. `Err` is a
/// [`FetchError::SignatureRefused`] for an image the policy refuses, or a
/// [`FetchError::Policy`] for a policy (or key) that cannot be used.
pub(crate) async fn verify(
    policy: &Policy,
    imgref: &ImageRef,
    resolved: &Fetched,
    store: SignatureStore<'_>,
) -> Result<SignatureVerdict, FetchError> {
    let chosen = policy.requirements_for(imgref);
    let refused = |why: String| FetchError::SignatureRefused {
        image: imgref.to_string(),
        digest: resolved.digest().to_string(),
        why,
    };
    let mut verified = None;
    for requirement in chosen.requirements {
        match requirement {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => {
                return Err(refused(format!(
                    "the policy rejects it ({} of {})",
                    chosen.scope,
                    policy.path().display()
                )));
            }
            Requirement::Unsupported(what) => {
                return Err(FetchError::Policy {
                    path: policy.path().to_path_buf(),
                    why: format!(
                        "{}: {what} is not supported by osctl (image {imgref} refused)",
                        chosen.scope
                    ),
                    source: None,
                });
            }
            Requirement::SigstoreSigned { keys, identity } => {
                let keys = load_keys(policy, &chosen.scope, keys)?;
                let registry = match &store {
                    SignatureStore::Registry(r) => *r,
                    SignatureStore::None { what } => {
                        return Err(refused(format!(
                            "{} requires a sigstore signature, and {what} cannot carry one \
                             (push the image to a registry and sign it there)",
                            chosen.scope
                        )));
                    }
                };
                let ImageRef::Registry(reference) = imgref else {
                    unreachable!("only registry sources have a signature store")
                };
                let accepted = attachments::find_accepted(
                    registry,
                    resolved,
                    &keys,
                    identity,
                    &DockerRef::of(reference),
                )
                .await?
                .map_err(refused)?;
                verified.get_or_insert(accepted);
            }
        }
    }
    Ok(SignatureVerdict {
        policy: policy.path().display().to_string(),
        scope: chosen.scope,
        check: verified.unwrap_or(SignatureCheck::Insecure),
    })
}

/// A PEM public key is under 2 KiB even for RSA 8192; the cap keeps a
/// `keyPath` naming something endless (`/dev/zero`, a disk image) from
/// being read into memory, as the policy file's own cap does.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Reads a requirement's keys; a key that cannot be used makes the policy
/// unusable for this scope (an error naming the file, not a refusal).
fn load_keys(policy: &Policy, scope: &str, keys: &KeySource) -> Result<Vec<PublicKey>, FetchError> {
    let policy_error = |why: String, source: Option<crate::BoxError>| FetchError::Policy {
        path: policy.path().to_path_buf(),
        why,
        source,
    };
    match keys {
        KeySource::Files(paths) => paths
            .iter()
            .map(|p| {
                let pem = policy::read_capped(p, MAX_KEY_FILE_BYTES).map_err(|e| {
                    policy_error(
                        format!("{scope}: key file {}: cannot read it", p.display()),
                        Some(Box::new(e)),
                    )
                })?;
                PublicKey::from_pem(&pem).map_err(|why| {
                    policy_error(format!("{scope}: key file {}: {why}", p.display()), None)
                })
            })
            .collect(),
        KeySource::Inline(pems) => pems
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                PublicKey::from_pem(pem)
                    .map_err(|why| policy_error(format!("{scope}: keyData {}: {why}", i + 1), None))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file is a few hundred bytes. A `keyPath` naming something
    /// endless (`/dev/zero`, a disk image, a FIFO) must fail at a cap, as
    /// the policy file itself does, not be read whole into memory.
    #[test]
    fn a_key_file_is_read_only_up_to_a_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.pub");
        let file = std::fs::File::create(&big).unwrap();
        // Sparse: costs no disk, reads as 64 MiB of zeros.
        file.set_len(64 * 1024 * 1024).unwrap();
        let policy_path = tmp.path().join("policy.json");
        let policy = Policy::parse(
            format!(
                r#"{{"default":[{{"type":"sigstoreSigned","keyPath":"{}"}}]}}"#,
                big.display()
            )
            .as_bytes(),
            &policy_path,
        )
        .unwrap();
        let imgref = ImageRef::parse("reg.example/os:1").unwrap();
        let chosen = policy.requirements_for(&imgref);
        let Requirement::SigstoreSigned { keys, .. } = &chosen.requirements[0] else {
            panic!("parsed as {:?}", chosen.requirements);
        };
        let err = load_keys(&policy, "default", keys).err().expect("refused");
        let text = crate::error_chain(&err);
        assert!(
            text.contains(&format!("key file {}", big.display())) && text.contains("larger than"),
            "{text}"
        );
    }
}
