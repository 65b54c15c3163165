//! What a registry conversation may not be talked into: a verified HTTPS
//! registry is never left for plain HTTP (a redirect, a token service), and
//! the registry's credentials go only where the registry itself sends them —
//! not to a token service named by some other host a download was
//! redirected to. HTTPS is a `TlsFront` (a certificate for 127.0.0.1 from a
//! CA of its own) before a `DropProxy` that tells the lies, before a real
//! registry.

use crate::util::{Osctl, push_spec};
use osctl_testutil::{
    Canned, CannedBody, DropProxy, Entry, ImageSpec, Layer, LoggedRequest, Registry,
    RegistryOptions, TlsFront, write_auth_json,
};

fn spec() -> ImageSpec {
    ImageSpec::new(vec![Layer::new(vec![Entry::file("etc/secure-os", "v1\n")])])
}

/// A registry holding `secure/os:v1`, a lying proxy before it and HTTPS
/// before that.
struct Https {
    registry: Registry,
    proxy: DropProxy,
    front: TlsFront,
    layer: String,
}

fn https() -> Https {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let (_, built) = push_spec(&registry, "secure/os:v1", &spec());
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    let front = TlsFront::start(&proxy.addr()).unwrap();
    Https {
        registry,
        proxy,
        front,
        layer: built.layer_digests[0].clone(),
    }
}

impl Https {
    /// `image pull` arguments that demand verified TLS (the front is on
    /// loopback, where plain HTTP would otherwise be allowed).
    fn verified(&self) -> Vec<String> {
        vec![
            "--tls-verify=true".into(),
            "--cert-dir".into(),
            self.front.cert_dir().display().to_string(),
            self.front.image_ref("secure/os:v1"),
        ]
    }
}

fn to_str(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn asked_for<'a>(log: &'a [LoggedRequest], needle: &str) -> Vec<&'a LoggedRequest> {
    log.iter().filter(|r| r.target.contains(needle)).collect()
}

#[test]
fn a_redirect_from_https_to_plain_http_is_refused() {
    let h = https();
    // The front works: the same pull without a redirect succeeds.
    let mut args = vec!["image".to_string(), "pull".into()];
    args.extend(h.verified());
    Osctl::new().ok(&to_str(&args));

    // The manifest (by tag: only TLS vouches for it) redirected to plain
    // HTTP, where anyone on the path could swap it.
    let http = format!("http://{}/v2/secure/os/manifests/v1", h.registry.addr());
    h.proxy
        .serve("/v2/secure/os/manifests/v1", Canned::redirect(&http));
    Osctl::new().pull_fails(
        &to_str(&h.verified()),
        &[
            &format!("registry {}", h.front.addr()),
            "redirected from HTTPS to plain HTTP",
            &http,
        ],
    );

    // A blob is checked against its digest wherever it comes from: its
    // redirect to a plain-HTTP storage backend is followed.
    h.proxy.unserve("/v2/secure/os/manifests/v1");
    let blob_path = format!("/v2/secure/os/blobs/{}", h.layer);
    h.proxy.serve(
        &blob_path,
        Canned::redirect(&format!("http://{}{blob_path}", h.registry.addr())),
    );
    Osctl::new().ok(&to_str(&args));

    // HTTPS redirects to another host (a storage backend) are followed.
    let storage = TlsFront::start(&h.registry.addr()).unwrap();
    for path in [
        "/v2/secure/os/manifests/v1".to_string(),
        format!("/v2/secure/os/blobs/{}", h.layer),
    ] {
        let there = format!("https://{}{path}", storage.addr());
        h.proxy.serve(&path, Canned::redirect(&there));
    }
    // Each front has a CA of its own: trust both.
    let both = tempfile::tempdir().unwrap();
    let bundle = [h.front.cert_dir(), storage.cert_dir()]
        .iter()
        .map(|d| std::fs::read_to_string(d.join("ca.crt")).unwrap())
        .collect::<String>();
    std::fs::write(both.path().join("ca.crt"), bundle).unwrap();
    Osctl::new().ok(&[
        "image",
        "pull",
        "--tls-verify=true",
        "--cert-dir",
        both.path().to_str().unwrap(),
        &h.front.image_ref("secure/os:v1"),
    ]);
    assert_eq!(
        asked_for(&h.proxy.log(), &h.layer).last().unwrap().status,
        307,
        "the blob went through the redirect"
    );
}

