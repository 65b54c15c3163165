//! A machine without a CA bundle (a minimal image without
//! `ca-certificates`): no panic, insecure and `--cert-dir` registries still
//! work, a TLS registry gets one line naming the cause and the fix, and a
//! plain-HTTP registry is told to be one.
//!
//! The host's CA store is hidden from osctl by pointing `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` (which osctl's CA loader, rustls-native-certs, reads
//! instead of the system locations) at an empty file and an empty
//! directory. `ca_store_redirection_is_honoured` shows those variables
//! really are what osctl reads.

use crate::util::{Osctl, push_spec};
use osctl_testutil::{Entry, ImageSpec, Layer, Registry, RegistryOptions};

fn spec() -> ImageSpec {
    ImageSpec::new(vec![Layer::new(vec![Entry::file("etc/no-ca", "v1\n")])])
}

/// An `Osctl` whose CA store is `file` (and an empty directory).
fn with_ca_file(contents: Option<&std::path::Path>) -> Osctl {
    let mut osctl = Osctl::new();
    let file = osctl.sysroot().join("ca-bundle.pem");
    match contents {
        Some(from) => std::fs::copy(from, &file).map(drop).unwrap(),
        None => std::fs::write(&file, "").unwrap(),
    }
    let dir = osctl.sysroot().join("ca-dir");
    std::fs::create_dir(&dir).unwrap();
    osctl.set_env("SSL_CERT_FILE", file);
    osctl.set_env("SSL_CERT_DIR", dir);
    osctl
}

fn without_ca() -> Osctl {
    with_ca_file(None)
}

#[test]
fn tls_registry_without_any_ca() {
    let registry = Registry::start(RegistryOptions::default().with_tls()).unwrap();
    let (reference, _) = push_spec(&registry, "noca/os:v1", &spec());
    let addr = registry.addr();

    // Verification needed, no CA at all: the cause and the fix, one line.
    let osctl = without_ca();
    osctl.pull_fails(
        &[&reference],
        &[
            &format!("cannot verify registry {addr}"),
            "no CA certificates are available",
            "SSL_CERT_FILE=",
            "install ca-certificates",
            "--cert-dir",
        ],
    );

    // Its CA from --cert-dir is enough.
    let cert_dir = registry.cert_dir().unwrap();
    without_ca().ok(&[
        "image",
        "pull",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        &reference,
    ]);

    // Insecure registries need no CA: --tls-verify=false…
    without_ca().ok(&["image", "pull", "--tls-verify=false", &reference]);

    // …and `insecure = true` in registries.conf.
    let mut conf = without_ca();
    let conf_file = conf.sysroot().join("registries.conf");
    std::fs::write(
        &conf_file,
        format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n"),
    )
    .unwrap();
    conf.set_env("CONTAINERS_REGISTRIES_CONF", &conf_file);
    conf.pull(&reference);
}

#[test]
fn ca_store_redirection_is_honoured() {
    let registry = Registry::start(RegistryOptions::default().with_tls()).unwrap();
    let (reference, _) = push_spec(&registry, "noca/os:v1", &spec());
    // The registry's CA as the whole "system" store: trusted without flags.
    let trusted = with_ca_file(Some(&registry.ca_cert_path().unwrap()));
    trusted.pull(&reference);
    // The host's real store does not know the test CA: the specific reason.
    Osctl::new().pull_fails(
        &[&reference],
        &["signed by an unknown authority", &registry.addr()],
    );
}

#[test]
fn plain_http_registry_is_named_as_such() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let (reference, _) = push_spec(&registry, "noca/os:v1", &spec());
    let addr = registry.addr();
    // TLS demanded from a registry that speaks plain HTTP: said so, with
    // the way to allow it, whether or not there is a CA store.
    for osctl in [without_ca(), Osctl::new()] {
        osctl.pull_fails(
            &["--tls-verify=true", &reference],
            &[
                &format!("registry {addr} speaks plain HTTP"),
                "insecure = true",
                "--tls-verify=false",
            ],
        );
    }
    // A loopback registry may speak plain HTTP; no CA is needed for it.
    without_ca().pull(&reference);
}
