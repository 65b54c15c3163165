//! Reboot slots: the limit under contention, expiry, release, quorum.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use osctl_fleet::etcd::{
    Etcd, EtcdError, FLEETLOCK_ROOT, Grant, Holder, PoolRead, PrefixWatch, Slots, WatchEvent,
};

use crate::{PREFIX, blocking, cluster, connect, within};

const LIMIT: usize = 3;
const CONTENDERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_contenders_never_exceed_three_slots() {
    let c = cluster(3);
    let etcd = connect(&c).await;
    let mut watch = PrefixWatch::start(&etcd, "slots/web/", None).await.unwrap();

    let mut tasks = Vec::new();
    for n in 0..CONTENDERS {
        let slots = Slots::new(&etcd);
        tasks.push(tokio::spawn(async move {
            let holder = format!("node-{n:02}");
            loop {
                match slots
                    .grant("web", &holder, LIMIT, Duration::from_secs(60), None)
                    .await
                {
                    Ok(Grant::Granted { .. }) => break,
                    Ok(Grant::Full { holders }) => {
                        // Read at one revision: exactly the limit, never more.
                        assert_eq!(holders.len(), LIMIT, "{holders:?}");
                        assert!(holders.iter().all(|h| h.name != holder));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Grant::AlreadyHeld { .. }) => panic!("{holder}: held a slot it never got"),
                    Ok(Grant::Moved) => panic!("{holder}: moved, but nothing else was counted"),
                    Err(e) => panic!("{holder}: {e}"),
                }
            }
            // "Reboot", then give the slot back.
            tokio::time::sleep(Duration::from_millis(30)).await;
            slots.release("web", &holder, None).await.unwrap();
            holder
        }));
    }

    // Count holders from the watch: every put of a new holder key and every
    // delete, in revision order.
    let mut held = BTreeSet::new();
    let mut ever = BTreeSet::new();
    let mut max = 0;
    while ever.len() < CONTENDERS || !held.is_empty() {
        let ev = within("slot events", Duration::from_secs(60), watch.next())
            .await
            .unwrap();
        match ev {
            WatchEvent::Put { kv, prev } => {
                assert!(prev.is_none(), "{} written twice", kv.key);
                assert!(held.insert(kv.key.clone()));
                ever.insert(kv.key);
                max = max.max(held.len());
                assert!(held.len() <= LIMIT, "more than {LIMIT} holders: {held:?}");
            }
            WatchEvent::Delete { key, .. } => assert!(held.remove(&key), "{key}"),
            WatchEvent::Resync(l) => panic!("unexpected resync at {}", l.revision),
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ever.len(), CONTENDERS);
    // The per-event check above is the limit; this says it was exercised.
    assert!(max > 1, "contenders never held slots at the same time");
    assert!(Slots::new(&etcd).holders("web").await.unwrap().is_empty());
}

/// The slot that expires: long enough for the checks made while it is
/// held (a stall of its whole length on a loaded machine would let it
/// expire under them), short enough not to slow the test much.
const EXPIRING_SLOT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_expires_after_its_deadline() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let slots = Slots::new(&etcd);
    let mut watch = PrefixWatch::start(&etcd, "slots/web/", None).await.unwrap();
    let before = SystemTime::now();
    let Grant::Granted { deadline } = slots
        .grant("web", "n1", 1, EXPIRING_SLOT, None)
        .await
        .unwrap()
    else {
        panic!("first grant not granted");
    };
    let holders = slots.holders("web").await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].name, "n1");
    assert_eq!(holders[0].deadline, deadline_ms(deadline));
    assert_eq!(
        holders[0]
            .deadline
            .duration_since(holders[0].granted_at)
            .unwrap(),
        EXPIRING_SLOT
    );
    assert!(holders[0].granted_at >= before - Duration::from_secs(1));
    assert_ne!(holders[0].lease, 0);
    // Asking again is harmless and does not extend the deadline.
    assert_eq!(
        slots
            .grant("web", "n1", 1, Duration::from_secs(60), None)
            .await
            .unwrap(),
        Grant::AlreadyHeld {
            deadline: holders[0].deadline
        }
    );
    let Grant::Full { holders: full } = slots
        .grant("web", "n2", 1, Duration::from_secs(60), None)
        .await
        .unwrap()
    else {
        panic!("second holder granted past the limit");
    };
    assert_eq!(full, holders);

    // Nobody keeps the slot's lease alive: the key vanishes by itself.
    loop {
        let ev = within("slot expiry", Duration::from_secs(15), watch.next())
            .await
            .unwrap();
        if let WatchEvent::Delete { key, .. } = ev {
            assert_eq!(key, "slots/web/n1");
            break;
        }
    }
    assert!(SystemTime::now() >= holders[0].deadline - Duration::from_secs(1));
    assert!(slots.holders("web").await.unwrap().is_empty());
    let err = slots.release("web", "n1", None).await.unwrap_err();
    assert!(matches!(err, EtcdError::NotHeld { .. }), "{err:?}");
    assert_eq!(err.to_string(), "n1 holds no reboot slot in pool web");
    // The freed slot can be granted again.
    assert!(matches!(
        slots
            .grant("web", "n2", 1, Duration::from_secs(60), None)
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));
}

