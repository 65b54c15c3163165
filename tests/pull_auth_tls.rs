//! Credentials (htpasswd basic auth) and transport security (TLS, plain
//! HTTP) against real registries.

use std::path::Path;

use crate::util::{Osctl, assert_fails_naming, push_spec, run_ok};
use osctl_testutil::{Entry, ImageSpec, Layer, Registry, RegistryOptions};

fn spec() -> ImageSpec {
    ImageSpec::new(vec![Layer::new(vec![Entry::file("etc/secret-os", "v1\n")])])
}

fn auth_json(path: &Path, key: &str, user: &str, password: &str) {
    use std::io::Write;
    let b64 = {
        // base64 by hand keeps the test free of another dependency.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let input = format!("{user}:{password}").into_bytes();
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    write!(f, r#"{{"auths": {{"{key}": {{"auth": "{b64}"}}}}}}"#).unwrap();
}

/// `--authfile`, `~/.docker/config.json` and `$REGISTRY_AUTH_FILE`; all
/// five default locations and their order are in pull_auth_files.rs.
#[test]
fn basic_auth_from_authfile_and_default_locations() {
    let registry =
        Registry::start(RegistryOptions::default().with_auth("alice", "s3cret")).unwrap();
    let (reference, _) = push_spec(&registry, "private/os:v1", &spec());
    let addr = registry.addr();
    let osctl = Osctl::new();

    // No credentials anywhere: 401, naming the registry.
    let err = osctl.pull_fails(&[&reference], &["401", &addr]);
    assert!(
        err.contains("no auth file exists") || err.contains("no credentials"),
        "{err}"
    );

    // --authfile with the right password.
    let good = osctl.sysroot().join("good-auth.json");
    auth_json(&good, &addr, "alice", "s3cret");
    osctl.pull_with_authfile(&good, &reference);

    // --authfile with a wrong password: the error names the file consulted.
    let other = Osctl::new();
    let bad = other.sysroot().join("bad-auth.json");
    auth_json(&bad, &format!("https://{addr}"), "alice", "wrong");
    let err = other.pull_fails(
        &["--authfile", bad.to_str().unwrap(), &reference],
        &["401", &addr],
    );
    assert!(err.contains(bad.to_str().unwrap()), "{err}");

    // An explicit auth file that does not exist is an error, not anonymous.
    let missing = other.sysroot().join("missing.json");
    other.pull_fails(
        &["--authfile", missing.to_str().unwrap(), &reference],
        &["missing.json", "does not exist"],
    );

    // docker's ~/.docker/config.json (HOME is the scratch sysroot in tests),
    // keyed by repository namespace.
    auth_json(
        &other.sysroot().join(".docker/config.json"),
        &format!("{addr}/private"),
        "alice",
        "s3cret",
    );
    other.pull(&reference);

    // $REGISTRY_AUTH_FILE comes before the defaults.
    let third = Osctl::new();
    let env_file = third.sysroot().join("env-auth.json");
    auth_json(&env_file, &addr, "alice", "s3cret");
    let stdout = run_ok(
        third
            .cmd()
            .env("REGISTRY_AUTH_FILE", &env_file)
            .args(["image", "pull", "--quiet", &reference]),
    );
    assert_eq!(stdout.trim(), third.image_id(&reference));
}

#[test]
fn forbidden_is_reported_as_denied() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let (_, _) = push_spec(&registry, "locked/os:v1", &spec());
    let proxy = osctl_testutil::DropProxy::passthrough(&registry.addr()).unwrap();
    proxy.deny_repository("locked/os");
    let reference = proxy.image_ref("locked/os:v1");
    let osctl = Osctl::new();
    let err = osctl.pull_fails(&[&reference], &["403 denied", &proxy.addr()]);
    assert!(
        err.contains("no auth file exists"),
        "names where credentials came from: {err}"
    );
}

#[test]
fn tls_registry_is_verified() {
    let registry = Registry::start(RegistryOptions::default().with_tls()).unwrap();
    let (reference, _) = push_spec(&registry, "tls/os:v1", &spec());
    let osctl = Osctl::new();
    // A certificate from a CA nobody told osctl about: refused, for that
    // reason, with the way to trust it.
    osctl.pull_fails(
        &[&reference],
        &[
            "TLS failure talking to registry",
            &registry.addr(),
            "its certificate is signed by an unknown authority",
            "--cert-dir",
        ],
    );
    // Trusted through --cert-dir.
    let cert_dir = registry.cert_dir().expect("TLS registry has a cert dir");
    osctl.ok(&[
        "image",
        "pull",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        &reference,
    ]);

    // --tls-verify=false skips verification.
    let insecure = Osctl::new();
    insecure.ok(&["image", "pull", "--tls-verify=false", &reference]);

    // …and so does registries.conf `insecure = true`.
    let conf = Osctl::new();
    let conf_file = conf.sysroot().join("registries.conf");
    std::fs::write(
        &conf_file,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.addr()
        ),
    )
    .unwrap();
    run_ok(
        conf.cmd()
            .env("CONTAINERS_REGISTRIES_CONF", &conf_file)
            .args(["image", "pull", &reference]),
    );

    // A broken registries.conf is named.
    std::fs::write(&conf_file, "[[registry]\nlocation=").unwrap();
    let out = conf
        .cmd()
        .env("CONTAINERS_REGISTRIES_CONF", &conf_file)
        .args(["image", "pull", &reference])
        .output()
        .unwrap();
    assert_fails_naming(&out, &["registries.conf"]);
}

#[test]
fn plain_http_only_where_allowed() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let (reference, _) = push_spec(&registry, "http/os:v1", &spec());
    // Loopback: plain HTTP is allowed by default…
    Osctl::new().pull(&reference);
    // …but not when TLS verification is demanded explicitly.
    Osctl::new().pull_fails(
        &["--tls-verify=true", &reference],
        &[&format!("registry {} speaks plain HTTP", registry.addr())],
    );
}
