//! Who is booted, staged and rollback: one pure function over what is on
//! disk, so that every command — and every crash — reads the machine the
//! same way.
//!
//! # Inputs
//!
//! - *booted*: `composefs=<id>` on the kernel command line;
//! - *default*: what `loader.conf` makes systemd-boot start next (the
//!   `osctl-*` trial pattern resolved in systemd-boot's order);
//! - the two markers ([`crate::markers`]): `state/staged` and
//!   `state/rollback`, each with a generation;
//! - each deployment's `finalized` flag (origin): set by finalize, before
//!   the default can name it.
//!
//! # Rules
//!
//! 1. The **staged marker** holds unless its deployment is booted, is the
//!    exact default, or is the trial's trying entry: then finalize already
//!    made it the next boot, and the marker is a leftover.
//! 2. The **rollback marker** holds only while the default names its
//!    deployment and that deployment is not booted. `rollback` writes it
//!    *before* the default, so until the default changes it has no effect.
//! 3. When both hold, the one with the higher generation wins.
//! 4. *staged* = the winning staged marker; else, with no rollback queued,
//!    the default when it is not the booted deployment (finalized, waiting
//!    for the reboot; with nothing booted — an installer's sysroot — the
//!    default is simply what boots).
//! 5. *rollback* = the winning rollback marker (`rollback_queued`); else the
//!    newest (highest serial) other deployment that is finalized and did not
//!    fail.
//! 6. A staged marker that says `download-only` holds by rules 1 and 3 like
//!    any other, and its deployment is *staged* (`staged_download_only`):
//!    finalize leaves it, so it is not the next boot. Nothing else about it
//!    differs: it is never the default, so by rule 4 the booted deployment
//!    stays the next boot.
//! 7. A deployment that is none of booted, staged or rollback counts only if
//!    it was finalized once or is pinned. One that is neither — the
//!    leftovers of a stage that crashed before its marker, an update
//!    replaced before it was ever booted — is *abandoned*: invisible to
//!    status and every decision, and removed by the recovery of the next
//!    locked operation. A pinned one that was never finalized is kept, but
//!    is never the rollback (rule 5).
//!
//! These rules give every multi-step operation one commit point, a single
//! atomic write after which the rules read the new state, while everything
//! written before it is invisible (rule 7) and everything after it is
//! cleanup: `switch` commits with the staged marker, `finalize` with the
//! default, `rollback` with the default (its marker written first).
//! docs/deployments.md has the table of commit points.

use crate::layout::DeploymentId;
use crate::markers::Marker;
use crate::scan::Deployment;

/// What the classification reads besides the deployments themselves.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub booted: Option<DeploymentId>,
    /// The deployment systemd-boot starts next, if loader.conf names one.
    pub default: Option<DeploymentId>,
    /// The default is an exact `default osctl-<id>.conf` (not the trial
    /// pattern).
    pub default_exact: bool,
    /// During a trial: the entry carrying the trying sort key.
    pub trial_trying: Option<DeploymentId>,
    pub staged_marker: Option<Marker>,
    pub rollback_marker: Option<Marker>,
    /// Markers that exist but do not parse. They are left out of the rules
    /// (nothing is guessed from them); the recovery refuses to change
    /// anything while one exists, unless it is repairing (`osctl fsck
    /// --repair`), which removes them.
    pub unreadable_markers: Vec<UnreadableMarker>,
}

/// A marker file that exists but does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableMarker {
    /// [`crate::markers::STAGED`] or [`crate::markers::ROLLBACK`].
    pub name: &'static str,
    /// One line: the file and why it cannot be read.
    pub problem: String,
}

/// Who is who among the deployments.
#[derive(Debug, Clone, Default)]
pub struct DeploymentState {
    pub booted: Option<Deployment>,
    pub staged: Option<Deployment>,
    pub rollback: Option<Deployment>,
    /// Other finalized deployments (pinned ones, usually), newest first.
    pub others: Vec<Deployment>,
    /// Deployments that failed (health checks, or boot counter run out);
    /// never staged or rollback.
    pub failed: Vec<Deployment>,
    /// The next boot is the rollback deployment.
    pub rollback_queued: bool,
    /// The deployment the boot loader starts next, if any.
    pub default: Option<DeploymentId>,
    /// The staged deployment is waiting for finalize (named by the staged
    /// marker), not already the default.
    pub staged_pending: bool,
    /// The pending staged deployment existed before it was staged (its
    /// marker says `existing`): if it stops being staged, it stays.
    pub staged_existing: bool,
    /// The pending staged deployment is download-only (its marker says
    /// `download-only`): finalize leaves it (rule 6).
    pub staged_download_only: bool,
    /// Abandoned deployments (rule 7): never finalized, in no role.
    pub abandoned: Vec<Deployment>,
    /// The staged marker exists but no longer holds (rules 1 and 3).
    pub staged_marker_stale: bool,
    /// The rollback marker exists but no longer holds (rules 2 and 3).
    pub rollback_marker_stale: bool,
}

