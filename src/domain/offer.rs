//! What a caller may do now, and why not: the answers a client shows before it asks
//! (a disabled button with its reason), from the same rules the actions enforce, in the
//! order an action meets them (role, a task under way, the VM's state, then the rules
//! of [`lifecycle`]). Nothing here decides an action: an offer is a forecast, and the
//! action is checked again when it is asked for.

use super::tree::Tree;
use super::{Rejection, Role, TaskState};
use super::{lifecycle, policy};

/// Why an action is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's role may not act (a VIEWER).
    Role,
    /// A task is queued or running for the VM.
    Busy,
    /// The VM's state allows no snapshot work.
    VmState,
    /// The snapshot's state (or the lack of an active one) does not allow it.
    SnapshotState,
    /// The host's limit leaves no room.
    Limit,
    /// The task's state does not allow it (it has ended, or was asked to stop already).
    TaskState,
    /// The policy's state does not allow it (it is not paused, or its token has ended).
    PolicyState,
    /// A protected snapshot would go.
    Protected,
    /// The VM's host cannot snapshot it (a UEFI guest on an older libvirt).
    Unsupported,
}

/// An action's forecast: allowed, or refused with the sentence a person reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer(pub Result<(), (Refusal, String)>);

impl Offer {
    pub fn allowed(&self) -> bool {
        self.0.is_ok()
    }
}

/// Why an action on a VM is refused before any snapshot rule is asked: the checks every
/// task-making action meets first, in this order. The offers and the actions both ask
/// [`precheck`], so that they refuse alike, in the same words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// The caller's role may not act (a VIEWER).
    #[error("Your token is a VIEWER's: it may look at snapshots and tasks, not act on them.")]
    Role,
    /// The VM's host cannot snapshot it, for the reason given.
    #[error("{0}")]
    Unsupported(String),
    /// A task (`task`, when known) is queued or running for the VM.
    #[error("This VM is busy with another task; wait for it to end, or cancel it.")]
    Busy { task: Option<i64> },
    /// The VM's state allows no snapshot work.
    #[error(transparent)]
    VmState(Rejection),
}

impl Blocked {
    /// The offer's form: the kind of refusal and its sentence.
    fn refusal(self) -> (Refusal, String) {
        let kind = match self {
            Self::Role => Refusal::Role,
            Self::Busy { .. } => Refusal::Busy,
            Self::Unsupported(_) => Refusal::Unsupported,
            Self::VmState(_) => Refusal::VmState,
        };
        (kind, self.to_string())
    }
}

/// The checks every task-making action meets before the rules of [`lifecycle`]: the
/// caller's `role` may act, the VM's host can snapshot it at all (`unsupported` says
/// why not), no task (`busy`, its id) is under way on the VM, and the VM's state
/// (`vm_state`) allows snapshot work.
pub fn precheck(
    role: Role,
    unsupported: Option<&str>,
    busy: Option<i64>,
    vm_state: i32,
) -> Result<(), Blocked> {
    if !role.may_act() {
        return Err(Blocked::Role);
    }
    if let Some(why) = unsupported {
        return Err(Blocked::Unsupported(why.to_owned()));
    }
    if let Some(task) = busy {
        return Err(Blocked::Busy { task: Some(task) });
    }
    lifecycle::check_vm_state(vm_state).map_err(Blocked::VmState)
}

/// What every action on a VM depends on besides its tree.
#[derive(Clone, Debug)]
pub struct Standing {
    /// The caller's role (its token's); a VIEWER is refused every action.
    pub role: Role,
    /// Why the VM's host cannot snapshot it, if it cannot.
    pub unsupported: Option<String>,
    /// The task queued or running for the VM, if any.
    pub busy: Option<i64>,
    /// The VM's CloudCIX state.
    pub vm_state: i32,
    /// The most non-closed snapshots the VM may have.
    pub limit: Option<i32>,
    /// The project's non-closed snapshots and its quota, when it has one.
    pub quota: Option<(i64, i32)>,
}

impl Standing {
    /// The checks every task-making action meets first, then `rule`.
    fn offer(&self, rule: impl FnOnce() -> Result<(), Rejection>) -> Offer {
        Offer(self.before_rules().and_then(|()| rule().map_err(refusal)))
    }

    fn role(&self) -> Result<(), (Refusal, String)> {
        if self.role.may_act() {
            Ok(())
        } else {
            Err(Blocked::Role.refusal())
        }
    }

    fn before_rules(&self) -> Result<(), (Refusal, String)> {
        precheck(
            self.role,
            self.unsupported.as_deref(),
            self.busy,
            self.vm_state,
        )
        .map_err(|blocked| blocked.refusal())
    }

    /// Creating a snapshot (or saving the current state before an apply).
    pub fn create(&self, tree: &Tree) -> Offer {
        self.offer(|| {
            lifecycle::room(tree, self.limit)?;
            let (used, quota) = self.quota.unzip();
            lifecycle::quota(used.unwrap_or(0), quota)
        })
    }

    /// Reverting to the active snapshot.
    pub fn revert(&self, tree: &Tree) -> Offer {
        self.offer(|| lifecycle::revert(tree).map(drop))
    }

    /// Applying snapshot `id`.
    pub fn apply(&self, tree: &Tree, id: i64) -> Offer {
        self.offer(|| lifecycle::apply(tree, id).map(drop))
    }