/// The deadline as stored (millisecond precision).
fn deadline_ms(t: SystemTime) -> SystemTime {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_names_are_checked() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let slots = Slots::new(&etcd);
    let err = slots.release("web", "n9", None).await.unwrap_err();
    assert_eq!(err.to_string(), "n9 holds no reboot slot in pool web");

    let cases = [
        ("", "n1", "invalid pool \"\": must not be empty"),
        ("a/b", "n1", "invalid pool \"a/b\": must not contain '/'"),
        ("web", "", "invalid holder \"\": must not be empty"),
        ("web", "x/y", "invalid holder \"x/y\": must not contain '/'"),
        (
            "web",
            "n\n1",
            "invalid holder \"n\\n1\": must not contain control characters",
        ),
    ];
    for (pool, holder, msg) in cases {
        let err = slots
            .grant(pool, holder, 1, Duration::from_secs(5), None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), msg, "grant {pool:?} {holder:?}");
        let err = slots.release(pool, holder, None).await.unwrap_err();
        assert_eq!(err.to_string(), msg, "release {pool:?} {holder:?}");
    }

    // A holder record that does not parse makes the pool unreadable, by name.
    etcd.request_client()
        .put(etcd.key("slots/web/n5"), "{}", None)
        .await
        .unwrap();
    let err = slots
        .grant("web", "n1", 3, Duration::from_secs(5), None)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "etcd value at slots/web/n5 cannot be read");
}

/// How long a request may wait for a majority in the quorum tests: short,
/// so that one without it fails fast.
const QUORUM_TIMEOUT: Duration = Duration::from_secs(2);

