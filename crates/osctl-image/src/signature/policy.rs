//! containers-policy.json(5): which images a machine accepts, per scope.
//!
//! ```json
//! {"default": [{"type": "reject"}],
//!  "transports": {"docker": {"registry.example/os": [
//!      {"type": "sigstoreSigned", "keyPath": "/etc/pki/containers/os.pub"}]}}}
//! ```
//!
//! Parsed strictly ([`Policy::parse`] takes the text, [`Policy::load`] finds
//! and reads the file): unknown keys, a key twice, an empty requirement list
//! or a requirement type nobody defined make the whole file unusable, and an
//! unusable policy refuses every pull — a typo must not open the machine.
//!
//! Requirement types osctl cannot evaluate (GPG `signedBy`; `sigstoreSigned`
//! with `fulcio`, `pki` or `rekorPublicKey*`) still parse, so that a policy
//! written for podman loads, but any image whose scope uses them is refused
//! with "not supported", never accepted.
//!
//! Scopes are looked up as the containers tools do ([`Policy::requirements_for`]):
//! for `docker`, the reference with its tag or digest, the repository, each
//! parent namespace up to the registry host (with port), then `*.`
//! wildcards of the host name (without port), then the transport's `""`
//! scope; for `oci` and `oci-archive` the path with its tag, the path and
//! its parent directories; for `containers-storage` the reference as
//! written. The top-level `default` applies when no scope matches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::identity::{DockerRef, SignedIdentity};
use super::strict_json::{self, Shape};

/// A requirement is an object, and so is its `signedIdentity`.
const REQUIREMENT_SHAPE: Shape = Shape::Obj(&[("signedIdentity", Shape::Obj(&[]))]);
const REQUIREMENTS_SHAPE: Shape = Shape::ListOf(&REQUIREMENT_SHAPE);
const SCOPES_SHAPE: Shape = Shape::ObjOf(&REQUIREMENTS_SHAPE);
/// Objects, never arrays, where policy.json has structs.
const POLICY_SHAPE: Shape = Shape::Obj(&[
    ("default", REQUIREMENTS_SHAPE),
    ("transports", Shape::ObjOf(&SCOPES_SHAPE)),
]);
use crate::{FetchError, ImageRef};

/// The environment variable podman and buildah read for another policy
/// file; osctl honours it the same way (and requires the file to exist).
pub const POLICY_ENV: &str = "CONTAINERS_POLICY_JSON";

/// Where the machine's policy is, in the order osctl looks: the admin's
/// file in /etc, then the one the OS image ships in /usr.
pub const POLICY_PATHS: [&str; 2] = [
    "/etc/containers/policy.json",
    "/usr/share/containers/policy.json",
];

/// The transports containers-policy.json(5) may name. Others are refused:
/// a misspelt transport would leave its scopes unused and its images to
/// `default` without a word.
const KNOWN_TRANSPORTS: [&str; 11] = [
    "atomic",
    "containers-storage",
    "dir",
    "docker",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
];

/// A policy file is a few KiB; the cap keeps a mistaken path (a disk image)
/// from being read into memory.
const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    default: Vec<Requirement>,
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One requirement of a scope's list; every one in the list must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SigstoreSigned {
        keys: KeySource,
        identity: SignedIdentity,
    },
    /// A requirement osctl does not evaluate; the text names it.
    Unsupported(String),
}

/// Where a `sigstoreSigned` requirement's keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    Files(Vec<PathBuf>),
    /// PEM texts (decoded from the policy's base64 `keyData`).
    Inline(Vec<Vec<u8>>),
}

/// The requirements that apply to one image, and where they came from.
#[derive(Debug, Clone)]
pub(crate) struct Chosen<'a> {
    pub(crate) requirements: &'a [Requirement],
    /// `docker scope "localhost:5000/os"`, `docker scope ""`, `default`.
    pub(crate) scope: String,
}

impl Policy {
    /// Finds and reads the machine's policy: `$CONTAINERS_POLICY_JSON` if
    /// set (the file must exist), else the first of [`POLICY_PATHS`] that
    /// exists. No policy at all is an error: osctl does not guess what a
    /// machine accepts.
    pub fn load() -> Result<Policy, FetchError> {
        let path = match std::env::var_os(POLICY_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => first_existing(&POLICY_PATHS)?,
        };
        Self::load_from(&path)
    }

