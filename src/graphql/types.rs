//! The GraphQL object types. Each wraps its row; related objects come from the request's
//! loaders, so nesting costs no extra statements per level.

use std::hash::Hash;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ErrorExtensions, ID, Object, Result, ResultExt};
use chrono::{DateTime, NaiveDateTime, Utc};

use super::enums::{DriftKind, Hypervisor, SnapshotState, TaskKind, TaskState};
use super::loaders::*;
use super::{DEFAULT_PAGE, MAX_PAGE, Page};
use crate::db::models;
use crate::domain::state::state_name;
use crate::error::AppError;
use crate::service::{Caller, Published};

fn at(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// Loads one value by key; `None` when there is none.
pub(super) async fn maybe<K, V>(ctx: &Context<'_>, key: K) -> Result<Option<V>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    V: Send + Sync + Clone + 'static,
    Batch: Loader<K, Value = V, Error = AppError>,
{
    ctx.data_unchecked::<Loaders>().load(key).await.extend()
}

/// Loads one value that must exist (a foreign key).
pub(super) async fn one<K, V>(ctx: &Context<'_>, key: K) -> Result<V>
where
    K: Send + Sync + Hash + Eq + Clone + std::fmt::Debug + 'static,
    V: Send + Sync + Clone + 'static,
    Batch: Loader<K, Value = V, Error = AppError>,
{
    let found = maybe(ctx, key.clone()).await?;
    found.ok_or_else(|| AppError::internal(format!("{key:?} is missing")).extend())
}

/// Loads a list by key (every key has one).
async fn list<K, V>(ctx: &Context<'_>, key: K) -> Result<Arc<Vec<V>>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    V: Send + Sync + 'static,
    Batch: Loader<K, Value = Arc<Vec<V>>, Error = AppError>,
{
    Ok(maybe(ctx, key).await?.unwrap_or_default())
}

pub struct Host(pub models::Host);

/// A hypervisor server.
#[Object]
impl Host {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn hypervisor(&self) -> Hypervisor {
        self.0.hypervisor().into()
    }

    /// Most non-closed snapshots a VM of this host may have; null = no limit.
    async fn max_snapshots_per_vm(&self) -> Option<i32> {
        self.0.max_snapshots_per_vm
    }

    /// Tasks that may run on this host at once, across every robot; the rest wait in
    /// order.
    async fn max_concurrent_tasks(&self) -> i32 {
        self.0.max_concurrent_tasks
    }

    /// Whether snaptree's connections reach the host, as the robots last found it; null
    /// until a robot has called it.
    async fn health(&self, ctx: &Context<'_>) -> Result<Option<HostHealth>> {
        maybe(ctx, HealthOf(self.0.id))
            .await
            .map(|h| h.map(HostHealth))
    }

    /// The host's VMs that the caller may see, by id: `first` of them after `after`.
    async fn vms(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Vm>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let vms = list(ctx, VmsOn(self.0.id)).await?;
        Ok(page.of(&vms, |v| v.id, Vm))
    }
}

pub struct HostHealth(pub models::HostHealth);

/// A host's health: whether it answers now, since when, and the last failure to reach it.
#[Object]
impl HostHealth {
    /// Whether the host answered the last call.
    async fn reachable(&self) -> bool {
        self.0.reachable
    }

    /// When it last became reachable, or unreachable.
    async fn since(&self) -> DateTime<Utc> {
        at(self.0.since)
    }

    /// The last failure to reach the host, kept after it recovers (ADMIN only: it names
    /// the infrastructure behind the host; null for other tokens).
    async fn last_error(&self, ctx: &Context<'_>) -> Option<&str> {
        let caller = ctx.data_unchecked::<Caller>();
        caller
            .is_admin()
            .then_some(self.0.last_error.as_deref())
            .flatten()
    }
}

pub struct Vm(pub models::Vm);

impl Vm {
    async fn open_snapshots(&self, ctx: &Context<'_>) -> Result<Arc<Vec<models::Snapshot>>> {
        list(ctx, OpenSnapshotsOf(self.0.id)).await
    }
}

/// A virtual machine.
#[Object]
impl Vm {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The VM's name on its host (libvirt domain, Hyper-V VM name).
    async fn identifier(&self) -> &str {
        &self.0.identifier
    }

    async fn host(&self, ctx: &Context<'_>) -> Result<Host> {
        one(ctx, HostId(self.0.host_id)).await.map(Host)
    }

    /// The CloudCIX state-table integer (RUNNING 4, QUIESCED 6, ...).
    async fn state(&self) -> i32 {
        self.0.state
    }

    async fn state_name(&self) -> &'static str {
        state_name(self.0.state)
    }

    /// The snapshot the VM runs from; its live state is a child of it.
    async fn active_snapshot(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        let open = self.open_snapshots(ctx).await?;
        Ok(open.iter().find(|s| s.active).cloned().map(Snapshot))
    }

    /// The roots of the snapshot tree; walk down through `Snapshot.children`.
    async fn snapshot_tree(&self, ctx: &Context<'_>) -> Result<Vec<Snapshot>> {
        let open = self.open_snapshots(ctx).await?;
        let is_open = |id: i64| open.iter().any(|s| s.id == id);
        Ok(open
            .iter()
            .filter(|s| !s.parent_id.is_some_and(is_open))
            .cloned()
            .map(Snapshot)
            .collect())
    }

    /// The snapshots, oldest first: `first` of them after `after`. The default page
    /// holds every non-closed snapshot a VM may have.
    async fn snapshots(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] include_closed: bool,
        #[graphql(default_with = "MAX_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Snapshot>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let rows = if include_closed {
            list(ctx, AllSnapshotsOf(self.0.id)).await?
        } else {
            self.open_snapshots(ctx).await?
        };
        Ok(page.of(&rows, |s| s.id, Snapshot))
    }

    /// Non-closed snapshots.
    async fn snapshot_count(&self, ctx: &Context<'_>) -> Result<i32> {
        Ok(i32::try_from(self.open_snapshots(ctx).await?.len()).unwrap_or(i32::MAX))
    }

    /// The most non-closed snapshots this VM may have: its host's limit, within the
    /// server's ceiling (`--max-snapshots-per-vm`).
    async fn snapshot_limit(&self, ctx: &Context<'_>) -> Result<Option<i32>> {
        let host: models::Host = one(ctx, HostId(self.0.host_id)).await?;
        let service = ctx.data_unchecked::<crate::service::Service>();
        Ok(Some(service.snapshot_limit(host.max_snapshots_per_vm)))
    }

    /// A task is queued or running for this VM.
    async fn busy(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(maybe(ctx, OpenTaskOf(self.0.id)).await?.is_some())
    }

    /// The actions on the VM the caller may take now, each with the reason when not.
    async fn actions(&self, ctx: &Context<'_>) -> Result<super::offers::VmActions> {
        super::offers::vm_actions(ctx, &self.0).await
    }

    /// The queued or running task, if any.
    async fn current_task(&self, ctx: &Context<'_>) -> Result<Option<Task>> {
        Ok(maybe(ctx, OpenTaskOf(self.0.id)).await?.map(Task))
    }

    /// Where snaptree's record and the host's own snapshot list disagree, asked of the
    /// host now (once per request, however often it is asked for); empty when they agree,
    /// at most 200 entries. (While a task runs they differ for a moment.)
    async fn drift(&self, ctx: &Context<'_>) -> Result<Vec<DriftEntry>> {
        let found = ctx
            .data_unchecked::<Loaders>()
            .drift(DriftOf(self.0.id))
            .await;
        match &*found {
            Ok(found) => Ok(found
                .iter()
                .take(super::MAX_DRIFT)
                .cloned()
                .map(DriftEntry)
                .collect()),
            Err(err) => Err(err.extend()),
        }
    }

    /// The state changes of this VM's snapshots, oldest first: `first` of them after
    /// `after`.
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<SnapshotHistoryEntry>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let rows = list(ctx, HistoryOf(self.0.id)).await?;
        Ok(page.of(&rows, |h| h.id, SnapshotHistoryEntry))
    }
}

