//! The units in contrib/systemd: `systemd-analyze verify` accepts them as
//! shipped, enabled all together (no ordering cycle in the boot), and the
//! automatic-update units with the maintenance-window drop-in their
//! comment documents; and the osctl command lines in them do what the
//! comment says on a scratch machine (with the osctl under test in place of
//! /usr/bin/osctl and the reboot command a test hook).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::assess::{next_boot, on, rebooted};
use crate::util::machine::{Images, Machine};
use crate::util::run_ok;

const SERVICE: &str = "osctl-fetch-apply-updates.service";
const TIMER: &str = "osctl-fetch-apply-updates.timer";
/// Where the units put osctl.
const INSTALLED: &str = "/usr/bin/osctl";

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/systemd")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit text with the osctl under test for /usr/bin/osctl (verify
/// checks that ExecStart= names an executable).
fn with_test_osctl(text: &str) -> String {
    text.replace(INSTALLED, env!("CARGO_BIN_EXE_osctl"))
}

/// Lines of the service's comment that are indented example text
/// (`#     …`), without the comment marker.
fn documented(service: &str) -> Vec<String> {
    service
        .lines()
        .filter_map(|l| l.strip_prefix("#     "))
        .map(str::to_owned)
        .collect()
}

/// `systemd-analyze verify` of `units` (name, text) in a scratch dir: it
/// must exit 0 and print nothing (unknown keys are only warnings there).
#[track_caller]
fn verify(units: &[(&str, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = units
        .iter()
        .map(|(name, text)| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze (systemd) must be installed for this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {units:?}: {:?}\n{stderr}",
        out.status,
        units = units.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}

/// The osctl arguments of an `ExecStart=/usr/bin/osctl …` or `osctl …` line.
fn osctl_args(line: &str) -> Vec<String> {
    let line = line.strip_prefix("ExecStart=").unwrap_or(line);
    let rest = line
        .strip_prefix(INSTALLED)
        .or_else(|| line.strip_prefix("osctl"))
        .unwrap_or_else(|| panic!("not an osctl command: {line}"));
    rest.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_update_units_verify_as_shipped_and_with_the_documented_drop_in() {
    let service = read(&contrib(SERVICE));
    let timer = read(&contrib(TIMER));
    verify(&[
        (SERVICE, with_test_osctl(&service)),
        (TIMER, with_test_osctl(&timer)),
    ]);
    // The drop-in as the comment gives it, appended: systemd reads a
    // drop-in as if its sections followed the unit's.
    let drop_in: Vec<String> = documented(&service)
        .into_iter()
        .take_while(|l| !l.starts_with("osctl "))
        .collect();
    assert_eq!(
        drop_in,
        [
            "[Service]",
            "ExecStart=",
            "ExecStart=/usr/bin/osctl upgrade --download-only --progress none"
        ],
        "the documented drop-in"
    );
    let combined = format!("{service}\n{}\n", drop_in.join("\n"));
    verify(&[
        (SERVICE, with_test_osctl(&combined)),
        (TIMER, with_test_osctl(&timer)),
    ]);
    // The example image installs the units but enables neither: the
    // timer is off until the admin enables it.
    let containerfile = read(&contrib(
        "../../Containerfile.examples/debian/Containerfile",
    ))
    .replace("\\\n", " ");
    for unit in [SERVICE, TIMER] {
        assert!(
            containerfile.contains(&format!("contrib/systemd/{unit}")),
            "{unit} is not installed by the example image"
        );
        let enabling: Vec<&str> = containerfile
            .lines()
            .filter(|l| l.contains("systemctl enable") && l.contains(unit))
            .collect();
        assert!(enabling.is_empty(), "{unit} enabled: {enabling:?}");
    }
}

#[test]
fn the_fleet_agent_unit_verifies_and_reads_its_settings_from_the_environment_file() {
    const AGENT: &str = "osctl-fleet-agent.service";
    let unit = read(&contrib(AGENT));
    verify(&[(AGENT, with_test_osctl(&unit))]);
    // The settings its comment tells the admin to write are the variables
    // `osctl fleet agent` reads, and nothing on its command line needs them.
    let exec: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(exec, ["ExecStart=/usr/bin/osctl fleet agent"]);
    let help = run_ok(Command::new(env!("CARGO_BIN_EXE_osctl")).args(["fleet", "agent", "--help"]));
    for var in ["OSCTL_ETCD", "OSCTL_FLEET_LABELS", "OSCTL_FLEET_NODE"] {
        assert!(
            help.contains(&format!("[env: {var}=")),
            "{var} not read: {help}"
        );
    }
    assert!(unit.contains("OSCTL_ETCD=") && unit.contains("OSCTL_FLEET_LABELS="));
    assert!(unit.contains("EnvironmentFile=/etc/osctl/fleet-agent.env"));
}

/// The ordering cycles `systemd-analyze verify multi-user.target` reports
/// with `units` (name, text) installed in a scratch unit directory and
/// enabled the way their `[Install]` sections say (`WantedBy=` and
/// `RequiredBy=` links), the way `systemctl enable` leaves a machine.
fn boot_cycles(units: &[(String, String)]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in units {
        std::fs::write(dir.path().join(name), text).unwrap();
        for line in text.lines() {
            let (kind, targets) = match line.split_once('=') {
                Some(("WantedBy", t)) => ("wants", t),
                Some(("RequiredBy", t)) => ("requires", t),
                _ => continue,
            };
            for target in targets.split_whitespace() {
                let links = dir.path().join(format!("{target}.{kind}"));
                std::fs::create_dir_all(&links).unwrap();
                std::os::unix::fs::symlink(format!("../{name}"), links.join(name)).unwrap();
            }
        }
    }
    // The trailing colon keeps the system's unit path after ours.
    let path = format!("{}:", dir.path().display());
    let out = Command::new("systemd-analyze")
        .args(["verify", "multi-user.target"])
        .env("SYSTEMD_UNIT_PATH", path)
        .output()
        .expect("systemd-analyze (systemd) must be installed for this test");
    assert!(out.status.success(), "systemd-analyze verify: {out:?}");
    ordering_cycles(&String::from_utf8_lossy(&out.stderr))
}

/// Each ordering cycle systemd reports, as the units on it in the order
/// it walked them. systemd reports a cycle as one "Found ordering cycle on
/// U/start" line, a "Found dependency on U/start" line per further unit,
/// then the job it deleted. Where the walk starts, and so which unit the
/// first line and the deleted job name, differs from run to run: a test
/// must ask which units are on the cycle, not which one was named first.
fn ordering_cycles(stderr: &str) -> Vec<Vec<String>> {
    const FIRST: &str = "Found ordering cycle on ";
    const NEXT: &str = "Found dependency on ";
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for line in stderr.lines() {
        let (starts, rest) = if let Some((_, r)) = line.split_once(FIRST) {
            (true, r)
        } else if let Some((_, r)) = line.split_once(NEXT) {
            (false, r)
        } else {
            continue;
        };
        let unit = rest.split_once('/').map_or(rest, |(u, _)| u).to_owned();
        match cycles.last_mut() {
            Some(cycle) if !starts => cycle.push(unit),
            _ if !starts => panic!("a dependency line outside a cycle: {stderr}"),
            _ => cycles.push(vec![unit]),
        }
    }
    cycles
}

/// The reports seen on this machine and in CI for the agent's old cycle:
/// the same cycle, walked from different units.
#[test]
fn ordering_cycles_are_read_whichever_unit_the_walk_starts_at() {
    let cases: [(&str, Vec<Vec<&str>>); 4] = [
        ("", vec![]),
        (
            "multi-user.target: Found ordering cycle on osctl-fleet-agent.service/start\n\
             multi-user.target: Found dependency on boot-complete.target/start\n\
             multi-user.target: Found dependency on osctl-health-check.service/start\n\
             multi-user.target: Found dependency on multi-user.target/start\n\
             multi-user.target: Job osctl-fleet-agent.service/start deleted to break ordering \
             cycle starting with multi-user.target/start\n",
            vec![vec![
                "osctl-fleet-agent.service",
                "boot-complete.target",
                "osctl-health-check.service",
                "multi-user.target",
            ]],
        ),
        (
            "boot-complete.target: Found ordering cycle on osctl-health-check.service/start\n\
             boot-complete.target: Found dependency on multi-user.target/start\n\
             boot-complete.target: Found dependency on osctl-fleet-agent.service/start\n\
             boot-complete.target: Found dependency on boot-complete.target/start\n\
             boot-complete.target: Job osctl-health-check.service/start deleted to break \
             ordering cycle starting with boot-complete.target/start\n",
            vec![vec![
                "osctl-health-check.service",
                "multi-user.target",
                "osctl-fleet-agent.service",
                "boot-complete.target",
            ]],
        ),
        (
            "a.service: Found ordering cycle on b.service/start\n\
             a.service: Found dependency on a.service/start\n\
             x.service: unrelated warning\n\
             c.service: Found ordering cycle on d.service/stop\n\
             c.service: Found dependency on c.service/stop\n",
            vec![
                vec!["b.service", "a.service"],
                vec!["d.service", "c.service"],
            ],
        ),
    ];
    for (stderr, want) in cases {
        assert_eq!(ordering_cycles(stderr), want, "{stderr}");
    }
}

/// Every unit in contrib/systemd, with the osctl under test.
fn shipped_units() -> Vec<(String, String)> {
    let dir = contrib("");
    let mut units: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .map(|n| {
            let text = with_test_osctl(&read(&dir.join(&n)));
            (n, text)
        })
        .collect();
    units.sort();
    units
}

/// All the shipped units enabled at once start in one boot transaction: no
/// ordering cycle for systemd to break by dropping a unit. The fleet agent
/// once had one (it wanted to start after the boot assessment, which runs
/// after multi-user.target, which waited for the agent): the same check on
/// that unit text must find it, so this test can tell.
#[test]
fn the_shipped_units_enabled_together_boot_without_an_ordering_cycle() {
    const AGENT: &str = "osctl-fleet-agent.service";
    let units = shipped_units();
    assert!(units.iter().any(|(n, _)| n == AGENT), "{units:?}");
    assert_eq!(boot_cycles(&units), Vec::<Vec<String>>::new());

    let cyclic: Vec<(String, String)> = units
        .iter()
        .map(|(n, t)| {
            let t = if n == AGENT {
                t.replace(
                    "After=network-online.target multi-user.target ",
                    "After=network-online.target ",
                )
            } else {
                t.clone()
            };
            (n.clone(), t)
        })
        .collect();
    assert_ne!(
        cyclic, units,
        "the agent's After= line changed: update this test"
    );
    let found = boot_cycles(&cyclic);
    assert!(
        found.iter().any(|cycle| cycle.iter().any(|u| u == AGENT)),
        "the check did not see the agent's old cycle: {found:?}"
    );
}

/// The three command lines — the shipped ExecStart, the drop-in's, the
/// window's — on a machine tracking a tag: download only, release and
/// reboot in the window, then the automatic apply of the next update.
#[test]
fn the_documented_update_commands_do_what_they_say() {
    let service = read(&contrib(SERVICE));
    let shipped = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("the service has an ExecStart=");
    let docs = documented(&service);
    let download = docs
        .iter()
        .find(|l| l.starts_with("ExecStart=/"))
        .expect("the drop-in's ExecStart=");
    let window = docs
        .iter()
        .find(|l| l.starts_with("osctl "))
        .expect("the window's command");

    let images = Images::new();
    let tag = "os:auto";
    let retag = |from: &str| images.registry.copy_tag(from, tag).unwrap();
    retag("os:v1");
    let mut m = Machine::new();
    m.boot(&images.registry.image_ref(tag));
    let v1 = m.booted.clone().unwrap();
    let run =
        |m: &Machine, line: &str| run_ok(on(&m.osctl, m.booted.as_deref()).args(osctl_args(line)));

    // The timer, with the drop-in: downloaded only, nothing else.
    retag("os:v2");
    run(&m, download);
    let v2 = m.roles().staged.expect("downloaded");
    assert_eq!(m.status()["status"]["staged"]["downloadOnly"], true);
    assert!(!rebooted(&m.osctl));
    assert_eq!(next_boot(&m.osctl), Some(v1));

    // The maintenance window: released, finalized, rebooted.
    run(&m, window);
    assert!(rebooted(&m.osctl));
    assert_eq!(next_boot(&m.osctl), Some(v2.clone()));
    assert_eq!(m.reboot(), v2);

    // The shipped unit: the next update applied at once; none, nothing.
    retag("os:v3");
    run(&m, shipped);
    assert!(rebooted(&m.osctl));
    let v3 = next_boot(&m.osctl).unwrap();
    assert_ne!(v3, v2);
    assert_eq!(m.reboot(), v3);
    run(&m, shipped);
    assert!(!rebooted(&m.osctl), "no update: no reboot");
}
