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
    pub id: i64,
    pub name: String,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// The most non-closed snapshots across the project's VMs; `None`: no quota.
    pub max_snapshots: Option<i32>,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = tokens)]
pub struct Token {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub role: String,
    pub secret_hash: String,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
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
    pub project_id: i64,
    pub name: &'a str,
    pub role: &'a str,
    pub secret_hash: &'a str,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = hosts)]
pub struct Host {
    pub id: i64,
    pub name: String,
    pub hypervisor: String,
    /// How to reach the host; may name a user, never holds a secret.
    pub uri: String,
    pub max_snapshots_per_vm: Option<i32>,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// Tasks that may run on the host at once, across every robot.
    pub max_concurrent_tasks: i32,
}

/// A host's health, as the processes that call it last found it.
#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = host_health)]
pub struct HostHealth {
    pub host_id: i64,
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
    pub name: &'a str,
    pub hypervisor: &'a str,
    pub uri: &'a str,
    pub max_snapshots_per_vm: Option<i32>,
    pub created_at: NaiveDateTime,
    pub max_concurrent_tasks: i32,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = vms)]
pub struct Vm {
    pub id: i64,
    pub host_id: i64,
    pub project_id: i64,
    pub name: String,
    /// The VM's name on its host (libvirt domain, Hyper-V VM name).
    pub identifier: String,
    /// A CloudCIX state-table integer.
    pub state: i32,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = vms)]
pub struct NewVm<'a> {
    pub host_id: i64,
    pub project_id: i64,
    pub name: &'a str,
    pub identifier: &'a str,
    pub state: i32,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug)]
#[diesel(table_name = snapshots)]
pub struct Snapshot {
    pub id: i64,
    pub vm_id: i64,
    pub parent_id: Option<i64>,
    pub name: String,
    pub description: Option<String>,
    /// The snapshot's name on the host.
    pub host_name: String,
    pub active: bool,
    pub state: i32,
    pub remove_subtree: bool,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
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
    pub vm_id: i64,
    pub parent_id: Option<i64>,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub host_name: &'a str,
    pub active: bool,
    pub state: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The policy whose run makes it, and that run's slot; `None` for a person's.
    pub policy_id: Option<i64>,
    pub policy_due_at: Option<NaiveDateTime>,
}

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug)]
#[diesel(table_name = snapshot_history)]
pub struct HistoryEntry {
    pub id: i64,
    pub snapshot_id: i64,
    pub vm_id: i64,
    pub project_id: i64,
    pub state: i32,
    /// The token's name, or `robot`.
    pub actor: String,
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
    pub snapshot_id: i64,
    pub vm_id: i64,
    pub project_id: i64,
    pub state: i32,
    pub actor: &'a str,
    pub at: NaiveDateTime,
}

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub vm_id: i64,
    pub host_id: i64,
    pub snapshot_id: i64,
    /// The VM's active snapshot before the action, restored when it fails.
    pub prev_active_id: Option<i64>,
    pub requested_by: String,
    pub progress: Option<i32>,
    pub phase: Option<String>,
    pub attempts: i32,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
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
    pub kind: &'a str,
    pub state: &'a str,
    pub vm_id: i64,
    pub host_id: i64,
    pub snapshot_id: i64,
    pub prev_active_id: Option<i64>,
    pub save_snapshot_id: Option<i64>,
    pub requested_by: &'a str,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Clone, Debug, PartialEq)]
#[diesel(table_name = task_events)]
pub struct TaskEvent {
    /// Increases monotonically across the whole system.
    pub id: i64,
    pub task_id: i64,
    pub vm_id: i64,
    pub project_id: i64,
    pub state: String,
    pub progress: Option<i32>,
    pub phase: Option<String>,
    pub message: Option<String>,
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
    pub task_id: i64,
    pub vm_id: i64,
    pub project_id: i64,
    pub state: &'static str,
    pub progress: Option<i32>,
    pub phase: Option<String>,
    pub message: Option<String>,
    pub at: NaiveDateTime,
    /// What the host said, behind `message`.
    pub detail: Option<String>,
}

/// A snapshot policy: a schedule, a name template and retention, for one VM or the VMs a
/// filter covers in its project.
#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = snapshot_policies)]
pub struct Policy {
    pub id: i64,
    pub project_id: i64,
    /// Whose token acts for it.
    pub token_id: i64,
    pub name: String,
    pub vm_id: Option<i64>,
    pub vm_filter: Option<String>,
    pub every_seconds: Option<i64>,
    pub cron: Option<String>,
    pub time_zone: String,
    pub name_template: String,
    pub keep_last: Option<i32>,
    pub max_age_seconds: Option<i64>,
    #[diesel(deserialize_as = Stamp)]
    pub anchor_at: NaiveDateTime,
    #[diesel(deserialize_as = Stamp)]
    pub next_due_at: NaiveDateTime,
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
    pub project_id: i64,
    pub token_id: i64,
    pub name: &'a str,
    pub vm_id: Option<i64>,
    pub vm_filter: Option<&'a str>,
    pub every_seconds: Option<i64>,
    pub cron: Option<&'a str>,
    pub time_zone: &'a str,
    pub name_template: &'a str,
    pub keep_last: Option<i32>,
    pub max_age_seconds: Option<i64>,
    pub anchor_at: NaiveDateTime,
    pub next_due_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// One VM's part of one slot of a policy.
#[derive(Queryable, QueryableByName, Selectable, Clone, Debug)]
#[diesel(table_name = policy_runs)]
pub struct PolicyRun {
    pub id: i64,
    pub policy_id: i64,
    pub vm_id: i64,
    #[diesel(deserialize_as = Stamp)]
    pub due_at: NaiveDateTime,
    /// PENDING, CREATED or MISSED.
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub snapshot_id: Option<i64>,
    pub task_id: Option<i64>,
    pub claimed_until: Option<NaiveDateTime>,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    #[diesel(deserialize_as = Stamp)]
    pub updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = policy_runs)]
pub struct NewPolicyRun {
    pub policy_id: i64,
    pub vm_id: i64,
    pub due_at: NaiveDateTime,
    pub state: &'static str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}
