//! Which redirects a registry request follows.

/// Redirects followed for one request. Registries redirect a blob once, to
/// their storage; ten is what browsers allow and ends any loop quickly.
const MAX_REDIRECTS: usize = 10;

/// Why a redirect was not followed.
#[derive(Debug)]
enum RedirectRefused {
    TooMany,
    /// To this plain-HTTP URL, from a registry that must be verified HTTPS.
    ToPlainHttp(String),
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedirectRefused::TooMany => write!(f, "too many redirects (over {MAX_REDIRECTS})"),
            RedirectRefused::ToPlainHttp(to) => write!(
                f,
                "redirected from HTTPS to plain HTTP ({to}); a verified registry's answers \
                 are taken only over HTTPS"
            ),
        }
    }
}

impl std::error::Error for RedirectRefused {}

/// At most [`MAX_REDIRECTS`] hops; with `https_only`, none to anything but
/// HTTPS for what is vouched for by TLS alone (a manifest by tag, a token):
/// a plain HTTP hop would let anyone on the path replace it. Content asked
/// for by digest is checked against it wherever it comes from, so a blob
/// may be redirected to a plain-HTTP storage backend. (reqwest drops the
/// `Authorization` header itself on a hop to another scheme, host or port.)
pub(super) fn follow_redirect(
    attempt: reqwest::redirect::Attempt<'_>,
    https_only: bool,
) -> reqwest::redirect::Action {
    // `previous` starts with the original URL, which is not a hop.
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error(RedirectRefused::TooMany);
    }
    let verified = attempt.previous().first().is_some_and(by_digest);
    if https_only && attempt.url().scheme() != "https" && !verified {
        let to = attempt.url().to_string();
        return attempt.error(RedirectRefused::ToPlainHttp(to));
    }
    attempt.follow()
}

/// Whether `url` asks for content by its sha256 digest (`…/blobs/sha256:…`,
/// `…/manifests/sha256:…`), which osctl checks against that digest.
fn by_digest(url: &reqwest::Url) -> bool {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .is_some_and(|last| last.starts_with("sha256:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_asked_for_by_digest() {
        for (url, by) in [
            ("https://r/v2/a/b/blobs/sha256:00ff", true),
            ("https://r/v2/a/manifests/sha256:00ff", true),
            ("https://r/v2/a/manifests/v1", false),
            ("https://r/v2/a/manifests/sha512:00ff", false),
            ("https://auth/token?scope=repository:a:pull", false),
            ("https://r/v2/", false),
        ] {
            assert_eq!(by_digest(&reqwest::Url::parse(url).unwrap()), by, "{url}");
        }
    }
}
