//! Parsing a docker reference (`registry/repo:tag@digest`) without paying
//! for oci-spec's regex on every run.
//!
//! `oci_spec`'s [`Reference`] parser matches one large regex whose tag part
//! is Unicode `\w` repeated up to 128 times; compiling it costs ~15 ms,
//! which is a third of a no-op re-pull (docs/performance.md). Model: a
//! hand-written recognizer for the common, all-ASCII subset of the grammar
//! answers first, and anything it does not fully recognise goes to
//! oci-spec's parser, which then decides (and words the error). The
//! recognizer only ever *accepts* strings the regex accepts and builds the
//! same [`Reference`]; it never rejects on its own, so the grammar osctl
//! accepts is exactly oci-spec's. The tests compare the two on every string
//! of a small alphabet up to a length, and on realistic references.
//!
//! The grammar (distribution's `reference` package), for the subset:
//! - name: `[domain[:port]/]component(/component)*`, where a component is
//!   lower-case alphanumeric runs joined by `.`, `_`, `__` or any number of
//!   `-`, and a domain is dot-separated labels of ASCII letters, digits and
//!   inner `-`;
//! - tag: `:` then 1–128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`
//!   (the regex also takes non-ASCII word characters: those go to oci-spec);
//! - digest: `@sha256:` and 64 hex digits (other algorithms go to oci-spec).

use oci_client::Reference;
use oci_spec::distribution::ParseError;

/// What oci-spec calls the registry of a name without one.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's old name, which oci-spec normalises to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The namespace of Docker Hub's one-component names (`debian`).
const DOCKER_HUB_OFFICIAL: &str = "library";
/// The tag of a reference with neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// Longest repository oci-spec accepts.
const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag the grammar allows.
const MAX_TAG_LEN: usize = 128;
/// Hex digits of a sha256 digest.
const SHA256_HEX_LEN: usize = 64;

/// Parses `s` as `Reference::try_from` does, with the same result for
/// every input.
pub(crate) fn parse(s: &str) -> Result<Reference, ParseError> {
    match recognize(s) {
        Some(r) => Ok(r),
        None => Reference::try_from(s),
    }
}

