//! Unit tests of `lifecycle`.

use super::*;
use crate::domain::tree::tests::tree;

fn facts(kind: TaskKind, target: i64, prev_active: Option<i64>) -> TaskFacts {
    TaskFacts {
        kind,
        target,
        remove_subtree: false,
        prev_active,
        save: None,
    }
}

fn with_state(mut t: Vec<crate::domain::tree::Node>, id: i64, s: SnapshotState) -> Tree {
    t.iter_mut().find(|n| n.id == id).unwrap().state = s;
    Tree::new(t)
}

fn nodes(t: &Tree) -> Vec<crate::domain::tree::Node> {
    t.subtree(1)
        .iter()
        .map(|id| t.get(*id).unwrap().clone())
        .collect()
}

#[test]
fn vm_must_be_running_or_quiesced() {
    assert!(check_vm_state(4).is_ok());
    assert!(check_vm_state(6).is_ok());
    assert_eq!(check_vm_state(3), Err(Rejection::VmState { state: 3 }));
}

#[test]
fn create_parents_on_the_active_snapshot() {
    let t = tree(&[(1, None), (2, Some(1))], Some(1));
    assert_eq!(create(&t, "new", None).unwrap().parent, Some(1));
    assert_eq!(create(&Tree::default(), "new", None).unwrap().parent, None);
}

#[test]
fn create_refuses_duplicate_names_and_full_vms() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    assert_eq!(
        create(&t, "s1", None),
        Err(Rejection::NameTaken { name: "s1".into() })
    );
    assert_eq!(
        create(&t, "x", Some(2)),
        Err(Rejection::LimitReached { limit: 2 })
    );
    assert!(create(&t, "x", Some(3)).is_ok());
}

#[test]
fn apply_needs_running_and_moves_active() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    let plan = apply(&t, 1).unwrap();
    assert_eq!(plan.changes.states, vec![(1, RunningUpdate)]);
    assert_eq!(plan.changes.active, Some(Some(1)));
    let t = with_state(nodes(&t), 1, Unresourced);
    assert_eq!(
        apply(&t, 1),
        Err(Rejection::NotApplicable {
            id: 1,
            state: Unresourced
        })
    );
    assert_eq!(apply(&t, 9), Err(Rejection::Closed { id: 9 }));
}

#[test]
fn revert_applies_the_active_snapshot() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    let plan = revert(&t).unwrap();
    assert_eq!((plan.target, plan.changes.active), (2, None));
    let none = tree(&[(1, None)], None);
    assert_eq!(revert(&none), Err(Rejection::NoActiveSnapshot));
}

#[test]
fn delete_needs_a_stable_snapshot() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    assert_eq!(
        delete(&t, 2, true).unwrap().changes.states,
        vec![(2, Scrub)]
    );
    let t = with_state(nodes(&t), 2, Building);
    assert_eq!(
        delete(&t, 2, false),
        Err(Rejection::NotDeletable {
            id: 2,
            state: Building
        })
    );
    let t = with_state(nodes(&t), 2, Unresourced);
    assert!(delete(&t, 2, false).is_ok());
}

#[test]
fn a_protected_snapshot_is_deleted_neither_alone_nor_in_a_subtree() {
    // 1 -> 2 -> 3, and 1 -> 4; 3 is protected.
    let mut all = nodes(&tree(
        &[(1, None), (2, Some(1)), (3, Some(2)), (4, Some(1))],
        Some(4),
    ));
    all.iter_mut().find(|n| n.id == 3).unwrap().protected = true;
    let t = Tree::new(all);
    assert_eq!(
        delete(&t, 3, false),
        Err(Rejection::Protected {
            id: 3,
            name: "s3".into(),
            below: false
        })
    );
    assert_eq!(
        delete(&t, 1, true),
        Err(Rejection::Protected {
            id: 3,
            name: "s3".into(),
            below: true
        }),
        "a subtree that holds it"
    );
    // Deleting one above it alone is fine: it moves up.
    assert!(delete(&t, 2, false).is_ok());
    assert!(delete(&t, 4, true).is_ok());
}

#[test]
fn a_subtree_delete_scrubs_every_descendant() {
    let t = tree(&[(1, None), (2, Some(1)), (3, Some(2))], Some(3));
    let task = TaskFacts {
        remove_subtree: true,
        ..facts(TaskKind::Scrub, 2, Some(3))
    };
    assert_eq!(
        started(&t, &task).states,
        vec![(2, Scrubbing), (3, Scrubbing)]
    );
    let done = succeeded(&t, &task);
    assert_eq!(done.states, vec![(2, Closed), (3, Closed)]);
    assert_eq!(done.active, Some(Some(1)));
}

#[test]
fn a_failed_create_gives_the_active_flag_back_to_the_parent() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    let changes = failed(
        &t,
        &facts(TaskKind::Build, 2, Some(1)),
        &HashMap::new(),
        None,
    );
    assert_eq!(changes.states, vec![(2, Unresourced)]);
    assert_eq!(changes.active, Some(Some(1)));
}

