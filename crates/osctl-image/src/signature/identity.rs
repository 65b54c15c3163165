//! `signedIdentity`: which docker reference a signature must name for the
//! image being pulled.
//!
//! Both sides are normalized the way the containers tools normalize them
//! (`busybox` is `docker.io/library/busybox`), but unlike a pull reference a
//! signature's reference may be a bare repository: cosign signs
//! `registry/repo` without a tag, skopeo signs `registry/repo:tag`. That
//! difference decides the default rule, `matchRepoDigestOrExact`, which a
//! bare repository never satisfies; policies for cosign signatures say
//! `matchRepository` or `exactRepository`.

use std::fmt;

use oci_client::Reference;

/// A docker reference as the identity rules compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DockerRef {
    /// `registry/repository`, normalized.
    name: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl DockerRef {
    /// Parses `text`, keeping whether it named a tag or digest (a bare
    /// repository stays bare). `Err` is the reason in words.
    pub(crate) fn parse(text: &str) -> Result<DockerRef, String> {
        let parsed = crate::reference_grammar::parse(text).map_err(|e| format!("{e}"))?;
        let (before_digest, has_digest) = match text.split_once('@') {
            Some((name, _)) => (name, true),
            None => (text, false),
        };
        let last = before_digest.rsplit('/').next().unwrap_or(before_digest);
        let has_tag = last.contains(':');
        Ok(DockerRef {
            name: format!("{}/{}", parsed.registry(), parsed.repository()),
            tag: has_tag.then(|| parsed.tag().map(str::to_string)).flatten(),
            digest: has_digest
                .then(|| parsed.digest().map(str::to_string))
                .flatten(),
        })
    }

    /// The reference an image was pulled by (always with tag or digest).
    pub(crate) fn of(r: &Reference) -> DockerRef {
        DockerRef {
            name: format!("{}/{}", r.registry(), r.repository()),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        }
    }

    pub(crate) fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl fmt::Display for DockerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// A policy's `signedIdentity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignedIdentity {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(DockerRef),
    ExactRepository(DockerRef),
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

impl SignedIdentity {
    /// Whether a signature naming `signed` is acceptable for an image
    /// pulled as `intended`.
    pub(crate) fn accepts(&self, intended: &DockerRef, signed: &DockerRef) -> bool {
        match self {
            SignedIdentity::MatchExact => {
                !intended.is_name_only() && !signed.is_name_only() && intended == signed
            }
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(intended, signed),
            SignedIdentity::MatchRepository => intended.name == signed.name,
            SignedIdentity::ExactReference(want) => !signed.is_name_only() && want == signed,
            SignedIdentity::ExactRepository(want) => want.name == signed.name,
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => match remap(intended, prefix, signed_prefix) {
                None => repo_digest_or_exact(intended, signed),
                Some(Ok(remapped)) => repo_digest_or_exact(&remapped, signed),
                // The prefix applies but the rewritten name is no
                // reference: refuse, never fall back to the pulled name.
                Some(Err(_)) => false,
            },
        }
    }

    /// The rule's name as the policy spells it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SignedIdentity::MatchExact => "matchExact",
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::ExactReference(_) => "exactReference",
            SignedIdentity::ExactRepository(_) => "exactRepository",
            SignedIdentity::RemapIdentity { .. } => "remapIdentity",
        }
    }
}

/// The default rule: a tagged pull needs a signature of that exact tag, a
/// pull by digest a signature of the same repository (the digest itself is
/// checked against the payload separately).
fn repo_digest_or_exact(intended: &DockerRef, signed: &DockerRef) -> bool {
    if signed.is_name_only() {
        return false;
    }
    if intended.tag.is_some() {
        intended == signed
    } else if intended.digest.is_some() {
        intended.name == signed.name
    } else {
        false
    }
}

