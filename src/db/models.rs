//! Rows as diesel reads and writes them. Enum columns are kept in their stored form;
//! the accessors turn them into domain types (the CHECK constraints guarantee they parse).

use chrono::NaiveDateTime;

use super::stamp::Stamp;
use diesel::prelude::*;

use super::schema::*;
use crate::domain::{Hypervisor, Role, SnapshotState, TaskKind, TaskState};

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = projects)]
pub struct Project {
    /// Its id; tokens, VMs and policies belong to a project through it.
    pub id: i64,
    /// Unique among projects.
    pub name: String,
    /// When it was created (UTC, as every timestamp in these rows).
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// The most non-closed snapshots across the project's VMs; `None`: no quota.
    pub max_snapshots: Option<i32>,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = tokens)]
pub struct Token {
    /// Its id; a policy acts as the token its `token_id` names.
    pub id: i64,
    /// The project it belongs to: the only one an OPERATOR or VIEWER token sees (an ADMIN
    /// token sees every project).
    pub project_id: i64,
    /// Who holds it, in words; not unique. Tasks and history name their caller by it
    /// (`requested_by`, `actor`).
    pub name: String,
    /// `ADMIN`, `OPERATOR` or `VIEWER` (a CHECK holds it to these); see [`Token::role`].
    pub role: String,
    /// Hex SHA-256 of the secret, which is never stored; a request's token is found by it.
    pub secret_hash: String,
    /// When it was made.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// When it was revoked; `None`: not revoked. A revoked token is refused, and the
    /// policies that act as it make nothing.
    pub revoked_at: Option<NaiveDateTime>,
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<NaiveDateTime>,
}

impl Token {
    /// Whether it is accepted at `now`: neither revoked nor expired.
    pub fn is_live_at(&self, now: NaiveDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|end| end > now)
    }

    pub fn role(&self) -> Role {
        self.role
            .parse()
            .expect("tokens.role is checked by the database")
    }
}

#[derive(Insertable)]
#[diesel(table_name = tokens)]
pub struct NewToken<'a> {
    /// The project it belongs to.
    pub project_id: i64,
    /// Who holds it, in words.
    pub name: &'a str,
    /// `ADMIN`, `OPERATOR` or `VIEWER`.
    pub role: &'a str,
    /// Hex SHA-256 of the secret, which is never stored.
    pub secret_hash: &'a str,
    /// When it is made.
    pub created_at: NaiveDateTime,
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = hosts)]
pub struct Host {
    /// Its id; on PostgreSQL also the first key of its slots' advisory locks.
    pub id: i64,
    /// Unique among hosts; robot placement (`RobotConfig::hosts`) and `/metrics` name
    /// hosts by it.
    pub name: String,
    /// `KVM`, `HYPERV` or `SIMULATED` (see [`Host::hypervisor`]): which driver runs its tasks.
    pub hypervisor: String,
    /// How to reach the host; may name a user, never holds a secret.
    pub uri: String,
    /// The most non-closed snapshots one of its VMs may have, within the server's ceiling
    /// (`None`: the ceiling only); the hypervisor's own limit unless set (Hyper-V: 50).
    pub max_snapshots_per_vm: Option<i32>,
    /// When it was registered.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// Tasks that may run on the host at once, across every robot.
    pub max_concurrent_tasks: i32,
}

/// A host's health, as the processes that call it last found it.
#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = host_health)]
pub struct HostHealth {
    /// The host: one row per host, deleted with it; a host never called has none.
    pub host_id: i64,
    /// Whether it answers. Only a transient failure (the host or its connection, not the
    /// request) makes it false; any answer makes it true. The last writer wins.
    pub reachable: bool,
    /// When it last became reachable, or unreachable.
    #[diesel(deserialize_as = Stamp)]
    pub since: NaiveDateTime,
    /// The last failure to reach it, kept after it recovers.
    pub last_error: Option<String>,
}

impl Host {
    pub fn hypervisor(&self) -> Hypervisor {
        self.hypervisor
            .parse()
            .expect("hosts.hypervisor is checked by the database")
    }
}