/// A three-member cluster and a client of all three with [`QUORUM_TIMEOUT`].
async fn three_members() -> (osctl_testutil::EtcdCluster, Etcd) {
    let c = cluster(3);
    let etcd = Etcd::connect_with_timeout(&c.endpoints(), PREFIX, QUORUM_TIMEOUT)
        .await
        .unwrap();
    (c, etcd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_grant_needs_a_quorum() {
    let (mut c, etcd) = three_members().await;
    let slots = Slots::new(&etcd);
    let leader = blocking(|| c.leader());
    let paused: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Stop the two followers: the leader alone is a minority.
    for &i in &paused {
        blocking(|| c.pause(i));
    }
    let err = within(
        "grant without quorum",
        Duration::from_secs(15),
        slots.grant("web", "n1", 1, Duration::from_secs(60), None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, EtcdError::Request { .. } | EtcdError::Timeout { .. }),
        "{err:?}"
    );
    for &i in &paused {
        blocking(|| c.resume(i));
    }
    // Once the quorum is back the grant succeeds (the first attempts may
    // still meet an election).
    let granted = within("grant after resume", Duration::from_secs(30), async {
        loop {
            match slots
                .grant("web", "n1", 1, Duration::from_secs(60), None)
                .await
            {
                Ok(g) => break g,
                Err(e) => {
                    eprintln!("grant after resume: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await;
    // AlreadyHeld is right too if a grant from the minority time applied
    // after all (an error on a write means "unknown", see EtcdError::Request).
    assert!(
        matches!(granted, Grant::Granted { .. } | Grant::AlreadyHeld { .. }),
        "{granted:?}"
    );
    // Exactly one holder: no half-applied grant from the minority time.
    let holders = slots.holders("web").await.unwrap();
    assert_eq!(
        holders.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["n1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_granted_in_order_up_to_the_limit_and_never_past_it() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let slots = Slots::new(&etcd);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let holders = |slots: Slots| async move {
        let mut h: Vec<String> = slots
            .holders("web")
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        h.sort();
        h
    };
    let deadline = Duration::from_secs(60);
    // Five want a slot, three fit: the first three, in the order asked.
    let got = slots
        .grant_many(
            "web",
            &names(&["n4", "n1", "n3", "n2", "n5"]),
            LIMIT,
            deadline,
            None,
        )
        .await
        .unwrap();
    assert_eq!(got, names(&["n4", "n1", "n3"]));
    assert_eq!(holders(slots.clone()).await, names(&["n1", "n3", "n4"]));
    // Full: those holding are reported, nobody else gets one.
    let got = slots
        .grant_many("web", &names(&["n1", "n2"]), LIMIT, deadline, None)
        .await
        .unwrap();
    assert_eq!(got, names(&["n1"]));
    // One released: the next one fits, and only one.
    slots.release("web", "n4", None).await.unwrap();
    let got = slots
        .grant_many("web", &names(&["n2", "n5"]), LIMIT, deadline, None)
        .await
        .unwrap();
    assert_eq!(got, names(&["n2"]));
    assert_eq!(holders(slots.clone()).await, names(&["n1", "n2", "n3"]));
    // A batch racing single grants never passes the limit either.
    slots.release("web", "n1", None).await.unwrap();
    slots.release("web", "n2", None).await.unwrap();
    let abc = names(&["a", "b", "c"]);
    let batch = slots.grant_many("web", &abc, LIMIT, deadline, None);
    let single = slots.grant("web", "d", LIMIT, deadline, None);
    let (batch, single) = tokio::join!(batch, single);
    let granted =
        batch.unwrap().len() + usize::from(matches!(single.unwrap(), Grant::Granted { .. }));
    assert_eq!(granted, 2, "two slots were free");
    assert_eq!(slots.holders("web").await.unwrap().len(), LIMIT);
    // Names are checked like grant's.
    let err = slots
        .grant_many("web", &names(&["ok", "a/b"]), LIMIT, deadline, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid holder \"a/b\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_that_depends_on_the_holders_is_computed_from_the_holders_compared() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let slots = Slots::new(&etcd);
    let deadline = Duration::from_secs(60);
    // The FleetLock server's rule, shrunk: node n1 is down (1 of 2) unless
    // it holds a slot, in which case it is counted as a holder.
    let limit = |holders: &[osctl_fleet::etcd::Holder]| {
        let n1_down_without_slot = !holders.iter().any(|h| h.name == "n1");
        2 - usize::from(n1_down_without_slot)
    };
    assert!(matches!(
        slots.grant("web", "n1", 2, deadline, None).await.unwrap(),
        Grant::Granted { .. }
    ));
    // n1 holds: the limit is 2, one is free.
    assert!(matches!(
        slots
            .grant_durable_within("web", "a", &limit, deadline, &[])
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));
    // n1's slot goes (it expired, or was released) while a holds: n1 is
    // down without a slot, the limit is 1, and a alone fills it.
    slots.release("web", "n1", None).await.unwrap();
    let Grant::Full { holders } = slots
        .grant_durable_within("web", "b", &limit, deadline, &[])
        .await
        .unwrap()
    else {
        panic!("b was granted past the limit");
    };
    assert_eq!(
        holders.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

/// One limit over two pools (a FleetLock group's own pool and a rollout's):
/// grants on both sides, each counting the other pool's holders, never hold
/// more than the limit together — the grant that counted a pool that
/// changed since is told so and counts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_that_count_each_others_pools_never_pass_their_shared_limit() {
    const SHARED_LIMIT: usize = 2;
    const PER_SIDE: usize = 12;
    let c = cluster(1);
    let etcd = connect(&c).await;
    let own = Slots::with_root(&etcd, FLEETLOCK_ROOT);
    let rollout = Slots::new(&etcd);
    // One watch over both roots: its events come in revision order.
    let mut watch = PrefixWatch::start(&etcd, "", None).await.unwrap();
    let is_holder = |key: &str| key.starts_with("fleetlock/web/") || key.starts_with("slots/r1/");
    let mut tasks = Vec::new();
    for n in 0..2 * PER_SIDE {
        // Even ones grant in the group's own pool, odd ones in the rollout's.
        let (here, there, pool_here, pool_there) = if n % 2 == 0 {
            (own.clone(), rollout.clone(), "web", "r1")
        } else {
            (rollout.clone(), own.clone(), "r1", "web")
        };
        tasks.push(tokio::spawn(async move {
            let holder = format!("m{n:02}");
            let mut moved = 0;
            loop {
                let other = there.read_pool(pool_there).await.unwrap();
                let mine = here.read_pool(pool_here).await.unwrap();
                let elsewhere = other.holders.len();
                let limit = |_: &[Holder]| SHARED_LIMIT.saturating_sub(elsewhere);
                let counted: [PoolRead; 2] = [other, mine];
                match here
                    .grant_durable_within(
                        pool_here,
                        &holder,
                        &limit,
                        Duration::from_secs(60),
                        &counted,
                    )
                    .await
                    .unwrap()
                {
                    Grant::Granted { .. } => break,
                    Grant::Moved => moved += 1,
                    Grant::Full { .. } => tokio::time::sleep(Duration::from_millis(5)).await,
                    Grant::AlreadyHeld { .. } => panic!("{holder}: held a slot it never got"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            here.release(pool_here, &holder, None).await.unwrap();
            moved
        }));
    }
    let mut held = BTreeSet::new();
    let mut granted = 0;
    while granted < 2 * PER_SIDE || !held.is_empty() {
        let ev = within("slot events", Duration::from_secs(60), watch.next())
            .await
            .unwrap();
        match ev {
            WatchEvent::Put { kv, .. } if is_holder(&kv.key) => {
                granted += 1;
                assert!(held.insert(kv.key.clone()), "{} granted twice", kv.key);
                assert!(
                    held.len() <= SHARED_LIMIT,
                    "more than {SHARED_LIMIT} holders over both pools: {held:?}"
                );
            }
            WatchEvent::Delete { key, .. } if is_holder(&key) => {
                assert!(held.remove(&key), "{key}");
            }
            WatchEvent::Put { .. } | WatchEvent::Delete { .. } => {}
            WatchEvent::Resync(l) => panic!("unexpected resync at {}", l.revision),
        }
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await.unwrap();
    }
    // Not a count to assert on (it depends on scheduling), but a run where
    // nobody was ever told "moved" did not test the rule.
    eprintln!("{moved} grants counted again after a pool they counted moved");
}

/// The rule behind the test above, step by step: a grant that counted a
/// pool is refused with `Moved` once that pool changed, writes nothing,
/// and bumps the counted pool's guard when it does commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_moved_when_a_pool_it_counted_changed_since() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let own = Slots::with_root(&etcd, FLEETLOCK_ROOT);
    let rollout = Slots::new(&etcd);
    let deadline = Duration::from_secs(60);
    let any = |_: &[Holder]| 5;
    let stale = own.read_pool("web").await.unwrap();
    assert!(matches!(
        own.grant_durable("web", "zincati-1", 5, deadline, None)
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));
    assert!(matches!(
        rollout
            .grant_durable_within("r1", "n1", &any, deadline, &[stale])
            .await
            .unwrap(),
        Grant::Moved
    ));
    assert!(
        rollout.holders("r1").await.unwrap().is_empty(),
        "a moved grant wrote"
    );
    // Counted afresh, it commits, and moves the pool it counted: a grant
    // there that counted this pool before it is refused in turn.
    let before = rollout.read_pool("r1").await.unwrap();
    let fresh = own.read_pool("web").await.unwrap();
    assert!(matches!(
        rollout
            .grant_durable_within("r1", "n1", &any, deadline, std::slice::from_ref(&fresh))
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));
    assert!(matches!(
        own.grant_durable_within("web", "zincati-2", &any, deadline, &[before, fresh])
            .await
            .unwrap(),
        Grant::Moved
    ));
    // A batch's next chunk compares what its own last chunk wrote, not a
    // move of someone else's.
    let mut counted = vec![own.read_pool("web").await.unwrap()];
    for chunk in [["n2", "n3"], ["n4", "n5"]] {
        let requests: Vec<(String, Option<String>)> =
            chunk.iter().map(|n| (n.to_string(), None)).collect();
        let got = rollout
            .grant_many_in_boots("r1", &requests, 10, deadline, &mut counted, None)
            .await
            .unwrap();
        assert_eq!(got, Some(chunk.map(String::from).to_vec()), "{chunk:?}");
    }
    assert_eq!(rollout.holders("r1").await.unwrap().len(), 5);
}

/// What an agent asks before it reboots: does its slot exist, by consensus.
/// It writes nothing either way (the revision does not move), and a member
/// cut off from the majority cannot answer it — from the first ask on,
/// unlike a linearizable read, which etcd 3.4.23 was seen answering once
/// right after such a cut (see `Etcd::exists_by_consensus`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_confirmed_by_consensus_needs_the_majority_and_writes_nothing() {
    let (mut c, etcd) = three_members().await;
    let slots = Slots::new(&etcd);
    assert!(matches!(
        slots
            .grant("web", "n1", 1, Duration::from_secs(60), None)
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));
    let revision = || async { etcd.list_raw("slots/").await.unwrap().revision };
    let before = revision().await;
    assert!(etcd.exists_by_consensus("slots/web/n1").await.unwrap());
    assert!(!etcd.exists_by_consensus("slots/web/n2").await.unwrap());
    assert_eq!(revision().await, before, "a check wrote something");
    assert!(slots.holders("web").await.unwrap().len() == 1);

    // Two members stop; the third, alone, cannot confirm anything.
    let leader = blocking(|| c.leader());
    let paused = [leader, (leader + 1) % 3];
    let alone = (leader + 2) % 3;
    for &i in &paused {
        blocking(|| c.pause(i));
    }
    let minority =
        Etcd::connect_with_timeout(&[c.endpoints()[alone].clone()], PREFIX, QUORUM_TIMEOUT)
            .await
            .unwrap();
    for attempt in 0..3 {
        let answer = within(
            "a check without a majority",
            Duration::from_secs(15),
            minority.exists_by_consensus("slots/web/n1"),
        )
        .await;
        assert!(
            matches!(
                answer,
                Err(EtcdError::Request { .. } | EtcdError::Timeout { .. })
            ),
            "attempt {attempt}: answered without a majority: {answer:?}"
        );
    }
    for &i in &paused {
        blocking(|| c.resume(i));
    }
}
