//! Bearer-token auth: the real registry trusting the harness's token server,
//! driven by skopeo and curl.

mod common;

use std::process::{Command, Output};

use osctl_testutil::token::{ISSUER, SERVICE};
use osctl_testutil::{
    Entry, ImageSpec, Layer, Registry, RegistryOptions, run, run_unchecked, tempdir, write_layout,
};
use serde_json::Value;

fn skopeo(args: &[&str]) -> Output {
    run_unchecked(Command::new("skopeo").arg("--insecure-policy").args(args)).unwrap()
}

/// `curl -s -i` of `url` with extra arguments; returns (status, headers+body).
fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = run(Command::new("curl").args(["-s", "-i"]).args(extra).arg(url)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"));
    (status, text)
}

fn body_json(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// The header and claims of a compact JWT, unverified.
fn jwt_claims(jwt: &str) -> (Value, Value) {
    let decode = |part: &str| -> Value {
        let mut b64 = part.replace('-', "+").replace('_', "/");
        while !b64.len().is_multiple_of(4) {
            b64.push('=');
        }
        serde_json::from_slice(&openssl::base64::decode_block(&b64).unwrap()).unwrap()
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    (decode(parts[0]), decode(parts[1]))
}

#[test]
fn token_registry_needs_credentials_from_the_token_server() {
    let registry =
        Registry::start(RegistryOptions::default().with_token_auth("osctl", "s3cret")).unwrap();
    let server = registry.token_server().expect("a token server");
    assert!(
        server.issued().is_empty(),
        "the start-up probe is not logged"
    );

    // Push: skopeo gets a pull,push token with --dest-creds.
    let layout = tempdir();
    let built = write_layout(
        layout.path(),
        "v1",
        &ImageSpec::new(vec![common::base_layer(), common::upper_layer()]),
    )
    .unwrap();
    let pushed = registry
        .push_oci_layout(layout.path(), "v1", "tok/img:v1")
        .unwrap();
    assert_eq!(pushed, built.manifest_digest);
    let issued = server.issued();
    assert!(
        issued
            .iter()
            .any(|t| t.user.as_deref() == Some("osctl") && t.grants("tok/img", "push")),
        "{issued:?}"
    );

    let image = format!("docker://{}", registry.image_ref("tok/img:v1"));
    // No credentials: an anonymous token (no access), then the registry's 401.
    let before = server.issued().len();
    let anonymous = skopeo(&["inspect", "--tls-verify=false", "--no-creds", &image]);
    assert!(!anonymous.status.success(), "anonymous inspect must fail");
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    let anon_tokens: Vec<_> = server.issued()[before..].to_vec();
    assert!(!anon_tokens.is_empty(), "skopeo asked for a token");
    assert!(
        anon_tokens
            .iter()
            .all(|t| t.user.is_none() && t.granted.is_empty()),
        "{anon_tokens:?}"
    );

    // Wrong password: the token server refuses.
    let refused = server.refused();
    let wrong = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds=osctl:wrong",
        &image,
    ]);
    assert!(!wrong.status.success(), "wrong password must fail");
    assert!(server.refused() > refused);

    // Right credentials: pull the image back and compare digests.
    let out = tempdir();
    let dest = format!("oci:{}:v1", out.path().display());
    let pulled = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds=osctl:s3cret",
        "--preserve-digests",
        &image,
        &dest,
    ]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let info = registry.inspect("tok/img:v1", false).unwrap();
    assert_eq!(info["Digest"], built.manifest_digest);
    assert!(
        server
            .issued()
            .iter()
            .any(|t| t.user.as_deref() == Some("osctl") && t.grants("tok/img", "pull"))
    );

    // The harness's own requests mint their own tokens.
    let tags = registry
        .request("GET", "/v2/tok/img/tags/list", &[], &[])
        .unwrap();
    assert_eq!(tags.status, 200, "{}", tags.body_text());
    let catalog = registry.request("GET", "/v2/_catalog", &[], &[]).unwrap();
    assert!(catalog.body_text().contains("tok/img"));
}

