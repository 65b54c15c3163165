//! Leadership: failover to the next candidate, the fence, loss detection.

use std::time::Duration;

use osctl_fleet::etcd::{CONTROLLER_ELECTION, EtcdError, Grant, Leadership, Slots};

use crate::{cluster, connect, within};

const TTL: Duration = Duration::from_secs(2);
const STATUS: &str = "rollouts/web/status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_second_candidate_and_deposed_leader_is_fenced() {
    let c = cluster(3);
    let etcd = connect(&c).await;
    let current = || Leadership::current(&etcd, CONTROLLER_ELECTION);
    assert_eq!(current().await.unwrap(), None);
    let a = Leadership::campaign(&etcd, CONTROLLER_ELECTION, "controller-a", TTL)
        .await
        .unwrap();
    assert_eq!(current().await.unwrap().as_deref(), Some("controller-a"));
    let fence_a = a.fence();
    assert!(
        fence_a.key().starts_with("/test/fleet/controller/leader/"),
        "{fence_a:?}"
    );
    assert!(
        etcd.create(STATUS, &"by a", None, Some(&fence_a))
            .await
            .unwrap()
    );

    let etcd_b = etcd.clone();
    let b = tokio::spawn(async move {
        Leadership::campaign(&etcd_b, CONTROLLER_ELECTION, "controller-b", TTL).await
    });
    // B waits while A leads.
    tokio::time::sleep(TTL).await;
    assert!(!b.is_finished(), "B was elected while A leads");
    // B's key is queued behind A's: the leader is still A.
    assert_eq!(current().await.unwrap().as_deref(), Some("controller-a"));

    // A's process goes away without resigning: its keepalives stop and the
    // lease runs out after its TTL.
    drop(a);
    let b = within(
        "B elected after A's lease ran out",
        Duration::from_secs(15),
        b,
    )
    .await
    .unwrap()
    .unwrap();
    let fence_b = b.fence();
    assert_eq!(current().await.unwrap().as_deref(), Some("controller-b"));
    assert_ne!(fence_a, fence_b);
    assert!(fence_b.created() > fence_a.created());

    // A's writes, fenced with its old leadership, are refused.
    let cur = etcd.get_json::<String>(STATUS).await.unwrap().unwrap();
    let err = etcd
        .replace(STATUS, &"by a, deposed", cur.mod_revision, Some(&fence_a))
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Fenced { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "etcd replace of {STATUS} refused: leadership {} (created at revision {}) is gone",
            fence_a.key(),
            fence_a.created()
        )
    );
    assert_eq!(
        etcd.get_json::<String>(STATUS)
            .await
            .unwrap()
            .unwrap()
            .value,
        "by a"
    );
    // B's succeed; B's stale-revision write is a plain conflict, not fenced.
    assert!(
        etcd.replace(STATUS, &"by b", cur.mod_revision, Some(&fence_b))
            .await
            .unwrap()
    );
    assert!(
        !etcd
            .replace(STATUS, &"by b again", cur.mod_revision, Some(&fence_b))
            .await
            .unwrap()
    );

    // Slot grants carry the fence too: the deposed leader hands out nothing.
    let slots = Slots::new(&etcd);
    let err = slots
        .grant("web", "n1", 1, Duration::from_secs(60), Some(&fence_a))
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Fenced { .. }), "{err:?}");
    assert!(slots.holders("web").await.unwrap().is_empty());
    let granted = slots
        .grant("web", "n1", 1, Duration::from_secs(60), Some(&fence_b))
        .await
        .unwrap();
    assert!(matches!(granted, Grant::Granted { .. }), "{granted:?}");
    let err = slots
        .release("web", "n1", Some(&fence_a))
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Fenced { .. }), "{err:?}");
    slots.release("web", "n1", Some(&fence_b)).await.unwrap();
    b.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_elects_the_next_and_loss_is_detected() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let a = Leadership::campaign(&etcd, CONTROLLER_ELECTION, "a", TTL)
        .await
        .unwrap();
    let etcd_b = etcd.clone();
    let b =
        tokio::spawn(
            async move { Leadership::campaign(&etcd_b, CONTROLLER_ELECTION, "b", TTL).await },
        );
    a.resign().await.unwrap();
    let b = within("B elected after A resigned", Duration::from_secs(10), b)
        .await
        .unwrap()
        .unwrap();
    assert!(!b.is_lost());
    // Someone deletes B's leader key (an operator, a compaction of a bad
    // state): B must notice, and its fence no longer holds.
    let fence = b.fence();
    etcd.request_client()
        .delete(fence.key(), None)
        .await
        .unwrap();
    within("B notices the loss", Duration::from_secs(10), b.lost()).await;
    assert!(b.is_lost());
    let err = etcd
        .create("rollouts/x/spec", &1, None, Some(&fence))
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Fenced { .. }), "{err:?}");
    assert!(
        etcd.get_json::<i32>("rollouts/x/spec")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_election_names_are_refused() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    for name in ["", "controller/leader/"] {
        let err = Leadership::campaign(&etcd, name, "a", TTL)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid election {name:?}: must be a non-empty key without a trailing '/'")
        );
    }
}