#[test]
fn a_failed_apply_trusts_the_host_then_the_previous_active() {
    let t = tree(&[(1, None), (2, Some(1)), (3, Some(1))], Some(3));
    let task = facts(TaskKind::Update, 3, Some(2));
    let host = HostView {
        current: Some(1),
        ..HostView::default()
    };
    assert_eq!(
        failed(&t, &task, &HashMap::new(), Some(&host)).active,
        Some(Some(1))
    );
    assert_eq!(
        failed(&t, &task, &HashMap::new(), None).active,
        Some(Some(2))
    );
}

#[test]
fn a_failed_delete_restores_what_the_host_still_has() {
    let t = tree(
        &[(1, None), (2, Some(1)), (3, Some(2)), (4, Some(2))],
        Some(4),
    );
    let task = TaskFacts {
        remove_subtree: true,
        ..facts(TaskKind::Scrub, 2, Some(4))
    };
    let before = HashMap::from([(2, Running), (3, Running), (4, Unresourced)]);
    // The host lost 3 before failing; 4 was never on the host.
    let host = HostView {
        existing: HashSet::from([1, 2]),
        current: Some(2),
    };
    let changes = failed(&t, &task, &before, Some(&host));
    assert_eq!(
        changes.states,
        vec![(3, Closed), (2, Running), (4, Unresourced)]
    );
    let blind = failed(&t, &task, &before, None);
    assert_eq!(
        blind.states,
        vec![(2, Running), (3, Running), (4, Unresourced)]
    );
}

#[test]
fn a_cancelled_create_leaves_nothing_behind() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    let changes = cancelled(&t, &facts(TaskKind::Build, 2, Some(1)), &HashMap::new());
    assert_eq!(changes.states, vec![(2, Closed)]);
    assert_eq!(changes.active, Some(Some(1)));
}

#[test]
fn an_apply_saving_first_saves_then_applies_and_keeps_a_save_the_host_has() {
    let t = tree(&[(1, None), (2, Some(1))], Some(2));
    let (save, apply) = apply_saving(&t, 1, "before", Some(3)).unwrap();
    assert_eq!((save.parent, apply.target), (Some(2), 1));
    assert_eq!(
        apply_saving(&t, 1, "s2", None),
        Err(Rejection::NameTaken { name: "s2".into() })
    );
    assert_eq!(
        apply_saving(&t, 1, "x", Some(2)),
        Err(Rejection::LimitReached { limit: 2 })
    );
    // The saved snapshot 3 was inserted (REQUESTED) under 2; 1 is being applied.
    let mut nodes = nodes(&t);
    nodes.push(crate::domain::tree::Node {
        id: 3,
        parent_id: Some(2),
        name: "before".into(),
        state: Requested,
        active: false,
        protected: false,
        expires_at: None,
    });
    let mut t = Tree::new(nodes);
    t.apply(&apply.changes);
    let task = TaskFacts {
        save: Some(3),
        ..facts(TaskKind::Update, 1, Some(2))
    };
    assert_eq!(
        started(&t, &task).states,
        vec![(3, Building), (1, RunningUpdating)]
    );
    assert_eq!(
        succeeded(&t, &task).states,
        vec![(3, Running), (1, Running)]
    );
    // The save failed: the host has no 3, and nothing was applied.
    let host = HostView {
        existing: HashSet::from([1, 2]),
        current: Some(2),
    };
    let changes = failed(&t, &task, &HashMap::new(), Some(&host));
    assert_eq!(changes.states, vec![(3, Unresourced), (1, Running)]);
    assert_eq!(changes.active, Some(Some(2)));
    // The apply failed after the save: 3 stays, and the host's current is active.
    let host = HostView {
        existing: HashSet::from([1, 2, 3]),
        current: Some(3),
    };
    let changes = failed(&t, &task, &HashMap::new(), Some(&host));
    assert_eq!(changes.states, vec![(3, Running), (1, Running)]);
    assert_eq!(changes.active, Some(Some(3)));
    let changes = cancelled_before_save(&t, &task, 3);
    assert_eq!(changes.states, vec![(3, Closed), (1, Running)]);
}

#[test]
fn a_delete_forecast_says_where_the_active_snapshot_goes() {
    let t = tree(&[(1, None), (2, Some(1)), (3, Some(2))], Some(3));
    let subtree = forecast_delete(&t, 2, true);
    assert_eq!(subtree.removed, vec![2, 3]);
    assert_eq!(subtree.active_after, Some(Some(1)));
    assert_eq!(forecast_delete(&t, 2, false).active_after, None);
    assert_eq!(forecast_delete(&t, 3, false).active_after, Some(Some(2)));
}

#[test]
fn a_rename_keeps_names_unique_among_open_snapshots() {
    let t = with_state(
        nodes(&tree(&[(1, None), (2, Some(1))], Some(1))),
        2,
        Building,
    );
    assert_eq!(rename(&t, 1, "c"), Ok(()));
    assert_eq!(rename(&t, 1, "s1"), Ok(()), "its own name");
    assert_eq!(rename(&t, 2, "z"), Ok(()), "whatever its state");
    assert_eq!(
        rename(&t, 1, "s2"),
        Err(Rejection::NameTaken { name: "s2".into() })
    );
    assert_eq!(rename(&t, 3, "x"), Err(Rejection::Closed { id: 3 }));
}