/// Applies the rules above. `deployments` are the complete deployments
/// (state dir and boot entry), in any order.
pub fn classify(facts: &Facts, mut deployments: Vec<Deployment>) -> DeploymentState {
    deployments.sort_by(|a, b| {
        b.origin()
            .serial
            .cmp(&a.origin().serial)
            .then(a.id().cmp(b.id()))
    });
    let exists = |id: &DeploymentId| deployments.iter().any(|d| d.id() == id);
    let booted = facts.booted.as_ref().filter(|b| exists(b));
    let default = facts.default.as_ref().filter(|d| exists(d));

    let staged_marker = facts.staged_marker.as_ref().filter(|m| {
        exists(&m.id)
            && Some(&m.id) != booted
            && !(facts.default_exact && Some(&m.id) == default)
            && facts.trial_trying.as_ref() != Some(&m.id)
    });
    let rollback_marker = facts
        .rollback_marker
        .as_ref()
        .filter(|m| Some(&m.id) == default && Some(&m.id) != booted);
    let (staged_marker, rollback_marker) = match (staged_marker, rollback_marker) {
        (Some(s), Some(r)) if s.generation > r.generation => (Some(s), None),
        (Some(_), Some(r)) => (None, Some(r)),
        other => other,
    };

    let staged_id = match (staged_marker, rollback_marker) {
        (Some(m), _) => Some(&m.id),
        (None, None) => default.filter(|d| Some(*d) != booted),
        (None, Some(_)) => None,
    };
    let mut state = DeploymentState {
        rollback_queued: rollback_marker.is_some(),
        default: default.cloned(),
        staged_pending: staged_marker.is_some(),
        staged_existing: staged_marker.is_some_and(|m| m.existing),
        staged_download_only: staged_marker.is_some_and(|m| m.download_only),
        staged_marker_stale: facts.staged_marker.is_some() && staged_marker.is_none(),
        rollback_marker_stale: facts.rollback_marker.is_some() && rollback_marker.is_none(),
        ..Default::default()
    };
    for d in deployments {
        let id = d.id();
        if Some(id) == booted {
            state.booted = Some(d);
        } else if Some(id) == staged_id {
            state.staged = Some(d);
        } else if rollback_marker.is_some_and(|m| &m.id == id) {
            state.rollback = Some(d);
        } else if !d.origin().finalized && !d.origin().pinned {
            state.abandoned.push(d);
        } else if d.failed() {
            state.failed.push(d);
        } else {
            state.others.push(d);
        }
    }
    if state.rollback.is_none()
        && let Some(newest) = state.others.iter().position(|d| d.origin().finalized)
    {
        state.rollback = Some(state.others.remove(newest));
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::Tries;
    use crate::scan::test_deployment;

    /// Deployment ids named by a letter: the letter's ASCII code in hex,
    /// repeated.
    fn id(c: char) -> DeploymentId {
        DeploymentId::parse(&format!("{:02x}", c as u8).repeat(32)).unwrap()
    }
    fn letter(id: &DeploymentId) -> char {
        u8::from_str_radix(&id.as_str()[..2], 16).unwrap() as char
    }
    fn marker(c: char, generation: u64) -> Option<Marker> {
        Some(Marker {
            id: id(c),
            generation,
            existing: false,
            download_only: false,
        })
    }
    /// Deployment `c` with serial `serial`, finalized or not.
    fn dep(c: char, serial: u64, finalized: bool) -> Deployment {
        test_deployment(id(c), serial, finalized, None)
    }
    fn short(d: &Option<Deployment>) -> Option<char> {
        d.as_ref().map(|d| letter(d.id()))
    }
    fn shorts(ds: &[Deployment]) -> String {
        ds.iter().map(|d| letter(d.id())).collect()
    }

    /// (what, facts, deployments, want: booted, staged, rollback, queued,
    /// others, abandoned, staged marker stale, rollback marker stale)
    #[test]
    fn roles_follow_the_rules() {
        // o = old booted, r = older rollback, n = new, s = staged pending.
        let base = || vec![dep('o', 2, true), dep('r', 1, true)];
        let booted_o = |default: char| Facts {
            booted: Some(id('o')),
            default: Some(id(default)),
            default_exact: true,
            ..Default::default()
        };
        type Want = (
            Option<char>,
            Option<char>,
            Option<char>,
            bool,
            &'static str,
            &'static str,
            bool,
            bool,
        );
        let cases: Vec<(&str, Facts, Vec<Deployment>, Want)> = vec![
            (
                "steady state",
                booted_o('o'),
                base(),
                (Some('o'), None, Some('r'), false, "", "", false, false),
            ),
            (
                "pending update",
                Facts {
                    staged_marker: marker('s', 1),
                    ..booted_o('o')
                },
                [base(), vec![dep('s', 3, false)]].concat(),
                (Some('o'), Some('s'), Some('r'), false, "", "", false, false),
            ),
            (
                "stage crashed before its marker: the leftover is abandoned",
                booted_o('o'),
                [base(), vec![dep('s', 3, false)]].concat(),
                (Some('o'), None, Some('r'), false, "", "s", false, false),
            ),
            (
                "finalized, marker still there: the marker is stale",
                Facts {
                    staged_marker: marker('n', 1),
                    ..booted_o('n')
                },
                [base(), vec![dep('n', 3, true)]].concat(),
                (Some('o'), Some('n'), Some('r'), false, "", "", true, false),
            ),
            (
                "finalized on trial, marker still there",
                Facts {
                    staged_marker: marker('n', 1),
                    default_exact: false,
                    trial_trying: Some(id('n')),
                    ..booted_o('n')
                },
                [base(), vec![dep('n', 3, true)]].concat(),
                (Some('o'), Some('n'), Some('r'), false, "", "", true, false),
            ),
            (
                "fell back from a trial: the old marker does not stage it again",
                Facts {
                    staged_marker: marker('n', 1),
                    default_exact: false,
                    trial_trying: Some(id('n')),
                    ..booted_o('o')
                },
                [base(), vec![dep('n', 3, true)]].concat(),
                (Some('o'), None, Some('n'), false, "r", "", true, false),
            ),
            (
                "booted the finalized update: the marker is stale",
                Facts {
                    booted: Some(id('n')),
                    staged_marker: marker('n', 1),
                    ..booted_o('n')
                },
                [base(), vec![dep('n', 3, true)]].concat(),
                (Some('n'), None, Some('o'), false, "r", "", true, false),
            ),
            (
                "rollback marker written, default not yet: no effect",
                Facts {
                    staged_marker: marker('s', 1),
                    rollback_marker: marker('r', 2),
                    ..booted_o('o')
                },
                [base(), vec![dep('s', 3, false)]].concat(),
                (Some('o'), Some('s'), Some('r'), false, "", "", false, true),
            ),
            (
                "rollback queued over a pending update",
                Facts {
                    staged_marker: marker('s', 1),
                    rollback_marker: marker('r', 2),
                    ..booted_o('r')
                },
                [base(), vec![dep('s', 3, false)]].concat(),
                (Some('o'), None, Some('r'), true, "", "s", true, false),
            ),
            (
                "rollback towards a newer deployment is still a rollback",
                Facts {
                    rollback_marker: marker('n', 1),
                    ..booted_o('n')
                },
                [base(), vec![dep('n', 3, true)]].concat(),
                (Some('o'), None, Some('n'), true, "r", "", false, false),
            ),
            (
                "switch during a queued rollback: the newer marker wins",
                Facts {
                    staged_marker: marker('s', 3),
                    rollback_marker: marker('r', 2),
                    ..booted_o('r')
                },
                [base(), vec![dep('s', 3, false)]].concat(),
                (Some('o'), Some('s'), Some('r'), false, "", "", false, true),
            ),
            (
                "a finalized update replaced by a new switch, before the default moved",
                Facts {
                    staged_marker: marker('s', 1),
                    ..booted_o('n')
                },
                [base(), vec![dep('n', 3, false), dep('s', 4, false)]].concat(),
                (
                    Some('o'),
                    Some('s'),
                    Some('r'),
                    false,
                    "",
                    "n",
                    false,
                    false,
                ),
            ),
            (
                "a pinned deployment never finalized is kept, but never the rollback",
                booted_o('o'),
                [base(), vec![dep('p', 3, false).pinned()]].concat(),
                (Some('o'), None, Some('r'), false, "p", "", false, false),
            ),
            (
                "a pinned update replaced by a switch stays, unstaged",
                Facts {
                    staged_marker: marker('s', 2),
                    ..booted_o('o')
                },
                [
                    base(),
                    vec![dep('p', 3, false).pinned(), dep('s', 4, false)],
                ]
                .concat(),
                (
                    Some('o'),
                    Some('s'),
                    Some('r'),
                    false,
                    "p",
                    "",
                    false,
                    false,
                ),
            ),
            (
                "offline sysroot: the default boots, a new switch is staged beside it",
                Facts {
                    booted: None,
                    staged_marker: marker('b', 1),
                    default: Some(id('a')),
                    default_exact: true,
                    ..Default::default()
                },
                vec![dep('a', 1, true), dep('b', 2, false)],
                (None, Some('b'), Some('a'), false, "", "", false, false),
            ),
            (
                "offline sysroot after finalize",
                Facts {
                    booted: None,
                    default: Some(id('a')),
                    default_exact: true,
                    ..Default::default()
                },
                vec![dep('a', 1, true)],
                (None, Some('a'), None, false, "", "", false, false),
            ),
        ];
        for (what, facts, deployments, want) in cases {
            let s = classify(&facts, deployments);
            let got = (
                short(&s.booted),
                short(&s.staged),
                short(&s.rollback),
                s.rollback_queued,
                shorts(&s.others).leak() as &str,
                shorts(&s.abandoned).leak() as &str,
                s.staged_marker_stale,
                s.rollback_marker_stale,
            );
            assert_eq!(got, want, "{what}");
        }
    }

    /// `existing` counts only while its marker holds: a deployment staged
    /// again is kept when it stops being staged (see `kept_when_unstaged`).
    #[test]
    fn the_staged_marker_says_whether_its_deployment_existed() {
        let facts = |staged: char, existing: bool, default: char| Facts {
            booted: Some(id('o')),
            default: Some(id(default)),
            default_exact: true,
            staged_marker: Some(Marker {
                id: id(staged),
                generation: 1,
                existing,
                download_only: false,
            }),
            ..Default::default()
        };
        let all = || vec![dep('o', 2, true), dep('r', 1, true)];
        for (what, facts, want) in [
            ("re-staged rollback", facts('r', true, 'o'), true),
            ("new update", facts('r', false, 'o'), false),
            (
                "finalized: the marker is stale",
                facts('r', true, 'r'),
                false,
            ),
        ] {
            let s = classify(&facts, all());
            assert_eq!(s.staged_existing, want, "{what}");
            assert_eq!(short(&s.staged), Some('r'), "{what}");
        }
    }

    /// A download-only marker stages its deployment like any other, and
    /// says so; it goes stale by the same rules.
    #[test]
    fn a_download_only_marker_stages_without_changing_the_next_boot() {
        let facts = |default: char, booted: char| Facts {
            booted: Some(id(booted)),
            default: Some(id(default)),
            default_exact: true,
            staged_marker: Some(Marker {
                id: id('s'),
                generation: 1,
                existing: false,
                download_only: true,
            }),
            ..Default::default()
        };
        let all = || vec![dep('o', 2, true), dep('r', 1, true), dep('s', 3, false)];
        for (what, facts, want) in [
            (
                "downloaded, the booted one boots next",
                facts('o', 'o'),
                (Some('s'), true, false, Some('o')),
            ),
            (
                "its deployment is booted: the marker is stale",
                facts('s', 's'),
                (None, false, true, Some('s')),
            ),
        ] {
            let s = classify(&facts, all());
            let got = (
                short(&s.staged),
                s.staged_download_only,
                s.staged_marker_stale,
                s.default.as_ref().map(letter),
            );
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn failed_deployments_are_never_rollback() {
        let bad = test_deployment(id('n'), 3, true, Some(Tries { left: 0, done: 3 }));
        let s = classify(
            &Facts {
                booted: Some(id('o')),
                default: Some(id('o')),
                default_exact: true,
                ..Default::default()
            },
            vec![dep('o', 2, true), dep('r', 1, true), bad],
        );
        assert_eq!(short(&s.rollback), Some('r'));
        assert_eq!(shorts(&s.failed), "n");
    }
}
