//! Drift: where snaptree's record of a VM's snapshots and the host's own list disagree.
//! Pure: the caller brings both sides.

use std::collections::HashMap;

use super::SnapshotState;

/// How the two sides disagree.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DriftKind {
    /// snaptree has the snapshot (RUNNING), the host does not.
    MissingOnHost,
    /// The host has a snapshot snaptree does not know.
    UnknownToSnaptree,
    /// Both have it, under different parents.
    DifferentParent,
    /// The host's current snapshot is not snaptree's active one.
    DifferentCurrent,
}

/// One disagreement. Names are the snapshots' names on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// How the two sides disagree.
    pub kind: DriftKind,
    /// The snapshot concerned (for a different current: snaptree's active one).
    pub host_name: Option<String>,
    /// What snaptree has (a parent or the active snapshot); `None`: nothing.
    pub expected: Option<String>,
    /// What the host has.
    pub actual: Option<String>,
}

/// A snapshot as snaptree records it.
pub struct Recorded<'a> {
    /// Its name on the host (`{vm_id}_{snapshot_id}`), which `Listed::name` is matched on.
    pub host_name: &'a str,
    /// Its parent's name on the host; `None` for a root.
    pub parent_host_name: Option<&'a str>,
    /// Its state: only a RUNNING snapshot that the host lacks is `MissingOnHost`.
    pub state: SnapshotState,
    /// Whether it is the VM's active snapshot, compared with the host's current one.
    pub active: bool,
}

/// A snapshot as the host lists it.
pub struct Listed<'a> {
    /// Its name on the host.
    pub name: &'a str,
    /// Its parent's name on the host; `None` for a root.
    pub parent: Option<&'a str>,
    /// Whether the host reports it as the VM's current snapshot.
    pub current: bool,
}

/// Compares snaptree's non-closed snapshots with the host's list. Snapshots that were
/// never built (UNRESOURCED, REQUESTED) are not expected on the host.
pub fn compare(recorded: &[Recorded<'_>], listed: &[Listed<'_>]) -> Vec<Drift> {
    let on_host: HashMap<&str, &Listed<'_>> = listed.iter().map(|l| (l.name, l)).collect();
    let known: HashMap<&str, &Recorded<'_>> = recorded.iter().map(|r| (r.host_name, r)).collect();
    let mut drift = Vec::new();
    for r in recorded {
        match on_host.get(r.host_name) {
            None if r.state == SnapshotState::Running => drift.push(Drift {
                kind: DriftKind::MissingOnHost,
                host_name: Some(r.host_name.to_owned()),
                expected: Some(r.host_name.to_owned()),
                actual: None,
            }),
            Some(l) if l.parent != r.parent_host_name => drift.push(Drift {
                kind: DriftKind::DifferentParent,
                host_name: Some(r.host_name.to_owned()),
                expected: r.parent_host_name.map(str::to_owned),
                actual: l.parent.map(str::to_owned),
            }),
            _ => {}
        }
    }
    for l in listed.iter().filter(|l| !known.contains_key(l.name)) {
        drift.push(Drift {
            kind: DriftKind::UnknownToSnaptree,
            host_name: Some(l.name.to_owned()),
            expected: None,
            actual: Some(l.name.to_owned()),
        });
    }
    let active = recorded.iter().find(|r| r.active).map(|r| r.host_name);
    let current = listed.iter().find(|l| l.current).map(|l| l.name);
    if active != current {
        drift.push(Drift {
            kind: DriftKind::DifferentCurrent,
            host_name: active.map(str::to_owned),
            expected: active.map(str::to_owned),
            actual: current.map(str::to_owned),
        });
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(name: &'a str, parent: Option<&'a str>, active: bool) -> Recorded<'a> {
        Recorded {
            host_name: name,
            parent_host_name: parent,
            state: SnapshotState::Running,
            active,
        }
    }

    fn host<'a>(name: &'a str, parent: Option<&'a str>, current: bool) -> Listed<'a> {
        Listed {
            name,
            parent,
            current,
        }
    }

    #[test]
    fn agreement_is_no_drift() {
        let r = [rec("a", None, false), rec("b", Some("a"), true)];
        let l = [host("a", None, false), host("b", Some("a"), true)];
        assert!(compare(&r, &l).is_empty());
    }

    #[test]
    fn every_kind_of_disagreement_is_reported() {
        let r = [
            rec("a", None, false),
            rec("b", Some("a"), true),
            rec("c", Some("a"), false),
            Recorded {
                state: SnapshotState::Unresourced,
                ..rec("never-built", Some("a"), false)
            },
        ];
        let l = [
            host("a", None, true),
            host("c", None, false),
            host("manual", Some("a"), false),
        ];
        let kinds: Vec<_> = compare(&r, &l)
            .into_iter()
            .map(|d| (d.kind, d.host_name))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DriftKind::MissingOnHost, Some("b".into())),
                (DriftKind::DifferentParent, Some("c".into())),
                (DriftKind::UnknownToSnaptree, Some("manual".into())),
                (DriftKind::DifferentCurrent, Some("b".into())),
            ]
        );
    }
}
