//! The rules of `snapshots.md`, in one place: what each of the five actions requires and
//! changes when it is asked for, and what the robot changes when its task starts,
//! succeeds, fails or is cancelled. The service and the robot only load the tree, call
//! these functions and write the [`Changes`] they return.

use std::collections::{HashMap, HashSet};

use super::tree::{Changes, Tree};
use super::{Rejection, SnapshotState, TaskKind, TaskState, state::vm_state};

use SnapshotState::*;

/// Snapshot operations need the VM in RUNNING or QUIESCED.
pub fn check_vm_state(code: i32) -> Result<(), Rejection> {
    if code == vm_state::RUNNING || code == vm_state::QUIESCED {
        Ok(())
    } else {
        Err(Rejection::VmState { state: code })
    }
}

/// Whether a task in state `state` can be cancelled: a queued one at once, a running one
/// at its robot's next safe point unless it was asked already (`asked`); an ended one
/// not at all.
pub fn cancel(state: TaskState, asked: bool) -> Result<(), Rejection> {
    match state {
        TaskState::Queued => Ok(()),
        TaskState::Running if !asked => Ok(()),
        TaskState::Running => Err(Rejection::CancelAsked),
        ended => Err(Rejection::TaskEnded { state: ended }),
    }
}

/// What a create needs to know before the snapshot row exists.
#[derive(Debug, PartialEq)]
pub struct CreatePlan {
    /// The new snapshot's parent: the VM's active snapshot.
    pub parent: Option<i64>,
}

/// Create: `name` (already trimmed and checked) must be unused among the VM's non-closed
/// snapshots, and the host's limit must leave room.
pub fn create(tree: &Tree, name: &str, limit: Option<i32>) -> Result<CreatePlan, Rejection> {
    if tree.has_name(name) {
        return Err(Rejection::NameTaken {
            name: name.to_owned(),
        });
    }
    room(tree, limit)?;
    Ok(CreatePlan {
        parent: tree.active(),
    })
}

/// The host's limit leaves room for one more snapshot.
pub fn room(tree: &Tree, limit: Option<i32>) -> Result<(), Rejection> {
    match limit {
        Some(limit) if tree.len() >= usize::try_from(limit).unwrap_or(0) => {
            Err(Rejection::LimitReached { limit })
        }
        _ => Ok(()),
    }
}

/// A project's quota leaves room for one more snapshot, with `used` non-closed ones
/// across its VMs.
pub fn quota(used: i64, quota: Option<i32>) -> Result<(), Rejection> {
    match quota {
        Some(limit) if used >= i64::from(limit) => Err(Rejection::QuotaReached { limit }),
        _ => Ok(()),
    }
}

/// When a snapshot made at `created` is (or becomes) stale, kept for longer than
/// `after` (VMware's guidance: 72 hours, past which a snapshot slows its VM and grows
/// without bound), and whether it is at `now`; `None` for a deleted one.
pub fn staleness(
    state: SnapshotState,
    created: chrono::NaiveDateTime,
    now: chrono::NaiveDateTime,
    after: std::time::Duration,
) -> Option<(chrono::NaiveDateTime, bool)> {
    if state == Closed {
        return None;
    }
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let since = created.checked_add_signed(after)?;
    Some((since, now >= since))
}

/// Apply with the current state saved first: a create's rules for the save (a child of
/// the active snapshot, named `name`), then the apply's. One task does both, the save
/// first; the new snapshot is never active unless the apply fails after it.
pub fn apply_saving(
    tree: &Tree,
    id: i64,
    name: &str,
    limit: Option<i32>,
) -> Result<(CreatePlan, Plan), Rejection> {
    let save = create(tree, name, limit)?;
    Ok((save, apply(tree, id)?))
}

/// What a delete would do to the tree, told before it is asked for.
#[derive(Debug, PartialEq)]
pub struct DeleteForecast {
    /// The snapshots it removes (the target, and for a subtree its descendants).
    pub removed: Vec<i64>,
    /// `Some(x)` when the active snapshot is removed and `x` becomes active.
    pub active_after: Option<Option<i64>>,
    /// How many snapshots move up to a new parent (a single delete's children).
    pub moved_up: usize,
}

/// The same changes a successful delete makes ([`succeeded`] closes the task's scope).
pub fn forecast_delete(tree: &Tree, id: i64, remove_subtree: bool) -> DeleteForecast {
    let removed = if tree.get(id).is_none() {
        Vec::new()
    } else if remove_subtree {
        tree.subtree(id)
    } else {
        vec![id]
    };
    let changes = tree.close(&removed);
    DeleteForecast {
        removed,
        active_after: changes.active,
        moved_up: changes.parents.len(),
    }
}