pub struct Snapshot(pub models::Snapshot);

/// A point-in-time state of a VM. Snapshots of one VM form a tree.
#[Object]
impl Snapshot {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn vm(&self, ctx: &Context<'_>) -> Result<Vm> {
        one(ctx, VmId(self.0.vm_id)).await.map(Vm)
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// The snapshot's name on the host, generated from ids (`{vm_id}_{snapshot_id}`).
    async fn host_name(&self) -> &str {
        &self.0.host_name
    }

    async fn parent(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        let Some(parent) = self.0.parent_id else {
            return Ok(None);
        };
        let open = list(ctx, OpenSnapshotsOf(self.0.vm_id)).await?;
        if let Some(found) = open.iter().find(|s| s.id == parent) {
            return Ok(Some(Snapshot(found.clone())));
        }
        // Only a closed snapshot can have a closed parent.
        Ok(maybe(ctx, SnapshotId(parent)).await?.map(Snapshot))
    }

    /// Non-closed children.
    async fn children(&self, ctx: &Context<'_>) -> Result<Vec<Snapshot>> {
        let open = list(ctx, OpenSnapshotsOf(self.0.vm_id)).await?;
        Ok(open
            .iter()
            .filter(|s| s.parent_id == Some(self.0.id))
            .cloned()
            .map(Snapshot)
            .collect())
    }

    /// The VM runs from this snapshot.
    async fn active(&self) -> bool {
        self.0.active
    }

    async fn state(&self) -> SnapshotState {
        self.0.state().into()
    }

    /// The CloudCIX state-table integer.
    async fn state_code(&self) -> i32 {
        self.0.state
    }

    /// A delete of this snapshot takes its whole subtree.
    async fn remove_subtree(&self) -> bool {
        self.0.remove_subtree
    }

    /// The actions on this snapshot the caller may take now, each with the reason when
    /// not.
    async fn actions(&self, ctx: &Context<'_>) -> Result<super::offers::SnapshotActions> {
        super::offers::snapshot_actions(ctx, &self.0).await
    }

    /// What deleting it (or, with `removeSubtree`, it and all below it) would do, as
    /// the tree stands now: what goes, and where the active snapshot is afterwards.
    async fn delete_forecast(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] remove_subtree: bool,
    ) -> Result<super::offers::DeleteForecast> {
        super::offers::delete_forecast(ctx, &self.0, remove_subtree).await
    }