#[test]
fn token_server_speaks_the_docker_token_protocol() {
    let registry =
        Registry::start(RegistryOptions::default().with_token_auth("alice", "pw")).unwrap();
    let server = registry.token_server().unwrap();
    let blob = registry.put_blob("proto/repo", b"hello").unwrap();
    let blob_url = format!("{}/v2/proto/repo/blobs/{blob}", registry.base_url());

    // The registry's challenge points at the token server.
    let (status, text) = curl(&blob_url, &[]);
    assert_eq!(status, 401);
    let realm = server.realm();
    let challenge = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .unwrap_or_else(|| panic!("no challenge: {text}"));
    for want in [
        format!("realm=\"{realm}\""),
        format!("service=\"{SERVICE}\""),
        "scope=\"repository:proto/repo:pull\"".to_string(),
    ] {
        assert!(challenge.contains(&want), "{challenge}");
    }

    let token_url =
        format!("{realm}?service={SERVICE}&scope=repository%3Aproto%2Frepo%3Apull%2Cpush");
    // Wrong credentials: 401 from the token server itself.
    let (status, _) = curl(&token_url, &["-u", "alice:nope"]);
    assert_eq!(status, 401);
    // Another service: refused.
    let (status, _) = curl(&format!("{realm}?service=elsewhere"), &["-u", "alice:pw"]);
    assert_eq!(status, 400);

    // Right credentials: a JWT the registry accepts, granting what was asked.
    let (status, text) = curl(&token_url, &["-u", "alice:pw"]);
    assert_eq!(status, 200, "{text}");
    let answer = body_json(&text);
    assert_eq!(answer["token"], answer["access_token"]);
    assert_eq!(answer["expires_in"], 300);
    assert!(answer["issued_at"].as_str().unwrap().ends_with('Z'));
    let jwt = answer["token"].as_str().unwrap();
    let (header, claims) = jwt_claims(jwt);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], SERVICE);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "proto/repo", "actions": ["pull", "push"]}])
    );
    let nbf = claims["nbf"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), nbf + 300);
    let bearer = format!("Authorization: Bearer {jwt}");
    let (status, text) = curl(&blob_url, &["-H", &bearer]);
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("hello"));

    // No credentials: a token, but one that grants nothing.
    let (status, text) = curl(&token_url, &[]);
    assert_eq!(status, 200, "{text}");
    let anon = body_json(&text)["token"].as_str().unwrap().to_string();
    assert_eq!(jwt_claims(&anon).1["access"], serde_json::json!([]));
    let anon_bearer = format!("Authorization: Bearer {anon}");
    let (status, text) = curl(&blob_url, &["-H", &anon_bearer]);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("insufficient_scope"), "{text}");
    // ... which is still enough for the version check.
    let v2 = format!("{}/v2/", registry.base_url());
    assert_eq!(curl(&v2, &["-H", &anon_bearer]).0, 200);

    // A token whose signature was tampered with is refused. (Not the last
    // character: its low bits are padding a lenient decoder ignores.)
    let mut forged = jwt.as_bytes().to_vec();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let forged_bearer = format!("Authorization: Bearer {forged}");
    assert_eq!(curl(&blob_url, &["-H", &forged_bearer]).0, 401);

    // So is a genuine signature over claims that were changed afterwards.
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut widened = jwt_claims(jwt).1;
    widened["access"][0]["name"] = "other/repo".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64url(widened.to_string().as_bytes()),
        parts[2]
    );
    let other_blob = registry.put_blob("other/repo", b"hello").unwrap();
    let other_url = format!("{}/v2/other/repo/blobs/{other_blob}", registry.base_url());
    let forged_bearer = format!("Authorization: Bearer {forged}");
    assert_eq!(curl(&other_url, &["-H", &forged_bearer]).0, 401);

    let log = server.issued();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(server.refused(), 1);
}

#[test]
fn token_auth_over_tls() {
    let registry = Registry::start(
        RegistryOptions::default()
            .with_tls()
            .with_token_auth("u", "p"),
    )
    .unwrap();
    let layout = tempdir();
    let built = write_layout(
        layout.path(),
        "t",
        &ImageSpec::new(vec![Layer::new(vec![Entry::file("f", "x")])]),
    )
    .unwrap();
    registry
        .push_oci_layout(layout.path(), "t", "secure/img:t")
        .unwrap();
    // skopeo_inspect_args: --cert-dir and --creds.
    let info = registry.inspect("secure/img:t", false).unwrap();
    assert_eq!(info["Digest"], built.manifest_digest);
    let tags = registry
        .request("GET", "/v2/secure/img/tags/list", &[], &[])
        .unwrap();
    assert_eq!(tags.status, 200, "{}", tags.body_text());

    let cert_dir = format!("--cert-dir={}", registry.cert_dir().unwrap().display());
    let image = format!("docker://{}", registry.image_ref("secure/img:t"));
    let anonymous = skopeo(&["inspect", &cert_dir, "--no-creds", &image]);
    assert!(!anonymous.status.success());
}

#[test]
fn token_and_basic_auth_are_exclusive() {
    let options = RegistryOptions::default()
        .with_auth("a", "b")
        .with_token_auth("a", "b");
    assert!(Registry::start(options).is_err());
}
