//! Tasks and their events.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::stamp::Stamp;
use crate::domain::{TaskKind, TaskState};

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug, serde::Serialize)]
#[diesel(table_name = tasks)]
pub struct Task {
    /// Its id; a host's waiting tasks are claimed in id order.
    pub id: i64,
    /// `BUILD` (create), `UPDATE` (apply or revert) or `SCRUB` (delete); see [`TaskKind`].
    pub kind: String,
    /// `QUEUED`, `RUNNING`, then `SUCCEEDED`, `FAILED` or `CANCELLED` ([`TaskState`]). A
    /// VM has at most one QUEUED or RUNNING task (unique index); until it ends, the VM is busy.
    pub state: String,
    /// The VM it works on.
    pub vm_id: i64,
    /// The VM's host: its RUNNING tasks under a live lease count against that host's
    /// `max_concurrent_tasks`.
    pub host_id: i64,
    /// The snapshot it acts on: the one created, applied, or deleted (for a subtree
    /// delete, the subtree's root).
    pub snapshot_id: i64,
    /// The VM's active snapshot before the action, restored when it fails.
    pub prev_active_id: Option<i64>,
    /// Who asked: the caller's token name, or `policy NAME` for a policy's run or prune.
    pub requested_by: String,
    /// Percent done, 0 to 100, as the robot last reported it; `None` until it reports.
    /// At its end: 100 if it succeeded, else its value when the last claim took it.
    pub progress: Option<i32>,
    /// What the robot is doing, in words (`starting`, `attempt 2 of 8`, ...); cleared when
    /// the task ends, kept when it is released back to the queue.
    pub phase: Option<String>,
    /// Attempts begun: each claim counts one, and the robot its retries within a claim. A
    /// run claimed with more than the robot's `max_attempts` fails it (`CUT_SHORT`).
    pub attempts: i32,
    /// Why it failed or was cancelled, in snaptree's own words (every token of the
    /// project sees them); `None` otherwise.
    pub error: Option<String>,
    /// A user asked to cancel it while it ran: its robot learns at the claim or a renewal
    /// and stops at its next safe point. Never cleared; a later claim sees it too.
    pub cancel_requested: bool,
    /// The robot that holds its claim (`robot-{pid}-{random}`); `None` while queued or
    /// ended.
    pub lease_owner: Option<String>,
    /// Until when that claim holds, by the claiming or renewing process's clock; renewed
    /// every sixth of the lease. A RUNNING task past it may be claimed again.
    pub lease_expires_at: Option<NaiveDateTime>,
    /// When it was queued.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// When it was first claimed (kept when it is claimed again); `None` until then.
    pub started_at: Option<NaiveDateTime>,
    /// When it ended; `None` while queued or running.
    pub finished_at: Option<NaiveDateTime>,
    /// Its place among its host's `max_concurrent_tasks` while it runs (PostgreSQL).
    pub slot: Option<i32>,
    /// An apply's save of the current state first: the snapshot it creates.
    pub save_snapshot_id: Option<i64>,
    /// The number of the claim that holds it (each claim adds one): the fencing token
    /// every write under that claim must match.
    pub fence: i64,
    /// Why it failed or was cancelled, as a stable code (`HOST_UNREACHABLE`, ...).
    pub error_code: Option<String>,
    /// What the host said of its failure, for ADMIN tokens only (it may name hosts,
    /// addresses and paths); `error` holds snaptree's own words.
    pub error_detail: Option<String>,
    /// Its VM's project (a copy: a VM never changes project), the scope of a project's
    /// task list.
    pub project_id: i64,
}

impl Task {
    pub fn kind(&self) -> TaskKind {
        self.kind
            .parse()
            .expect("tasks.kind is checked by the database")
    }

    pub fn state(&self) -> TaskState {
        self.state
            .parse()
            .expect("tasks.state is checked by the database")
    }
}

#[derive(Insertable, Clone, Copy)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    /// `BUILD`, `UPDATE` or `SCRUB`.
    pub kind: &'a str,
    /// `QUEUED`.
    pub state: &'a str,
    /// The VM it works on.
    pub vm_id: i64,
    /// The VM's project (a copy).
    pub project_id: i64,
    /// The VM's host.
    pub host_id: i64,
    /// The snapshot it acts on.
    pub snapshot_id: i64,
    /// The VM's active snapshot before the action.
    pub prev_active_id: Option<i64>,
    /// An apply's save of the current state first: the snapshot it creates.
    pub save_snapshot_id: Option<i64>,
    /// The caller's name.
    pub requested_by: &'a str,
    /// When it is queued.
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Clone, Debug, PartialEq, serde::Serialize)]
#[diesel(table_name = task_events)]
pub struct TaskEvent {
    /// Increases monotonically across the whole system.
    pub id: i64,
    /// The task it reports on.
    pub task_id: i64,
    /// The task's VM, copied for filtering (PostgreSQL does not check it).
    pub vm_id: i64,
    /// The VM's project, copied so that a tenant's replay reads its own events only
    /// (PostgreSQL does not check it).
    pub project_id: i64,
    /// The task's state as of this event (a [`TaskState`] name).
    pub state: String,
    /// The task's progress then, 0 to 100; `None`: unknown.
    pub progress: Option<i32>,
    /// What the robot was doing then, in words; `None` outside a run.
    pub phase: Option<String>,
    /// Snaptree's words for what happened (`started by ...`, `failed: ...`), shown to
    /// every token of the project.
    pub message: Option<String>,
    /// When it was stored (a batch of robot steps gives all its events one time).
    #[diesel(deserialize_as = Stamp)]
    pub at: NaiveDateTime,
    /// What the host said, behind `message` (ADMIN tokens only).
    pub detail: Option<String>,
}

impl TaskEvent {
    pub fn state(&self) -> TaskState {
        self.state.parse().expect("events hold task states only")
    }
}

#[derive(Insertable)]
#[diesel(table_name = task_events)]
pub struct NewTaskEvent {
    /// The task it reports on.
    pub task_id: i64,
    /// The task's VM (a copy).
    pub vm_id: i64,
    /// The VM's project (a copy).
    pub project_id: i64,
    /// The task's state name as of this event.
    pub state: &'static str,
    /// The task's progress then, 0 to 100.
    pub progress: Option<i32>,
    /// What the robot was doing then.
    pub phase: Option<String>,
    /// Snaptree's words, for every token of the project.
    pub message: Option<String>,
    /// When it is stored.
    pub at: NaiveDateTime,
    /// What the host said, behind `message`.
    pub detail: Option<String>,
}