/// `intended` with `prefix` replaced by `signed_prefix`, when its name is
/// `prefix` or lies under `prefix/`; `None` when the prefix does not apply
/// (then the reference is compared as it is), `Some(Err)` when it applies
/// but the result is not a reference.
fn remap(
    intended: &DockerRef,
    prefix: &str,
    signed_prefix: &str,
) -> Option<Result<DockerRef, String>> {
    let rest = intended.name.strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let whole = intended.to_string();
    Some(DockerRef::parse(&format!(
        "{signed_prefix}{}",
        &whole[prefix.len()..]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn r(s: &str) -> DockerRef {
        DockerRef::parse(s).unwrap()
    }

    #[test]
    fn references_normalize_and_keep_what_they_name() {
        for (text, name, shown, bare) in [
            (
                "busybox",
                "docker.io/library/busybox",
                "docker.io/library/busybox",
                true,
            ),
            (
                "busybox:1",
                "docker.io/library/busybox",
                "docker.io/library/busybox:1",
                false,
            ),
            (
                "localhost:5000/os",
                "localhost:5000/os",
                "localhost:5000/os",
                true,
            ),
            (
                "localhost:5000/os:v2",
                "localhost:5000/os",
                "localhost:5000/os:v2",
                false,
            ),
            (
                "reg.example/a/b/os",
                "reg.example/a/b/os",
                "reg.example/a/b/os",
                true,
            ),
        ] {
            let d = r(text);
            assert_eq!(
                (d.name.as_str(), d.to_string().as_str(), d.is_name_only()),
                (name, shown, bare)
            );
        }
        let by_digest = r(&format!("localhost:5000/os@{DIGEST}"));
        assert!(!by_digest.is_name_only());
        assert_eq!(by_digest.to_string(), format!("localhost:5000/os@{DIGEST}"));
        assert!(DockerRef::parse("a b").is_err());
        assert!(DockerRef::parse("").is_err());
    }

    /// A `remapIdentity` whose prefix matches but whose rewritten name is
    /// not a reference (an upper-case `signedPrefix`) must refuse: falling
    /// back to the pulled name would accept a signature for the mirror's
    /// name, which the rule exists to forbid (containers/image fails there).
    #[test]
    fn a_remap_that_cannot_be_applied_refuses() {
        let rule = SignedIdentity::RemapIdentity {
            prefix: "mirror.local/os".into(),
            signed_prefix: "reg.example/OS".into(),
        };
        let intended = r("mirror.local/os:v2");
        for signed in ["mirror.local/os:v2", "reg.example/os:v2"] {
            assert!(
                !rule.accepts(&intended, &r(signed)),
                "remapIdentity to an invalid name accepted a signature for {signed}"
            );
        }
    }

    #[test]
    fn each_rule_accepts_exactly_its_signatures() {
        use SignedIdentity::*;
        let tagged = r("localhost:5000/os:v2");
        let digested = r(&format!("localhost:5000/os@{DIGEST}"));
        let remap = RemapIdentity {
            prefix: "mirror.local/os".into(),
            signed_prefix: "localhost:5000/os".into(),
        };
        // (rule, intended, signed, accepted)
        let (mirror, mirror_x) = (r("mirror.local/os:v2"), r("mirror.local/osx:v2"));
        let cases: Vec<(SignedIdentity, &DockerRef, &str, bool)> = vec![
            (
                MatchRepoDigestOrExact,
                &tagged,
                "localhost:5000/os:v2",
                true,
            ),
            (
                MatchRepoDigestOrExact,
                &tagged,
                "localhost:5000/os:v1",
                false,
            ),
            (MatchRepoDigestOrExact, &tagged, "localhost:5000/os", false),
            (
                MatchRepoDigestOrExact,
                &tagged,
                "localhost:5000/other:v2",
                false,
            ),
            (
                MatchRepoDigestOrExact,
                &digested,
                "localhost:5000/os:anything",
                true,
            ),
            (
                MatchRepoDigestOrExact,
                &digested,
                "localhost:5000/os",
                false,
            ),
            (
                MatchRepoDigestOrExact,
                &digested,
                "localhost:5000/x:1",
                false,
            ),
            (MatchExact, &tagged, "localhost:5000/os:v2", true),
            (MatchExact, &tagged, "localhost:5000/os:v3", false),
            (MatchExact, &digested, "localhost:5000/os:v2", false),
            (MatchRepository, &tagged, "localhost:5000/os", true),
            (MatchRepository, &tagged, "localhost:5000/os:v1", true),
            (MatchRepository, &tagged, "localhost:5000/other", false),
            (MatchRepository, &tagged, "localhost:5001/os", false),
            (
                ExactReference(r("reg.example/os:1")),
                &tagged,
                "reg.example/os:1",
                true,
            ),
            (
                ExactReference(r("reg.example/os:1")),
                &tagged,
                "reg.example/os:2",
                false,
            ),
            (
                ExactReference(r("reg.example/os:1")),
                &tagged,
                "localhost:5000/os:v2",
                false,
            ),
            (
                ExactRepository(r("reg.example/os")),
                &tagged,
                "reg.example/os",
                true,
            ),
            (
                ExactRepository(r("reg.example/os")),
                &tagged,
                "reg.example/os:9",
                true,
            ),
            (
                ExactRepository(r("reg.example/os")),
                &tagged,
                "localhost:5000/os",
                false,
            ),
            (remap.clone(), &mirror, "localhost:5000/os:v2", true),
            (remap.clone(), &mirror, "mirror.local/os:v2", false),
            (remap.clone(), &mirror_x, "localhost:5000/osx:v2", false),
            (remap.clone(), &mirror_x, "mirror.local/osx:v2", true),
            (remap, &tagged, "localhost:5000/os:v2", true),
        ];
        for (rule, intended, signed, want) in cases {
            assert_eq!(
                rule.accepts(intended, &r(signed)),
                want,
                "{} {intended} signed as {signed}",
                rule.name()
            );
        }
    }
}