/// The reference `s` names if it is in the all-ASCII subset the module
/// docs describe; `None` for anything else, valid or not.
fn recognize(s: &str) -> Option<Reference> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(is_sha256_digest(digest).then_some(digest)?)),
        None => (s, None),
    };
    // A name's only colon is a port's, which a '/' follows; a tag has no
    // '/'. So the last colon starts the tag exactly when no '/' follows it.
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(is_tag(tag).then_some(tag)?)),
        _ => (rest, None),
    };
    if !is_name(name) {
        return None;
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > MAX_REPOSITORY_LEN {
        return None; // oci-spec names the error
    }
    Some(match (tag, digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or(DEFAULT_TAG).into()),
    })
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == SHA256_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = t.as_bytes();
    (1..=MAX_TAG_LEN).contains(&bytes.len())
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[domain[:port]/]component(/component)*`.
fn is_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let has_more = name.contains('/');
    parts.all(is_component) && (is_component(first) || (has_more && is_domain_port(first)))
}

/// Lower-case alphanumeric runs joined by one separator each: `.`, `_`,
/// `__`, or one or more `-`.
fn is_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    bytes
        .split(alnum)
        .all(|sep| matches!(sep, b"" | b"." | b"_" | b"__") || sep.iter().all(|&b| b == b'-'))
}

/// `label(.label)*[:digits]`, a label being ASCII letters and digits with
/// inner `-`.
fn is_domain_port(d: &str) -> bool {
    let (domain, port) = match d.split_once(':') {
        Some((domain, port)) => (domain, Some(port)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    domain.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Registry and repository of a valid name, normalised as docker does: a
/// first component that is no host (no `.` or `:`, not `localhost`) means
/// Docker Hub, and Docker Hub's one-component names are in `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (domain, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    };
    let domain = if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        domain
    };
    let repository = if domain == DOCKER_HUB && !repository.contains('/') {
        format!("{DOCKER_HUB_OFFICIAL}/{repository}")
    } else {
        repository.to_string()
    };
    (domain.to_string(), repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recognizer and oci-spec agree: whatever the recognizer accepts,
    /// oci-spec accepts as the same reference.
    fn agree(s: &str) -> bool {
        match recognize(s) {
            None => true,
            Some(quick) => Reference::try_from(s).as_ref() == Ok(&quick),
        }
    }

    #[test]
    fn every_short_string_of_the_grammars_characters() {
        // Each character class that matters, once: lower/upper letter,
        // digit, the separators, the delimiters, a hex letter of a digest.
        const ALPHABET: &[u8] = b"aA1._-:/@";
        const MAX_LEN: usize = 6;
        let mut recognized = 0;
        let mut current = vec![String::new()];
        for _ in 0..MAX_LEN {
            let mut next = Vec::with_capacity(current.len() * ALPHABET.len());
            for s in &current {
                for &c in ALPHABET {
                    let t = format!("{s}{}", c as char);
                    assert!(
                        agree(&t),
                        "{t:?}: {:?} vs {:?}",
                        recognize(&t),
                        Reference::try_from(t.as_str())
                    );
                    recognized += usize::from(recognize(&t).is_some());
                    next.push(t);
                }
            }
            current = next;
        }
        // The subset is not a trivial one: this many of those strings are
        // valid references the recognizer takes on its own (a count that
        // changes only when the recognizer's subset does).
        assert_eq!(recognized, 6766);
    }

    #[test]
    fn realistic_references() {
        let hex = "0123456789abcdef".repeat(4);
        let long_repo = format!("reg.example/{}", "a".repeat(MAX_REPOSITORY_LEN + 1));
        let long_tag = format!("reg.example/os:{}", "t".repeat(MAX_TAG_LEN + 1));
        let cases: Vec<(String, bool)> = vec![
            ("127.0.0.1:5000/os/debian:v1".into(), true),
            ("localhost:5000/os".into(), true),
            ("localhost/os:1".into(), true),
            ("debian".into(), true),
            ("library/debian:12".into(), true),
            ("index.docker.io/foo".into(), true),
            ("quay.io/fedora/fedora-bootc:41".into(), true),
            ("ghcr.io/a__b/c--d/e.f_g:V1.2_rc-3".into(), true),
            (format!("reg.example/os@sha256:{hex}"), true),
            (
                format!("reg.example/os:v1@sha256:{}", hex.to_uppercase()),
                true,
            ),
            (format!("test:5000/repo:tag@sha256:{hex}"), true),
            ("test.com:5000".into(), true),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(), true),
            ("xn--n3h.com/myimage:xn--n3h.com".into(), true),
            // Left to oci-spec (valid or not): it decides.
            (format!("reg.example/os@sha512:{}", "f".repeat(128)), false),
            ("reg.example/os:tägé".into(), false),
            ("[::1]:5000/os:v1".into(), false),
            ("Upper/Case".into(), false),
            ("reg.example/os:".into(), false),
            ("reg.example/os@sha256:abc".into(), false),
            ("a b".into(), false),
            ("".into(), false),
            (long_repo, false),
            (long_tag, false),
            ("reg.example//os".into(), false),
            ("-reg.example/os".into(), false),
            ("reg.example:/os".into(), false),
            ("reg.example/os-/x".into(), false),
            ("reg.example/os._x".into(), false),
        ];
        for (s, recognized) in cases {
            assert_eq!(recognize(&s).is_some(), recognized, "{s}");
            assert!(
                agree(&s),
                "{s}: {:?} vs {:?}",
                recognize(&s),
                Reference::try_from(s.as_str())
            );
            // And the whole parser gives oci-spec's answer, error included.
            assert_eq!(parse(&s), Reference::try_from(s.as_str()), "{s}");
        }
    }
}
