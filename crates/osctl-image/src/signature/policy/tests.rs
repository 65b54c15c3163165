use super::*;

fn parse(text: &str) -> Result<Policy, String> {
    Policy::parse(text.as_bytes(), Path::new("/etc/containers/policy.json"))
}

fn chosen(policy: &Policy, reference: &str) -> (String, Vec<Requirement>) {
    let c = policy.requirements_for(&ImageRef::parse(reference).unwrap());
    (c.scope, c.requirements.to_vec())
}

#[test]
fn the_most_specific_scope_wins() {
    let policy = parse(
        r#"{"default":[{"type":"reject"}],
            "transports":{"docker":{
              "localhost:5000/os:v2":[{"type":"insecureAcceptAnything"},{"type":"reject"}],
              "localhost:5000/os":[{"type":"sigstoreSigned","keyPath":"/k.pub"}],
              "localhost:5000/team":[{"type":"sigstoreSigned","keyPath":"/team.pub","signedIdentity":{"type":"matchRepository"}}],
              "localhost:5000":[{"type":"insecureAcceptAnything"}],
              "*.example.com":[{"type":"sigstoreSigned","keyData":"LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K"}],
              "":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/gpg"}]},
             "oci":{"/srv/images":[{"type":"insecureAcceptAnything"}]}}}"#,
    )
    .unwrap();
    use Requirement::*;
    let signed = |k: &str, identity| SigstoreSigned {
        keys: KeySource::Files(vec![PathBuf::from(k)]),
        identity,
    };
    let cases: Vec<(&str, &str, Vec<Requirement>)> = vec![
        (
            "localhost:5000/os:v2",
            "docker scope \"localhost:5000/os:v2\"",
            vec![InsecureAcceptAnything, Reject],
        ),
        (
            "localhost:5000/os:v3",
            "docker scope \"localhost:5000/os\"",
            vec![signed("/k.pub", SignedIdentity::MatchRepoDigestOrExact)],
        ),
        (
            "localhost:5000/os@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "docker scope \"localhost:5000/os\"",
            vec![signed("/k.pub", SignedIdentity::MatchRepoDigestOrExact)],
        ),
        (
            "localhost:5000/team/web/os:1",
            "docker scope \"localhost:5000/team\"",
            vec![signed("/team.pub", SignedIdentity::MatchRepository)],
        ),
        (
            "localhost:5000/other:1",
            "docker scope \"localhost:5000\"",
            vec![InsecureAcceptAnything],
        ),
        (
            "localhost:5001/os:v2",
            "docker scope \"\"",
            vec![Unsupported("signedBy (GPG simple signing)".into())],
        ),
        (
            "reg.a.example.com:443/os:1",
            "docker scope \"*.example.com\"",
            vec![SigstoreSigned {
                keys: KeySource::Inline(vec![b"-----BEGIN PUBLIC KEY-----\n".to_vec()]),
                identity: SignedIdentity::MatchRepoDigestOrExact,
            }],
        ),
        (
            "oci:/srv/images/os:1",
            "oci scope \"/srv/images\"",
            vec![InsecureAcceptAnything],
        ),
        ("oci:/srv/other:1", "default", vec![Reject]),
        ("oci-archive:/srv/images/os.tar", "default", vec![Reject]),
        ("containers-storage:localhost/os:1", "default", vec![Reject]),
    ];
    for (reference, scope, want) in cases {
        assert_eq!(
            chosen(&policy, reference),
            (scope.to_string(), want),
            "{reference}"
        );
    }
}

#[test]
fn scopes_are_tried_in_the_containers_tools_order() {
    let r = ImageRef::parse("reg.a.example.com:5000/ns/sub/os:v2").unwrap();
    assert_eq!(
        scope_candidates(&r),
        [
            "reg.a.example.com:5000/ns/sub/os:v2",
            "reg.a.example.com:5000/ns/sub/os",
            "reg.a.example.com:5000/ns/sub",
            "reg.a.example.com:5000/ns",
            "reg.a.example.com:5000",
            "*.a.example.com",
            "*.example.com",
            "*.com",
        ]
    );
    let hub = ImageRef::parse("busybox").unwrap();
    assert_eq!(
        scope_candidates(&hub),
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox",
            "docker.io/library",
            "docker.io",
            "*.io"
        ]
    );
    let layout = ImageRef::parse("oci:/srv/images/os:v1").unwrap();
    assert_eq!(
        scope_candidates(&layout),
        ["/srv/images/os:v1", "/srv/images/os", "/srv/images", "/srv"]
    );
}