#[derive(Insertable)]
#[diesel(table_name = hosts)]
pub struct NewHost<'a> {
    /// Unique among hosts.
    pub name: &'a str,
    /// `KVM`, `HYPERV` or `SIMULATED`.
    pub hypervisor: &'a str,
    /// How to reach the host, in its canonical form; never holds a secret.
    pub uri: &'a str,
    /// The most non-closed snapshots per VM; `None`: the server's ceiling only.
    pub max_snapshots_per_vm: Option<i32>,
    /// When it is registered.
    pub created_at: NaiveDateTime,
    /// Tasks that may run on it at once (1 to 1000; 8 unless given).
    pub max_concurrent_tasks: i32,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = vms)]
pub struct Vm {
    /// Its id; part of its snapshots' names on the host (`{vm_id}_{snapshot_id}`).
    pub id: i64,
    /// The host it runs on, where its tasks run.
    pub host_id: i64,
    /// The project it belongs to: who may see it and act on it, and whose quota its
    /// snapshots count against.
    pub project_id: i64,
    /// Its name in snaptree (an imported VM's is its identifier); not unique. Policies'
    /// `vm_filter` and `{vm}` use it.
    pub name: String,
    /// The VM's name on its host (libvirt domain, Hyper-V VM name).
    pub identifier: String,
    /// A CloudCIX state-table integer, read from the host when the VM was registered (not
    /// refreshed since); snapshot actions need RUNNING (4) or QUIESCED (6).
    pub state: i32,
    /// When it was registered.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = vms)]
pub struct NewVm<'a> {
    /// The host it runs on.
    pub host_id: i64,
    /// The project it belongs to.
    pub project_id: i64,
    /// Its name in snaptree.
    pub name: &'a str,
    /// Its name on the host; unique per host.
    pub identifier: &'a str,
    /// Its state as the host reports it now (CloudCIX state table).
    pub state: i32,
    /// When it is registered.
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug, serde::Serialize)]
#[diesel(table_name = snapshots)]
pub struct Snapshot {
    /// Its id; its name on the host is made of it (see `host_name`).
    pub id: i64,
    /// The VM it belongs to; a VM's snapshots form one tree.
    pub vm_id: i64,
    /// Its parent in the VM's tree; `None`: a root. When a parent closes, its surviving
    /// children move up to the nearest surviving ancestor; a closed row keeps its last.
    pub parent_id: Option<i64>,
    /// Its name in the API, 1 to 128 characters, unique among the VM's non-closed
    /// snapshots; never sent to the host.
    pub name: String,
    /// Free text, up to 1024 characters; `None`: none.
    pub description: Option<String>,
    /// The snapshot's name on the host: `{vm_id}_{id}` for one made here, the host's own
    /// for an imported one. Tasks address the host by it, never by `name`.
    pub host_name: String,
    /// The VM runs from it (its live state is a child of it). At most one per VM, never a
    /// CLOSED one; set as a create or apply is accepted, put back if its task fails.
    pub active: bool,
    /// A [`SnapshotState`] code (1 REQUESTED .. 99 CLOSED, see `snapshots.md`); any but 3,
    /// 4 and 99 means a task is under way on it and its VM is busy.
    pub state: i32,
    /// Its delete was asked with `removeSubtree`: its descendants go with it. Set when the
    /// delete is accepted, cleared if it fails or is cancelled, kept once CLOSED.
    pub remove_subtree: bool,
    /// When it was asked for (or imported); its staleness counts from it.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// When its name, description, parent, state or `active` last changed.
    #[diesel(deserialize_as = Stamp)]
    pub updated_at: NaiveDateTime,
}

impl From<&Snapshot> for crate::domain::tree::Node {
    fn from(s: &Snapshot) -> Self {
        Self {
            id: s.id,
            parent_id: s.parent_id,
            name: s.name.clone(),
            state: s.state(),
            active: s.active,
        }
    }
}

impl Snapshot {
    pub fn state(&self) -> SnapshotState {
        SnapshotState::from_code(self.state).expect("snapshots.state is checked by the database")
    }