/// Rename: snapshot `id` must not be deleted, and `name` (already trimmed and checked)
/// must be unused by the VM's other non-closed snapshots. Its host name is made of ids,
/// so the host has nothing to do: a rename is no task, whatever else is under way.
pub fn rename(tree: &Tree, id: i64, name: &str) -> Result<(), Rejection> {
    let node = node_in(tree, id)?;
    if node.name != name && tree.has_name(name) {
        return Err(Rejection::NameTaken {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Protecting or unprotecting snapshot `id`: it must not be deleted. No task: only
/// snaptree keeps deletes from it.
pub fn protect(tree: &Tree, id: i64) -> Result<(), Rejection> {
    node_in(tree, id).map(drop)
}

/// The changes once the new snapshot (in REQUESTED) exists: it becomes active at once.
pub fn created(new_id: i64) -> Changes {
    Changes {
        active: Some(Some(new_id)),
        ..Changes::default()
    }
}

/// An accepted apply, revert or delete: the changes and the task to queue.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// The task to queue: UPDATE for an apply or revert, SCRUB for a delete.
    pub kind: TaskKind,
    /// The snapshot the task works on (for a revert, the active one).
    pub target: i64,
    /// What the action writes to the tree, in the same transaction as the task.
    pub changes: Changes,
    /// Recorded on the snapshot (delete only).
    pub remove_subtree: bool,
}

fn node_in(tree: &Tree, id: i64) -> Result<&super::tree::Node, Rejection> {
    tree.get(id).ok_or(Rejection::Closed { id })
}

/// Apply: a RUNNING snapshot becomes active, state RUNNING_UPDATE.
pub fn apply(tree: &Tree, id: i64) -> Result<Plan, Rejection> {
    let node = node_in(tree, id)?;
    if node.state != Running {
        return Err(Rejection::NotApplicable {
            id,
            state: node.state,
        });
    }
    Ok(Plan {
        kind: TaskKind::Update,
        target: id,
        changes: Changes {
            states: vec![(id, RunningUpdate)],
            active: (!node.active).then_some(Some(id)),
            ..Changes::default()
        },
        remove_subtree: false,
    })
}

/// Revert: apply of the VM's active snapshot.
pub fn revert(tree: &Tree) -> Result<Plan, Rejection> {
    let active = tree.active().ok_or(Rejection::NoActiveSnapshot)?;
    apply(tree, active)
}

/// Delete one or a subtree: the snapshot must be RUNNING or UNRESOURCED, and neither it
/// nor (for a subtree) any under it protected; state SCRUB.
pub fn delete(tree: &Tree, id: i64, remove_subtree: bool) -> Result<Plan, Rejection> {
    let node = node_in(tree, id)?;
    if !matches!(node.state, Running | Unresourced) {
        return Err(Rejection::NotDeletable {
            id,
            state: node.state,
        });
    }
    let gone = if remove_subtree {
        tree.subtree(id)
    } else {
        vec![id]
    };
    if let Some(kept) = gone
        .iter()
        .filter_map(|&g| tree.get(g))
        .find(|n| n.protected)
    {
        return Err(Rejection::Protected {
            id: kept.id,
            name: kept.name.clone(),
            below: kept.id != id,
        });
    }
    Ok(Plan {
        kind: TaskKind::Scrub,
        target: id,
        changes: Changes {
            states: vec![(id, Scrub)],
            ..Changes::default()
        },
        remove_subtree,
    })
}

/// What the robot knows of the task it is finishing.
#[derive(Clone, Debug)]
pub struct TaskFacts {
    /// The task's kind.
    pub kind: TaskKind,
    /// The task's snapshot (`tasks.snapshot_id`): the one created, applied or deleted.
    pub target: i64,
    /// A subtree delete.
    pub remove_subtree: bool,
    /// The VM's active snapshot before the action.
    pub prev_active: Option<i64>,
    /// An apply's save of the current state first: the new snapshot.
    pub save: Option<i64>,
}

impl TaskFacts {
    /// The snapshots the task works on: the target, and for a subtree delete every
    /// descendant.
    pub fn scope(&self, tree: &Tree) -> Vec<i64> {
        if self.kind == TaskKind::Scrub && self.remove_subtree {
            tree.subtree(self.target)
        } else {
            self.save.into_iter().chain([self.target]).collect()
        }
    }
}

/// The robot starts work on the host.
pub fn started(tree: &Tree, task: &TaskFacts) -> Changes {
    let state = |id: i64| match task.kind {
        _ if Some(id) == task.save => Building,
        TaskKind::Build => Building,
        TaskKind::Update => RunningUpdating,
        TaskKind::Scrub => Scrubbing,
    };
    Changes {
        states: task
            .scope(tree)
            .into_iter()
            .filter(|&id| tree.get(id).is_some_and(|n| n.state != state(id)))
            .map(|id| (id, state(id)))
            .collect(),
        ..Changes::default()
    }
}

/// The host did the work.
pub fn succeeded(tree: &Tree, task: &TaskFacts) -> Changes {
    match task.kind {
        TaskKind::Build => Changes {
            states: vec![(task.target, Running)],
            ..Changes::default()
        },
        TaskKind::Update => Changes {
            states: task
                .scope(tree)
                .into_iter()
                .map(|id| (id, Running))
                .collect(),
            active: (tree.active() != Some(task.target)).then_some(Some(task.target)),
            ..Changes::default()
        },
        TaskKind::Scrub => tree.close(&task.scope(tree)),
    }
}

/// What the host reported when asked after a failure; `None` when it could not tell.
#[derive(Clone, Debug, Default)]
pub struct HostView {
    /// Snapshots (by id) that exist on the host.
    pub existing: HashSet<i64>,
    /// The host's current snapshot, when it is one snaptree knows.
    pub current: Option<i64>,
}

/// The host failed (for good, or out of retries), or the task was stopped.
///
/// `before` holds each snapshot's state before the robot touched it (for a delete, the
/// state before SCRUB). `host` is what the host reports now, when it could tell.
pub fn failed(
    tree: &Tree,
    task: &TaskFacts,
    before: &HashMap<i64, SnapshotState>,
    host: Option<&HostView>,
) -> Changes {
    match task.kind {
        // UNRESOURCED, and the active flag goes back to the parent.
        TaskKind::Build => Changes {
            states: vec![(task.target, Unresourced)],
            active: (tree.active() == Some(task.target)).then_some(task.prev_active),
            ..Changes::default()
        },
        // Back to RUNNING; active is what the host reports as current, or the previous one.
        // A save of the current state first is RUNNING if the host has it (it holds the
        // state the VM had), UNRESOURCED if not.
        TaskKind::Update => {
            let active = match host {
                Some(view) => view.current.or(task.prev_active),
                None => task.prev_active,
            };
            let saved = |id: i64| host.is_some_and(|view| view.existing.contains(&id));
            let mut states: Vec<_> = task
                .save
                .map(|id| (id, if saved(id) { Running } else { Unresourced }))
                .into_iter()
                .collect();
            states.push((task.target, Running));
            Changes {
                states,
                active: (tree.active() != active).then_some(active),
                ..Changes::default()
            }
        }
        // Back to the previous state; what the host no longer has is closed for real.
        TaskKind::Scrub => {
            let scope = task.scope(tree);
            let prior = |id: i64| before.get(&id).copied().unwrap_or(Running);
            let gone: Vec<i64> = match host {
                Some(view) => scope
                    .iter()
                    .copied()
                    .filter(|&id| prior(id) == Running && !view.existing.contains(&id))
                    .collect(),
                None => Vec::new(),
            };
            let mut changes = tree.close(&gone);
            changes.states.extend(
                scope
                    .iter()
                    .filter(|id| !gone.contains(id))
                    .map(|&id| (id, prior(id))),
            );
            changes
        }
    }
}

/// A task was cancelled before the host did anything lasting: a create leaves nothing
/// behind (the snapshot is closed), an apply or delete changes nothing on the host.
pub fn cancelled(tree: &Tree, task: &TaskFacts, before: &HashMap<i64, SnapshotState>) -> Changes {
    match task.kind {
        TaskKind::Build => tree.close(&[task.target]),
        _ => failed(tree, task, before, None),
    }
}

/// An apply whose save of the current state was cancelled before the host had it: the
/// apply changes nothing, and the save leaves nothing behind.
pub fn cancelled_before_save(tree: &Tree, task: &TaskFacts, save: i64) -> Changes {
    let mut changes = tree.close(&[save]);
    changes.states.push((task.target, Running));
    let active = task.prev_active;
    changes.active = (tree.active() != active).then_some(active);
    changes
}

#[cfg(test)]
mod tests;
