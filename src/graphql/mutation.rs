//! Mutations: the five snapshot actions, cancelling a task, and administration.

use async_graphql::{Context, ID, MaybeUndefined, Object, Result, ResultExt};
use chrono::{DateTime, Utc};

use super::enums::{Hypervisor, Role};
use super::parse_id;
use super::types::{CreatedToken, Host, Project, Snapshot, SnapshotPayload, Task, Vm};
use crate::service::{Caller, Change, Create, Service};

pub struct Mutation;

fn caller<'a>(ctx: &'a Context<'_>) -> &'a Caller {
    ctx.data_unchecked::<Caller>()
}

fn service<'a>(ctx: &'a Context<'_>) -> &'a Service {
    ctx.data_unchecked::<Service>()
}

/// An optional argument as a change: absent keeps (`None`), `null` removes (`Some(None)`).
fn change<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

#[Object]
impl Mutation {
    /// Snapshots a VM. The new snapshot is a child of the active one and becomes active.
    /// A `protected` one is kept from every delete (alone, in a subtree, by a policy)
    /// until `updateSnapshot` unprotects it. One with `expiresAt` is deleted once that
    /// time has passed (within a minute; never while protected or active); a project's
    /// `maxLifetimeHours` is the default and the latest allowed.
    async fn create_snapshot(
        &self,
        ctx: &Context<'_>,
        vm_id: ID,
        name: String,
        description: Option<String>,
        #[graphql(default = false)] protected: bool,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<SnapshotPayload> {
        let vm = parse_id(&vm_id, "VM").extend()?;
        let ask = Create {
            name: &name,
            description: description.as_deref(),
            protected,
            expires_at: expires_at.map(|at| at.naive_utc()),
        };
        let accepted = service(ctx)
            .actions()
            .create_snapshot(caller(ctx), vm, ask)
            .await
            .extend()?;
        Ok(SnapshotPayload(accepted))
    }

    /// Returns the VM to a snapshot, which becomes active; changes since are lost.
    /// With `saveCurrentAs`, the VM's current state is first saved as a new snapshot of
    /// that name (a child of the active one): one task, the save then the apply; if the
    /// save fails, nothing is applied (`Task.savedAs` and `Task.error` say so).
    async fn apply_snapshot(
        &self,
        ctx: &Context<'_>,
        id: ID,
        save_current_as: Option<String>,
    ) -> Result<SnapshotPayload> {
        let id = parse_id(&id, "snapshot").extend()?;
        let actions = service(ctx).actions();
        let accepted = match save_current_as {
            Some(name) => actions.apply_snapshot_saving(caller(ctx), id, &name).await,
            None => actions.apply_snapshot(caller(ctx), id).await,
        }
        .extend()?;
        Ok(SnapshotPayload(accepted))
    }

    /// Applies the VM's active snapshot: throws away everything since it.
    async fn revert_snapshot(&self, ctx: &Context<'_>, vm_id: ID) -> Result<SnapshotPayload> {
        let vm = parse_id(&vm_id, "VM").extend()?;
        let accepted = service(ctx)
            .actions()
            .revert_snapshot(caller(ctx), vm)
            .await
            .extend()?;
        Ok(SnapshotPayload(accepted))
    }

