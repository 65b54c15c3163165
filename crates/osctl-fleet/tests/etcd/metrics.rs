//! Metrics of a small prepared fleet, read from a real etcd and scraped
//! over HTTP: exact sample lines.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use osctl_fleet::etcd::{Etcd, Grant, Slots};
use osctl_fleet::fleetlock::FleetLockOptions;
use osctl_fleet::keys;
use osctl_fleet::metrics::{self, fleet_metrics};
use osctl_fleet::model::{Failure, NodeState, Presence, RolloutPhase, Version};

use crate::fleetlock::{apply_with_status, lock, report, rollout, start_server};
use crate::{cluster, connect, http};

/// Two nodes (n1 present), rollout web (progressing: n1 updated, n2
/// failed) and rollout db (no status yet), a node and a FleetLock client in
/// web's slots, a FleetLock client in db's, one in the ungoverned group cache.
async fn prepare(etcd: &Etcd, addr: SocketAddr) {
    let now = Timestamp::now();
    for (node, present) in [("n1", true), ("n2", false)] {
        assert!(
            etcd.create(&keys::report(node), &report("web"), None, None)
                .await
                .unwrap()
        );
        if present {
            let presence = Presence {
                version: Version,
                boot_id: "b1".into(),
                since: now,
            };
            assert!(
                etcd.create(&keys::presence(node), &presence, None, None)
                    .await
                    .unwrap()
            );
        }
    }
    let nodes = BTreeMap::from([
        ("n1".to_string(), NodeState::Updated),
        (
            "n2".to_string(),
            NodeState::Failed {
                reason: "booted the old image".into(),
                at: now,
                boot_id: None,
            },
        ),
    ]);
    apply_with_status(
        etcd,
        &rollout("web", "web", "3", ""),
        RolloutPhase::Progressing,
        nodes,
        |s| {
            s.failures.push(Failure {
                node: "n2".into(),
                reason: "booted the old image".into(),
                at: now,
            })
        },
    )
    .await;
    osctl_fleet::admin::apply(etcd, &rollout("db", "db", "1", ""))
        .await
        .unwrap();
    assert!(matches!(
        Slots::new(etcd)
            .grant("web", "n1", 2, Duration::from_secs(600), None)
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));
    for (group, id) in [("web", "a"), ("db", "x"), ("cache", "y")] {
        assert_eq!(lock(addr, group, id).await.status, 200, "{group} {id}");
    }
}

/// The sample lines (no comments) of an exposition.
fn samples(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

const STATES: [&str; 10] = [
    "pending",
    "assigned",
    "staged",
    "rebooting",
    "verifying",
    "updated",
    "failed",
    "reverting",
    "reverted",
    "skipped",
];
const PHASES: [&str; 7] = [
    "progressing",
    "paused",
    "waiting",
    "halted",
    "rolling-back",
    "completed",
    "aborted",
];

/// What the prepared fleet must show; `failed`: the FleetLock locks are
/// past their deadline.
fn expected(failed: bool) -> Vec<String> {
    let mut want = vec![
        r#"osctl_fleet_nodes{state="present"} 1"#.to_string(),
        r#"osctl_fleet_nodes{state="absent"} 1"#.to_string(),
    ];
    for (rollout, counts) in [("db", [0; 10]), ("web", [0, 0, 0, 0, 0, 1, 1, 0, 0, 0])] {
        for (state, n) in STATES.iter().zip(counts) {
            want.push(format!(
                r#"osctl_fleet_rollout_nodes{{rollout="{rollout}",state="{state}"}} {n}"#
            ));
        }
    }
    for (rollout, current) in [("db", None), ("web", Some("progressing"))] {
        for phase in PHASES {
            want.push(format!(
                r#"osctl_fleet_rollout_phase{{rollout="{rollout}",phase="{phase}"}} {}"#,
                u8::from(current == Some(phase))
            ));
        }
    }
    let f = u8::from(failed);
    want.extend(
        [
            r#"osctl_fleet_rollout_failures{rollout="db"} 0"#,
            r#"osctl_fleet_rollout_failures{rollout="web"} 1"#,
            r#"osctl_fleet_slot_holders{pool="db"} 1"#,
            r#"osctl_fleet_slot_holders{pool="web"} 2"#,
        ]
        .map(str::to_string),
    );
    // One lock per group: y in cache's own pool, a and x in the pools of
    // the rollouts that govern web and db.
    for group in ["cache", "db", "web"] {
        want.push(format!(
            r#"osctl_fleet_fleetlock_holders{{group="{group}"}} 1"#
        ));
    }
    for group in ["cache", "db", "web"] {
        want.push(format!(
            r#"osctl_fleet_fleetlock_failures{{group="{group}"}} {f}"#
        ));
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_metrics_of_a_prepared_fleet() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;
    prepare(&etcd, addr).await;

    let now = SystemTime::now();
    let text = fleet_metrics(&etcd, now).await.unwrap();
    assert_eq!(samples(&text), expected(false));
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
    assert_eq!(
        types,
        [
            "# TYPE osctl_fleet_nodes gauge",
            "# TYPE osctl_fleet_rollout_nodes gauge",
            "# TYPE osctl_fleet_rollout_phase gauge",
            "# TYPE osctl_fleet_rollout_failures gauge",
            "# TYPE osctl_fleet_slot_holders gauge",
            "# TYPE osctl_fleet_fleetlock_holders gauge",
            "# TYPE osctl_fleet_fleetlock_failures gauge",
        ]
    );
    // An hour on, every FleetLock lock (15 min deadline) has failed; the
    // node's slot is not a FleetLock lock and does not count.
    let later = fleet_metrics(&etcd, now + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(samples(&later), expected(true));

    // Over HTTP: the FleetLock server's /metrics and the controller's.
    let listener = osctl_fleet::http::bind("127.0.0.1:0").await.unwrap();
    let controller_addr = listener.local_addr().unwrap();
    tokio::spawn(metrics::serve_fleet(etcd.clone(), listener));
    for at in [addr, controller_addr] {
        let resp = http(at, "GET", "/metrics", &[], "").await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(samples(&resp.body), expected(false));
    }
    let resp = http(controller_addr, "GET", "/other", &[], "").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.body, "no endpoint /other: only /metrics\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_fails_the_scrape() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let put = etcd
        .request_client()
        .put(etcd.key("rollouts/web/status"), "not json", None)
        .await;
    put.unwrap();
    osctl_fleet::admin::apply(&etcd, &rollout("web", "web", "1", ""))
        .await
        .unwrap();
    let err = fleet_metrics(&etcd, SystemTime::now()).await.unwrap_err();
    assert_eq!(
        osctl_fleet::agent::error_chain(&err),
        "etcd value at rollouts/web/status cannot be read: expected ident at line 1 column 2"
    );
}
