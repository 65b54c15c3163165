//! `osctl status` formats: the JSON/YAML host object carries the right
//! values, and the human form matches literal snapshots. The submodules check
//! every status shape against osctl's own committed schema
//! ([`schema`]) and against the bootc field names and types osctl promises
//! ([`bootc`]). Nothing here reads a file outside the repository.

#[path = "status_format/bootc.rs"]
mod bootc;
#[path = "status_format/schema.rs"]
mod schema;

use osctl_deploy::EtcConflict;
use osctl_deploy::boot::Tries;
use osctl_deploy::health::{HealthRecord, HealthState};
use osctl_deploy::layout::DeploymentId;
use osctl_deploy::origin::{CachedUpdate, ORIGIN_VERSION, Origin};
use osctl_deploy::status::{
    BootType, Bootloader, EntryView, HostView, booted_only, render_human, to_host,
};
use osctl_image::{SignatureCheck, SignatureVerdict};
use serde_json::{Value, json};

fn id(c: char) -> DeploymentId {
    DeploymentId::parse(&c.to_string().repeat(64)).unwrap()
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn conflict(path: &str, kind: &str) -> EtcConflict {
    serde_json::from_value(
        json!({"path": path, "kind": kind, "resolution": "kept the local version"}),
    )
    .unwrap()
}

/// A registry deployment of `image` at `version`; the id's digit is `c`.
fn entry(c: char, image: &str, version: &str, timestamp: &str) -> EntryView {
    EntryView {
        id: id(c),
        origin: Origin {
            version: ORIGIN_VERSION,
            image: image.to_owned(),
            transport: "registry".to_owned(),
            manifest_digest: digest(c),
            image_id: c.to_string().repeat(64),
            architecture: "amd64".to_owned(),
            image_version: Some(version.to_owned()),
            timestamp: Some(timestamp.to_owned()),
            os_name: Some("Debian GNU/Linux 13 (trixie)".to_owned()),
            kernel_version: "6.12.0-1-amd64".to_owned(),
            boot_digest: digest('b'),
            image_kargs: vec!["console=ttyS0".to_owned()],
            local_kargs: vec!["quiet".to_owned()],
            pinned: false,
            finalized: true,
            deployed: "2026-11-25T11:00:00Z".to_owned(),
            serial: 1,
            etc_conflicts: Vec::new(),
            cached_update: None,
        },
        boot_type: BootType::Bls,
        bootloader: Bootloader::Systemd,
        verity_required: true,
        tries: None,
        health: None,
        signature: None,
    }
}

const REF: &str = "quay.io/example/os:latest";

/// Staged 2.0 (with conflicts), booted 1.1 (an update was found), rollback
/// 1.0 (pinned, fs-verity optional), another pinned 0.9 (no bootloader).
fn full_view() -> HostView {
    let mut staged = entry('1', REF, "2.0", "2026-11-25T10:00:00.123456789Z");
    staged.origin.etc_conflicts = vec![
        conflict("ssh/sshd_config", "bothModified"),
        conflict("motd.d", "typeChanged"),
    ];
    staged.signature = Some(SignatureVerdict {
        policy: "/etc/containers/policy.json".to_owned(),
        scope: "docker scope \"quay.io/example\"".to_owned(),
        check: SignatureCheck::Verified {
            key: digest('c'),
            key_type: "ECDSA P-256".to_owned(),
            signed_digest: digest('1'),
            identity: REF.to_owned(),
        },
    });
    let mut booted = entry('2', REF, "1.1", "2026-11-01T09:30:00Z");
    booted.signature = Some(SignatureVerdict {
        policy: "/usr/share/containers/policy.json".to_owned(),
        scope: "default".to_owned(),
        check: SignatureCheck::Insecure,
    });
    booted.origin.cached_update = Some(CachedUpdate {
        manifest_digest: digest('3'),
        version: Some("2.1".to_owned()),
        timestamp: Some("2026-12-01T08:00:00.5Z".to_owned()),
        architecture: "amd64".to_owned(),
        checked: "2026-12-02T00:00:00Z".to_owned(),
    });
    let mut rollback = entry('4', REF, "1.0", "2026-10-01T09:30:00Z");
    rollback.origin.pinned = true;
    rollback.verity_required = false;
    let mut other = entry(
        '5',
        "oci-archive-os.tar",
        "0.9",
        "2026-09-01T00:00:00+02:00",
    );
    other.origin.transport = "oci-archive".to_owned();
    other.origin.pinned = true;
    other.bootloader = Bootloader::None;
    HostView {
        spec_image: Some(staged.image_reference()),
        staged: Some(staged),
        booted: Some(booted),
        rollback: Some(rollback),
        other: vec![other],
        failed: Vec::new(),
        rollback_queued: false,
        staged_download_only: false,
        problems: Vec::new(),
    }
}

/// bootc's example fixture as osctl would report it: staged and booted.
fn example_view() -> HostView {
    let image = "quay.io/example/someimage:latest";
    let mut staged = entry('a', image, "nightly", "2023-10-14T19:22:15.42Z");
    staged.origin.manifest_digest =
        "sha256:16dc2b6256b4ff0d2ec18d2dbfb06d117904010c8cf9732cdb022818cf7a7566".to_owned();
    let mut booted = entry('c', image, "nightly", "2023-09-30T19:22:16Z");
    booted.origin.manifest_digest =
        "sha256:736b359467c9437c1ac915acaae952aad854e07eb4a16a94999a48af08c83c34".to_owned();
    for e in [&mut staged, &mut booted] {
        e.origin.architecture = "arm64".to_owned();
    }
    HostView {
        spec_image: Some(staged.image_reference()),
        staged: Some(staged),
        booted: Some(booted),
        ..HostView::default()
    }
}

fn json_of(view: &HostView) -> Value {
    serde_json::to_value(to_host(view)).unwrap()
}

#[test]
fn fresh_machine_is_all_null() {
    let v = json_of(&HostView::default());
    assert_eq!(
        v,
        json!({
            "apiVersion": "org.containers.bootc/v1",
            "kind": "BootcHost",
            "metadata": {"name": "host"},
            "spec": {"image": null, "bootOrder": "default"},
            "status": {"staged": null, "booted": null, "rollback": null,
                       "otherDeployments": [], "rollbackQueued": false, "type": null}
        })
    );
}

#[test]
fn boot_entry_fields() {
    let v = json_of(&full_view());
    let booted = &v["status"]["booted"];
    assert_eq!(
        v["spec"]["image"],
        json!({"image": REF, "transport": "registry", "signature": "containerPolicy"})
    );
    assert_eq!(v["status"]["type"], "bootcHost");
    assert_eq!(
        v["status"]["staged"]["osctl"]["signature"],
        json!({"result": "verified", "policy": "/etc/containers/policy.json",
               "scope": "docker scope \"quay.io/example\"", "key": digest('c'),
               "keyType": "ECDSA P-256", "signedDigest": digest('1'), "identity": REF})
    );
    assert_eq!(
        booted["osctl"]["signature"],
        json!({"result": "insecure", "policy": "/usr/share/containers/policy.json",
               "scope": "default"})
    );
    // Unknown (a record from before signatures were checked): no field.
    assert!(
        v["status"]["rollback"]["image"]["image"]
            .get("signature")
            .is_none()
    );
    assert!(v["status"]["rollback"]["osctl"].get("signature").is_none());
    assert_eq!(
        booted["image"],
        json!({"image": {"image": REF, "transport": "registry", "signature": "insecure"}, "version": "1.1",
               "timestamp": "2026-11-01T09:30:00Z", "imageDigest": digest('2'),
               "architecture": "amd64"})
    );
    for (k, want) in [
        ("incompatible", false),
        ("pinned", false),
        ("softRebootCapable", false),
        ("downloadOnly", false),
    ] {
        assert_eq!(booted[k], want, "{k}");
    }
    assert_eq!(booted["store"], Value::Null);
    assert_eq!(
        booted["composefs"],
        json!({"verity": "2".repeat(64), "bootType": "Bls", "bootloader": "systemd",
               "missingVerityAllowed": false, "bootDigest": digest('b')})
    );
    // JSON keeps the timestamp's fraction, as bootc does.
    let staged = &v["status"]["staged"];
    assert_eq!(
        staged["image"]["timestamp"],
        "2026-11-25T10:00:00.123456789Z"
    );
    let rollback = &v["status"]["rollback"];
    assert_eq!(rollback["pinned"], true);
    assert_eq!(rollback["composefs"]["missingVerityAllowed"], true);
    assert_eq!(rollback["composefs"]["verity"], "4".repeat(64));
    let other = &v["status"]["otherDeployments"];
    assert_eq!(other.as_array().unwrap().len(), 1);
    assert_eq!(other[0]["pinned"], true);
    assert_eq!(other[0]["composefs"]["bootloader"], "none");
    assert_eq!(other[0]["image"]["image"]["transport"], "oci-archive");
}

#[test]
fn cached_update_only_when_it_is_newer() {
    let mut view = full_view();
    let v = json_of(&view);
    assert_eq!(
        v["status"]["booted"]["cachedUpdate"],
        json!({"image": {"image": REF, "transport": "registry"}, "version": "2.1",
               "timestamp": "2026-12-01T08:00:00.5Z", "imageDigest": digest('3'),
               "architecture": "amd64"})
    );
    assert_eq!(v["status"]["staged"]["cachedUpdate"], Value::Null);
    assert_eq!(
        v["status"]["booted"]["osctl"]["updateChecked"],
        "2026-12-02T00:00:00Z"
    );
    assert_eq!(v["status"]["staged"]["osctl"]["updateChecked"], Value::Null);

    // A check that found the deployment's own digest: no update, but checked.
    let booted = view.booted.as_mut().unwrap();
    booted
        .origin
        .cached_update
        .as_mut()
        .unwrap()
        .manifest_digest = digest('2');
    let v = json_of(&view);
    assert_eq!(v["status"]["booted"]["cachedUpdate"], Value::Null);
    assert_eq!(
        v["status"]["booted"]["osctl"]["updateChecked"],
        "2026-12-02T00:00:00Z"
    );
}

/// `downloadOnly` is the staged entry's, true only while its marker says
/// so; the other entries keep bootc's `false`.
#[test]
fn download_only_marks_the_staged_entry_only() {
    let mut view = full_view();
    assert_eq!(json_of(&view)["status"]["staged"]["downloadOnly"], false);
    view.staged_download_only = true;
    let v = json_of(&view);
    for (slot, want) in [
        ("/status/staged/downloadOnly", true),
        ("/status/booted/downloadOnly", false),
        ("/status/rollback/downloadOnly", false),
        ("/status/otherDeployments/0/downloadOnly", false),
    ] {
        assert_eq!(v.pointer(slot), Some(&Value::Bool(want)), "{slot}");
    }
    // --booted drops the staged entry, and the flag with it.
    assert_eq!(
        json_of(&booted_only(&view))["status"]["staged"],
        Value::Null
    );
}

#[test]
fn human_download_only_staged() {
    let mut view = full_view();
    view.staged_download_only = true;
    view.booted = None;
    view.rollback = None;
    view.other.clear();
    let got = render_human(&view);
    let want = "  Staged image: quay.io/example/os:latest
        Digest: sha256:1111111111111111111111111111111111111111111111111111111111111111 (amd64)
       Version: 2.0 (2026-11-25T10:00:00Z)
     Signature: verified (ECDSA P-256 key sha256:cccccccccccc)
        Kernel: 6.12.0-1-amd64
    Deployment: 111111111111
 Download only: yes: not applied at shutdown (osctl upgrade --from-downloaded releases it)
/etc conflicts: /etc/ssh/sshd_config (both modified)
                /etc/motd.d (file type changed)
";
    assert_eq!(got, want, "\n--- got:\n{got}");
}

#[test]
fn rollback_queued_sets_boot_order() {
    let mut view = full_view();
    assert_eq!(json_of(&view)["spec"]["bootOrder"], "default");
    assert_eq!(json_of(&view)["status"]["rollbackQueued"], false);
    view.rollback_queued = true;
    let v = json_of(&view);
    assert_eq!(v["spec"]["bootOrder"], "rollback");
    assert_eq!(v["status"]["rollbackQueued"], true);
}

#[test]
fn osctl_fields_sit_in_each_boot_entry() {
    let v = json_of(&full_view());
    assert_eq!(
        v["status"]["staged"]["osctl"],
        json!({
            "deploymentId": "1".repeat(64),
            "deployed": "2026-11-25T11:00:00Z",
            "osName": "Debian GNU/Linux 13 (trixie)",
            "kernelVersion": "6.12.0-1-amd64",
            "kargs": ["console=ttyS0", "quiet"],
            "localKargs": ["quiet"],
            "updateChecked": null,
            "etcConflicts": [
                {"path": "ssh/sshd_config", "kind": "bothModified", "resolution": "kept the local version"},
                {"path": "motd.d", "kind": "typeChanged", "resolution": "kept the local version"}
            ],
            "signature": {"result": "verified", "policy": "/etc/containers/policy.json",
                          "scope": "docker scope \"quay.io/example\"", "key": digest('c'),
                          "keyType": "ECDSA P-256", "signedDigest": digest('1'),
                          "identity": REF}
        })
    );
    assert_eq!(v["status"]["booted"]["osctl"]["etcConflicts"], json!([]));
}

#[test]
fn booted_only_keeps_the_booted_entry() {
    let mut view = full_view();
    view.rollback_queued = true;
    let v = json_of(&booted_only(&view));
    assert_eq!(v["status"]["staged"], Value::Null);
    assert_eq!(v["status"]["rollback"], Value::Null);
    assert_eq!(v["status"]["otherDeployments"], json!([]));
    assert_eq!(
        v["status"]["booted"]["osctl"]["deploymentId"],
        "2".repeat(64)
    );
    assert_eq!(v["status"]["rollbackQueued"], true);
    assert_eq!(v["spec"]["bootOrder"], "rollback");
    assert_eq!(v["spec"]["image"]["image"], REF);
}

/// Image timestamps that are not RFC 3339 date-times (the schema's
/// `format: date-time`, as bootc's schema has it) become `null`; valid ones
/// pass unchanged.
const TIMESTAMPS: &[(&str, bool)] = &[
    ("2026-11-01T09:30:00Z", true),
    ("2026-11-01t09:30:00.5z", true),
    ("2026-11-01T09:30:00+02:00", true),
    ("2024-02-29T00:00:00Z", true),
    ("2000-02-29T00:00:00Z", true),
    ("2016-12-31T23:59:60Z", true),
    ("2017-01-01T01:29:60+01:30", true),
    ("last tuesday", false),
    ("2026-11-01", false),
    ("2026-11-01 09:30:00Z", false),
    ("2026-02-29T00:00:00Z", false),
    ("1900-02-29T00:00:00Z", false),
    ("2026-02-30T00:00:00Z", false),
    ("2026-04-31T00:00:00Z", false),
    ("2026-11-01T09:30:60Z", false),
    ("2016-12-31T23:59:60+01:00", false),
];

#[test]
fn malformed_timestamp_becomes_null() {
    for &(timestamp, valid) in TIMESTAMPS {
        let mut view = full_view();
        view.booted.as_mut().unwrap().origin.timestamp = Some(timestamp.to_owned());
        let v = json_of(&view);
        let want = if valid { json!(timestamp) } else { Value::Null };
        assert_eq!(
            v["status"]["booted"]["image"]["timestamp"], want,
            "{timestamp}"
        );
    }
}

#[test]
fn human_staged_booted_rollback() {
    let got = render_human(&full_view());
    let want = "  Staged image: quay.io/example/os:latest
        Digest: sha256:1111111111111111111111111111111111111111111111111111111111111111 (amd64)
       Version: 2.0 (2026-11-25T10:00:00Z)
     Signature: verified (ECDSA P-256 key sha256:cccccccccccc)
        Kernel: 6.12.0-1-amd64
    Deployment: 111111111111
/etc conflicts: /etc/ssh/sshd_config (both modified)
                /etc/motd.d (file type changed)

● Booted image: quay.io/example/os:latest
        Digest: sha256:2222222222222222222222222222222222222222222222222222222222222222 (amd64)
       Version: 1.1 (2026-11-01T09:30:00Z)
     Signature: not verified (the policy accepts anything)
        Kernel: 6.12.0-1-amd64
    Deployment: 222222222222
        Update: 2.1 (2026-12-01T08:00:00Z)

  Rollback image: quay.io/example/os:latest
          Digest: sha256:4444444444444444444444444444444444444444444444444444444444444444 (amd64)
         Version: 1.0 (2026-10-01T09:30:00Z)
       Signature: unknown (pulled before osctl checked signatures)
          Kernel: 6.12.0-1-amd64
      Deployment: 444444444444
          Pinned: yes

Other deployments: 555555555555 (0.9, pinned)
";
    assert_eq!(got, want, "\n--- got:\n{got}");
}

#[test]
fn human_booted_with_rollback_queued_and_many_conflicts() {
    let mut view = full_view();
    let booted = view.booted.as_mut().unwrap();
    booted.origin.transport = "oci".to_owned();
    booted.origin.image = "/var/lib/images/os:1.1".to_owned();
    booted.origin.image_version = None;
    booted.origin.cached_update = None;
    booted.origin.etc_conflicts = ["a", "b", "c", "d"]
        .map(|p| conflict(p, "bothAdded"))
        .to_vec();
    view.rollback_queued = true;
    let got = render_human(&booted_only(&view));
    let want = "● Booted image: oci:/var/lib/images/os:1.1
        Digest: sha256:2222222222222222222222222222222222222222222222222222222222222222 (amd64)
     Timestamp: 2026-11-01T09:30:00Z
     Signature: not verified (the policy accepts anything)
        Kernel: 6.12.0-1-amd64
    Deployment: 222222222222
/etc conflicts: 4 (run osctl status --format yaml for the list)

Rollback queued: the next boot is the rollback deployment
";
    assert_eq!(got, want, "\n--- got:\n{got}");
}

#[test]
fn human_fresh_machine() {
    assert_eq!(
        render_human(&HostView::default()),
        "No deployments yet (osctl switch IMAGE deploys one).\n"
    );
}

/// Boot assessment: booted 2.0 on its second try, checks not run yet
/// (`pending`); rollback 1.0; 2.1 failed its health check on every try and
/// 1.9 never came up: both left behind as failed deployments.
fn assessed_view() -> HostView {
    let mut booted = entry('2', REF, "2.0", "2026-11-01T09:30:00Z");
    booted.tries = Some(Tries { left: 2, done: 1 });
    let rollback = entry('1', REF, "1.0", "2026-10-01T09:30:00Z");
    let mut checks_failed = entry('3', REF, "2.1", "2026-11-20T09:30:00Z");
    checks_failed.tries = Some(Tries { left: 0, done: 3 });
    checks_failed.health = Some(HealthRecord {
        state: HealthState::Failed,
        at: "2026-11-21T10:00:00.123456Z".to_owned(),
        reason: Some("health check 50-app: exit status 1 (connection refused)".to_owned()),
        failed_check: Some("50-app".to_owned()),
        checks: Vec::new(),
    });
    let mut never_up = entry('6', REF, "1.9", "2026-10-20T09:30:00Z");
    never_up.tries = Some(Tries { left: 0, done: 3 });
    HostView {
        spec_image: Some(booted.image_reference()),
        booted: Some(booted),
        rollback: Some(rollback),
        failed: vec![checks_failed, never_up],
        ..HostView::default()
    }
}

#[test]
fn boot_assessment_fields() {
    let v = json_of(&assessed_view());
    let booted = &v["status"]["booted"]["osctl"];
    assert_eq!(booted["bootTries"], json!({"left": 2, "done": 1}));
    assert_eq!(
        booted["health"],
        json!({"state": "pending", "reason": null, "failedCheck": null, "checked": null})
    );
    // Not being assessed: neither key.
    let rollback = v["status"]["rollback"]["osctl"].as_object().unwrap();
    assert!(!rollback.contains_key("bootTries"), "{rollback:?}");
    assert!(!rollback.contains_key("health"), "{rollback:?}");

    let others = v["status"]["otherDeployments"].as_array().unwrap();
    assert_eq!(others.len(), 2);
    assert_eq!(others[0]["composefs"]["verity"], "3".repeat(64));
    assert_eq!(
        others[0]["osctl"]["bootTries"],
        json!({"left": 0, "done": 3})
    );
    assert_eq!(
        others[0]["osctl"]["health"],
        json!({"state": "failed",
               "reason": "health check 50-app: exit status 1 (connection refused)",
               "failedCheck": "50-app", "checked": "2026-11-21T10:00:00.123456Z"})
    );
    // No record: the counter says why.
    assert_eq!(others[1]["osctl"]["health"]["state"], "failed");
    assert!(
        others[1]["osctl"]["health"]["reason"]
            .as_str()
            .unwrap()
            .contains("boot counter ran out")
    );
    // Failed deployments are never staged or rollback.
    assert_eq!(v["status"]["staged"], Value::Null);
    assert_eq!(
        v["status"]["rollback"]["composefs"]["verity"],
        "1".repeat(64)
    );

    // --booted: only the booted one.
    let b = json_of(&booted_only(&assessed_view()));
    assert_eq!(b["status"]["otherDeployments"], json!([]));
    assert_eq!(b["status"]["booted"]["osctl"]["health"]["state"], "pending");

    // Marked good: the counter is gone, the state stays.
    let mut good = assessed_view();
    let booted = good.booted.as_mut().unwrap();
    booted.tries = None;
    booted.health = Some(HealthRecord {
        state: HealthState::Good,
        at: "2026-11-25T10:00:00Z".to_owned(),
        reason: None,
        failed_check: None,
        checks: Vec::new(),
    });
    let v = json_of(&good);
    let booted = v["status"]["booted"]["osctl"].as_object().unwrap();
    assert!(!booted.contains_key("bootTries"), "{booted:?}");
    assert_eq!(booted["health"]["state"], "good");
    assert_eq!(booted["health"]["checked"], "2026-11-25T10:00:00Z");
}

#[test]
fn the_booted_deployment_on_its_last_try_is_not_failed() {
    // systemd-boot renames the entry before booting it: on the last try the
    // running deployment's counter already reads 0 left.
    let mut view = assessed_view();
    view.booted.as_mut().unwrap().tries = Some(Tries { left: 0, done: 3 });
    let v = json_of(&view);
    let health = &v["status"]["booted"]["osctl"]["health"];
    assert_eq!(health["state"], "pending", "{health}");
    assert_eq!(health["reason"], Value::Null);
    view.booted.as_mut().unwrap().health = Some(HealthRecord {
        state: HealthState::Checked,
        at: "2026-11-25T10:00:00Z".to_owned(),
        reason: None,
        failed_check: None,
        checks: Vec::new(),
    });
    let v = json_of(&view);
    assert_eq!(v["status"]["booted"]["osctl"]["health"]["state"], "checked");
}

#[test]
fn human_boot_assessment() {
    let got = render_human(&assessed_view());
    let want = "● Booted image: quay.io/example/os:latest
        Digest: sha256:2222222222222222222222222222222222222222222222222222222222222222 (amd64)
       Version: 2.0 (2026-11-01T09:30:00Z)
     Signature: unknown (pulled before osctl checked signatures)
        Kernel: 6.12.0-1-amd64
    Deployment: 222222222222
        Health: pending (2 boot attempts left, 1 made)

  Rollback image: quay.io/example/os:latest
          Digest: sha256:1111111111111111111111111111111111111111111111111111111111111111 (amd64)
         Version: 1.0 (2026-10-01T09:30:00Z)
       Signature: unknown (pulled before osctl checked signatures)
          Kernel: 6.12.0-1-amd64
      Deployment: 111111111111

Failed deployment: 333333333333 (2.1): health check 50-app: exit status 1 (connection refused)
Failed deployment: 666666666666 (1.9): the boot loader gave up on it (boot counter ran out)
";
    assert_eq!(got, want, "\n--- got:\n{got}");

    // With a pinned other deployment, and the booted one failed.
    let mut view = full_view();
    view.staged = None;
    view.failed = vec![assessed_view().failed.remove(0)];
    let booted = view.booted.as_mut().unwrap();
    booted.origin.cached_update = None;
    booted.tries = Some(Tries { left: 1, done: 2 });
    booted.health = Some(HealthRecord {
        state: HealthState::Failed,
        at: "2026-11-25T10:00:00Z".to_owned(),
        reason: Some("health check 10-net: timed out".to_owned()),
        failed_check: Some("10-net".to_owned()),
        checks: Vec::new(),
    });
    let got = render_human(&view);
    let want = "● Booted image: quay.io/example/os:latest
        Digest: sha256:2222222222222222222222222222222222222222222222222222222222222222 (amd64)
       Version: 1.1 (2026-11-01T09:30:00Z)
     Signature: not verified (the policy accepts anything)
        Kernel: 6.12.0-1-amd64
    Deployment: 222222222222
        Health: failed (1 boot attempt left, 2 made): health check 10-net: timed out

  Rollback image: quay.io/example/os:latest
          Digest: sha256:4444444444444444444444444444444444444444444444444444444444444444 (amd64)
         Version: 1.0 (2026-10-01T09:30:00Z)
       Signature: unknown (pulled before osctl checked signatures)
          Kernel: 6.12.0-1-amd64
      Deployment: 444444444444
          Pinned: yes

Other deployments: 555555555555 (0.9, pinned)
Failed deployment: 333333333333 (2.1): health check 50-app: exit status 1 (connection refused)
";
    assert_eq!(got, want, "\n--- got:\n{got}");
}

/// Every status shape the tests know, by name: each slot filled and empty,
/// a queued rollback, `/etc` conflicts, a cached update, pins, boot
/// assessment in every state, failed deployments, missing and malformed
/// optional facts, a UKI entry, no bootloader.
fn shapes() -> Vec<(String, HostView)> {
    let mut shapes = vec![
        ("fresh machine".to_owned(), HostView::default()),
        (
            "staged, booted with a cached update, pinned rollback and other, conflicts".to_owned(),
            full_view(),
        ),
        (
            "booted only (--booted)".to_owned(),
            booted_only(&full_view()),
        ),
        (
            "bootc's example: staged and booted".to_owned(),
            example_view(),
        ),
        (
            "being assessed, failed deployments".to_owned(),
            assessed_view(),
        ),
    ];
    let mut queued = full_view();
    queued.staged = None;
    queued.rollback_queued = true;
    shapes.push(("rollback queued".to_owned(), queued));

    let mut downloaded = full_view();
    downloaded.staged_download_only = true;
    shapes.push(("staged download-only".to_owned(), downloaded));

    // An installer or image builder: staged, nothing booted.
    let mut offline = full_view();
    offline.booted = None;
    offline.rollback = None;
    offline.other.clear();
    shapes.push((
        "offline sysroot: staged, nothing booted".to_owned(),
        offline,
    ));

    let mut oci = full_view();
    let booted = oci.booted.as_mut().unwrap();
    booted.origin.transport = "oci".to_owned();
    booted.origin.image = "/var/lib/images/os:1.1".to_owned();
    booted.origin.image_version = None;
    booted.origin.timestamp = None;
    booted.origin.os_name = None;
    booted.origin.local_kargs.clear();
    booted.origin.etc_conflicts = ["a", "b", "c", "d"]
        .map(|p| conflict(p, "bothAdded"))
        .to_vec();
    shapes.push((
        "oci transport, no version, timestamp or os name".to_owned(),
        oci,
    ));

    let mut bad_times = full_view();
    let booted = bad_times.booted.as_mut().unwrap();
    booted.origin.timestamp = Some("last tuesday".to_owned());
    let update = booted.origin.cached_update.as_mut().unwrap();
    update.timestamp = Some("2026-02-30T00:00:00Z".to_owned());
    update.version = None;
    shapes.push(("malformed timestamps".to_owned(), bad_times));

    let mut broken = full_view();
    broken.problems = vec![
        "deployment 777777777777 cannot be read: /s/sysroot/state/deploy/77…/origin.json: unreadable: EOF while parsing".to_owned(),
        "boot entry loader/entries/osctl-88….conf does not parse (no `linux` line); the next deployment change rewrites it".to_owned(),
    ];
    shapes.push((
        "a broken deployment and a bad boot entry".to_owned(),
        broken,
    ));

    let mut uki = full_view();
    let staged = uki.staged.as_mut().unwrap();
    staged.boot_type = BootType::Uki;
    staged.bootloader = Bootloader::None;
    shapes.push(("UKI entry, no bootloader".to_owned(), uki));

    for state in [HealthState::Checked, HealthState::Good, HealthState::Failed] {
        let mut view = assessed_view();
        view.booted.as_mut().unwrap().health = Some(HealthRecord {
            state,
            at: "2026-11-25T10:00:00Z".to_owned(),
            reason: None,
            failed_check: None,
            checks: Vec::new(),
        });
        shapes.push((format!("booted {state:?}"), view));
    }
    let mut last_try = assessed_view();
    last_try.booted.as_mut().unwrap().tries = Some(Tries { left: 0, done: 3 });
    shapes.push(("booted on its last try".to_owned(), last_try));

    let mut both = full_view();
    both.failed = assessed_view().failed;
    shapes.push(("pinned and failed others".to_owned(), both));
    shapes
}