#[test]
fn a_broken_policy_is_refused_with_what_is_wrong() {
    let cases = [
        (r#"{}"#, "missing field `default`"),
        (
            r#"{"default":[]}"#,
            "default: the requirement list is empty",
        ),
        (
            r#"{"default":[{"type":"insecureAcceptAnything"}],"extra":1}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"default":[{"type":"insecureAcceptAnything"}],"default":[]}"#,
            "duplicate key \"default\"",
        ),
        (
            r#"{"default":[{"type":"acceptEverything"}]}"#,
            "unknown variant `acceptEverything`",
        ),
        (
            r#"{"default":[{"type":"reject","keyPath":"/k"}]}"#,
            "unknown field `keyPath`",
        ),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"r/os":[]}}}"#,
            "transports.docker scope \"r/os\": the requirement list is empty",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned"}]}"#,
            "default, requirement 1: sigstoreSigned needs exactly one of keyPath",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyData":"eA=="}]}"#,
            "default, requirement 1: sigstoreSigned needs exactly one of keyPath",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"keys/os.pub"}]}"#,
            "default, requirement 1: key path \"keys/os.pub\" is not absolute",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPaths":[]}]}"#,
            "default, requirement 1: keyPaths is empty",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyData":"not base64!"}]}"#,
            "default, requirement 1: keyData is not base64",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"matchSomething"}}]}"#,
            "unknown variant `matchSomething`",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactReference","dockerReference":"r.example/os"}}]}"#,
            "default, requirement 1: signedIdentity dockerReference \"r.example/os\" names no tag or digest",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactRepository","dockerRepository":"r.example/os:1"}}]}"#,
            "default, requirement 1: signedIdentity dockerRepository \"r.example/os:1\" must be a repository",
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"matchRepository","extra":1}}]}"#,
            "unknown field `extra`",
        ),
        (
            "{\"default\":[{\"type\":\"reject\"}]} trailing",
            "trailing characters",
        ),
        (
            r#"{"default":[["reject"]]}"#,
            "policy.default[0] must be an object",
        ),
        (r#"[[{"type":"reject"}]]"#, "policy must be an object"),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"r/os":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":["matchRepository"]}]}}}"#,
            "policy.transports[\"docker\"][\"r/os\"][0].signedIdentity must be an object",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert!(
            err.starts_with(want),
            "{text}\n  error  {err}\n  wanted {want}"
        );
    }
}

#[test]
fn what_osctl_cannot_evaluate_parses_as_unsupported() {
    let policy = parse(
        r#"{"default":[{"type":"reject"}],"transports":{"docker":{
            "r.example/gpg":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k.gpg"}],
            "r.example/fulcio":[{"type":"sigstoreSigned","fulcio":{"caPath":"/ca","oidcIssuer":"x","subjectEmail":"y"},"rekorPublicKeyPath":"/r"}],
            "r.example/pki":[{"type":"sigstoreSigned","pki":{"caRootsPath":"/ca"}}],
            "r.example/rekor":[{"type":"sigstoreSigned","keyPath":"/k","rekorPublicKeyData":"eA=="}]}}}"#,
    )
    .unwrap();
    for (reference, what) in [
        ("r.example/gpg:1", "signedBy (GPG simple signing)"),
        (
            "r.example/fulcio:1",
            "sigstoreSigned with fulcio (keyless signing)",
        ),
        (
            "r.example/pki:1",
            "sigstoreSigned with pki (X.509 certificates)",
        ),
        (
            "r.example/rekor:1",
            "sigstoreSigned with rekorPublicKey* (transparency log proofs)",
        ),
    ] {
        assert_eq!(
            chosen(&policy, reference).1,
            [Requirement::Unsupported(what.into())]
        );
    }
}

