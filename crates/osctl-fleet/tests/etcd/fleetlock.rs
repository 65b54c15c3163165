//! The FleetLock server over real HTTP on 127.0.0.1, called the way
//! Zincati's client calls it, against a real etcd.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use jiff::Timestamp;
use osctl_fleet::admin;
use osctl_fleet::etcd::{Etcd, Grant, Slots};
use osctl_fleet::fleetlock::{self, FleetLock, FleetLockOptions};
use osctl_fleet::keys;
use osctl_fleet::model::{
    Health, HealthState, ImageState, NodePhase, NodeReport, NodeState, Presence, RolloutPhase,
    RolloutStatus, Version,
};
use osctl_fleet::spec::Rollout;
use osctl_fleet::window;

use crate::{HttpAnswer, cluster, connect, http, within};

/// Starts a FleetLock server on a free loopback port.
pub async fn start_server(etcd: &Etcd, options: FleetLockOptions) -> SocketAddr {
    let listener = osctl_fleet::http::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = FleetLock::new(etcd.clone(), options);
    tokio::spawn(async move {
        if let Err(e) = fleetlock::serve(server, listener).await {
            panic!("fleetlock server: {e}");
        }
    });
    addr
}

/// A FleetLock answer: status, and the error's kind and value (empty on 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub kind: String,
    pub value: String,
}

/// POSTs `body` to `path` as Zincati does (with the protocol header unless
/// `header` is `None`).
pub async fn post(addr: SocketAddr, path: &str, header: Option<&str>, body: &str) -> Answer {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(h) = header {
        headers.push(("fleet-lock-protocol", h));
    }
    answer(http(addr, "POST", path, &headers, body).await)
}