    /// Deleting snapshot `id`, or its whole subtree.
    pub fn delete(&self, tree: &Tree, id: i64, subtree: bool) -> Offer {
        self.offer(|| lifecycle::delete(tree, id, subtree).map(drop))
    }

    /// Protecting or unprotecting snapshot `id`: no task, so only the role and the
    /// snapshot matter.
    pub fn protect(&self, tree: &Tree, id: i64) -> Offer {
        Offer(
            self.role()
                .and_then(|()| lifecycle::protect(tree, id).map_err(refusal)),
        )
    }

    /// Renaming snapshot `id`: no task, so only the role and the snapshot matter.
    pub fn rename(&self, tree: &Tree, id: i64) -> Offer {
        let name = tree.get(id).map(|n| n.name.as_str()).unwrap_or_default();
        Offer(
            self.role()
                .and_then(|()| lifecycle::rename(tree, id, name).map_err(refusal)),
        )
    }
}

/// Cancelling a task in state `state`, whose robot was asked to stop it already when
/// `asked`: by a role that may act, while it has not ended and no cancel is pending.
pub fn cancel(role: Role, state: TaskState, asked: bool) -> Offer {
    if !role.may_act() {
        return Offer(Err(Blocked::Role.refusal()));
    }
    Offer(lifecycle::cancel(state, asked).map_err(refusal))
}

/// Resuming a policy that is `paused`, whose token no longer lets it run when
/// `stopped` says why: by a role that may act, under [`policy::resume`]'s rule.
pub fn resume(role: Role, paused: bool, stopped: Option<&'static str>) -> Offer {
    if !role.may_act() {
        return Offer(Err(Blocked::Role.refusal()));
    }
    Offer(policy::resume(paused, stopped).map_err(refusal))
}

fn refusal(rejection: Rejection) -> (Refusal, String) {
    let kind = match rejection {
        Rejection::LimitReached { .. } | Rejection::QuotaReached { .. } => Refusal::Limit,
        Rejection::VmState { .. } => Refusal::VmState,
        Rejection::TaskEnded { .. } | Rejection::CancelAsked => Refusal::TaskState,
        Rejection::NotPaused | Rejection::PolicyStopped { .. } => Refusal::PolicyState,
        Rejection::Protected { .. } => Refusal::Protected,
        _ => Refusal::SnapshotState,
    };
    (kind, rejection.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SnapshotState;
    use crate::domain::state::vm_state;
    use crate::domain::tree::tests::tree;

    /// A state that allows no snapshot work.
    const QUIESCING: i32 = 12;

    fn standing(role: Role) -> Standing {
        Standing {
            role,
            unsupported: None,
            busy: None,
            vm_state: vm_state::RUNNING,
            limit: Some(3),
            quota: None,
        }
    }

    fn refused(offer: Offer) -> Refusal {
        offer.0.expect_err("refused").0
    }

    #[test]
    fn checks_come_in_the_order_an_action_meets_them() {
        let t = tree(&[(1, None), (2, Some(1)), (3, Some(2))], Some(3));
        let viewer = Standing {
            busy: Some(9),
            ..standing(Role::Viewer)
        };
        assert_eq!(refused(viewer.apply(&t, 1)), Refusal::Role);
        let busy = Standing {
            busy: Some(9),
            vm_state: QUIESCING,
            ..standing(Role::Operator)
        };
        assert_eq!(refused(busy.apply(&t, 1)), Refusal::Busy);
        let stopped = Standing {
            vm_state: QUIESCING,
            ..standing(Role::Operator)
        };
        assert_eq!(refused(stopped.apply(&t, 1)), Refusal::VmState);
        let uefi = Standing {
            unsupported: Some("UEFI".into()),
            busy: Some(9),
            ..standing(Role::Operator)
        };
        assert_eq!(refused(uefi.create(&t)), Refusal::Unsupported);
        assert_eq!(uefi.create(&t).0.unwrap_err().1, "UEFI");
        assert_eq!(refused(standing(Role::Admin).create(&t)), Refusal::Limit);
        assert!(standing(Role::Admin).apply(&t, 1).allowed());
        let quota = |used| Standing {
            quota: Some((used, 5)),
            ..standing(Role::Operator)
        };
        let two = tree(&[(1, None), (2, Some(1))], Some(2));
        assert!(quota(4).create(&two).allowed());
        assert_eq!(refused(quota(5).create(&two)), Refusal::Limit);
    }

    #[test]
    fn snapshot_states_decide_last() {
        let mut nodes: Vec<_> = [1, 2]
            .iter()
            .map(|&id| {
                tree(&[(1, None), (2, Some(1))], Some(2))
                    .get(id)
                    .unwrap()
                    .clone()
            })
            .collect();
        nodes[1].state = SnapshotState::Building;
        let t = Tree::new(nodes);
        let op = standing(Role::Operator);
        assert_eq!(refused(op.apply(&t, 2)), Refusal::SnapshotState);
        assert_eq!(refused(op.delete(&t, 2, false)), Refusal::SnapshotState);
        assert!(op.delete(&t, 1, true).allowed());
        assert!(op.rename(&t, 2).allowed(), "a rename needs no task");
        let viewer = standing(Role::Viewer);
        assert_eq!(refused(viewer.rename(&t, 2)), Refusal::Role);
        let none = tree(&[(1, None)], None);
        assert_eq!(refused(op.revert(&none)), Refusal::SnapshotState);
    }
}
