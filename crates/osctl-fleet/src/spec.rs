//! The Rollout spec (`kind: Rollout`, docs/fleet.md "Rollout spec").
//!
//! Parsing is two passes: serde reads the document into loose `Raw*` structs
//! (strict about field names: `deny_unknown_fields` everywhere, so a typo is
//! an error and not a default), then [`validate`] turns them into the typed
//! [`Rollout`], checking every value with an error that names its field path
//! (`spec.steps[2].canary: "150%" is over 100%`). Values are checked in the
//! second pass rather than in custom deserialisers so that every message has
//! the path and the same wording whatever format the spec came in.
//!
//! The typed spec serialises back through the same raw shape (`into =
//! "RawRollout"`) and deserialises through the same validation (`try_from`),
//! so the JSON kept in etcd round-trips without loss and a stored spec is
//! checked again when it is read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use osctl_image::ImageRef;
use serde::{Deserialize, Serialize};

use crate::window::{Window, parse_day, parse_hhmm};

/// The only apiVersion this osctl reads.
pub const API_VERSION: &str = "osctl.dev/v1alpha1";
/// The only kind a rollout document has.
pub const KIND: &str = "Rollout";
/// A DNS label's (and a label key's or value's) longest length.
pub const MAX_NAME_LEN: usize = 63;
/// `healthGate.minHealthySeconds` when not given.
pub const DEFAULT_MIN_HEALTHY_SECONDS: u64 = 60;
/// `progressDeadline` when not given.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(3600);

/// A spec that cannot be read or breaks a rule; one line naming the field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("rollout spec: {0}")]
    Yaml(#[source] yaml_serde::Error),
    #[error("stored rollout spec: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

fn invalid(path: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        path: path.into(),
        why: why.into(),
    }
}

/// A number of nodes: a count, or a percent of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Count(u32),
    Percent(u32),
}

impl Quantity {
    /// The number of nodes of a pool of `pool` this means: a percent is
    /// rounded down, and both are at least 1 (a quantity of 0 is refused
    /// when parsed), so a small pool still moves.
    pub fn resolve(self, pool: usize) -> usize {
        let n = match self {
            Quantity::Count(n) => n as usize,
            Quantity::Percent(p) => pool * p as usize / 100,
        };
        n.max(1)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Count(n) => write!(f, "{n}"),
            Quantity::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Move nodes over until this many of the pool (cumulative) are done.
    Canary(Quantity),
    /// Wait this long, or (`None`) until `fleet promote`.
    Pause(Option<Duration>),
}

/// What happens when failures exceed the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Halt,
    Rollback,
}

/// A validated rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRollout", into = "RawRollout")]
pub struct Rollout {
    pub name: String,
    pub spec: RolloutSpec,
}

/// The validated `spec:` of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    /// The image as written (resolved to a digest when the rollout starts).
    pub image: String,
    /// The same, parsed.
    pub image_ref: ImageRef,
    /// `selector.matchLabels`: a node matches when it has all of them.
    pub match_labels: BTreeMap<String, String>,
    pub max_unavailable: Quantity,
    pub steps: Vec<Step>,
    pub min_healthy_seconds: u64,
    pub failure_budget: u32,
    pub on_failure: OnFailure,
    pub windows: Vec<Window>,
    pub progress_deadline: Duration,
}

impl Rollout {
    /// Parses and validates a rollout document (YAML, or JSON which is
    /// YAML too).
    pub fn parse(text: &str) -> Result<Rollout, SpecError> {
        let raw: RawRollout = yaml_serde::from_str(text).map_err(SpecError::Yaml)?;
        validate(raw)
    }

    /// Reads a spec as stored in etcd (the JSON of [`Rollout::to_json`]).
    pub fn from_json(bytes: &[u8]) -> Result<Rollout, SpecError> {
        let raw: RawRollout = serde_json::from_slice(bytes).map_err(SpecError::Json)?;
        validate(raw)
    }

    /// The JSON kept in etcd.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a rollout always serialises: string keys, no floats")
    }
}

impl RolloutSpec {
    /// Whether a node with these labels is in the pool.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

// ---- the document as written -------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawRollout {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    image: String,
    selector: RawSelector,
    max_unavailable: RawQuantity,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    steps: Vec<RawStep>,
    #[serde(default)]
    health_gate: Option<RawHealthGate>,
    #[serde(default)]
    failure_budget: Option<u32>,
    #[serde(default)]
    on_failure: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    windows: Vec<RawWindow>,
    #[serde(default)]
    progress_deadline: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    match_labels: BTreeMap<String, String>,
}

