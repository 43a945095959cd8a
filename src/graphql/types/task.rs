//! A task and its events.

use super::*;

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
    async fn actions(&self, ctx: &Context<'_>) -> crate::graphql::offers::TaskActions {
        crate::graphql::offers::task_actions(ctx, &self.0)
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
        let group = ctx.data_unchecked::<Loaders>().task_group(self.0.id);
        let pages = Page::new(first, after.as_ref()).extend()?.of_scopes(group);
        let rows = list(ctx, EventsOfTasks(pages.clone())).await?;
        let mine = pages.pick(self.0.id, &rows, |e| e.task_id, |e| e.id);
        Ok(mine.into_iter().map(TaskEvent::row).collect())
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
