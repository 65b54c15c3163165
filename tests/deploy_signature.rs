//! The signature verdict a deployment shows is the one of the pull that
//! staged it last. A deployment that exists (here the rollback) and is
//! switched to again is staged in place: the image is the same, the pull
//! is not — another reference, and a policy that may have changed since.
//! This is the VM test's registry scenario in small: v2 first deployed
//! under a policy that accepts anything, then from a registry tag the
//! machine's policy requires a signature for.

use serde_json::json;

use crate::signatures::fingerprint;
use crate::util::machine::{Images, Machine};
use crate::util::{POLICY_ENV, accept_anything_policy};
use osctl_testutil::api::resolve_digest;
use osctl_testutil::sigstore::{KeyKind, SigningKey, sign_image};

#[test]
fn restaging_an_existing_deployment_shows_the_new_pulls_verdict() {
    let images = Images::new();
    let registry = &images.registry;
    let mut m = Machine::new();
    let v1 = m.boot(&images.v1);
    let v2 = m.boot(&images.v2);
    m.run(&["rollback"]);
    assert_eq!(m.reboot(), v1);
    let st = m.status();
    let rollback = &st["status"]["rollback"];
    assert_eq!(rollback["composefs"]["verity"], v2.as_str(), "{st}");
    // Pulled under the tests' default policy: nothing was verified.
    assert_eq!(rollback["image"]["image"]["signature"], "insecure", "{st}");
    assert_eq!(
        rollback["osctl"]["signature"],
        json!({
            "result": "insecure",
            "policy": accept_anything_policy().display().to_string(),
            "scope": "default",
        }),
        "{st}"
    );

    // The machine now requires the test key for this registry; v2 is
    // tagged :track and signed under that reference.
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(KeyKind::P256).unwrap();
    let key_path = dir.path().join("os.pub");
    std::fs::write(&key_path, key.public_pem()).unwrap();
    let strict = dir.path().join("strict.json");
    std::fs::write(
        &strict,
        json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {registry.addr(): [
                {"type": "sigstoreSigned", "keyPath": key_path},
            ]}},
        })
        .to_string(),
    )
    .unwrap();
    m.osctl.set_env(POLICY_ENV, &strict);
    registry.copy_tag("os:v2", "os:track").unwrap();
    let track = registry.image_ref("os:track");
    let digest = resolve_digest(registry, "os", "track").unwrap();
    sign_image(registry, "os", &digest, &track, &key).unwrap();

    // Staged in place, showing this pull: its reference and its verdict.
    assert_eq!(m.switch(&track), v2);
    let st = m.status();
    let staged = &st["status"]["staged"];
    assert_eq!(staged["composefs"]["verity"], v2.as_str(), "{st}");
    assert_eq!(
        staged["image"]["image"],
        json!({"image": track, "transport": "registry", "signature": "containerPolicy"}),
        "{st}"
    );
    assert_eq!(
        staged["osctl"]["signature"],
        json!({
            "result": "verified",
            "policy": strict.display().to_string(),
            "scope": format!("docker scope \"{}\"", registry.addr()),
            "key": fingerprint(&key_path),
            "keyType": "ECDSA P-256",
            "signedDigest": digest,
            "identity": track,
        }),
        "{st}"
    );
    let human = m.run(&["status", "--format", "human"]);
    assert!(
        human.contains(&format!(
            "Signature: verified (ECDSA P-256 key {})\n",
            &fingerprint(&key_path)[..7 + 12]
        )),
        "{human}"
    );
    // And it boots as such.
    m.run(&["finalize"]);
    assert_eq!(m.reboot(), v2);
    let st = m.status();
    assert_eq!(
        st["status"]["booted"]["osctl"]["signature"]["result"], "verified",
        "{st}"
    );
}
