//! The connection: configuration errors, and dropping a dead member.

use std::time::Duration;

use osctl_fleet::etcd::Etcd;

use crate::{PREFIX, blocking, cluster, connect, within};

const REQUESTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused() {
    let c = cluster(1);
    let ep = c.endpoints();
    let cases: [(&[String], &str, &str); 3] = [
        (
            &[],
            PREFIX,
            "invalid etcd configuration: no etcd endpoints given",
        ),
        (
            &ep,
            "osctl/fleet/",
            "invalid etcd configuration: prefix \"osctl/fleet/\" must start and end with '/'",
        ),
        (
            &ep,
            "/osctl/fleet",
            "invalid etcd configuration: prefix \"/osctl/fleet\" must start and end with '/'",
        ),
    ];
    for (endpoints, prefix, msg) in cases {
        let err = Etcd::connect(endpoints, prefix).await.unwrap_err();
        assert_eq!(err.to_string(), msg);
    }
    // Nothing listens there: refused at connect, naming the endpoint.
    let dead = vec![format!("http://127.0.0.1:{}", osctl_testutil::free_port())];
    let err = within(
        "connect to nothing",
        Duration::from_secs(10),
        Etcd::connect(&dead, PREFIX),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no etcd endpoint of {dead:?} answered a status request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_after_a_member_is_killed() {
    let mut c = cluster(3);
    let etcd = connect(&c).await;
    assert_eq!(etcd.active_endpoints().len(), 3);
    let leader = blocking(|| c.leader());
    let victim = (leader + 1) % 3;
    let dead = c.endpoints()[victim].clone();
    blocking(|| c.kill(victim));

    // The health task takes the dead member out of rotation.
    within("dead endpoint dropped", Duration::from_secs(10), async {
        while etcd.active_endpoints().contains(&dead) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(etcd.active_endpoints().len(), 2);

    let mut failures = Vec::new();
    for i in 0..REQUESTS {
        let key = format!("nodes/n{i}/report");
        let r = if i % 2 == 0 {
            etcd.create(&key, &i, None, None)
                .await
                .map(|created| assert!(created, "{key}"))
        } else {
            etcd.get_json::<usize>(&format!("nodes/n{}/report", i - 1))
                .await
                .map(|v| {
                    assert_eq!(v.map(|v| v.value), Some(i - 1));
                })
        };
        if let Err(e) = r {
            failures.push(format!("{key}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} requests failed: {failures:#?}",
        failures.len()
    );

    // Back in rotation once it recovers.
    blocking(|| c.start_member(victim));
    within("endpoint back", Duration::from_secs(15), async {
        while !etcd.active_endpoints().contains(&dead) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