    /// The node the tree rules work on.
    pub fn node(&self) -> crate::domain::tree::Node {
        crate::domain::tree::Node {
            id: self.id,
            parent_id: self.parent_id,
            name: self.name.clone(),
            state: self.state(),
            active: self.active,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = snapshots)]
pub struct NewSnapshot<'a> {
    /// The VM it belongs to.
    pub vm_id: i64,
    /// Its parent in the VM's tree; `None`: a root.
    pub parent_id: Option<i64>,
    /// Its name in the API.
    pub name: &'a str,
    /// Free text; `None`: none.
    pub description: Option<&'a str>,
    /// Its name on the host; empty for a new one until its id is known (set in the same
    /// transaction).
    pub host_name: &'a str,
    /// Whether the VM runs from it: on import, the host's current one; false otherwise (a
    /// create's rules make it active next; an apply's save stays inactive).
    pub active: bool,
    /// REQUESTED (1) for a create, RUNNING (4) on import.
    pub state: i32,
    /// When it is asked for.
    pub created_at: NaiveDateTime,
    /// The same as `created_at`.
    pub updated_at: NaiveDateTime,
    /// The policy whose run makes it (retention prunes only such); `None` for a person's.
    pub policy_id: Option<i64>,
    /// That run's slot (`PolicyRun::due_at`), which dates it for retention.
    pub policy_due_at: Option<NaiveDateTime>,
}

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug, serde::Serialize)]
#[diesel(table_name = snapshot_history)]
pub struct HistoryEntry {
    /// Its id; a snapshot's history reads in id order.
    pub id: i64,
    /// The snapshot whose state changed.
    pub snapshot_id: i64,
    /// The snapshot's VM, copied for filtering (PostgreSQL does not check it).
    pub vm_id: i64,
    /// The VM's project, copied to scope a tenant's reads (PostgreSQL does not check it).
    pub project_id: i64,
    /// The [`SnapshotState`] code it entered; a delete that fails or is cancelled puts
    /// back the last one here before SCRUB.
    pub state: i32,
    /// Who moved it: the caller's token name (`policy NAME` for a policy's action), or
    /// `robot`.
    pub actor: String,
    /// When it changed.
    #[diesel(deserialize_as = Stamp)]
    pub at: NaiveDateTime,
}

impl HistoryEntry {
    pub fn state(&self) -> SnapshotState {
        SnapshotState::from_code(self.state).expect("history holds snapshot states only")
    }
}

#[derive(Insertable)]
#[diesel(table_name = snapshot_history)]
pub struct NewHistoryEntry<'a> {
    /// The snapshot whose state changed.
    pub snapshot_id: i64,
    /// Its VM (a copy).
    pub vm_id: i64,
    /// Its VM's project (a copy).
    pub project_id: i64,
    /// The state code it entered.
    pub state: i32,
    /// The caller's name, or `robot`.
    pub actor: &'a str,
    /// When it changed.
    pub at: NaiveDateTime,
}

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

/// A snapshot policy: a schedule, a name template and retention, for one VM or the VMs a
/// filter covers in its project.
#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = snapshot_policies)]
pub struct Policy {
    /// Its id; its runs and the snapshots it made point to it.
    pub id: i64,
    /// The project whose VMs it covers: its one VM's, else its creator's token's.
    pub project_id: i64,
    /// Whose token acts for it.
    pub token_id: i64,
    /// Unique in its project; `{policy}` in names, and its actions' caller `policy NAME`.
    pub name: String,
    /// The one VM it covers; `None`: the project's VMs that `vm_filter` covers.
    pub vm_id: Option<i64>,
    /// A pattern on VM names (`*` any run of characters, `?` one); `None` without `vm_id`:
    /// every VM of the project. Never set with `vm_id`.
    pub vm_filter: Option<String>,
    /// An interval schedule, in seconds (60 or more), its slots counted from `anchor_at`;
    /// exactly one of this and `cron` is set.
    pub every_seconds: Option<i64>,
    /// A cron schedule (five fields, or `@daily`, ...), read in `time_zone`.
    pub cron: Option<String>,
    /// The IANA zone `cron` and the names' `{date}`, `{time}` and `{due}` are read in;
    /// `UTC` for an interval.
    pub time_zone: String,
    /// Its snapshots' names, with `{policy}`, `{vm}`, `{date}`, `{time}` and `{due}` filled
    /// in (`{policy}-{due}` unless given).
    pub name_template: String,
    /// Retention: keep at most the newest this many of its RUNNING snapshots per VM;
    /// `None`: no count limit. Retention never prunes the active snapshot.
    pub keep_last: Option<i32>,
    /// Retention: prune its snapshots whose slot is older than this many seconds (60 or
    /// more); `None`: no age limit.
    pub max_age_seconds: Option<i64>,
    /// Interval slots are counted from here: its creation, in whole seconds.
    #[diesel(deserialize_as = Stamp)]
    pub anchor_at: NaiveDateTime,
    /// Its next slot. A process takes a slot by moving it on (compare and set): one
    /// process runs each slot, and slots missed while none ran make one run.
    #[diesel(deserialize_as = Stamp)]
    pub next_due_at: NaiveDateTime,
    /// When it was defined.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// Its runs missed in a row.
    pub misses: i32,
    /// Why it is paused (its runs kept being missed); `None` while it runs.
    pub paused_because: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = snapshot_policies)]