    /// Deletes a snapshot (its children move up to its parent) or, with
    /// `removeSubtree`, it and all its descendants. The VM's live state is untouched.
    async fn delete_snapshot(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default = false)] remove_subtree: bool,
    ) -> Result<SnapshotPayload> {
        let id = parse_id(&id, "snapshot").extend()?;
        let accepted = service(ctx)
            .actions()
            .delete_snapshot(caller(ctx), id, remove_subtree)
            .await
            .extend()?;
        Ok(SnapshotPayload(accepted))
    }

    /// Renames a snapshot, changes its description (`null` clears it), protects it
    /// from deletes (`protected`) or changes when it expires (`expiresAt`; `null`: never,
    /// unless its project has a maximum lifetime); what is not given is kept. No task
    /// runs: the host knows snapshots by ids, not names. The name must be unused among
    /// the VM's other snapshots.
    async fn update_snapshot(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: Option<String>,
        description: MaybeUndefined<String>,
        protected: Option<bool>,
        expires_at: MaybeUndefined<DateTime<Utc>>,
    ) -> Result<Snapshot> {
        let id = parse_id(&id, "snapshot").extend()?;
        let change = Change {
            name: name.as_deref(),
            description: description.as_opt_deref(),
            protected,
            expires_at: change(expires_at.map_value(|at| at.naive_utc())),
        };
        let updated = service(ctx)
            .actions()
            .update_snapshot(caller(ctx), id, change)
            .await
            .extend()?;
        Ok(Snapshot(updated))
    }

    /// A queued task is cancelled at once; a running one stops at a safe point. Asking
    /// again changes nothing.
    async fn cancel_task(&self, ctx: &Context<'_>, id: ID) -> Result<Task> {
        let id = parse_id(&id, "task").extend()?;
        Ok(Task(
            service(ctx)
                .actions()
                .cancel_task(caller(ctx), id)
                .await
                .extend()?,
        ))
    }

    /// A snapshot policy, run as the caller's token (revoking it stops the policy).
    async fn create_policy(
        &self,
        ctx: &Context<'_>,
        input: super::policies::PolicyInput,
    ) -> Result<super::policies::Policy> {
        let spec = input.spec().extend()?;
        let policy = service(ctx)
            .create_policy(caller(ctx), spec)
            .await
            .extend()?;
        Ok(super::policies::Policy(policy))
    }

    /// Deletes a policy; the snapshots it made stay, and are no longer pruned.
    async fn delete_policy(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let id = parse_id(&id, "policy").extend()?;
        service(ctx).delete_policy(caller(ctx), id).await.extend()
    }

    /// Resumes a policy paused because its runs kept being missed.
    async fn resume_policy(&self, ctx: &Context<'_>, id: ID) -> Result<super::policies::Policy> {
        let id = parse_id(&id, "policy").extend()?;
        let policy = service(ctx).resume_policy(caller(ctx), id).await.extend()?;
        Ok(super::policies::Policy(policy))
    }

    /// A new project; `maxSnapshots` caps the non-closed snapshots of all its VMs, and
    /// `maxLifetimeHours` how long each new snapshot lives (its expiry by default and at
    /// the latest).
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        name: String,
        max_snapshots: Option<i32>,
        max_lifetime_hours: Option<i32>,
    ) -> Result<Project> {
        let admin = service(ctx).admin();
        let project = admin.create_project(caller(ctx), &name).await.extend()?;
        if max_snapshots.is_none() && max_lifetime_hours.is_none() {
            return Ok(Project(project));
        }
        let project = admin
            .set_project_limits(
                caller(ctx),
                project.id,
                Some(max_snapshots),
                Some(max_lifetime_hours),
            )
            .await
            .extend()?;
        Ok(Project(project))
    }

    /// Changes a project's limits; what is not given is kept, `null` removes one.
    /// `maxSnapshots`: the most non-closed snapshots its VMs may have together (a quota
    /// below what the project has refuses new snapshots only; none is deleted).
    /// `maxLifetimeHours`: every new snapshot expires at most this long after it is made
    /// (existing snapshots keep their expiry).
    async fn update_project(
        &self,
        ctx: &Context<'_>,
        id: ID,
        max_snapshots: MaybeUndefined<i32>,
        max_lifetime_hours: MaybeUndefined<i32>,
    ) -> Result<Project> {
        let project = service(ctx)
            .admin()
            .set_project_limits(
                caller(ctx),
                parse_id(&id, "project").extend()?,
                change(max_snapshots),
                change(max_lifetime_hours),
            )
            .await
            .extend()?;
        Ok(Project(project))
    }

    /// A token for a project; its secret is shown once, here.
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        name: String,
        role: Role,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreatedToken> {
        let project = parse_id(&project_id, "project").extend()?;
        let (token, secret) = service(ctx)
            .admin()
            .create_token(caller(ctx), project, &name, role.into(), expires_at)
            .await
            .extend()?;
        Ok(CreatedToken {
            id: token.id.into(),
            token: secret,
        })
    }

    /// True when the token was live, false when it was already revoked.
    async fn revoke_token(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let id = parse_id(&id, "token").extend()?;
        service(ctx)
            .admin()
            .revoke_token(caller(ctx), id)
            .await
            .extend()
    }

    /// `uri`: `qemu:///system` or `qemu+ssh://user@host/system` (KVM), `ssh://user@host`
    /// (Hyper-V), `sim://?latency_ms=50&fail_rate=0.1&flaky_rate=0.1` (simulated).
    /// `maxSnapshotsPerVm` defaults to 50 on Hyper-V and to none elsewhere.
    /// `maxConcurrentTasks` (1 to 1000, default 8) is how many tasks run on the host at
    /// once, across every robot; the rest wait in order.
    async fn create_host(
        &self,
        ctx: &Context<'_>,
        name: String,
        hypervisor: Hypervisor,
        uri: String,
        max_snapshots_per_vm: Option<i32>,
        max_concurrent_tasks: Option<i32>,
    ) -> Result<Host> {
        let host = service(ctx)
            .admin()
            .create_host(
                caller(ctx),
                &name,
                hypervisor.into(),
                &uri,
                max_snapshots_per_vm,
                max_concurrent_tasks,
            )
            .await
            .extend()?;
        Ok(Host(host))
    }

    /// Changes a host's limits (ADMIN): each one given is set, the others kept.
    /// `maxSnapshotsPerVm: null` means the hypervisor's own limit (50 on Hyper-V), or none.
    /// Tasks running past a lowered `maxConcurrentTasks` finish; the rest wait for room.
    async fn update_host(
        &self,
        ctx: &Context<'_>,
        id: ID,
        max_concurrent_tasks: Option<i32>,
        max_snapshots_per_vm: async_graphql::MaybeUndefined<i32>,
    ) -> Result<Host> {
        let id = parse_id(&id, "host").extend()?;
        let snapshots = match max_snapshots_per_vm {
            async_graphql::MaybeUndefined::Undefined => None,
            async_graphql::MaybeUndefined::Null => Some(None),
            async_graphql::MaybeUndefined::Value(n) => Some(Some(n)),
        };
        let host = service(ctx)
            .admin()
            .update_host(caller(ctx), id, max_concurrent_tasks, snapshots)
            .await
            .extend()?;
        Ok(Host(host))
    }

    /// Registers a VM of a host for a project; its state comes from the host.
    async fn create_vm(
        &self,
        ctx: &Context<'_>,
        host_id: ID,
        project_id: ID,
        name: String,
        identifier: String,
    ) -> Result<Vm> {
        let host = parse_id(&host_id, "host").extend()?;
        let project = parse_id(&project_id, "project").extend()?;
        let vm = service(ctx)
            .admin()
            .create_vm(caller(ctx), host, project, &name, &identifier)
            .await
            .extend()?;
        Ok(Vm(vm))
    }

    /// Discovers the host's VMs that snaptree does not know yet, with their existing
    /// snapshot trees, and registers them for the project. A VM with a snapshot whose
    /// name cannot be sent back to the host safely is not imported: an error (VALIDATION)
    /// beside the data names it.
    async fn import_vms(&self, ctx: &Context<'_>, host_id: ID, project_id: ID) -> Result<Vec<Vm>> {
        let host = parse_id(&host_id, "host").extend()?;
        let project = parse_id(&project_id, "project").extend()?;
        let (vms, refused) = service(ctx)
            .admin()
            .import_vms(caller(ctx), host, project)
            .await
            .extend()?;
        for why in refused {
            let err = crate::error::AppError::validation(why).into_server_error();
            ctx.add_error(async_graphql::ServerError {
                path: vec![async_graphql::PathSegment::Field("importVms".into())],
                ..err
            });
        }
        Ok(vms.into_iter().map(Vm).collect())
    }
}
