//! What the caller may do now, and what a delete would do: the answers a client shows
//! before it asks ([`crate::domain::offer`] and [`lifecycle::forecast_delete`], read
//! off the request's tree of the VM), so that no client encodes a rule.

use async_graphql::{Context, Object, Result, SimpleObject};

use super::enums::Refusal;
use super::loaders::{HostId, Loaders, OpenTaskOf, ProjectId, SnapshotCountOf};
use super::types::{Snapshot, maybe, one};
use crate::db::models;
use crate::domain::lifecycle;
use crate::domain::offer::{self, Offer, Standing};
use crate::service::{Caller, Service};

/// Whether the caller may take an action now; when not, why. A forecast: the action is
/// checked again when it is asked for.
pub struct Allowance(Offer);

#[Object]
impl Allowance {
    async fn allowed(&self) -> bool {
        self.0.allowed()
    }

    /// Why not, in a sentence to show.
    async fn reason(&self) -> Option<&str> {
        self.0.0.as_ref().err().map(|(_, why)| why.as_str())
    }

    async fn refusal(&self) -> Option<Refusal> {
        self.0.0.as_ref().err().map(|(kind, _)| (*kind).into())
    }
}

/// The actions on a VM, for the caller, now.
#[derive(SimpleObject)]
pub struct VmActions {
    /// Creating a snapshot (also needed to save the current state before an apply).
    create: Allowance,
    /// Reverting to the active snapshot.
    revert: Allowance,
}

/// The actions on a snapshot, for the caller, now.
#[derive(SimpleObject)]
pub struct SnapshotActions {
    /// Applying it: the VM returns to it (optionally saving the current state first).
    apply: Allowance,
    /// Deleting it alone (its children move up).
    delete: Allowance,
    /// Deleting it and everything below it.
    delete_subtree: Allowance,
    /// Renaming it or changing its description.
    rename: Allowance,
    /// Protecting it from deletes, or lifting that (`updateSnapshot(protected:)`).
    protect: Allowance,
}

/// The actions on a task, for the caller, now.
#[derive(SimpleObject)]
pub struct TaskActions {
    /// Cancelling it: a queued task at once, a running one at its robot's next safe point.
    cancel: Allowance,
}

/// What the caller may do with task `task` now.
pub fn task_actions(ctx: &Context<'_>, task: &models::Task) -> TaskActions {
    let role = ctx.data_unchecked::<Caller>().role;
    TaskActions {
        cancel: Allowance(offer::cancel(role, task.state(), task.cancel_requested)),
    }
}

/// The actions on a policy, for the caller, now.
#[derive(SimpleObject)]
pub struct PolicyActions {
    /// Resuming it: only a paused policy, and only while its token lets it run.
    resume: Allowance,
}

/// What the caller may do with policy `policy` now.
pub async fn policy_actions(ctx: &Context<'_>, policy: &models::Policy) -> Result<PolicyActions> {
    let caller = ctx.data_unchecked::<Caller>();
    let token = super::policies::token_of(ctx, policy).await?;
    let resume = ctx
        .data_unchecked::<Service>()
        .resume_offer(caller, policy, token.as_ref());
    Ok(PolicyActions {
        resume: Allowance(resume),
    })
}

/// What deleting a snapshot would do, as the tree stands now.
pub struct DeleteForecast {
    /// What the domain's rule says the delete would remove and make active.
    forecast: lifecycle::DeleteForecast,
    /// The snapshot's VM, whose tree and snapshots `activeAfter` reads.
    vm: i64,
}

#[Object]
impl DeleteForecast {
    /// How many snapshots it removes.
    async fn removed(&self) -> i32 {
        i32::try_from(self.forecast.removed.len()).unwrap_or(i32::MAX)
    }

    /// How many snapshots move up to the deleted one's parent: its children, when it is
    /// deleted alone (0 for a subtree).
    async fn moves_up(&self) -> i32 {
        i32::try_from(self.forecast.moved_up).unwrap_or(i32::MAX)
    }

    /// It removes the active snapshot, so "Now" moves (to `activeAfter`).
    async fn moves_active(&self) -> bool {
        self.forecast.active_after.is_some()
    }

    /// Where the active snapshot is afterwards (null: none is left); the current one
    /// when the delete does not remove it.
    async fn active_after(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        let tree = ctx.data_unchecked::<Loaders>().tree(self.vm).await?;
        let id = match self.forecast.active_after {
            Some(after) => after,
            None => tree.active(),
        };
        let rows: std::sync::Arc<Vec<models::Snapshot>> =
            maybe(ctx, super::loaders::OpenSnapshotsOf(self.vm))
                .await?
                .unwrap_or_default();
        Ok(id.and_then(|id| rows.iter().find(|s| s.id == id).cloned().map(Snapshot)))
    }
}

/// What every offer on VM `vm` depends on besides its tree.
async fn standing(ctx: &Context<'_>, vm: &models::Vm) -> Result<Standing> {
    let host: models::Host = one(ctx, HostId(vm.host_id)).await?;
    let busy = maybe::<_, models::Task>(ctx, OpenTaskOf(vm.id))
        .await?
        .map(|task| task.id);
    let limit = ctx
        .data_unchecked::<Service>()
        .snapshot_limit(host.max_snapshots_per_vm);
    let project: models::Project = one(ctx, ProjectId(vm.project_id)).await?;
    let quota = match project.max_snapshots {
        Some(quota) => Some((one(ctx, SnapshotCountOf(project.id)).await?, quota)),
        None => None,
    };
    Ok(Standing {
        role: ctx.data_unchecked::<Caller>().role,
        unsupported: vm.unsupported.clone(),
        busy,
        vm_state: vm.state,
        limit: Some(limit),
        quota,
    })
}

pub async fn vm_actions(ctx: &Context<'_>, vm: &models::Vm) -> Result<VmActions> {
    let standing = standing(ctx, vm).await?;
    let tree = ctx.data_unchecked::<Loaders>().tree(vm.id).await?;
    Ok(VmActions {
        create: Allowance(standing.create(&tree)),
        revert: Allowance(standing.revert(&tree)),
    })
}

pub async fn snapshot_actions(ctx: &Context<'_>, s: &models::Snapshot) -> Result<SnapshotActions> {
    let vm: models::Vm = one(ctx, super::loaders::VmId(s.vm_id)).await?;
    let standing = standing(ctx, &vm).await?;
    let tree = ctx.data_unchecked::<Loaders>().tree(s.vm_id).await?;
    Ok(SnapshotActions {
        apply: Allowance(standing.apply(&tree, s.id)),
        delete: Allowance(standing.delete(&tree, s.id, false)),
        delete_subtree: Allowance(standing.delete(&tree, s.id, true)),
        rename: Allowance(standing.rename(&tree, s.id)),
        protect: Allowance(standing.protect(&tree, s.id)),
    })
}

pub async fn delete_forecast(
    ctx: &Context<'_>,
    s: &models::Snapshot,
    remove_subtree: bool,
) -> Result<DeleteForecast> {
    let tree = ctx.data_unchecked::<Loaders>().tree(s.vm_id).await?;
    Ok(DeleteForecast {
        forecast: lifecycle::forecast_delete(&tree, s.id, remove_subtree),
        vm: s.vm_id,
    })
}
