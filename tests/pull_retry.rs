//! A registry that fails now and then: single HTTP errors and dropped
//! connections are retried a bounded number of times, and a blob download
//! that breaks off resumes with a `Range` request. The faults come from
//! `DropProxy` in front of the real registry; its request log shows what
//! osctl asked for and what the registry answered.

use crate::util::{Osctl, push_spec};
use osctl_image::limits::{MAX_BLOB_RESUMES, RETRY_ATTEMPTS};
use osctl_testutil::{
    DropProxy, Entry, Fault, ImageSpec, Layer, LoggedRequest, Registry, RegistryOptions,
    assert_trees_equal, expected_tree,
};

/// A registry holding one image with a 2 MB layer of incompressible bytes.
fn registry_with_image(repo_tag: &str) -> (Registry, Vec<Layer>, String) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layers = vec![Layer::new(vec![
        Entry::file("etc/os-release", "ID=retry\n"),
        Entry::large_file("usr/big.bin", 2_000_000, 3),
    ])];
    let (_, built) = push_spec(&registry, repo_tag, &ImageSpec::new(layers.clone()));
    let layer = built.layer_digests[0].clone();
    (registry, layers, layer)
}

fn requests_for<'a>(log: &'a [LoggedRequest], needle: &str) -> Vec<&'a LoggedRequest> {
    log.iter().filter(|r| r.target.contains(needle)).collect()
}

#[test]
fn single_failures_are_retried() {
    let (registry, layers, layer) = registry_with_image("retry/os:v1");
    for (case, needle, fault) in [
        ("manifest 500", "/manifests/", Fault::Status(500)),
        ("manifest dropped", "/manifests/", Fault::Drop),
        ("blob 500", layer.as_str(), Fault::Status(500)),
        ("blob 502", layer.as_str(), Fault::Status(502)),
        ("blob 503", layer.as_str(), Fault::Status(503)),
        ("blob 429", layer.as_str(), Fault::Status(429)),
        ("blob dropped", layer.as_str(), Fault::Drop),
    ] {
        let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
        proxy.fail_next(needle, fault, 1);
        let reference = proxy.image_ref("retry/os:v1");
        let osctl = Osctl::new();
        osctl.pull(&reference);
        let log = proxy.log();
        let hits = requests_for(&log, needle);
        assert_eq!(hits.len(), 2, "{case}: one failure, one retry: {log:#?}");
        assert!(hits[0].made_up, "{case}: the first was the fault: {log:#?}");
        assert_eq!(hits[1].target, hits[0].target, "{case}");
        assert_eq!(hits[1].status, 200, "{case}: the retry got the content");
        assert_trees_equal(&expected_tree(&layers), &osctl.mounted_tree(&reference));
        osctl.fsck_clean();
    }
}

#[test]
fn persistent_failures_give_up_after_bounded_attempts() {
    let (registry, _, layer) = registry_with_image("retry/os:v1");
    for (case, needle, fault, error) in [
        (
            "manifest 503",
            "/manifests/",
            Fault::Status(503),
            "HTTP 503",
        ),
        ("blob 500", layer.as_str(), Fault::Status(500), "HTTP 500"),
        (
            "manifest dropped",
            "/manifests/",
            Fault::Drop,
            "retry/os:v1",
        ),
    ] {
        let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
        proxy.fail_next(needle, fault, u64::MAX);
        let reference = proxy.image_ref("retry/os:v1");
        let gave_up = format!("gave up after {RETRY_ATTEMPTS} attempts");
        let err = Osctl::new().pull_fails(&[&reference], &[error, &gave_up, &proxy.addr()]);
        if needle == layer {
            assert!(err.contains(&layer), "{case}: names the blob: {err}");
        }
        let log = proxy.log();
        assert_eq!(
            requests_for(&log, needle).len(),
            RETRY_ATTEMPTS as usize,
            "{case}: {log:#?}"
        );
    }
}

#[test]
fn interrupted_blob_resumes_with_a_range_request() {
    let (registry, layers, layer) = registry_with_image("resume/os:v1");
    // Cut the first blob download after 100 000 bytes, once.
    let proxy = DropProxy::start_limited(&registry.addr(), 100_000, 1).unwrap();
    let reference = proxy.image_ref("resume/os:v1");
    let osctl = Osctl::new();
    osctl.pull(&reference);
    let log = proxy.log();
    let gets = requests_for(&log, &layer);
    assert_eq!(gets.len(), 2, "{log:#?}");
    assert!(gets[0].cut && gets[0].range.is_none(), "{log:#?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"), "{log:#?}");
    assert_eq!(gets[1].status, 206, "the registry honoured the range");
    assert!(!gets[1].cut);
    assert_trees_equal(&expected_tree(&layers), &osctl.mounted_tree(&reference));
    osctl.fsck_clean();
}

#[test]
fn resuming_works_where_the_registry_ignores_ranges() {
    let (registry, layers, layer) = registry_with_image("resume/os:v1");
    let proxy = DropProxy::start_limited(&registry.addr(), 100_000, 1).unwrap();
    proxy.ignore_ranges();
    let reference = proxy.image_ref("resume/os:v1");
    let osctl = Osctl::new();
    osctl.pull(&reference);
    let log = proxy.log();
    let gets = requests_for(&log, &layer);
    assert_eq!(gets.len(), 2, "{log:#?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"), "{log:#?}");
    // The whole blob came again; osctl skipped what it had already.
    assert_eq!(gets[1].status, 200, "{log:#?}");
    assert_trees_equal(&expected_tree(&layers), &osctl.mounted_tree(&reference));
    osctl.fsck_clean();
}

#[test]
fn a_blob_cut_every_time_fails_after_bounded_resumptions() {
    let (registry, _, layer) = registry_with_image("resume/os:v1");
    let proxy = DropProxy::start(&registry.addr(), 100_000).unwrap();
    let reference = proxy.image_ref("resume/os:v1");
    let osctl = Osctl::new();
    let err = osctl.pull_fails(
        &[&reference],
        &[
            "transfer failed",
            &format!("interrupted {} times", MAX_BLOB_RESUMES + 1),
            &layer,
        ],
    );
    let log = proxy.log();
    let gets = requests_for(&log, &layer);
    assert_eq!(gets.len(), 1 + MAX_BLOB_RESUMES as usize, "{err}: {log:#?}");
    // Each resumption asked for the rest, from where the last one broke off.
    for (i, get) in gets.iter().enumerate().skip(1) {
        let expected = format!("bytes={}-", i * 100_000);
        assert_eq!(get.range.as_deref(), Some(expected.as_str()), "{log:#?}");
        assert_eq!(get.status, 206);
    }
    // Once the connection behaves, the same pull succeeds.
    proxy.set_after_bytes(None);
    osctl.pull(&reference);
}