/// An `oci:` scope names a directory, not a spelling of it: a trailing
/// slash, a doubled slash, `.` or `..` in the reference, or a symlink to the
/// directory, must not step around the scope to a laxer `default` (the
/// containers tools resolve the path fully before looking up scopes).
#[test]
fn oci_scopes_apply_however_the_path_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("untrusted");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
    let policy = parse(&format!(
        r#"{{"default":[{{"type":"insecureAcceptAnything"}}],
            "transports":{{"oci":{{"/srv/untrusted":[{{"type":"reject"}}],
                                  "{}":[{{"type":"reject"}}]}}}}}}"#,
        real.display()
    ))
    .unwrap();
    let want_srv = (
        "oci scope \"/srv/untrusted\"".to_string(),
        vec![Requirement::Reject],
    );
    for reference in [
        "oci:/srv/untrusted",
        "oci:/srv/untrusted/",
        "oci:/srv//untrusted",
        "oci:/srv/./untrusted",
        "oci:/srv/other/../untrusted",
        "oci:/srv/untrusted/:v1",
    ] {
        assert_eq!(chosen(&policy, reference), want_srv, "{reference}");
    }
    let want_real = (
        format!("oci scope \"{}\"", real.display()),
        vec![Requirement::Reject],
    );
    let via_link = format!("oci:{}", tmp.path().join("link").display());
    assert_eq!(chosen(&policy, &via_link), want_real, "{via_link}");
}

/// A misspelt transport (`dokcer`) would silently leave its scopes unused
/// and every image to `default`; docs/signatures.md promises that a typo
/// never opens the machine. Transports the containers tools define still
/// load (a policy written for podman names `docker-daemon`, `atomic`, …).
#[test]
fn a_transport_nobody_defined_is_refused() {
    let err = parse(
        r#"{"default":[{"type":"insecureAcceptAnything"}],
            "transports":{"dokcer":{"reg.example/os":[{"type":"reject"}]}}}"#,
    )
    .expect_err("a policy with transport \"dokcer\" was accepted");
    assert!(err.contains("dokcer"), "{err}");
    for known in [
        "docker",
        "oci",
        "oci-archive",
        "containers-storage",
        "docker-daemon",
        "docker-archive",
        "dir",
        "atomic",
        "ostree",
        "sif",
        "tarball",
    ] {
        parse(&format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"{known}":{{"":[{{"type":"reject"}}]}}}}}}"#
        ))
        .unwrap_or_else(|e| panic!("{known}: {e}"));
    }
}

/// Only "no such file" moves the search on to the next policy file: a
/// file in /etc that cannot be looked at (ENOTDIR here; EIO or a security
/// module's EACCES on a machine) must refuse, not hand the machine to the
/// laxer policy the image ships in /usr.
#[test]
fn a_policy_that_cannot_be_looked_at_is_not_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("containers");
    std::fs::write(&not_a_dir, "a file where a directory belongs").unwrap();
    let admins = not_a_dir.join("policy.json");
    let shipped = tmp.path().join("shipped.json");
    std::fs::write(
        &shipped,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let (a, s) = (admins.display().to_string(), shipped.display().to_string());
    match first_existing(&[&a, &s]) {
        Err(FetchError::Policy { path, .. }) => assert_eq!(path, admins),
        other => panic!("took {other:?} instead of refusing"),
    }
    // A missing file is skipped; none at all is an error naming both.
    assert_eq!(
        first_existing(&["/nonexistent/policy.json", &s]).unwrap(),
        shipped
    );
    let none = first_existing(&["/nonexistent/a.json", "/nonexistent/b.json"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        none,
        "signature policy /nonexistent/a.json: no signature policy: neither /nonexistent/a.json \
         nor /nonexistent/b.json exists (osctl needs one to decide which images this machine \
         accepts; see docs/signatures.md)"
    );
}
