//! What a pull asks a registry, counted by a proxy in front of it: a re-pull
//! of an unchanged reference is the manifest and nothing else, from an
//! anonymous registry and (after the registry's own `401`) from one that
//! wants bearer tokens. osctl sends no `GET /v2/` check and no separate
//! plain-HTTP probe: the first request, the manifest, answers both
//! questions (issue 14's "one request" no-op re-pull).
//!
//! The proxy logs each request as its answer passes, so its log is
//! complete when osctl exits (a registry's own access log may lag).

use crate::util::{Osctl, push_spec};
use osctl_testutil::{
    DropProxy, Entry, ImageSpec, Layer, LoggedRequest, Registry, RegistryOptions, write_auth_json,
};

const REPO: &str = "noop/os";

fn spec() -> ImageSpec {
    ImageSpec::new(vec![
        Layer::new(vec![Entry::file("usr/lib/os-release", "ID=noop\n")]),
        Layer::new(vec![Entry::file("etc/motd", "unchanged\n")]),
    ])
}

/// `(method, target, status)` of each request, for exact comparisons.
fn requests(log: &[LoggedRequest]) -> Vec<(String, String, u16)> {
    log.iter()
        .map(|r| (r.method.clone(), r.target.clone(), r.status))
        .collect()
}

fn get(target: &str, status: u16) -> (String, String, u16) {
    ("GET".to_string(), target.to_string(), status)
}

#[test]
fn a_no_op_re_pull_is_one_manifest_request() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    push_spec(&registry, &format!("{REPO}:v1"), &spec());
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    let reference = proxy.image_ref(&format!("{REPO}:v1"));
    let manifest = format!("/v2/{REPO}/manifests/v1");

    let osctl = Osctl::new();
    osctl.pull(&reference);
    let first = requests(&proxy.log());
    assert_eq!(
        first.first(),
        Some(&get(&manifest, 200)),
        "the first request of a pull is the manifest, over plain HTTP: {first:#?}"
    );
    assert!(
        first.iter().all(|(_, target, _)| target != "/v2/"),
        "no API check: {first:#?}"
    );

    let before = proxy.log().len();
    let out = osctl.pull(&reference);
    assert!(out.contains("up to date"), "{out}");
    let repull = requests(&proxy.log()[before..]);
    assert_eq!(repull, vec![get(&manifest, 200)]);
}

#[test]
fn a_no_op_re_pull_from_a_bearer_registry_asks_after_its_401() {
    let registry =
        Registry::start(RegistryOptions::default().with_token_auth("osctl", "s3cret")).unwrap();
    let server = registry.token_server().unwrap();
    push_spec(&registry, &format!("{REPO}:v1"), &spec());
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    let reference = proxy.image_ref(&format!("{REPO}:v1"));
    let manifest = format!("/v2/{REPO}/manifests/v1");

    let osctl = Osctl::new();
    let authfile = osctl.sysroot().join("auth.json");
    write_auth_json(&authfile, &proxy.addr(), "osctl", "s3cret").unwrap();
    let pull = |osctl: &Osctl| osctl.pull_with_authfile(&authfile, &reference);
    pull(&osctl);
    assert!(!osctl.list().is_empty());

    let (before, tokens_before) = (proxy.log().len(), server.issued().len());
    let out = pull(&osctl);
    assert!(out.contains("up to date"), "{out}");
    // The manifest without a token, the registry's challenge, one token
    // for this user, the manifest again with it.
    let repull = requests(&proxy.log()[before..]);
    assert_eq!(repull, vec![get(&manifest, 401), get(&manifest, 200)]);
    let tokens = server.issued()[tokens_before..].to_vec();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].user.as_deref(), Some("osctl"), "{tokens:?}");
    assert!(tokens[0].grants(REPO, "pull"), "{tokens:?}");
}
