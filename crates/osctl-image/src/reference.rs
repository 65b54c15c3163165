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
//! | `containers-storage:localhost/os:1` | containers-storage (podman's and buildah's local images) |
//! | `containers-storage:[vfs@/root+/run]localhost/os:1` | the same, in the storage named in brackets |
//!
//! Only these prefixes are recognised as transports. Anything else that looks
//! like `word:` followed by a path (`dir:`, `docker-archive:`, …) is refused
//! by name rather than misread as a registry host, because a registry host
//! with a port (`localhost:5000/repo`) also contains a colon.
//!
//! The bracketed store of a `containers-storage:` reference follows the
//! containers-storage syntax `[DRIVER@GRAPHROOT+RUNROOT]`, driver and run
//! root optional, paths absolute. It is kept as written, so that the
//! reference recorded in a deployment's origin names the same storage when
//! `upgrade` reads it again. The image name after it is kept as written too
//! (containers-storage resolves short names itself).
//!
//! bootc's `--transport NAME` form is [`ImageRef::parse_with_transport`]: the
//! name is a prefix the reference may also carry itself, and the two must
//! agree.

use std::fmt;
use std::path::{Path, PathBuf};

use oci_client::Reference;

use crate::FetchError;

/// The tag a registry reference without tag or digest means, as in docker.
pub const DEFAULT_TAG: &str = "latest";

/// Transports osctl knows by name but cannot pull from; named in the error so
/// the user sees why their reference was refused.
const KNOWN_UNSUPPORTED: &[&str] = &[
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
    /// An image in containers' local storage (podman, buildah), read through
    /// skopeo's image proxy. `store: None` is the host's default storage.
    ContainersStorage {
        store: Option<StorageSpec>,
        image: String,
    },
}

/// Which containers storage a `containers-storage:[…]` reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSpec {
    /// The storage driver (`vfs`, `overlay`), if named.
    pub driver: Option<String>,
    /// The graph root: where images and layers are kept.
    pub root: PathBuf,
    /// The run root (locks, mount state), if named.
    pub run_root: Option<PathBuf>,
}

impl fmt::Display for StorageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        if let Some(d) = &self.driver {
            write!(f, "{d}@")?;
        }
        write!(f, "{}", self.root.display())?;
        if let Some(r) = &self.run_root {
            write!(f, "+{}", r.display())?;
        }
        f.write_str("]")
    }
}