    /// Reads the policy file at `path`.
    pub fn load_from(path: &Path) -> Result<Policy, FetchError> {
        let err = |why: String, source: Option<crate::BoxError>| FetchError::Policy {
            path: path.to_path_buf(),
            why,
            source,
        };
        let text = read_capped(path, MAX_POLICY_BYTES).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound if std::env::var_os(POLICY_ENV).is_some() => {
                    format!("cannot read it (named by ${POLICY_ENV})")
                }
                _ => "cannot read it".to_string(),
            };
            err(why, Some(Box::new(e)))
        })?;
        Self::parse(&text, path).map_err(|why| err(why, None))
    }

    /// Parses policy text; `path` is only for messages and relative key
    /// paths' refusal. `Err` is the reason in words.
    pub(crate) fn parse(text: &[u8], path: &Path) -> Result<Policy, String> {
        let value: serde_json::Value = strict_json::from_slice(text).map_err(|e| e.to_string())?;
        strict_json::objects_where_structs_are(&value, "policy", &POLICY_SHAPE)?;
        let raw: RawPolicy = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let default = convert_list(raw.default, "default")?;
        let mut transports = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            if !KNOWN_TRANSPORTS.contains(&transport.as_str()) {
                return Err(format!(
                    "transports: \"{}\" is not a transport of the containers tools ({})",
                    transport.escape_debug(),
                    KNOWN_TRANSPORTS.join(", ")
                ));
            }
            let mut out = BTreeMap::new();
            for (scope, list) in scopes {
                let at = format!("transports.{transport} scope \"{scope}\"");
                out.insert(scope, convert_list(list, &at)?);
            }
            transports.insert(transport, out);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            default,
            transports,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The requirements for `imgref`: the most specific scope that the
    /// policy names, else the transport's `""` scope, else `default`.
    pub(crate) fn requirements_for(&self, imgref: &ImageRef) -> Chosen<'_> {
        let transport = policy_transport(imgref);
        if let Some(scopes) = self.transports.get(transport) {
            for scope in scope_candidates(imgref).iter().chain(&[String::new()]) {
                if let Some(list) = scopes.get(scope) {
                    return Chosen {
                        requirements: list,
                        scope: format!("{transport} scope \"{scope}\""),
                    };
                }
            }
        }
        Chosen {
            requirements: &self.default,
            scope: "default".to_string(),
        }
    }
}

/// The first of `paths` that exists. Only "no such file" moves on to the
/// next: a path that cannot be looked at (EIO, ENOTDIR, a security
/// module's EACCES) is an error, never a reason to take a laxer file.
fn first_existing(paths: &[&str]) -> Result<PathBuf, FetchError> {
    for p in paths {
        let path = PathBuf::from(p);
        match path.symlink_metadata() {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(FetchError::Policy {
                    path,
                    why: "cannot look at it (osctl does not fall back to another policy file \
                          when one it should read is unreadable)"
                        .to_string(),
                    source: Some(Box::new(e)),
                });
            }
        }
    }
    Err(FetchError::Policy {
        path: PathBuf::from(paths[0]),
        why: format!(
            "no signature policy: neither {} exists (osctl needs one to decide which \
             images this machine accepts; see docs/signatures.md)",
            paths.join(" nor ")
        ),
        source: None,
    })
}

/// The transport's name in policy.json (`docker`, not osctl's `registry`).
fn policy_transport(imgref: &ImageRef) -> &'static str {
    match imgref {
        ImageRef::Registry(_) => "docker",
        other => other.transport(),
    }
}

