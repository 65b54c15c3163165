//! Registry credentials from containers/docker auth files.
//!
//! Model: the same JSON files podman, skopeo, bootc and docker read
//! (`{"auths": {"<key>": {"auth": base64("user:pass")}}}`), consulted in a
//! fixed, documented order. The **first file holding an entry for the
//! registry wins**; later files are not merged in, so an admin can always tell
//! which file supplied the credentials (the error for a 401 names it).
//!
//! Order when `--authfile` is not given:
//! 1. `$REGISTRY_AUTH_FILE` (the containers tools' override),
//! 2. `/etc/osctl/auth.json` (osctl's system pull secret),
//! 3. `/etc/ostree/auth.json` (bootc's pull secret, so a bootc host keeps working),
//! 4. `$XDG_RUNTIME_DIR/containers/auth.json` (podman login),
//! 5. `~/.docker/config.json` (docker login).
//!
//! `--authfile FILE` replaces the whole list, as in podman: an explicit file
//! that does not exist is an error rather than a silent anonymous pull.
//!
//! Keys are matched most-specific first: `registry/ns/repo`, then
//! `registry/ns`, then `registry`; a key may carry an `https://` prefix and a
//! trailing path (docker writes `https://index.docker.io/v1/`).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::FetchError;

/// Credentials found for one registry, and where they came from.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
    source: PathBuf,
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The auth file the credentials were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The user and password, to send to the registry or its token service.
    pub(crate) fn user_password(&self) -> (&str, &str) {
        (&self.user, &self.password)
    }
}

/// The outcome of a credential lookup: the credentials if any, and every
/// file that was consulted (for the error message of a 401).
#[derive(Debug, Clone)]
pub struct AuthLookup {
    credentials: Option<Credentials>,
    consulted: Vec<PathBuf>,
}

impl AuthLookup {
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// One phrase for error messages: which file supplied credentials, or
    /// which files were searched without finding any.
    pub fn describe(&self) -> String {
        match &self.credentials {
            Some(c) => format!("credentials from {}", c.source.display()),
            None if self.consulted.is_empty() => "no auth file exists".to_string(),
            None => format!(
                "no credentials for it in {}",
                self.consulted
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The default auth file list, in lookup order (see the module docs).
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    files.push("/etc/osctl/auth.json".into());
    files.push("/etc/ostree/auth.json".into());
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&run).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".docker/config.json"));
    }
    files
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Looks up credentials for `registry` (host[:port]) and `repository`
/// (`ns/repo`). `explicit` is `--authfile`; when given it is the only file.
pub fn lookup(
    explicit: Option<&Path>,
    registry: &str,
    repository: &str,
) -> Result<AuthLookup, FetchError> {
    let files = match explicit {
        Some(p) => {
            if !p.exists() {
                return Err(FetchError::AuthFile {
                    path: p.to_path_buf(),
                    why: "the file does not exist".into(),
                    source: None,
                });
            }
            vec![p.to_path_buf()]
        }
        None => default_auth_files(),
    };
    let wanted = candidate_keys(registry, repository);
    let mut consulted = Vec::new();
    for file in files {
        let data = match std::fs::read(&file) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(FetchError::AuthFile {
                    path: file,
                    why: String::new(),
                    source: Some(Box::new(e)),
                });
            }
        };
        consulted.push(file.clone());
        let parsed: AuthFile = serde_json::from_slice(&data).map_err(|e| FetchError::AuthFile {
            path: file.clone(),
            why: "not valid auth JSON".into(),
            source: Some(Box::new(e)),
        })?;
        for key in &wanted {
            let entry = parsed
                .auths
                .iter()
                .find(|(k, _)| normalize_key(k) == *key)
                .map(|(_, v)| v);
            if let Some(entry) = entry {
                let (user, password) = decode_entry(entry).map_err(|why| FetchError::AuthFile {
                    path: file.clone(),
                    why: format!("entry for {key}: {why}"),
                    source: None,
                })?;
                return Ok(AuthLookup {
                    credentials: Some(Credentials {
                        user,
                        password,
                        source: file,
                    }),
                    consulted,
                });
            }
        }
    }
    Ok(AuthLookup {
        credentials: None,
        consulted,
    })
}

fn decode_entry(e: &AuthEntry) -> Result<(String, String), String> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok((u.clone(), p.clone()));
    }
    let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) else {
        // docker's identitytoken is an OAuth2 refresh token that must be
        // exchanged at the registry's token service; osctl does not speak
        // that exchange, and sending it as a bearer token would only fail.
        let has_token = e.identity_token.as_deref().is_some_and(|t| !t.is_empty());
        return Err(if has_token {
            "identity tokens (OAuth2 refresh tokens from docker login) are not supported; \
             store a username and password (podman login does)"
                .into()
        } else {
            "neither auth nor username/password".into()
        });
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "auth is not base64")?;
    let text = String::from_utf8(raw).map_err(|_| "auth is not UTF-8")?;
    let (user, password) = text.split_once(':').ok_or("auth is not user:password")?;
    Ok((user.into(), password.into()))
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://r:5000/` → `r:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").or(k.strip_suffix("/v2")).unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

fn candidate_keys(registry: &str, repository: &str) -> Vec<String> {
    let registry = normalize_key(registry);
    let mut keys = Vec::new();
    let parts: Vec<&str> = repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{registry}/{}", parts[..n].join("/")));
    }
    keys.push(registry);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn most_specific_key_wins_and_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let f = write(
            dir.path(),
            "auth.json",
            &format!(
                r#"{{"auths": {{"r:5000": {{"auth": "{}"}}, "https://r:5000/ns/app": {{"auth": "{}"}}}}}}"#,
                b64("all:one"),
                b64("app:two")
            ),
        );
        let l = lookup(Some(&f), "r:5000", "ns/app").unwrap();
        let c = l.credentials().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("app", "two"));
        assert!(l.describe().contains("auth.json"));
        let l = lookup(Some(&f), "r:5000", "other").unwrap();
        assert!(l.credentials().is_some());
        let l = lookup(Some(&f), "elsewhere:1", "x").unwrap();
        assert!(l.credentials().is_none());
        assert!(l.describe().starts_with("no credentials for it in"));
    }

    #[test]
    fn broken_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "bad.json", "{not json");
        let e = lookup(Some(&f), "r", "x").unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
        let missing = dir.path().join("missing.json");
        let e = lookup(Some(&missing), "r", "x").unwrap_err().to_string();
        assert!(
            e.contains("missing.json") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn identity_tokens_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "config.json",
            r#"{"auths": {"r:1": {"auth": "", "identitytoken": "refresh"}}}"#,
        );
        let e = lookup(Some(&f), "r:1", "x").unwrap_err().to_string();
        assert!(
            e.contains("identity tokens") && e.contains("config.json"),
            "{e}"
        );
    }

    #[test]
    fn docker_hub_keys_normalise() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(
            candidate_keys("docker.io", "library/debian"),
            ["docker.io/library/debian", "docker.io/library", "docker.io"]
        );
    }
}
