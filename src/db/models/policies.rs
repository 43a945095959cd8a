//! Snapshot policies and their runs.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::stamp::Stamp;

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