fn answer(resp: HttpAnswer) -> Answer {
    let status = resp.status;
    let text = resp.body;
    if status == 200 {
        assert_eq!(text, "", "a success has an empty body");
        return Answer {
            status,
            kind: String::new(),
            value: String::new(),
        };
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    Answer {
        status,
        kind: json["kind"].as_str().unwrap().to_string(),
        value: json["value"].as_str().unwrap().to_string(),
    }
}

fn params(group: &str, id: &str) -> String {
    serde_json::json!({"client_params": {"id": id, "group": group}}).to_string()
}

pub async fn lock(addr: SocketAddr, group: &str, id: &str) -> Answer {
    post(
        addr,
        fleetlock::PRE_REBOOT,
        Some("true"),
        &params(group, id),
    )
    .await
}

pub async fn unlock(addr: SocketAddr, group: &str, id: &str) -> Answer {
    post(
        addr,
        fleetlock::STEADY_STATE,
        Some("true"),
        &params(group, id),
    )
    .await
}

fn ok() -> Answer {
    Answer {
        status: 200,
        kind: String::new(),
        value: String::new(),
    }
}

#[track_caller]
fn assert_refused(a: &Answer, status: u16, kind: &str, value_has: &[&str]) {
    assert_eq!((a.status, a.kind.as_str()), (status, kind), "{a:?}");
    for part in value_has {
        assert!(a.value.contains(part), "{:?} lacks {part:?}", a.value);
    }
}

/// A rollout of pool `pool`, `maxUnavailable` as given, and windows (YAML
/// list items, indented for `windows:`) if any.
pub fn rollout(name: &str, pool: &str, max_unavailable: &str, windows: &str) -> Rollout {
    let windows = if windows.is_empty() {
        String::new()
    } else {
        format!("  windows:\n{windows}")
    };
    Rollout::parse(&format!(
        "apiVersion: osctl.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}}}\nspec:\n  image: r.example/os:v2\n  selector: {{matchLabels: {{pool: {pool}}}}}\n  maxUnavailable: {max_unavailable}\n{windows}"
    ))
    .unwrap()
}

/// Applies `rollout` and writes its status by hand: `phase`, these nodes.
pub async fn apply_with_status(
    etcd: &Etcd,
    rollout: &Rollout,
    phase: RolloutPhase,
    nodes: BTreeMap<String, NodeState>,
    edit: impl FnOnce(&mut RolloutStatus),
) {
    admin::apply(etcd, rollout).await.unwrap();
    let now = Timestamp::now();
    let mut status = RolloutStatus {
        version: Version,
        generation: 1,
        phase,
        step: 0,
        step_started_at: now,
        digest: "sha256:bb".into(),
        previous: BTreeMap::new(),
        nodes,
        failures: Vec::new(),
        blocked: None,
        paused: false,
        halted: None,
        last_progress_at: now,
        last_control_at: None,
        last_control_revision: None,
        updated_at: now,
    };
    edit(&mut status);
    assert!(
        etcd.create(&keys::rollout_status(&rollout.name), &status, None, None)
            .await
            .unwrap()
    );
}

/// A healthy node's report, labelled `pool: <pool>`.
pub fn report(pool: &str) -> NodeReport {
    let now = Timestamp::now();
    NodeReport {
        version: Version,
        labels: BTreeMap::from([("pool".to_string(), pool.to_string())]),
        booted: ImageState {
            image: "r.example/os:v1".into(),
            digest: "sha256:aa".into(),
            deployment: "d1".into(),
            resolved_from: None,
        },
        staged: None,
        phase: NodePhase::Idle,
        health: Health {
            state: HealthState::Healthy,
            since: now,
        },
        boot_id: "b1".into(),
        rollout: None,
        last_error: None,
        updated_at: now,
    }
}

/// Registers `node` as its agent would: a healthy report and presence.
async fn register(etcd: &Etcd, node: &str, pool: &str) {
    assert!(
        etcd.create(&keys::report(node), &report(pool), None, None)
            .await
            .unwrap()
    );
    register_presence(etcd, node).await;
}

async fn register_presence(etcd: &Etcd, node: &str) {
    let presence = Presence {
        version: Version,
        boot_id: "b1".into(),
        since: Timestamp::now(),
    };
    assert!(
        etcd.create(&keys::presence(node), &presence, None, None)
            .await
            .unwrap()
    );
}

fn pending(names: &[&str]) -> BTreeMap<String, NodeState> {
    names
        .iter()
        .map(|n| (n.to_string(), NodeState::Pending))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_name_their_kind() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;
    let good = params("web", "m1");
    /// Path, protocol header, body; the status, kind and value wanted.
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, u16, &'a str, &'a str);
    let cases: [Case; 7] = [
        (
            fleetlock::PRE_REBOOT,
            None,
            &good,
            400,
            "missing_header",
            "header fleet-lock-protocol: true is required",
        ),
        (
            fleetlock::STEADY_STATE,
            Some("false"),
            &good,
            400,
            "missing_header",
            "header fleet-lock-protocol is \"false\"",
        ),
        (
            fleetlock::PRE_REBOOT,
            Some("true"),
            r#"{"client_params":{"id":"m1"}}"#,
            400,
            "bad_request",
            "missing field `group`",
        ),
        (
            fleetlock::PRE_REBOOT,
            Some("true"),
            &params("web_1", "m1"),
            400,
            "group_invalid",
            "group \"web_1\" has '_'",
        ),
        (
            fleetlock::PRE_REBOOT,
            Some("true"),
            &params("", "m1"),
            400,
            "group_invalid",
            "group \"\" must be 1 to 253 characters long",
        ),
        (
            fleetlock::STEADY_STATE,
            Some("true"),
            &params("web", ""),
            400,
            "id_invalid",
            "id \"\" must be 1 to 253 characters long",
        ),
        (
            "/v1/nope",
            Some("true"),
            &good,
            404,
            "not_found",
            "no endpoint /v1/nope",
        ),
    ];
    for (path, header, body, status, kind, value) in cases {
        let a = post(addr, path, header, body).await;
        assert_refused(&a, status, kind, &[value]);
    }
    let get = http(addr, "GET", fleetlock::PRE_REBOOT, &[], "").await;
    assert_refused(
        &answer(get),
        405,
        "method_not_allowed",
        &["/v1/pre-reboot takes POST, not GET"],
    );
    // Nothing of that took a lock.
    assert_eq!(lock(addr, "web", "m9").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_recursive_named_and_released_by_their_holder_only() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;

    // Zincati calls steady-state at every start, holding nothing.
    assert_eq!(unlock(addr, "web", "a").await, ok());
    assert_eq!(lock(addr, "web", "a").await, ok());
    assert_eq!(lock(addr, "web", "a").await, ok(), "recursive");
    let refused = lock(addr, "web", "b").await;
    assert_refused(
        &refused,
        409,
        "no_slot",
        &["group web: all 1 slots are taken: a (until 20"],
    );
    // A steady-state by a non-holder is harmless and releases nothing.
    assert_eq!(unlock(addr, "web", "b").await, ok());
    assert_refused(
        &lock(addr, "web", "b").await,
        409,
        "no_slot",
        &[": a (until"],
    );
    // Another group has its own slot.
    assert_eq!(lock(addr, "db", "b").await, ok());
    // The holder's steady-state frees the slot.
    assert_eq!(unlock(addr, "web", "a").await, ok());
    assert_eq!(lock(addr, "web", "b").await, ok());
    let holders = Slots::with_root(&etcd, fleetlock_root())
        .holders("web")
        .await
        .unwrap();
    assert_eq!(
        holders.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert!(holders[0].lease == 0, "a FleetLock lock is durable");
}

fn fleetlock_root() -> &'static str {
    osctl_fleet::etcd::FLEETLOCK_ROOT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_slots_are_honoured() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(
        &etcd,
        FleetLockOptions {
            default_slots: 3,
            ..FleetLockOptions::default()
        },
    )
    .await;
    for id in ["a", "b", "c"] {
        assert_eq!(lock(addr, "web", id).await, ok(), "{id}");
    }
    let refused = lock(addr, "web", "d").await;
    assert_refused(
        &refused,
        409,
        "no_slot",
        &[
            "all 3 slots are taken: a (until",
            "; b (until",
            "; c (until",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_governed_by_a_rollout_shares_its_slots() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;
    // 50% of 4 nodes: 2 slots, one taken by an osctl node.
    for node in ["n1", "n2", "n3", "n4"] {
        register(&etcd, node, "web").await;
    }
    let web = rollout("web-2026-12", "web", "50%", "");
    apply_with_status(
        &etcd,
        &web,
        RolloutPhase::Progressing,
        pending(&["n1", "n2", "n3", "n4"]),
        |_| {},
    )
    .await;
    let slots = Slots::new(&etcd);
    let deadline = Duration::from_secs(600);
    assert!(matches!(
        slots
            .grant("web-2026-12", "n1", 2, deadline, None)
            .await
            .unwrap(),
        Grant::Granted { .. }
    ));

    assert_eq!(lock(addr, "web", "a").await, ok());
    assert_refused(
        &lock(addr, "web", "b").await,
        409,
        "no_slot",
        &[
            "group web (rollout web-2026-12): maxUnavailable 2 reached: fleetlock client a (until",
            "; node n1 (until",
        ],
    );
    // The controller's next grant counts the FleetLock client too.
    assert!(matches!(
        slots
            .grant("web-2026-12", "n2", 2, deadline, None)
            .await
            .unwrap(),
        Grant::Full { .. }
    ));
    let names =
        |hs: Vec<osctl_fleet::etcd::Holder>| hs.into_iter().map(|h| h.name).collect::<Vec<_>>();
    assert_eq!(
        names(slots.holders("web-2026-12").await.unwrap()),
        ["fleetlock.a", "n1"]
    );
    // Nothing went to the group's own pool.
    assert!(
        Slots::with_root(&etcd, fleetlock_root())
            .holders("web")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(unlock(addr, "web", "a").await, ok());
    assert_eq!(names(slots.holders("web-2026-12").await.unwrap()), ["n1"]);
    // A node down without a slot counts too, as the controller counts it.
    let gone = etcd
        .get_json::<Presence>(&keys::presence("n4"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        etcd.delete_if(&gone.key, gone.mod_revision, None)
            .await
            .unwrap()
    );
    let refused = lock(addr, "web", "b").await;
    assert_refused(
        &refused,
        409,
        "no_slot",
        &["group web (rollout web-2026-12): maxUnavailable 2 reached: node n1 (until"],
    );
    assert!(
        refused.value.ends_with("); node n4 down"),
        "{}",
        refused.value
    );
    register_presence(&etcd, "n4").await;
    assert_eq!(lock(addr, "web", "b").await, ok());

    // A completed rollout governs nothing: the group has its own pool again.
    let done = rollout("db-2026-11", "db", "1", "");
    apply_with_status(&etcd, &done, RolloutPhase::Completed, pending(&[]), |_| {}).await;
    assert_eq!(lock(addr, "db", "x").await, ok());
    assert_eq!(
        names(
            Slots::with_root(&etcd, fleetlock_root())
                .holders("db")
                .await
                .unwrap()
        ),
        ["x"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_rollouts_window_is_refused_with_the_next_opening() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;
    // A window three days from today, so it is closed now whatever the hour.
    let today = Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .weekday();
    let day = window::day_name(today.wrapping_add(3));
    let web = rollout(
        "web",
        "web",
        "1",
        &format!(
            "    - days: [{day}]\n      start: \"02:00\"\n      end: \"03:00\"\n      timeZone: UTC\n"
        ),
    );
    apply_with_status(&etcd, &web, RolloutPhase::Waiting, pending(&["n1"]), |_| {}).await;
    assert_refused(
        &lock(addr, "web", "a").await,
        409,
        "outside_window",
        &[&format!(
            "group web is governed by rollout web, which reboots only in its windows; the next opens {day} 02:00 UTC"
        )],
    );
    assert!(Slots::new(&etcd).holders("web").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halted_and_paused_rollouts_refuse() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;
    type Edit = fn(&mut RolloutStatus);
    let cases: [(&str, RolloutPhase, Edit, &str, &str); 3] = [
        (
            "g1",
            RolloutPhase::Halted,
            |s| s.halted = Some("no node finished within progressDeadline 2h".into()),
            "rollout_halted",
            "group g1 is governed by rollout r-g1, which is halted: no node finished within progressDeadline 2h",
        ),
        (
            "g2",
            RolloutPhase::RollingBack,
            |s| s.blocked = Some("2 failures > budget 1".into()),
            "rollout_halted",
            "group g2 is governed by rollout r-g2, which is rolling back: 2 failures > budget 1",
        ),
        (
            "g3",
            RolloutPhase::Paused,
            |s| s.blocked = Some("paused until fleet promote".into()),
            "rollout_paused",
            "group g3 is governed by rollout r-g3, which is paused: paused until fleet promote",
        ),
    ];
    for (group, phase, edit, kind, value) in cases {
        let r = rollout(&format!("r-{group}"), group, "1", "");
        apply_with_status(&etcd, &r, phase, pending(&["n1"]), edit).await;
        assert_refused(&lock(addr, group, "a").await, 409, kind, &[value]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_is_failed_and_blocks_until_its_holder_returns() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(
        &etcd,
        FleetLockOptions {
            default_slots: 1,
            reboot_deadline: Duration::from_secs(2),
        },
    )
    .await;
    assert_eq!(lock(addr, "web", "a").await, ok());
    // Until a's deadline passes b is refused with a holding; after, with a
    // failed — and still refused.
    let failed = within("a's lock to expire", Duration::from_secs(20), async {
        loop {
            let a = lock(addr, "web", "b").await;
            assert_refused(&a, 409, "no_slot", &["all 1 slots are taken: a "]);
            if a.value.contains("FAILED") {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        failed.value.contains("a FAILED (its lock expired at 20")
            && failed
                .value
                .ends_with("without steady-state; it keeps its slot until a calls steady-state)"),
        "{}",
        failed.value
    );
    // The failed holder asking again keeps its place; nobody else gets one.
    assert_eq!(lock(addr, "web", "a").await, ok());
    assert_refused(&lock(addr, "web", "b").await, 409, "no_slot", &["a FAILED"]);
    let holders = Slots::with_root(&etcd, fleetlock_root())
        .holders("web")
        .await
        .unwrap();
    assert_eq!(holders.len(), 1);
    assert!(holders[0].expired(std::time::SystemTime::now()));
    // It comes back: its steady-state clears the failure and frees the slot.
    assert_eq!(unlock(addr, "web", "a").await, ok());
    assert_eq!(lock(addr, "web", "b").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_across_a_governance_change_still_counts() {
    let c = cluster(1);
    let etcd = connect(&c).await;
    let addr = start_server(&etcd, FleetLockOptions::default()).await;
    // No rollout governs web yet: a takes the group's own slot.
    assert_eq!(lock(addr, "web", "a").await, ok());
    for node in ["n1", "n2"] {
        register(&etcd, node, "web").await;
    }
    let web = rollout("web-2026-12", "web", "1", "");
    apply_with_status(
        &etcd,
        &web,
        RolloutPhase::Progressing,
        pending(&["n1", "n2"]),
        |_| {},
    )
    .await;
    // Now the rollout governs web. a asking again still holds its lock
    // (no second one in the rollout's pool) ...
    assert_eq!(lock(addr, "web", "a").await, ok(), "recursive across pools");
    let rollout_pool = Slots::new(&etcd);
    assert!(
        rollout_pool
            .holders("web-2026-12")
            .await
            .unwrap()
            .is_empty(),
        "a got a second lock"
    );
    // ... and a machine rebooting under the old pool is down in the new one.
    assert_refused(
        &lock(addr, "web", "b").await,
        409,
        "no_slot",
        &[
            "group web (rollout web-2026-12): maxUnavailable 1 reached: fleetlock client a holding a lock in the group's own pool",
        ],
    );
    assert_eq!(unlock(addr, "web", "a").await, ok());
    assert_eq!(lock(addr, "web", "b").await, ok());
    let names = rollout_pool
        .holders("web-2026-12")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect::<Vec<_>>();
    assert_eq!(names, ["fleetlock.b"]);

    // The rollout completes: web has its own pool again, and b's lock in
    // the rollout's pool takes its one slot until b is back.
    let status = etcd
        .get_json::<RolloutStatus>(&keys::rollout_status("web-2026-12"))
        .await
        .unwrap()
        .unwrap();
    let mut done = status.value.clone();
    done.phase = RolloutPhase::Completed;
    assert!(
        etcd.replace(
            &keys::rollout_status("web-2026-12"),
            &done,
            status.mod_revision,
            None
        )
        .await
        .unwrap()
    );
    assert_refused(
        &lock(addr, "web", "c").await,
        409,
        "no_slot",
        &[
            "group web: all slots are taken: fleetlock client b holding a lock in rollout web-2026-12",
        ],
    );
    assert_eq!(lock(addr, "web", "b").await, ok(), "recursive across pools");
    // The admin's view names the pool each lock is in.
    let listed: Vec<(String, String, Option<String>, bool)> =
        fleetlock::locks(&etcd, std::time::SystemTime::now())
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.group, l.id, l.rollout, l.failed))
            .collect();
    assert_eq!(
        listed,
        [(
            "web".to_string(),
            "b".to_string(),
            Some("web-2026-12".to_string()),
            false
        )]
    );
    // An admin's unlock frees it wherever it is, as b's steady-state would.
    assert!(fleetlock::unlock(&etcd, "web", "b").await.unwrap());
    assert!(!fleetlock::unlock(&etcd, "web", "b").await.unwrap());
    assert_eq!(lock(addr, "web", "c").await, ok());
    assert_eq!(unlock(addr, "web", "c").await, ok());
    assert_eq!(lock(addr, "web", "b").await, ok());
}
