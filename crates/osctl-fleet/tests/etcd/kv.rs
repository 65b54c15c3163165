//! Typed records: compare-and-swap semantics and refusing unreadable values.

use std::time::Duration;

use osctl_fleet::etcd::{
    Compare, CompareOp, EtcdError, KeptLease, TxnOp, TxnOpResponse, Versioned,
};
use serde::{Deserialize, Serialize};

use crate::{cluster, connect};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    version: u32,
    phase: String,
}

fn report(phase: &str) -> Report {
    Report {
        version: 1,
        phase: phase.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_create_replace_delete_conflicts() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let key = "nodes/n1/report";

    assert!(etcd.get_json::<Report>(key).await.unwrap().is_none());
    assert!(etcd.create(key, &report("idle"), None, None).await.unwrap());
    // A second create of an existing key is a conflict, and changes nothing.
    assert!(
        !etcd
            .create(key, &report("other"), None, None)
            .await
            .unwrap()
    );
    let v1: Versioned<Report> = etcd.get_json(key).await.unwrap().unwrap();
    assert_eq!(v1.key, key);
    assert_eq!(v1.value, report("idle"));
    assert_eq!(v1.create_revision, v1.mod_revision);

    assert!(
        etcd.replace(key, &report("downloading"), v1.mod_revision, None)
            .await
            .unwrap()
    );
    // The revision read before that replace is stale now.
    assert!(
        !etcd
            .replace(key, &report("stale"), v1.mod_revision, None)
            .await
            .unwrap()
    );
    let v2: Versioned<Report> = etcd.get_json(key).await.unwrap().unwrap();
    assert_eq!(v2.value, report("downloading"));
    assert_eq!(v2.create_revision, v1.create_revision);
    assert!(v2.mod_revision > v1.mod_revision);

    assert!(!etcd.delete_if(key, v1.mod_revision, None).await.unwrap());
    assert!(etcd.get_json::<Report>(key).await.unwrap().is_some());
    assert!(etcd.delete_if(key, v2.mod_revision, None).await.unwrap());
    assert!(etcd.get_json::<Report>(key).await.unwrap().is_none());
    // Replacing a key that is gone fails like any stale revision.
    assert!(
        !etcd
            .replace(key, &report("gone"), v2.mod_revision, None)
            .await
            .unwrap()
    );

    let listing = etcd.list_json::<Report>("nodes/").await.unwrap();
    assert!(listing.items.is_empty());
    for n in ["a", "b"] {
        assert!(
            etcd.create(&format!("nodes/{n}/report"), &report(n), None, None)
                .await
                .unwrap()
        );
    }
    let listing = etcd.list_json::<Report>("nodes/").await.unwrap();
    let got: Vec<(&str, &str)> = listing
        .items
        .iter()
        .map(|v| (v.key.as_str(), v.value.phase.as_str()))
        .collect();
    assert_eq!(got, [("nodes/a/report", "a"), ("nodes/b/report", "b")]);
    assert!(listing.revision >= listing.items[1].mod_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_value_is_an_error_naming_the_key() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let cases: &[(&str, &[u8])] = &[
        ("nodes/bad/report", b"not json"),
        ("nodes/trunc/report", b"{\"version\":1,\"phase\":"),
        (
            "nodes/wrongtype/report",
            b"{\"version\":\"one\",\"phase\":\"idle\"}",
        ),
    ];
    for (key, bytes) in cases {
        let mut raw = etcd.request_client();
        raw.put(etcd.key(key), *bytes, None).await.unwrap();
        let err = etcd.get_json::<Report>(key).await.unwrap_err();
        assert!(matches!(err, EtcdError::Decode { .. }), "{key}: {err:?}");
        assert_eq!(
            err.to_string(),
            format!("etcd value at {key} cannot be read")
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "{key}: the JSON error is kept"
        );
        let err = etcd.list_json::<Report>("nodes/").await.unwrap_err();
        assert!(matches!(err, EtcdError::Decode { .. }), "{key}: {err:?}");
        raw.delete(etcd.key(key), None).await.unwrap();
    }
    // The raw listing still shows such values, for per-record judgement.
    let mut raw = etcd.request_client();
    raw.put(etcd.key("nodes/bad/report"), "not json", None)
        .await
        .unwrap();
    let listing = etcd.list_raw("nodes/").await.unwrap();
    assert_eq!(listing.items.len(), 1);
    assert_eq!(listing.items[0].value, b"not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_moves_to_a_new_lease() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let key = "nodes/n1/presence";
    let old = KeptLease::grant(&etcd, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        etcd.create(key, &"boot-1", Some(old.id()), None)
            .await
            .unwrap()
    );
    // The agent restarts: a new lease, while the old key still stands.
    let new = KeptLease::grant(&etcd, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        !etcd
            .create(key, &"boot-2", Some(new.id()), None)
            .await
            .unwrap()
    );
    let cur = etcd.get_json::<String>(key).await.unwrap().unwrap();
    assert_eq!(cur.lease, old.id());
    assert!(
        etcd.replace_leased(key, &"boot-2", cur.mod_revision, Some(new.id()), None)
            .await
            .unwrap()
    );
    let cur = etcd.get_json::<String>(key).await.unwrap().unwrap();
    assert_eq!((cur.value.as_str(), cur.lease), ("boot-2", new.id()));
    // The old lease going no longer takes the key with it; the new one does.
    old.revoke().await.unwrap();
    assert!(etcd.get_json::<String>(key).await.unwrap().is_some());
    new.revoke().await.unwrap();
    assert!(etcd.get_json::<String>(key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_txn_reports_outcome_and_responses() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    assert!(etcd.create("a", &1, None, None).await.unwrap());
    let a = etcd.get_json::<i32>("a").await.unwrap().unwrap();
    // Compare a's revision, move it to b, read b back in the same transaction.
    let txn = |rev: i64| {
        (
            vec![Compare::mod_revision(etcd.key("a"), CompareOp::Equal, rev)],
            vec![
                TxnOp::delete(etcd.key("a"), None),
                TxnOp::put(etcd.key("b"), "1", None),
                TxnOp::get(etcd.key("b"), None),
            ],
        )
    };
    let (cmp, ops) = txn(a.mod_revision);
    let out = etcd.txn("a to b", cmp, ops, None).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.responses.len(), 3);
    let TxnOpResponse::Get(get) = &out.responses[2] else {
        panic!("third response is not the read: {:?}", out.responses[2]);
    };
    assert_eq!(get.kvs()[0].value(), b"1");
    assert_eq!(get.kvs()[0].mod_revision(), out.revision);
    // The same transaction again: a is gone, the compare fails, nothing runs.
    let (cmp, ops) = txn(a.mod_revision);
    let out = etcd.txn("a to b", cmp, ops, None).await.unwrap();
    assert!(!out.succeeded);
    assert!(out.responses.is_empty());
    assert_eq!(etcd.get_json::<i32>("b").await.unwrap().unwrap().value, 1);
}
