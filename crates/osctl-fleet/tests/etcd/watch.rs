//! PrefixWatch: resuming on another member without losing or repeating
//! events, and resyncing after compaction.

use std::time::Duration;

use osctl_fleet::etcd::{PrefixWatch, WatchEvent};

use crate::{Fault, cluster, connect, within};

/// Keys written by the writer; the watch must see each exactly once, in order.
const KEYS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_its_member_is_killed() {
    watch_survives(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_its_member_is_stopped() {
    watch_survives(Fault::Pause).await;
}

/// How many keys the watch has seen when each member in turn (0, 1, 2)
/// suffers the fault. The writer does not write a key past one of these
/// before that fault has happened: keys are written after every fault, so
/// a watch whose member failed can only see them on a reopened stream.
/// (Unchecked, a writer ahead of the watch had put every key before the
/// last fault: if that member carried the watch, its buffered events were
/// all the watch needed, and it never noticed the loss.)
const FAULT_AT: [usize; 3] = [KEYS / 4, KEYS / 4 + KEYS / 5, KEYS / 4 + 2 * KEYS / 5];

/// Puts numbered keys while every member in turn suffers `fault`; the watch
/// must yield each key exactly once, in order.
async fn watch_survives(fault: Fault) {
    let mut c = cluster(3);
    let etcd = connect(&c).await;
    let mut watch = PrefixWatch::start(&etcd, "w/", None).await.unwrap();

    // The writer creates w/0000, w/0001, ... with create (compare-and-swap),
    // retrying on errors: a create whose answer was lost but which applied
    // is not applied twice, so each key gets exactly one put event.
    let (faults_done, mut faults_seen) = tokio::sync::watch::channel(0usize);
    let writer_etcd = etcd.clone();
    let writer = tokio::spawn(async move {
        for i in 0..KEYS {
            let due = FAULT_AT.iter().filter(|&&at| at <= i).count();
            faults_seen
                .wait_for(|&done| done >= due)
                .await
                .expect("the watching side ended before its faults");
            let key = format!("w/{i:04}");
            loop {
                match writer_etcd.create(&key, &i, None, None).await {
                    Ok(_) => break,
                    Err(e) => {
                        eprintln!("writer: {key}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // Every member in turn (the previous one restored first), so whichever
    // member carries the watch stream fails at some point.
    let mut seen: Vec<String> = Vec::new();
    let mut victim = 0;
    while seen.len() < KEYS {
        let ev = within("next watch event", Duration::from_secs(30), watch.next())
            .await
            .unwrap();
        match ev {
            WatchEvent::Put { kv, prev } => {
                assert!(
                    prev.is_none(),
                    "{}: created once, so no previous value",
                    kv.key
                );
                assert_eq!(kv.value, (seen.len()).to_string().as_bytes(), "{}", kv.key);
                seen.push(kv.key);
            }
            other => panic!("unexpected event {other:?}"),
        }
        if FAULT_AT.get(victim) == Some(&seen.len()) {
            if victim > 0 {
                fault.undo(&mut c, victim - 1);
            }
            fault.inflict(&mut c, victim);
            victim += 1;
            faults_done.send_replace(victim);
        }
    }
    writer.await.unwrap();
    let expected: Vec<String> = (0..KEYS).map(|i| format!("w/{i:04}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(victim, 3, "every member suffered the fault once");
    assert!(
        watch.reopened() >= 1,
        "the watch never lost its member: the test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_resyncs() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    assert!(etcd.create("r/a", &1, None, None).await.unwrap());
    let first = etcd
        .get_json::<i32>("r/a")
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    assert!(etcd.create("r/b", &2, None, None).await.unwrap());
    let a = etcd.get_json::<i32>("r/a").await.unwrap().unwrap();
    assert!(etcd.delete_if("r/a", a.mod_revision, None).await.unwrap());
    let mut raw = etcd.request_client();
    let now = raw
        .get(etcd.key("r/"), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(now, None).await.unwrap();

    let mut watch = PrefixWatch::start(&etcd, "r/", Some(first)).await.unwrap();
    let ev = within("resync", Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    let WatchEvent::Resync(listing) = ev else {
        panic!("expected a resync, got {ev:?}");
    };
    let keys: Vec<&str> = listing.items.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["r/b"]);
    assert_eq!(watch.next_revision(), listing.revision + 1);
    // After the resync the watch goes on from the listing.
    assert!(etcd.create("r/c", &3, None, None).await.unwrap());
    let ev = within("event after resync", Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    let WatchEvent::Put { kv, .. } = ev else {
        panic!("expected the put of r/c, got {ev:?}");
    };
    assert_eq!(kv.key, "r/c");
    assert_eq!(kv.value, b"3");
}