#[test]
fn credentials_are_never_sent_to_a_plain_http_token_service() {
    let h = https();
    let realm = format!("http://{}/token", h.proxy.addr());
    // The registry's challenge, on the first request osctl makes.
    h.proxy.serve(
        "/v2/secure/os/manifests/v1",
        Canned {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="{realm}",service="secure""#),
            )],
            body: CannedBody::Bytes(b"{}".to_vec()),
        },
    );
    h.proxy.serve(
        "/token",
        Canned::ok("application/json", br#"{"token":"t"}"#),
    );
    let osctl = Osctl::new();
    let authfile = osctl.sysroot().join("auth.json");
    write_auth_json(&authfile, &h.front.addr(), "alice", "s3cret").unwrap();
    let mut args = vec!["--authfile".to_string(), authfile.display().to_string()];
    args.extend(h.verified());
    osctl.pull_fails(
        &to_str(&args),
        &[
            &format!("registry {}", h.front.addr()),
            &format!("token service realm {realm:?} is plain HTTP"),
        ],
    );
    let log = h.proxy.log();
    assert!(
        asked_for(&log, "/token").is_empty(),
        "nothing was sent to the plain-HTTP realm: {log:#?}"
    );
}

/// A 401 naming a token service on `host` itself.
fn challenge_from(host: &DropProxy) -> Canned {
    Canned {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!(
                r#"Bearer realm="http://{}/token",service="elsewhere""#,
                host.addr()
            ),
        )],
        body: CannedBody::Bytes(b"{}".to_vec()),
    }
}

#[test]
fn a_host_the_registry_redirects_to_cannot_name_a_token_service() {
    // The registry wants Basic credentials. A request redirected to another
    // host gets a 401 there naming a token service of that host's own;
    // trading the registry's credentials there would hand them to it. Both
    // the first request (the manifest, whose 401 decides how to authorize)
    // and a blob download are redirected in turn.
    let registry =
        Registry::start(RegistryOptions::default().with_auth("alice", "s3cret")).unwrap();
    let (_, built) = push_spec(&registry, "secure/os:v1", &spec());
    let layer = &built.layer_digests[0];
    let blob_path = format!("/v2/secure/os/blobs/{layer}");
    for (case, path, names) in [
        (
            "the first request",
            "/v2/secure/os/manifests/v1".to_string(),
            "secure/os:v1",
        ),
        ("a blob download", blob_path, layer.as_str()),
    ] {
        let front = DropProxy::passthrough(&registry.addr()).unwrap();
        let elsewhere = DropProxy::passthrough(&registry.addr()).unwrap();
        front.serve(
            &path,
            Canned::redirect(&format!("http://{}{path}", elsewhere.addr())),
        );
        elsewhere.serve(&path, challenge_from(&elsewhere));
        elsewhere.serve(
            "/token",
            Canned::ok("application/json", br#"{"token":"stolen"}"#),
        );
        let osctl = Osctl::new();
        let authfile = osctl.sysroot().join("auth.json");
        write_auth_json(&authfile, &front.addr(), "alice", "s3cret").unwrap();
        let args = [
            "--authfile",
            authfile.to_str().unwrap(),
            &front.image_ref("secure/os:v1"),
        ];
        osctl.pull_fails(
            &args,
            &[
                "401 unauthorized",
                names,
                &format!("registry {}", front.addr()),
                &format!("from http://{}{path}", elsewhere.addr()),
            ],
        );
        let log = elsewhere.log();
        assert!(
            !asked_for(&log, &path).is_empty(),
            "{case}: the redirect was followed: {log:#?}"
        );
        assert!(
            asked_for(&log, "/token").is_empty(),
            "{case}: no token was asked for with the registry's credentials: {log:#?}"
        );
    }
}