/// The scopes that name `imgref`, most specific first (without `""`).
fn scope_candidates(imgref: &ImageRef) -> Vec<String> {
    match imgref {
        ImageRef::Registry(r) => {
            let name = format!("{}/{}", r.registry(), r.repository());
            let mut out = vec![r.whole(), name.clone()];
            let mut ns = name.as_str();
            while let Some((parent, _)) = ns.rsplit_once('/') {
                out.push(parent.to_string());
                ns = parent;
            }
            // `*.example.com` matches any host under example.com, ports aside.
            let host = r.registry().split(':').next().unwrap_or_default();
            let labels: Vec<&str> = host.split('.').collect();
            for i in 1..labels.len() {
                out.push(format!("*.{}", labels[i..].join(".")));
            }
            out
        }
        ImageRef::OciLayout { path, tag } | ImageRef::OciArchive { path, tag } => {
            let path = resolved_path(path);
            let dir = path.display().to_string();
            let mut out = Vec::new();
            if let Some(t) = tag {
                out.push(format!("{dir}:{t}"));
            }
            let mut p = Some(path.as_path());
            while let Some(cur) = p.filter(|c| c.parent().is_some()) {
                out.push(cur.display().to_string());
                p = cur.parent();
            }
            out
        }
        ImageRef::ContainersStorage { .. } => vec![imgref.name()],
    }
}

/// The path an `oci:` scope is looked up by: resolved as the containers
/// tools resolve it (absolute, symlinks followed), so that a trailing or
/// doubled slash, `.`, `..` or a symlink cannot step around a scope. The
/// layout has just been read, so it exists; should it have vanished, its
/// spelling is normalised without the file system (`..` taken lexically).
fn resolved_path(path: &Path) -> PathBuf {
    use std::path::Component;
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    // `absolute` fails only for an empty path (never parsed) or an
    // unreadable working directory; the path as written is then all there is.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

pub(super) fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "it is larger than {}",
            crate::limits::human_size(limit)
        )));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<RawRequirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawRequirement>>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawRequirement {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything {},
    #[serde(rename = "reject")]
    Reject {},
    /// GPG simple signing: parsed loosely, refused when used.
    #[serde(rename = "signedBy")]
    SignedBy(serde::de::IgnoredAny),
    #[serde(rename = "sigstoreSigned")]
    SigstoreSigned(Box<RawSigstore>),
}