/// `3` or `"10%"` as written; checked in [`parse_quantity`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RawQuantity {
    Count(i64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canary: Option<RawQuantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pause: Option<RawPause>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHealthGate {
    #[serde(default)]
    min_healthy_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawWindow {
    pub(crate) days: Vec<String>,
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) time_zone: String,
}

// ---- validation -----------------------------------------------------------

impl TryFrom<RawRollout> for Rollout {
    type Error = SpecError;
    fn try_from(raw: RawRollout) -> Result<Self, SpecError> {
        validate(raw)
    }
}

fn validate(raw: RawRollout) -> Result<Rollout, SpecError> {
    if raw.api_version != API_VERSION {
        return Err(invalid(
            "apiVersion",
            format!("{:?} is not {API_VERSION:?}", raw.api_version),
        ));
    }
    if raw.kind != KIND {
        return Err(invalid("kind", format!("{:?} is not {KIND:?}", raw.kind)));
    }
    let name = raw.metadata.name;
    check_dns_label("metadata.name", &name)?;
    let s = raw.spec;
    let image_ref = ImageRef::parse(&s.image).map_err(|e| invalid("spec.image", e.to_string()))?;

    if s.selector.match_labels.is_empty() {
        return Err(invalid(
            "spec.selector.matchLabels",
            "is empty: a rollout must select its nodes by at least one label",
        ));
    }
    for (k, v) in &s.selector.match_labels {
        check_label("spec.selector.matchLabels", "key", k)?;
        check_label(&format!("spec.selector.matchLabels.{k}"), "value", v)?;
    }

    let max_unavailable = parse_quantity("spec.maxUnavailable", &s.max_unavailable)?;

    let mut steps = Vec::with_capacity(s.steps.len());
    // The last canary of each kind, to refuse a decrease that does not
    // depend on the pool's size.
    let mut last: [Option<(usize, u32)>; 2] = [None, None];
    for (i, step) in s.steps.iter().enumerate() {
        let path = format!("spec.steps[{i}]");
        match (&step.canary, &step.pause) {
            (Some(q), None) => {
                let cpath = format!("{path}.canary");
                let q = parse_quantity(&cpath, q)?;
                let (slot, n) = match q {
                    Quantity::Count(n) => (0, n),
                    Quantity::Percent(p) => (1, p),
                };
                if let Some((at, before)) = last[slot]
                    && n < before
                {
                    return Err(invalid(
                        cpath,
                        format!(
                            "{q} is less than the {} of spec.steps[{at}]: canary steps must not decrease",
                            show(slot, before)
                        ),
                    ));
                }
                last[slot] = Some((i, n));
                steps.push(Step::Canary(q));
            }
            (None, Some(p)) => {
                let d = match &p.duration {
                    None => None,
                    Some(text) => Some(parse_duration(&format!("{path}.pause.duration"), text)?),
                };
                steps.push(Step::Pause(d));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(path, "has both canary and pause: one per step"));
            }
            (None, None) => {
                return Err(invalid(
                    path,
                    "is empty: give `canary: N|P%` or `pause: {}`",
                ));
            }
        }
    }

    let min_healthy_seconds = s
        .health_gate
        .and_then(|g| g.min_healthy_seconds)
        .unwrap_or(DEFAULT_MIN_HEALTHY_SECONDS);
    let on_failure = match s.on_failure.as_deref() {
        None | Some("halt") => OnFailure::Halt,
        Some("rollback") => OnFailure::Rollback,
        Some(other) => {
            return Err(invalid(
                "spec.onFailure",
                format!("{other:?} is neither halt nor rollback"),
            ));
        }
    };
    let windows = s
        .windows
        .iter()
        .enumerate()
        .map(|(i, w)| validate_window(&format!("spec.windows[{i}]"), w))
        .collect::<Result<Vec<_>, _>>()?;
    let progress_deadline = match &s.progress_deadline {
        None => DEFAULT_PROGRESS_DEADLINE,
        Some(text) => parse_duration("spec.progressDeadline", text)?,
    };

    Ok(Rollout {
        name,
        spec: RolloutSpec {
            image: s.image,
            image_ref,
            match_labels: s.selector.match_labels,
            max_unavailable,
            steps,
            min_healthy_seconds,
            failure_budget: s.failure_budget.unwrap_or(0),
            on_failure,
            windows,
            progress_deadline,
        },
    })
}

fn show(kind: usize, n: u32) -> String {
    if kind == 0 {
        n.to_string()
    } else {
        format!("{n}%")
    }
}

