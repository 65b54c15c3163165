use super::*;

const GOOD: &str = r#"
apiVersion: osctl.dev/v1alpha1
kind: Rollout
metadata:
  name: web-2026-12
spec:
  image: registry.example/os:v2
  selector:
    matchLabels: {pool: web}
  maxUnavailable: 10%
  steps:
    - canary: 1
    - pause: {duration: 30m}
    - canary: 25%
    - pause: {}
  healthGate:
    minHealthySeconds: 300
  failureBudget: 1
  onFailure: rollback
  windows:
    - days: [Sat, Sun]
      start: "02:00"
      end: "05:00"
      timeZone: Europe/Berlin
  progressDeadline: 2h
"#;

#[test]
fn the_documented_example_parses() {
    let r = Rollout::parse(GOOD).expect("docs/fleet.md example parses");
    assert_eq!(r.name, "web-2026-12");
    let s = &r.spec;
    assert_eq!(s.image, "registry.example/os:v2");
    assert_eq!(s.match_labels.get("pool").map(String::as_str), Some("web"));
    assert_eq!(s.max_unavailable, Quantity::Percent(10));
    assert_eq!(
        s.steps,
        vec![
            Step::Canary(Quantity::Count(1)),
            Step::Pause(Some(Duration::from_secs(30 * 60))),
            Step::Canary(Quantity::Percent(25)),
            Step::Pause(None),
        ]
    );
    assert_eq!(s.min_healthy_seconds, 300);
    assert_eq!(s.failure_budget, 1);
    assert_eq!(s.on_failure, OnFailure::Rollback);
    assert_eq!(s.windows.len(), 1);
    assert_eq!(s.windows[0].time_zone(), "Europe/Berlin");
    assert_eq!(s.progress_deadline, Duration::from_secs(2 * 3600));
}

#[test]
fn defaults() {
    let r = Rollout::parse(&minimal("")).expect("minimal spec parses");
    assert_eq!(r.spec.min_healthy_seconds, DEFAULT_MIN_HEALTHY_SECONDS);
    assert_eq!(r.spec.failure_budget, 0);
    assert_eq!(r.spec.on_failure, OnFailure::Halt);
    assert_eq!(r.spec.progress_deadline, DEFAULT_PROGRESS_DEADLINE);
    assert!(r.spec.steps.is_empty() && r.spec.windows.is_empty());
}

#[test]
fn json_round_trip_is_lossless() {
    for text in [GOOD.to_string(), minimal("")] {
        let r = Rollout::parse(&text).expect("parses");
        let back = Rollout::from_json(&r.to_json()).expect("stored spec reads back");
        assert_eq!(back, r);
    }
}

#[test]
fn quantities_resolve_rounded_down_at_least_one() {
    let cases = [
        (Quantity::Percent(10), 20, 2),
        (Quantity::Percent(10), 19, 1),
        (Quantity::Percent(10), 5, 1),
        (Quantity::Percent(100), 7, 7),
        (Quantity::Count(3), 20, 3),
        (Quantity::Count(3), 2, 3),
    ];
    for (q, pool, want) in cases {
        assert_eq!(q.resolve(pool), want, "{q} of {pool}");
    }
}

/// A spec with the required fields, `extra` appended under `spec:` (indented
/// two spaces) unless it starts with `!`, in which case it replaces the
/// whole `spec:` tail after `image:`.
fn minimal(extra: &str) -> String {
    format!(
        "apiVersion: osctl.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\nspec:\n  image: registry.example/os:v2\n  selector:\n    matchLabels: {{pool: web}}\n  maxUnavailable: 1\n{extra}"
    )
}