    /// Kept longer than the server's stale age (`--stale-after-hours`, 72 by default):
    /// a snapshot that old slows its VM and keeps growing; delete it or keep it on
    /// purpose. Never true of a deleted snapshot.
    async fn stale(&self, ctx: &Context<'_>) -> bool {
        ctx.data_unchecked::<crate::service::Service>()
            .staleness(&self.0)
            .is_some_and(|(_, stale)| stale)
    }

    /// When it is (or becomes) stale; null for a deleted snapshot.
    async fn stale_since(&self, ctx: &Context<'_>) -> Option<DateTime<Utc>> {
        ctx.data_unchecked::<crate::service::Service>()
            .staleness(&self.0)
            .map(|(since, _)| at(since))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        at(self.0.created_at)
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        at(self.0.updated_at)
    }

    /// The state changes, oldest first: `first` of them after `after`.
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<SnapshotHistoryEntry>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let rows = list(ctx, HistoryOf(self.0.vm_id)).await?;
        Ok(page.of_matching(
            &rows,
            |h| h.snapshot_id == self.0.id,
            |h| h.id,
            SnapshotHistoryEntry,
        ))
    }

    /// The tasks that acted on this snapshot, oldest first: `first` of them after
    /// `after`.
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Task>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let rows = list(ctx, TasksOf(self.0.vm_id)).await?;
        Ok(page.of_matching(&rows, |t| t.snapshot_id == self.0.id, |t| t.id, Task))
    }
}

pub struct SnapshotHistoryEntry(pub models::HistoryEntry);

/// One state change of a snapshot.
#[Object]
impl SnapshotHistoryEntry {
    async fn state(&self) -> SnapshotState {
        self.0.state().into()
    }

    async fn state_code(&self) -> i32 {
        self.0.state
    }

    /// The API token's name, or `robot`.
    async fn actor(&self) -> &str {
        &self.0.actor
    }

    async fn at(&self) -> DateTime<Utc> {
        at(self.0.at)
    }

    async fn snapshot_id(&self) -> ID {
        self.0.snapshot_id.into()
    }
}

pub struct Task(pub models::Task);

/// One unit of robot work.
#[Object]
impl Task {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn kind(&self) -> TaskKind {
        self.0.kind().into()
    }

    async fn state(&self) -> TaskState {
        self.0.state().into()
    }

    async fn vm(&self, ctx: &Context<'_>) -> Result<Vm> {
        one(ctx, VmId(self.0.vm_id)).await.map(Vm)
    }

    async fn snapshot(&self, ctx: &Context<'_>) -> Result<Snapshot> {
        one(ctx, SnapshotId(self.0.snapshot_id)).await.map(Snapshot)
    }

    /// An apply that saves the VM's current state first: the snapshot it saves it as.
    /// If the save failed it is UNRESOURCED, and nothing was applied.
    async fn saved_as(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        match self.0.save_snapshot_id {
            Some(id) => one(ctx, SnapshotId(id)).await.map(|s| Some(Snapshot(s))),
            None => Ok(None),
        }
    }

    /// It has ended (SUCCEEDED, FAILED or CANCELLED): no more events come.
    async fn finished(&self) -> bool {
        !self.0.state().is_open()
    }

    /// What the caller may do with it now (cancel it), and why not.
    async fn actions(&self, ctx: &Context<'_>) -> super::offers::TaskActions {
        super::offers::task_actions(ctx, &self.0)
    }

    /// 0..100, null while unknown.
    async fn progress(&self) -> Option<i32> {
        self.0.progress
    }

    /// What the robot is doing now, in words.
    async fn phase(&self) -> Option<&str> {
        self.0.phase.as_deref()
    }

    async fn attempts(&self) -> i32 {
        self.0.attempts
    }

