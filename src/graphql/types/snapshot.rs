//! A snapshot and its history.

use super::*;

pub struct Snapshot(pub models::Snapshot);

impl Snapshot {
    /// The snapshots whose lists are asked for with this one's: its VM's open ones when
    /// the request lists them whole (a tree, walked level by level), else itself alone.
    async fn with_listed(&self, ctx: &Context<'_>) -> Result<Arc<[i64]>> {
        let alone = || Arc::from([self.0.id]);
        if !ctx.data_unchecked::<Loaders>().tree_listed(self.0.vm_id) {
            return Ok(alone());
        }
        let open = list(ctx, OpenSnapshotsOf(self.0.vm_id)).await?;
        if !open.iter().any(|s| s.id == self.0.id) {
            return Ok(alone());
        }
        Ok(open.iter().map(|s| s.id).collect())
    }
}

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

    /// Kept from every delete (alone, in a subtree, by a policy's retention) until
    /// `updateSnapshot(protected: false)`; a delete that would remove it is refused
    /// `PROTECTED`.
    async fn protected(&self) -> bool {
        self.0.protected
    }

    /// When the robot deletes it, as a user's delete of it alone would (within a minute
    /// of this time; never while it is protected or the VM's active snapshot, which is
    /// kept until another is active); null: kept until deleted.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at.map(at)
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
    async fn actions(&self, ctx: &Context<'_>) -> Result<crate::graphql::offers::SnapshotActions> {
        crate::graphql::offers::snapshot_actions(ctx, &self.0).await
    }

    /// What deleting it (or, with `removeSubtree`, it and all below it) would do, as
    /// the tree stands now: what goes, and where the active snapshot is afterwards.
    async fn delete_forecast(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] remove_subtree: bool,
    ) -> Result<crate::graphql::offers::DeleteForecast> {
        crate::graphql::offers::delete_forecast(ctx, &self.0, remove_subtree).await
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
        let pages = Page::new(first, after.as_ref())
            .extend()?
            .of_scopes(self.with_listed(ctx).await?);
        let rows = list(ctx, HistoryOfSnapshots(pages.clone())).await?;
        let mine = pages.pick(self.0.id, &rows, |h| h.snapshot_id, |h| h.id);
        Ok(mine.into_iter().map(SnapshotHistoryEntry).collect())
    }

    /// The tasks that acted on this snapshot, oldest first: `first` of them after
    /// `after`.
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Task>> {
        let pages = Page::new(first, after.as_ref())
            .extend()?
            .of_scopes(self.with_listed(ctx).await?);
        let rows = list(ctx, TasksOfSnapshots(pages.clone())).await?;
        // Their events are asked for together too.
        ctx.data_unchecked::<Loaders>().group_tasks(&rows);
        let mine = pages.pick(self.0.id, &rows, |t| t.snapshot_id, |t| t.id);
        Ok(mine.into_iter().map(Task).collect())
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

    /// The API token's name, `policy NAME`, `expiry`, or `robot`.
    async fn actor(&self) -> &str {
        &self.0.actor
    }

    /// Why the state changed: `user` (a token's action), `policy`, `expired` (the
    /// expiry sweep), or `robot` (a task started, ended, failed or was cancelled); null
    /// on entries older than reasons.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    async fn at(&self) -> DateTime<Utc> {
        at(self.0.at)
    }

    async fn snapshot_id(&self) -> ID {
        self.0.snapshot_id.into()
    }
}
