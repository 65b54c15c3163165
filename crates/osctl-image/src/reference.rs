//! Image references and their transports.
//!
//! osctl accepts the reference forms a bootc or podman user already types:
//!
//! | form                              | transport    |
//! |-----------------------------------|--------------|
//! | `registry/repo:tag`               | registry     |
//! | `registry/repo@sha256:…`          | registry     |
//! | `docker://registry/repo:tag`      | registry     |
//! | `oci:/path/to/layout[:tag]`       | OCI layout   |
//! | `oci-archive:/path/file.tar[:tag]`| OCI archive  |
//!
//! Only these prefixes are recognised as transports. Anything else that looks
//! like `word:` followed by a path (`containers-storage:`, `dir:`, …) is
//! refused by name rather than misread as a registry host, because a registry
//! host with a port (`localhost:5000/repo`) also contains a colon.

use std::fmt;
use std::path::{Path, PathBuf};

use oci_client::Reference;

use crate::FetchError;

/// The tag a registry reference without tag or digest means, as in docker.
pub const DEFAULT_TAG: &str = "latest";

/// Transports osctl knows by name but cannot pull from; named in the error so
/// the user sees why their reference was refused.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "containers-storage",
    "docker-archive",
    "docker-daemon",
    "dir",
    "ostree-image-signed",
    "ostree-unverified-registry",
    "ostree-unverified-image",
];

/// A parsed image reference: where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A repository in an OCI distribution registry.
    Registry(Reference),
    /// An OCI image layout directory, optionally naming a tag in its index.
    OciLayout { path: PathBuf, tag: Option<String> },
    /// A tar file holding an OCI image layout, optionally naming a tag.
    OciArchive { path: PathBuf, tag: Option<String> },
}

impl ImageRef {
    /// Parses a reference in one of the forms listed in the module docs.
    pub fn parse(input: &str) -> Result<Self, FetchError> {
        let bad = |why: String| FetchError::BadReference {
            reference: input.to_string(),
            why,
        };
        if input.trim().is_empty() {
            return Err(bad("the reference is empty".into()));
        }
        if let Some(rest) = input.strip_prefix("docker://") {
            return parse_registry(rest).map_err(bad);
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, tag) = split_path_tag(rest).map_err(bad)?;
            return Ok(ImageRef::OciLayout { path, tag });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (path, tag) = split_path_tag(rest).map_err(bad)?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some((scheme, _)) = input.split_once(':')
            && KNOWN_UNSUPPORTED.contains(&scheme)
        {
            return Err(bad(format!(
                "transport '{scheme}' is not supported (use a registry, oci: or oci-archive:)"
            )));
        }
        parse_registry(input).map_err(bad)
    }

    /// The transport name as bootc spells it in `status` (`registry`, `oci`,
    /// `oci-archive`).
    pub fn transport(&self) -> &'static str {
        match self {
            ImageRef::Registry(_) => "registry",
            ImageRef::OciLayout { .. } => "oci",
            ImageRef::OciArchive { .. } => "oci-archive",
        }
    }

    /// The reference without its transport prefix, as bootc's `image.image`
    /// field holds it: `registry/repo:tag`, or a path with an optional tag.
    pub fn name(&self) -> String {
        match self {
            ImageRef::Registry(r) => r.whole(),
            ImageRef::OciLayout { path, tag } | ImageRef::OciArchive { path, tag } => {
                path_with_tag(path, tag.as_deref())
            }
        }
    }

    /// The registry host (with port) for a registry reference.
    pub fn registry(&self) -> Option<&str> {
        match self {
            ImageRef::Registry(r) => Some(r.resolve_registry()),
            _ => None,
        }
    }
}

impl fmt::Display for ImageRef {
    /// The canonical form: registry references without a prefix, local ones
    /// with theirs, so that the same image always prints the same way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{}", r.whole()),
            other => write!(f, "{}:{}", other.transport(), other.name()),
        }
    }
}

fn path_with_tag(path: &Path, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{}:{t}", path.display()),
        None => path.display().to_string(),
    }
}

fn parse_registry(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("the reference names no repository".into());
    }
    let reference: Reference = s.parse().map_err(|e| format!("{e}"))?;
    check_port(reference.registry())?;
    Ok(ImageRef::Registry(reference))
}

