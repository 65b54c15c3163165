//! Pulling from a registry that wants bearer tokens: distribution v2.8 with
//! `auth: token`, and the harness's token server as its realm
//! (`osctl_testutil::token`). osctl has only a user and password in an auth
//! file; it must trade them for a token itself.

use crate::util::{Osctl, push_spec};
use osctl_testutil::{
    Entry, ImageSpec, Layer, Registry, RegistryOptions, assert_trees_equal, expected_tree,
    write_auth_json,
};

const REPO: &str = "bearer/os";

fn layers() -> Vec<Layer> {
    vec![
        Layer::new(vec![
            Entry::file("usr/lib/os-release", "ID=bearer\nVERSION_ID=1\n"),
            Entry::file("usr/bin/tool", vec![0x5a; 100_000]),
        ]),
        Layer::new(vec![Entry::file("etc/motd", "pulled with a token\n")]),
    ]
}

#[test]
fn pull_trades_auth_file_credentials_for_a_bearer_token() {
    let registry =
        Registry::start(RegistryOptions::default().with_token_auth("osctl", "s3cret")).unwrap();
    let server = registry.token_server().unwrap();
    let (reference, built) = push_spec(&registry, &format!("{REPO}:v1"), &ImageSpec::new(layers()));
    let addr = registry.addr();

    let osctl = Osctl::new();
    let authfile = osctl.sysroot().join("auth.json");
    write_auth_json(&authfile, &addr, "osctl", "s3cret").unwrap();
    let before = server.issued().len();
    osctl.pull_with_authfile(&authfile, &reference);

    // osctl went through the token server, as the user from the file,
    // once: the manifest request gets the token, the blobs reuse it.
    let tokens = server.issued()[before..].to_vec();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    for t in &tokens {
        assert_eq!(t.user.as_deref(), Some("osctl"), "{tokens:?}");
        assert!(t.grants(REPO, "pull"), "{tokens:?}");
        assert!(
            !t.grants(REPO, "push"),
            "a pull asks for pull only: {tokens:?}"
        );
    }
    let item = &osctl.list()[0];
    assert_eq!(item["reference"], reference.as_str());
    assert_eq!(item["manifestDigest"], built.manifest_digest.as_str());
    assert_trees_equal(&expected_tree(&layers()), &osctl.mounted_tree(&reference));
    osctl.fsck_clean();

    // A re-pull is again authorised by a token (a new process, a new token).
    let before = server.issued().len();
    osctl.ok(&[
        "image",
        "pull",
        "--quiet",
        "--authfile",
        authfile.to_str().unwrap(),
        &reference,
    ]);
    assert!(server.issued().len() > before);
}

#[test]
fn wrong_password_is_refused_by_the_token_server() {
    let registry =
        Registry::start(RegistryOptions::default().with_token_auth("osctl", "s3cret")).unwrap();
    let server = registry.token_server().unwrap();
    let (reference, _) = push_spec(&registry, &format!("{REPO}:v1"), &ImageSpec::new(layers()));
    let addr = registry.addr();
    let osctl = Osctl::new();
    // Something in the store already, to show a failed pull leaves it alone.
    osctl.pull(&format!("oci:{}:good", good_layout(&osctl).display()));

    let bad = osctl.sysroot().join("bad-auth.json");
    write_auth_json(&bad, &addr, "osctl", "wrong").unwrap();
    let refused = server.refused();
    let err = osctl.pull_fails(
        &["--authfile", bad.to_str().unwrap(), &reference],
        &["401", &addr, bad.to_str().unwrap()],
    );
    assert!(err.contains("credentials from"), "{err}");
    assert!(
        server.refused() > refused,
        "the token server saw the password"
    );
}

#[test]
fn no_credentials_get_a_token_without_access() {
    let registry =
        Registry::start(RegistryOptions::default().with_token_auth("osctl", "s3cret")).unwrap();
    let server = registry.token_server().unwrap();
    let (reference, _) = push_spec(&registry, &format!("{REPO}:v1"), &ImageSpec::new(layers()));
    let addr = registry.addr();
    let osctl = Osctl::new();
    osctl.pull(&format!("oci:{}:good", good_layout(&osctl).display()));

    // An auth file with credentials for another registry only.
    let other = osctl.sysroot().join("other-auth.json");
    write_auth_json(&other, "registry.example.invalid", "osctl", "s3cret").unwrap();
    let before = server.issued().len();
    let err = osctl.pull_fails(
        &["--authfile", other.to_str().unwrap(), &reference],
        &["401", &addr, other.to_str().unwrap()],
    );
    assert!(err.contains("no credentials"), "{err}");
    // The anonymous token was issued but granted nothing; the registry refused.
    let tokens = server.issued()[before..].to_vec();
    assert!(!tokens.is_empty(), "osctl asked for an anonymous token");
    assert!(
        tokens
            .iter()
            .all(|t| t.user.is_none() && t.granted.is_empty()),
        "{tokens:?}"
    );
    assert!(
        tokens
            .iter()
            .any(|t| t.scopes.contains(&format!("repository:{REPO}:pull"))),
        "{tokens:?}"
    );
}

/// A one-file OCI layout in the scratch sysroot, tagged `good`.
fn good_layout(osctl: &Osctl) -> std::path::PathBuf {
    let dir = osctl.sysroot().join("good-layout");
    let spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("etc/good", "kept\n")])]);
    osctl_testutil::write_layout(&dir, "good", &spec).unwrap();
    dir
}