    /// Why it failed or was cancelled, in snaptree's words (never the host's own output).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    /// Why it failed or was cancelled, as a stable code: HOST_UNREACHABLE, HOST_BUSY,
    /// HOST_REFUSED, NO_SUCH_VM, CUT_SHORT or CANCELLED.
    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }

    /// What the host said of its failure (ADMIN only: it may name the infrastructure
    /// behind the host; null for other tokens).
    async fn error_detail(&self, ctx: &Context<'_>) -> Option<&str> {
        let caller = ctx.data_unchecked::<Caller>();
        caller
            .is_admin()
            .then_some(self.0.error_detail.as_deref())
            .flatten()
    }

    /// Who asked for it: the token's name, or `policy NAME` for a policy's run.
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }

    async fn created_at(&self) -> DateTime<Utc> {
        at(self.0.created_at)
    }

    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at.map(at)
    }

    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at.map(at)
    }

    /// Its events, oldest first: `first` of them after `after`.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<TaskEvent>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let rows = list(ctx, EventsOf(self.0.vm_id)).await?;
        Ok(page.of_matching(&rows, |e| e.task_id == self.0.id, |e| e.id, TaskEvent::row))
    }
}

/// An event, with its task when it came with one (see [`crate::events::Published`]).
pub struct TaskEvent(pub Arc<Published>);

impl TaskEvent {
    /// An event read from the table, without its task.
    fn row(event: models::TaskEvent) -> Self {
        Self(Arc::new(Published { event, task: None }))
    }
}

/// A change of a task's state, phase or progress.
#[Object]
impl TaskEvent {
    /// Increases monotonically across the whole system.
    async fn id(&self) -> ID {
        self.0.event.id.into()
    }

    async fn task(&self, ctx: &Context<'_>) -> Result<Task> {
        match &self.0.task {
            Some(task) => Ok(Task(task.clone())),
            None => one(ctx, TaskId(self.0.event.task_id)).await.map(Task),
        }
    }

    async fn state(&self) -> TaskState {
        self.0.event.state().into()
    }

    /// The task ended with this event (SUCCEEDED, FAILED or CANCELLED): it is its last.
    async fn finished(&self) -> bool {
        !self.0.event.state().is_open()
    }

    async fn progress(&self) -> Option<i32> {
        self.0.event.progress
    }

    async fn phase(&self) -> Option<&str> {
        self.0.event.phase.as_deref()
    }

    /// What happened, in snaptree's words (never the host's own output).
    async fn message(&self) -> Option<&str> {
        self.0.event.message.as_deref()
    }

    /// What the host said behind `message` (ADMIN only; null for other tokens).
    async fn detail(&self, ctx: &Context<'_>) -> Option<&str> {
        let caller = ctx.data_unchecked::<Caller>();
        caller
            .is_admin()
            .then_some(self.0.event.detail.as_deref())
            .flatten()
    }

    async fn at(&self) -> DateTime<Utc> {
        at(self.0.event.at)
    }
}

pub struct Project(pub models::Project);

#[Object]
impl Project {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The most non-closed snapshots its VMs may have together; null: no quota (each
    /// host's limit per VM still holds).
    async fn max_snapshots(&self) -> Option<i32> {
        self.0.max_snapshots
    }

    /// Its VMs' non-closed snapshots, together.
    async fn snapshot_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let n = one::<_, i64>(ctx, super::loaders::SnapshotCountOf(self.0.id)).await?;
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }
}

pub struct DriftEntry(pub crate::domain::drift::Drift);

/// One way snaptree and a host disagree about a VM's snapshots. Names are the snapshots'
/// names on the host.
#[Object]
impl DriftEntry {
    async fn kind(&self) -> DriftKind {
        self.0.kind.into()
    }

    /// The snapshot concerned (for DIFFERENT_CURRENT, snaptree's active one).
    async fn host_name(&self) -> Option<&str> {
        self.0.host_name.as_deref()
    }

    /// What snaptree records (a parent, or the active snapshot).
    async fn expected(&self) -> Option<&str> {
        self.0.expected.as_deref()
    }

    /// What the host has.
    async fn actual(&self) -> Option<&str> {
        self.0.actual.as_deref()
    }
}

/// A new token; the secret is shown once, here, and stored only hashed.
#[derive(async_graphql::SimpleObject)]
pub struct CreatedToken {
    pub id: ID,
    pub token: String,
}

pub struct SnapshotPayload(pub crate::service::Accepted);

/// An accepted action: its snapshot and the task that carries it out.
#[Object]
impl SnapshotPayload {
    async fn snapshot(&self) -> Snapshot {
        Snapshot(self.0.snapshot.clone())
    }

    async fn task(&self) -> Task {
        Task(self.0.task.clone())
    }
}
