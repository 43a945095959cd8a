//! A VM: its snapshots, its tree, its offers, and how its host disagrees (drift).

use super::*;

pub struct Vm(pub models::Vm);

impl Vm {
    async fn open_snapshots(&self, ctx: &Context<'_>) -> Result<Arc<Vec<models::Snapshot>>> {
        list(ctx, OpenSnapshotsOf(self.0.id)).await
    }

    /// The open snapshots, listed whole: their lists are then asked for as one.
    async fn listed(&self, ctx: &Context<'_>) -> Result<Arc<Vec<models::Snapshot>>> {
        ctx.data_unchecked::<Loaders>().list_tree(self.0.id);
        self.open_snapshots(ctx).await
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
        let open = self.listed(ctx).await?;
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
        if include_closed {
            let pages = page.of_scopes(Arc::from([self.0.id]));
            let rows = list(ctx, AllSnapshotsOf(pages.clone())).await?;
            let mine = pages.pick(self.0.id, &rows, |s| s.vm_id, |s| s.id);
            return Ok(mine.into_iter().map(Snapshot).collect());
        }
        // A VM's open snapshots are few (the host's limit): read whole, for the tree.
        let rows = self.listed(ctx).await?;
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
    async fn actions(&self, ctx: &Context<'_>) -> Result<crate::graphql::offers::VmActions> {
        crate::graphql::offers::vm_actions(ctx, &self.0).await
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
                .take(crate::graphql::MAX_DRIFT)
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
        let pages = page.of_scopes(Arc::from([self.0.id]));
        let rows = list(ctx, HistoryOfVms(pages.clone())).await?;
        let mine = pages.pick(self.0.id, &rows, |h| h.vm_id, |h| h.id);
        Ok(mine.into_iter().map(SnapshotHistoryEntry).collect())
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