/// A transport named apart from the reference (`--transport`, as bootc
/// takes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Registry,
    Oci,
    OciArchive,
    ContainersStorage,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Registry,
        Transport::Oci,
        Transport::OciArchive,
        Transport::ContainersStorage,
    ];

    /// The name bootc uses for it (and [`ImageRef::transport`] returns).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Registry => "registry",
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::ContainersStorage => "containers-storage",
        }
    }

    /// Parses a transport name; `docker` is accepted for `registry`, as
    /// bootc accepts it.
    pub fn parse(name: &str) -> Result<Transport, FetchError> {
        if name == "docker" {
            return Ok(Transport::Registry);
        }
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| FetchError::BadTransport {
                transport: name.to_string(),
                accepted: Transport::ALL.map(Transport::name).join(", "),
            })
    }

    /// The prefix a reference of this transport carries.
    fn prefix(self) -> &'static str {
        match self {
            Transport::Registry => "docker://",
            Transport::Oci => "oci:",
            Transport::OciArchive => "oci-archive:",
            Transport::ContainersStorage => "containers-storage:",
        }
    }
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
        if let Some(rest) = input.strip_prefix("containers-storage:") {
            let (store, image) = parse_storage(rest).map_err(bad)?;
            return Ok(ImageRef::ContainersStorage { store, image });
        }
        if let Some((scheme, _)) = input.split_once(':')
            && KNOWN_UNSUPPORTED.contains(&scheme)
        {
            return Err(bad(format!(
                "transport '{scheme}' is not supported (use a registry, oci:, oci-archive: or containers-storage:)"
            )));
        }
        parse_registry(input).map_err(bad)
    }

    /// Parses `input` with a transport given apart from it (bootc's
    /// `--transport`): a reference without a transport prefix gets the
    /// transport's; one with a prefix must name the same transport.
    pub fn parse_with_transport(
        input: &str,
        transport: Option<Transport>,
    ) -> Result<Self, FetchError> {
        let Some(transport) = transport else {
            return ImageRef::parse(input);
        };
        let named = Transport::ALL
            .into_iter()
            .find(|t| input.starts_with(t.prefix()))
            .map(Transport::name)
            .or_else(|| {
                let (scheme, _) = input.split_once(':')?;
                KNOWN_UNSUPPORTED.contains(&scheme).then_some(scheme)
            });
        match named {
            Some(n) if n == transport.name() => ImageRef::parse(input),
            Some(n) => Err(FetchError::TransportConflict {
                reference: input.to_string(),
                named: n.to_string(),
                given: transport.name(),
            }),
            None if transport == Transport::Registry => {
                parse_registry(input).map_err(|why| FetchError::BadReference {
                    reference: input.to_string(),
                    why,
                })
            }
            None => ImageRef::parse(&format!("{}{input}", transport.prefix())),
        }
    }

    /// The transport name as bootc spells it in `status` (`registry`, `oci`,
    /// `oci-archive`, `containers-storage`).
    pub fn transport(&self) -> &'static str {
        match self {
            ImageRef::Registry(_) => Transport::Registry.name(),
            ImageRef::OciLayout { .. } => Transport::Oci.name(),
            ImageRef::OciArchive { .. } => Transport::OciArchive.name(),
            ImageRef::ContainersStorage { .. } => Transport::ContainersStorage.name(),
        }
    }

    /// The reference without its transport prefix, as bootc's `image.image`
    /// field holds it: `registry/repo:tag`, a path with an optional tag, or
    /// a local image name after its storage (`[vfs@/r+/rr]localhost/os:1`).
    pub fn name(&self) -> String {
        match self {
            ImageRef::Registry(r) => r.whole(),
            ImageRef::OciLayout { path, tag } | ImageRef::OciArchive { path, tag } => {
                path_with_tag(path, tag.as_deref())
            }
            ImageRef::ContainersStorage { store, image } => match store {
                Some(s) => format!("{s}{image}"),
                None => image.clone(),
            },
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
    let reference = crate::reference_grammar::parse(s).map_err(|e| format!("{e}"))?;
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

/// Parses what follows `containers-storage:`: an optional
/// `[DRIVER@ROOT+RUNROOT]` and an image name.
fn parse_storage(s: &str) -> Result<(Option<StorageSpec>, String), String> {
    let (store, image) = match s.strip_prefix('[') {
        None => (None, s),
        Some(rest) => {
            let (inner, image) = rest
                .split_once(']')
                .ok_or("the storage '[…' has no closing ']'")?;
            (Some(parse_storage_spec(inner)?), image)
        }
    };
    if image.is_empty() {
        return Err("the reference names no image".into());
    }
    // The name is handed to containers-storage as written; it must still be
    // an image name (docker grammar, lower case, no spaces), not a path or
    // an option.
    if let Err(e) = crate::reference_grammar::parse(image) {
        return Err(format!("'{image}' is not an image name: {e}"));
    }
    Ok((store, image.to_string()))
}

/// Parses `[DRIVER@]ROOT[+RUNROOT]` (the brackets' inside).
fn parse_storage_spec(inner: &str) -> Result<StorageSpec, String> {
    let (driver, paths) = match inner.split_once('@') {
        Some((d, p)) => (Some(d), p),
        None => (None, inner),
    };
    if let Some(d) = driver
        && (d.is_empty()
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(format!("'{d}' is not a storage driver name"));
    }
    let (root, run_root) = match paths.split_once('+') {
        Some((r, rr)) => (r, Some(rr)),
        None => (paths, None),
    };
    let absolute = |what: &str, p: &str| -> Result<PathBuf, String> {
        if p.contains(':') {
            return Err(format!(
                "storage options ('{p}') in the reference are not supported"
            ));
        }
        if !p.starts_with('/') {
            return Err(format!("the storage {what} '{p}' is not an absolute path"));
        }
        Ok(PathBuf::from(p))
    };
    Ok(StorageSpec {
        driver: driver.map(str::to_string),
        root: absolute("root", root)?,
        run_root: run_root.map(|r| absolute("run root", r)).transpose()?,
    })
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
    fn containers_storage_forms_round_trip() {
        let spec = |driver: Option<&str>, root: &str, run_root: Option<&str>| {
            Some(StorageSpec {
                driver: driver.map(str::to_string),
                root: root.into(),
                run_root: run_root.map(PathBuf::from),
            })
        };
        for (input, store, image, name) in [
            (
                "containers-storage:localhost/my-os:1",
                None,
                "localhost/my-os:1",
                "localhost/my-os:1",
            ),
            (
                "containers-storage:[vfs@/root/dir+/run/dir]localhost/x:1",
                spec(Some("vfs"), "/root/dir", Some("/run/dir")),
                "localhost/x:1",
                "[vfs@/root/dir+/run/dir]localhost/x:1",
            ),
            (
                "containers-storage:[overlay@/var/lib/c]localhost/x",
                spec(Some("overlay"), "/var/lib/c", None),
                "localhost/x",
                "[overlay@/var/lib/c]localhost/x",
            ),
            (
                "containers-storage:[/srv/c+/run/c]my-os:2",
                spec(None, "/srv/c", Some("/run/c")),
                "my-os:2",
                "[/srv/c+/run/c]my-os:2",
            ),
        ] {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(
                r,
                ImageRef::ContainersStorage {
                    store,
                    image: image.into()
                },
                "{input}"
            );
            assert_eq!(r.transport(), "containers-storage");
            assert_eq!(r.name(), name);
            assert_eq!(r.to_string(), input);
            // What an origin keeps (transport + name) reads back the same.
            assert_eq!(
                ImageRef::parse(&format!("{}:{}", r.transport(), r.name())).unwrap(),
                r
            );
            assert_eq!(r.registry(), None);
        }
    }

    #[test]
    fn containers_storage_refusals_name_the_rule() {
        for (input, why) in [
            ("containers-storage:", "the reference names no image"),
            (
                "containers-storage:[vfs@/r+/rr]",
                "the reference names no image",
            ),
            (
                "containers-storage:[vfs@/r localhost/x",
                "the storage '[…' has no closing ']'",
            ),
            (
                "containers-storage:[vfs@rel/dir]localhost/x",
                "the storage root 'rel/dir' is not an absolute path",
            ),
            (
                "containers-storage:[vfs@/r+run]localhost/x",
                "the storage run root 'run' is not an absolute path",
            ),
            (
                "containers-storage:[@/r]localhost/x",
                "'' is not a storage driver name",
            ),
            (
                "containers-storage:[v f@/r]localhost/x",
                "'v f' is not a storage driver name",
            ),
            (
                "containers-storage:[vfs@/r+/rr:mountopt=x]localhost/x",
                "storage options ('/rr:mountopt=x') in the reference are not supported",
            ),
            (
                "containers-storage:Local/X",
                "'Local/X' is not an image name",
            ),
        ] {
            let e = ImageRef::parse(input).unwrap_err().to_string();
            let want = format!("invalid image reference '{input}': {why}");
            assert!(e.starts_with(&want), "{input}: {e}");
        }
    }

    #[test]
    fn transport_option_agrees_with_the_reference() {
        let cs = "containers-storage:localhost/my-os:1";
        for (transport, input, want) in [
            ("containers-storage", "localhost/my-os:1", cs),
            ("containers-storage", cs, cs),
            ("registry", "127.0.0.1:5000/os:v1", "127.0.0.1:5000/os:v1"),
            ("docker", "127.0.0.1:5000/os:v1", "127.0.0.1:5000/os:v1"),
            (
                "registry",
                "docker://127.0.0.1:5000/os:v1",
                "127.0.0.1:5000/os:v1",
            ),
            ("oci", "/srv/os:v2", "oci:/srv/os:v2"),
            ("oci", "oci:/srv/os:v2", "oci:/srv/os:v2"),
            ("oci-archive", "/srv/os.tar", "oci-archive:/srv/os.tar"),
        ] {
            let t = Transport::parse(transport).unwrap();
            let r = ImageRef::parse_with_transport(input, Some(t)).unwrap();
            assert_eq!(r.to_string(), want, "--transport {transport} {input}");
        }
        for (transport, input, named) in [
            ("registry", cs, "containers-storage"),
            ("containers-storage", "oci:/srv/os:v2", "oci"),
            ("oci", "docker://127.0.0.1:5000/os:v1", "registry"),
            ("oci-archive", "dir:/srv/os", "dir"),
        ] {
            let t = Transport::parse(transport).unwrap();
            let e = ImageRef::parse_with_transport(input, Some(t))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "image reference '{input}' names transport '{named}', but --transport \
                     says '{}'",
                    t.name()
                )
            );
        }
        assert_eq!(
            Transport::parse("ftp").unwrap_err().to_string(),
            "unknown transport 'ftp' (accepted: registry, oci, oci-archive, containers-storage)"
        );
    }

    #[test]
    fn refused_forms_name_the_problem() {
        let e = ImageRef::parse("dir:/srv/os").unwrap_err();
        assert!(
            e.to_string().contains("transport 'dir' is not supported"),
            "{e}"
        );
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
