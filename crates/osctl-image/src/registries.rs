//! Transport security policy per registry: TLS verification, plain HTTP and
//! extra CA certificates.
//!
//! Model: HTTPS with certificate verification is the rule. Two exceptions, as
//! in podman/skopeo:
//! - a registry marked insecure, by `--tls-verify=false` or by
//!   `insecure = true` in containers' `registries.conf` (`$CONTAINERS_REGISTRIES_CONF`,
//!   else `/etc/containers/registries.conf` plus `registries.conf.d/*.conf`):
//!   certificates are not verified and plain HTTP is allowed;
//! - a loopback registry (`localhost`, `127.0.0.0/8`, `::1`): plain HTTP is
//!   allowed, but if it speaks TLS its certificate is still verified. An
//!   explicit `--tls-verify=true` removes this exception.
//!
//! Extra CA certificates come from `--cert-dir` or the containers/docker
//! `certs.d/<host:port>/*.crt` directories.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::FetchError;

/// How to talk to one registry.
#[derive(Debug, Clone, Default)]
pub struct TlsPolicy {
    /// Do not verify certificates (and allow plain HTTP).
    pub insecure: bool,
    /// Plain HTTP may be used if the registry does not speak TLS.
    pub allow_http: bool,
    /// PEM files of extra CA certificates to trust.
    pub ca_files: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

#[derive(Deserialize)]
struct RegistryEntry {
    #[serde(default)]
    location: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    insecure: bool,
}

/// Decides the policy for `registry` (host[:port]).
///
/// `tls_verify` is the command line's `--tls-verify` (None = not given);
/// `cert_dir` is `--cert-dir`.
pub fn policy_for(
    registry: &str,
    tls_verify: Option<bool>,
    cert_dir: Option<&Path>,
) -> Result<TlsPolicy, FetchError> {
    let insecure = match tls_verify {
        Some(v) => !v,
        None => insecure_in_registries_conf(registry)?,
    };
    // An explicit --tls-verify=true takes the loopback exception away too.
    let allow_http = insecure || (tls_verify.is_none() && is_loopback(registry));
    let mut ca_files = Vec::new();
    // An explicit --cert-dir must exist; the default certs.d directories
    // usually do not, and that is fine. Anything unreadable is refused:
    // trusting fewer CAs than configured would fail later, less clearly.
    let dirs: Vec<(PathBuf, bool)> = match cert_dir {
        Some(d) => vec![(d.to_path_buf(), true)],
        None => vec![
            (Path::new("/etc/containers/certs.d").join(registry), false),
            (Path::new("/etc/docker/certs.d").join(registry), false),
        ],
    };
    for (d, required) in dirs {
        let unreadable =
            |e: std::io::Error| FetchError::config_io(&d, "cannot read the CA directory", e);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(e) => return Err(unreadable(e)),
        };
        for e in rd {
            let p = e.map_err(unreadable)?.path();
            if p.extension().is_some_and(|x| x == "crt") {
                ca_files.push(p);
            }
        }
    }
    ca_files.sort();
    Ok(TlsPolicy {
        insecure,
        allow_http,
        ca_files,
    })
}

/// `localhost`, `127.x.y.z`, `[::1]`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn registries_conf_files() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(p)];
    }
    let mut files = vec![PathBuf::from("/etc/containers/registries.conf")];
    if let Ok(rd) = std::fs::read_dir("/etc/containers/registries.conf.d") {
        let mut extra: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        files.extend(extra);
    }
    files
}

fn insecure_in_registries_conf(registry: &str) -> Result<bool, FetchError> {
    let mut insecure = false;
    for file in registries_conf_files() {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(FetchError::config_io(&file, "", e));
            }
        };
        // toml's own rendering spans several lines (it quotes the file);
        // its message is the one-line reason.
        let conf: RegistriesConf = toml::from_str(&text).map_err(|e| FetchError::Config {
            path: file.clone(),
            why: e.message().to_string(),
            source: None,
        })?;
        // Later files override earlier ones, as in containers-registries.conf.d(5).
        for entry in conf.registry {
            let loc = entry.prefix.as_deref().unwrap_or(&entry.location);
            if loc == registry || loc.split('/').next() == Some(registry) {
                insecure = entry.insecure;
            }
        }
    }
    Ok(insecure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:41000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn explicit_flag_overrides_and_certs_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let p = policy_for("r.example:443", Some(false), Some(dir.path())).unwrap();
        assert!(p.insecure && p.allow_http);
        assert_eq!(p.ca_files, vec![dir.path().join("ca.crt")]);
        let p = policy_for("r.example:443", Some(true), Some(dir.path())).unwrap();
        assert!(!p.insecure && !p.allow_http);
        let missing = dir.path().join("missing");
        let e = policy_for("r.example:443", None, Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