#[test]
fn every_rule_has_its_message() {
    let cases: &[(String, &str)] = &[
        (
            minimal("").replace("osctl.dev/v1alpha1", "osctl.dev/v1"),
            r#"apiVersion: "osctl.dev/v1" is not "osctl.dev/v1alpha1""#,
        ),
        (
            minimal("").replace("kind: Rollout", "kind: Deployment"),
            r#"kind: "Deployment" is not "Rollout""#,
        ),
        (
            minimal("").replace("name: web", "name: Web_1"),
            r#"metadata.name: "Web_1" is not a DNS label (lowercase letters, digits and '-', not at either end, at most 63)"#,
        ),
        (
            minimal("").replace("name: web", &format!("name: {}", "a".repeat(64))),
            &format!(
                r#"metadata.name: "{}" is not a DNS label (lowercase letters, digits and '-', not at either end, at most 63)"#,
                "a".repeat(64)
            ),
        ),
        (
            minimal("").replace("name: web", "name: web-"),
            r#"metadata.name: "web-" is not a DNS label (lowercase letters, digits and '-', not at either end, at most 63)"#,
        ),
        (
            minimal("").replace("registry.example/os:v2", "dir:/srv/os"),
            "spec.image: invalid image reference 'dir:/srv/os': transport 'dir' is not supported (use a registry, oci:, oci-archive: or containers-storage:)",
        ),
        (
            minimal("").replace("{pool: web}", "{}"),
            "spec.selector.matchLabels: is empty: a rollout must select its nodes by at least one label",
        ),
        (
            minimal("").replace("{pool: web}", "{po/ol: web}"),
            r#"spec.selector.matchLabels: key "po/ol" must be 1 to 63 of A-Z a-z 0-9 . _ -"#,
        ),
        (
            minimal("").replace("{pool: web}", "{pool: \"w b\"}"),
            r#"spec.selector.matchLabels.pool: value "w b" must be 1 to 63 of A-Z a-z 0-9 . _ -"#,
        ),
        (
            minimal("").replace("maxUnavailable: 1", "maxUnavailable: 0"),
            "spec.maxUnavailable: 0 would move no node: give at least 1",
        ),
        (
            minimal("").replace("maxUnavailable: 1", "maxUnavailable: 0%"),
            "spec.maxUnavailable: 0% would move no node: give at least 1",
        ),
        (
            minimal("").replace("maxUnavailable: 1", "maxUnavailable: -2"),
            "spec.maxUnavailable: -2 is not a count of nodes",
        ),
        (
            minimal("").replace("maxUnavailable: 1", "maxUnavailable: ten"),
            r#"spec.maxUnavailable: "ten" is neither a count nor a percent like "10%""#,
        ),
        (
            minimal("  steps:\n    - canary: 1\n    - canary: 50%\n    - canary: 150%\n"),
            r#"spec.steps[2].canary: "150%" is over 100%"#,
        ),
        (
            minimal("  steps:\n    - canary: 3\n    - pause: {}\n    - canary: 2\n"),
            "spec.steps[2].canary: 2 is less than the 3 of spec.steps[0]: canary steps must not decrease",
        ),
        (
            minimal("  steps:\n    - canary: 30%\n    - canary: 20%\n"),
            "spec.steps[1].canary: 20% is less than the 30% of spec.steps[0]: canary steps must not decrease",
        ),
        (
            minimal("  steps:\n    - {canary: 1, pause: {}}\n"),
            "spec.steps[0]: has both canary and pause: one per step",
        ),
        (
            minimal("  steps:\n    - {}\n"),
            "spec.steps[0]: is empty: give `canary: N|P%` or `pause: {}`",
        ),
        (
            minimal("  steps:\n    - pause: {duration: soon}\n"),
            r#"spec.steps[0].pause.duration: "soon" is not a duration like 30m or 2h (expected number at 0)"#,
        ),
        (
            minimal("  steps:\n    - pause: {duration: 0s}\n"),
            r#"spec.steps[0].pause.duration: "0s" is zero"#,
        ),
        (
            minimal("  onFailure: retry\n"),
            r#"spec.onFailure: "retry" is neither halt nor rollback"#,
        ),
        (
            minimal("  progressDeadline: 0m\n"),
            r#"spec.progressDeadline: "0m" is zero"#,
        ),
        (
            minimal(
                "  windows:\n    - {days: [], start: \"02:00\", end: \"05:00\", timeZone: UTC}\n",
            ),
            "spec.windows[0].days: is empty: name at least one of Mon..Sun",
        ),
        (
            minimal(
                "  windows:\n    - {days: [Sat, sunday], start: \"02:00\", end: \"05:00\", timeZone: UTC}\n",
            ),
            r#"spec.windows[0].days[1]: "sunday" is not one of Mon Tue Wed Thu Fri Sat Sun"#,
        ),
        (
            minimal(
                "  windows:\n    - {days: [Sat, Sat], start: \"02:00\", end: \"05:00\", timeZone: UTC}\n",
            ),
            r#"spec.windows[0].days[1]: "Sat" is given twice"#,
        ),
        (
            minimal(
                "  windows:\n    - {days: [Sat], start: \"2:00\", end: \"05:00\", timeZone: UTC}\n",
            ),
            r#"spec.windows[0].start: "2:00" is not a time HH:MM"#,
        ),
        (
            minimal(
                "  windows:\n    - {days: [Sat], start: \"02:00\", end: \"24:00\", timeZone: UTC}\n",
            ),
            r#"spec.windows[0].end: "24:00" is not a time HH:MM"#,
        ),
        (
            minimal(
                "  windows:\n    - {days: [Sat], start: \"02:00\", end: \"02:00\", timeZone: UTC}\n",
            ),
            r#"spec.windows[0].end: "02:00" equals start: the window would be empty"#,
        ),
    ];
    for (text, want) in cases {
        let err = Rollout::parse(text).expect_err(want);
        assert_eq!(err.to_string(), *want);
    }
}

#[test]
fn an_unknown_time_zone_is_named() {
    let text = minimal(
        "  windows:\n    - {days: [Sat], start: \"02:00\", end: \"05:00\", timeZone: Europe/Atlantis}\n",
    );
    let err = Rollout::parse(&text).expect_err("no such zone").to_string();
    assert!(
        err.starts_with(r#"spec.windows[0].timeZone: "Europe/Atlantis" is not a time zone in the system database ("#),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    let cases = [
        (
            minimal("  maxUnavailabel: 2\n"),
            "spec: unknown field `maxUnavailabel`",
        ),
        (
            minimal("").replace("matchLabels", "matchLabel"),
            "spec.selector: unknown field `matchLabel`",
        ),
        (
            minimal("  steps:\n    - pause: {duraton: 5m}\n"),
            "spec.steps[0].pause: unknown field `duraton`",
        ),
        (
            minimal("  healthGate: {minHealthy: 5}\n"),
            "spec.healthGate: unknown field `minHealthy`",
        ),
        (
            minimal("  windows:\n    - {days: [Sat], start: \"02:00\", end: \"05:00\", tz: UTC}\n"),
            "spec.windows[0]: unknown field `tz`",
        ),
        (
            minimal("").replace("  name: web", "  name: web\n  labels: {}"),
            "metadata: unknown field `labels`",
        ),
    ];
    for (text, want) in cases {
        let err = Rollout::parse(&text).expect_err(want).to_string();
        assert!(err.starts_with(&format!("rollout spec: {want}")), "{err}");
    }
}