pub struct NewPolicy<'a> {
    /// The project whose VMs it covers.
    pub project_id: i64,
    /// The creator's token, which acts for it.
    pub token_id: i64,
    /// Unique in its project.
    pub name: &'a str,
    /// The one VM it covers; `None`: the VMs `vm_filter` covers.
    pub vm_id: Option<i64>,
    /// A pattern on VM names; `None`: every VM of the project (without `vm_id`).
    pub vm_filter: Option<&'a str>,
    /// An interval schedule, in seconds; this or `cron`.
    pub every_seconds: Option<i64>,
    /// A cron schedule; this or `every_seconds`.
    pub cron: Option<&'a str>,
    /// The IANA zone of `cron` and of names; `UTC` for an interval.
    pub time_zone: &'a str,
    /// Its snapshots' names, with placeholders.
    pub name_template: &'a str,
    /// Retention: the newest to keep per VM; `None`: no count limit.
    pub keep_last: Option<i32>,
    /// Retention: the oldest slot to keep, in seconds; `None`: no age limit.
    pub max_age_seconds: Option<i64>,
    /// Interval slots are counted from here (now, in whole seconds).
    pub anchor_at: NaiveDateTime,
    /// Its first slot.
    pub next_due_at: NaiveDateTime,
    /// When it is defined.
    pub created_at: NaiveDateTime,
}

/// One VM's part of one slot of a policy.
#[derive(Queryable, QueryableByName, Selectable, Clone, Debug, serde::Serialize)]
#[diesel(table_name = policy_runs)]
pub struct PolicyRun {
    /// Its id; each project's pending runs are tried in id order.
    pub id: i64,
    /// The policy whose slot it is; deleted with the policy.
    pub policy_id: i64,
    /// The VM it makes a snapshot of.
    pub vm_id: i64,
    /// The slot: when it was due. It names the snapshot and dates it for retention.
    #[diesel(deserialize_as = Stamp)]
    pub due_at: NaiveDateTime,
    /// `PENDING` until its snapshot is asked for (`CREATED`), or until it is refused for
    /// good or the next slot comes first (`MISSED`).
    pub state: String,
    /// Tries made: each refusal counts one, and so does the ask that creates. A refused
    /// run waits 2 s, doubled per try up to a minute, before it is tried again.
    pub attempts: i32,
    /// Why the last try was refused (the error's public message); kept after a success.
    pub last_error: Option<String>,
    /// The snapshot it asked for, once `CREATED`.
    pub snapshot_id: Option<i64>,
    /// That snapshot's BUILD task; `None` when a run taken up again after a crash found
    /// its snapshot made already.
    pub task_id: Option<i64>,
    /// A process trying it holds it until then (30 s), and a refused run waits until then
    /// for its next try; `None` or past: any process may take it.
    pub claimed_until: Option<NaiveDateTime>,
    /// When its slot was taken.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// When a try, or a miss, last changed it (a claim alone does not).
    #[diesel(deserialize_as = Stamp)]
    pub updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = policy_runs)]
pub struct NewPolicyRun {
    /// The policy whose slot it is.
    pub policy_id: i64,
    /// The VM it makes a snapshot of.
    pub vm_id: i64,
    /// The slot.
    pub due_at: NaiveDateTime,
    /// `PENDING`.
    pub state: &'static str,
    /// When the slot is taken.
    pub created_at: NaiveDateTime,
    /// The same as `created_at`.
    pub updated_at: NaiveDateTime,
}