fn check_dns_label(path: &str, name: &str) -> Result<(), SpecError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(invalid(
            path,
            format!(
                "{name:?} is not a DNS label (lowercase letters, digits and '-', not at either end, at most {MAX_NAME_LEN})"
            ),
        ));
    }
    Ok(())
}

fn check_label(path: &str, what: &str, text: &str) -> Result<(), SpecError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(invalid(
            path,
            format!("{what} {text:?} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

fn parse_quantity(path: &str, raw: &RawQuantity) -> Result<Quantity, SpecError> {
    let q = match raw {
        RawQuantity::Count(n) => {
            let n = u32::try_from(*n)
                .map_err(|_| invalid(path, format!("{n} is not a count of nodes")))?;
            Quantity::Count(n)
        }
        RawQuantity::Text(t) => {
            let p = t
                .strip_suffix('%')
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or_else(|| {
                    invalid(
                        path,
                        format!("{t:?} is neither a count nor a percent like \"10%\""),
                    )
                })?;
            if p > 100 {
                return Err(invalid(path, format!("{t:?} is over 100%")));
            }
            Quantity::Percent(p)
        }
    };
    if matches!(q, Quantity::Count(0) | Quantity::Percent(0)) {
        return Err(invalid(
            path,
            format!("{q} would move no node: give at least 1"),
        ));
    }
    Ok(q)
}

fn parse_duration(path: &str, text: &str) -> Result<Duration, SpecError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        invalid(
            path,
            format!("{text:?} is not a duration like 30m or 2h ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(path, format!("{text:?} is zero")));
    }
    Ok(d)
}

fn validate_window(path: &str, raw: &RawWindow) -> Result<Window, SpecError> {
    if raw.days.is_empty() {
        return Err(invalid(
            format!("{path}.days"),
            "is empty: name at least one of Mon..Sun",
        ));
    }
    let mut days = Vec::with_capacity(raw.days.len());
    for (i, d) in raw.days.iter().enumerate() {
        let day = parse_day(d).ok_or_else(|| {
            invalid(
                format!("{path}.days[{i}]"),
                format!("{d:?} is not one of Mon Tue Wed Thu Fri Sat Sun"),
            )
        })?;
        if days.contains(&day) {
            return Err(invalid(
                format!("{path}.days[{i}]"),
                format!("{d:?} is given twice"),
            ));
        }
        days.push(day);
    }
    let start = parse_hhmm(&raw.start).ok_or_else(|| {
        invalid(
            format!("{path}.start"),
            format!("{:?} is not a time HH:MM", raw.start),
        )
    })?;
    let end = parse_hhmm(&raw.end).ok_or_else(|| {
        invalid(
            format!("{path}.end"),
            format!("{:?} is not a time HH:MM", raw.end),
        )
    })?;
    if start == end {
        return Err(invalid(
            format!("{path}.end"),
            format!("{:?} equals start: the window would be empty", raw.end),
        ));
    }
    let tz = jiff::tz::TimeZone::get(&raw.time_zone).map_err(|e| {
        invalid(
            format!("{path}.timeZone"),
            format!(
                "{:?} is not a time zone in the system database ({e})",
                raw.time_zone
            ),
        )
    })?;
    Ok(Window::new(days, start, end, raw.time_zone.clone(), tz))
}

impl From<Rollout> for RawRollout {
    fn from(r: Rollout) -> RawRollout {
        let s = r.spec;
        let quantity = |q: Quantity| match q {
            Quantity::Count(n) => RawQuantity::Count(i64::from(n)),
            Quantity::Percent(p) => RawQuantity::Text(format!("{p}%")),
        };
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        RawRollout {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: RawMetadata { name: r.name },
            spec: RawSpec {
                image: s.image,
                selector: RawSelector {
                    match_labels: s.match_labels,
                },
                max_unavailable: quantity(s.max_unavailable),
                steps: s
                    .steps
                    .iter()
                    .map(|st| match *st {
                        Step::Canary(q) => RawStep {
                            canary: Some(quantity(q)),
                            pause: None,
                        },
                        Step::Pause(d) => RawStep {
                            canary: None,
                            pause: Some(RawPause {
                                duration: d.map(duration),
                            }),
                        },
                    })
                    .collect(),
                health_gate: Some(RawHealthGate {
                    min_healthy_seconds: Some(s.min_healthy_seconds),
                }),
                failure_budget: Some(s.failure_budget),
                on_failure: Some(
                    match s.on_failure {
                        OnFailure::Halt => "halt",
                        OnFailure::Rollback => "rollback",
                    }
                    .to_string(),
                ),
                windows: s.windows.iter().map(Window::to_raw).collect(),
                progress_deadline: Some(duration(s.progress_deadline)),
            },
        }
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