/// `sigstoreSigned`'s fields (boxed: the other requirements are empty).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSigstore {
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    fulcio: Option<serde_json::Value>,
    pki: Option<serde_json::Value>,
    rekor_public_key_path: Option<String>,
    rekor_public_key_paths: Option<Vec<String>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
    signed_identity: Option<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawIdentity {
    #[serde(rename = "matchExact")]
    MatchExact {},
    #[serde(rename = "matchRepoDigestOrExact")]
    MatchRepoDigestOrExact {},
    #[serde(rename = "matchRepository")]
    MatchRepository {},
    #[serde(rename = "exactReference", rename_all = "camelCase")]
    ExactReference { docker_reference: String },
    #[serde(rename = "exactRepository", rename_all = "camelCase")]
    ExactRepository { docker_repository: String },
    #[serde(rename = "remapIdentity", rename_all = "camelCase")]
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

fn convert_list(list: Vec<RawRequirement>, at: &str) -> Result<Vec<Requirement>, String> {
    if list.is_empty() {
        return Err(format!(
            "{at}: the requirement list is empty (say [{{\"type\": \"reject\"}}] or \
             [{{\"type\": \"insecureAcceptAnything\"}}])"
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, r)| convert(r).map_err(|why| format!("{at}, requirement {}: {why}", i + 1)))
        .collect()
}

fn convert(raw: RawRequirement) -> Result<Requirement, String> {
    Ok(match raw {
        RawRequirement::InsecureAcceptAnything {} => Requirement::InsecureAcceptAnything,
        RawRequirement::Reject {} => Requirement::Reject,
        RawRequirement::SignedBy(_) => {
            Requirement::Unsupported("signedBy (GPG simple signing)".into())
        }
        RawRequirement::SigstoreSigned(raw) => {
            let RawSigstore {
                key_path,
                key_paths,
                key_data,
                key_datas,
                fulcio,
                pki,
                rekor_public_key_path,
                rekor_public_key_paths,
                rekor_public_key_data,
                rekor_public_key_datas,
                signed_identity,
            } = *raw;
            let trust = [
                key_path.is_some(),
                key_paths.is_some(),
                key_data.is_some(),
                key_datas.is_some(),
                fulcio.is_some(),
                pki.is_some(),
            ];
            if trust.iter().filter(|t| **t).count() != 1 {
                return Err(
                    "sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, \
                            keyDatas, fulcio, pki"
                        .into(),
                );
            }
            let identity = convert_identity(signed_identity)?;
            let rekor = rekor_public_key_path.is_some()
                || rekor_public_key_paths.is_some()
                || rekor_public_key_data.is_some()
                || rekor_public_key_datas.is_some();
            if fulcio.is_some() {
                return Ok(Requirement::Unsupported(
                    "sigstoreSigned with fulcio (keyless signing)".into(),
                ));
            }
            if pki.is_some() {
                return Ok(Requirement::Unsupported(
                    "sigstoreSigned with pki (X.509 certificates)".into(),
                ));
            }
            if rekor {
                return Ok(Requirement::Unsupported(
                    "sigstoreSigned with rekorPublicKey* (transparency log proofs)".into(),
                ));
            }
            let keys = match (key_path, key_paths, key_data, key_datas) {
                (Some(p), ..) => KeySource::Files(vec![absolute(p)?]),
                (_, Some(ps), ..) => KeySource::Files(
                    non_empty(ps, "keyPaths")?
                        .into_iter()
                        .map(absolute)
                        .collect::<Result<_, _>>()?,
                ),
                (_, _, Some(d), _) => KeySource::Inline(vec![decode_key_data(&d, "keyData")?]),
                (_, _, _, Some(ds)) => KeySource::Inline(
                    non_empty(ds, "keyDatas")?
                        .iter()
                        .map(|d| decode_key_data(d, "keyDatas"))
                        .collect::<Result<_, _>>()?,
                ),
                _ => unreachable!("exactly one trust root was checked above"),
            };
            Requirement::SigstoreSigned { keys, identity }
        }
    })
}

fn convert_identity(raw: Option<RawIdentity>) -> Result<SignedIdentity, String> {
    let parse = |text: &str, what: &str| {
        DockerRef::parse(text).map_err(|e| format!("signedIdentity {what} \"{text}\": {e}"))
    };
    Ok(match raw {
        None | Some(RawIdentity::MatchRepoDigestOrExact {}) => {
            SignedIdentity::MatchRepoDigestOrExact
        }
        Some(RawIdentity::MatchExact {}) => SignedIdentity::MatchExact,
        Some(RawIdentity::MatchRepository {}) => SignedIdentity::MatchRepository,
        Some(RawIdentity::ExactReference { docker_reference }) => {
            let r = parse(&docker_reference, "dockerReference")?;
            if r.is_name_only() {
                return Err(format!(
                    "signedIdentity dockerReference \"{docker_reference}\" names no tag or digest"
                ));
            }
            SignedIdentity::ExactReference(r)
        }
        Some(RawIdentity::ExactRepository { docker_repository }) => {
            let r = parse(&docker_repository, "dockerRepository")?;
            if !r.is_name_only() {
                return Err(format!(
                    "signedIdentity dockerRepository \"{docker_repository}\" must be a repository \
                     without tag or digest"
                ));
            }
            SignedIdentity::ExactRepository(r)
        }
        Some(RawIdentity::RemapIdentity {
            prefix,
            signed_prefix,
        }) => {
            for (what, p) in [("prefix", &prefix), ("signedPrefix", &signed_prefix)] {
                if p.is_empty() || p.ends_with('/') || p.contains('@') {
                    return Err(format!(
                        "signedIdentity remapIdentity {what} \"{p}\" is not a registry or \
                         repository prefix"
                    ));
                }
            }
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            }
        }
    })
}

fn non_empty(list: Vec<String>, what: &str) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(list)
}

/// Key paths must be absolute: osctl runs from units and timers whose
/// working directory says nothing about where an admin meant.
fn absolute(p: String) -> Result<PathBuf, String> {
    let path = PathBuf::from(&p);
    if !path.is_absolute() {
        return Err(format!("key path \"{p}\" is not absolute"));
    }
    Ok(path)
}

/// `keyData` is the PEM text in standard base64 (JSON's form of bytes in
/// the containers tools).
fn decode_key_data(data: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("{what} is not base64 (of a PEM public key): {e}"))
}

#[cfg(test)]
mod tests;