/// A registry's `:PORT`, if it has one, must be a TCP port (1-65535).
/// Checked here so that `host:99999/repo` is refused by name, not by the
/// HTTP client's URL builder much later.
fn check_port(registry: &str) -> Result<(), String> {
    let port = match registry.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split_once(']').and_then(|(_, p)| p.strip_prefix(':')),
        None => registry.split_once(':').map(|(_, p)| p),
    };
    match port {
        None => Ok(()),
        Some(p) if p.parse::<u16>().is_ok_and(|n| n > 0) => Ok(()),
        Some(p) => Err(format!(
            "port '{p}' of registry {registry} is not a TCP port (1-65535)"
        )),
    }
}

/// Splits `PATH[:TAG]`. The tag is what follows the last colon, provided it
/// contains no `/` (so `/a:b/c` is a path) and is a valid OCI tag.
fn split_path_tag(s: &str) -> Result<(PathBuf, Option<String>), String> {
    let (path, tag) = match s.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, Some(t)),
        _ => (s, None),
    };
    if path.is_empty() {
        return Err("the reference names no path".into());
    }
    if let Some(t) = tag
        && (t.is_empty()
            || t.len() > 128
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("'{t}' is not a valid tag"));
    }
    Ok((PathBuf::from(path), tag.map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_forms() {
        let r = ImageRef::parse("127.0.0.1:5000/os/debian:v1").unwrap();
        assert_eq!(r.transport(), "registry");
        assert_eq!(r.to_string(), "127.0.0.1:5000/os/debian:v1");
        assert_eq!(r.registry(), Some("127.0.0.1:5000"));
        let same = ImageRef::parse("docker://127.0.0.1:5000/os/debian:v1").unwrap();
        assert_eq!(r, same);
        let digest = format!("localhost:5000/os@sha256:{}", "a".repeat(64));
        let d = ImageRef::parse(&digest).unwrap();
        assert_eq!(d.to_string(), digest);
        // Docker Hub short names resolve the way docker and podman resolve them.
        assert_eq!(
            ImageRef::parse("debian").unwrap().to_string(),
            "docker.io/library/debian:latest"
        );
    }

    #[test]
    fn layout_forms() {
        let r = ImageRef::parse("oci:/srv/images/os:v2").unwrap();
        assert_eq!(
            r,
            ImageRef::OciLayout {
                path: "/srv/images/os".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(r.to_string(), "oci:/srv/images/os:v2");
        let r = ImageRef::parse("oci-archive:/tmp/a.tar").unwrap();
        assert_eq!(
            r,
            ImageRef::OciArchive {
                path: "/tmp/a.tar".into(),
                tag: None
            }
        );
        let r = ImageRef::parse("oci:./rel:x/y").unwrap();
        assert_eq!(
            r,
            ImageRef::OciLayout {
                path: "./rel:x/y".into(),
                tag: None
            }
        );
    }

    #[test]
    fn refused_forms_name_the_problem() {
        let e = ImageRef::parse("containers-storage:foo").unwrap_err();
        assert!(e.to_string().contains("containers-storage"), "{e}");
        let e = ImageRef::parse("Upper/Case").unwrap_err();
        assert!(e.to_string().contains("Upper/Case"), "{e}");
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("oci:").is_err());
        assert!(ImageRef::parse("oci:/x:bad tag").is_err());
    }

    #[test]
    fn registry_ports_are_checked() {
        for (input, needle) in [
            (
                "127.0.0.1:99999/x:y",
                Some("port '99999' of registry 127.0.0.1:99999"),
            ),
            ("127.0.0.1:0/x:y", Some("port '0'")),
            ("127.0.0.1:65535/x:y", None),
            ("localhost:1/x:y", None),
            ("localhost:5000/x", None),
            ("registry.example/x", None),
        ] {
            match (ImageRef::parse(input), needle) {
                (Ok(_), None) => {}
                (Err(e), Some(n)) => assert!(e.to_string().contains(n), "{input}: {e}"),
                (r, n) => panic!("{input}: {r:?}, expected {n:?}"),
            }
        }
    }
}
