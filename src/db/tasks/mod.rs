//! Tasks: the robot's queue. A claimed task carries a lease (owner and expiry) that its
//! robot renews while it works; a task whose lease expired can be claimed again.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;

use super::models::{NewTask, Task};
use super::pages::{Page, read_pages};
use super::schema::tasks::dsl::*;
use super::{Cached, Conn, run, sql_constant};
use crate::domain::TaskState;

const QUEUED: &str = TaskState::Queued.as_str();
const RUNNING: &str = TaskState::Running.as_str();

// `'QUEUED'` and `'RUNNING'` as SQL literals, for conditions on a task's state: they
// decide whether the partial indexes `tasks_open` and `tasks_running_by_host` apply (see
// `sql_constant!`).
sql_constant!(Queued, Text, "'QUEUED'");
sql_constant!(Running, Text, "'RUNNING'");

pub async fn insert(conn: &mut Conn<'_>, new: NewTask<'_>) -> QueryResult<Task> {
    run!(conn, |c| diesel::insert_into(tasks)
        .values(&new)
        .returning(Task::as_returning())
        .get_result(c)
        .await)
}

/// Inserts tasks; they come back in the order given (on PostgreSQL one statement).
pub async fn insert_all(conn: &mut Conn<'_>, new: &[NewTask<'_>]) -> QueryResult<Vec<Task>> {
    match conn {
        Conn::Sqlite(_) => {
            let mut rows = Vec::with_capacity(new.len());
            for row in new {
                rows.push(insert(conn, *row).await?);
            }
            Ok(rows)
        }
        Conn::Pg(c) => {
            let mut rows: Vec<Task> = diesel::insert_into(tasks)
                .values(new)
                .returning(Task::as_returning())
                .get_results(&mut **c)
                .await?;
            // RETURNING gives no promise of order; ids are handed out in it.
            rows.sort_by_key(|t| t.id);
            Ok(rows)
        }
    }
}

/// [`open_of_vm`] for each of `vms`: on SQLite one VM at a time (a statement it keeps
/// prepared), on PostgreSQL one statement.
pub async fn open_of_each(conn: &mut Conn<'_>, vms: &[i64]) -> QueryResult<Vec<Task>> {
    match conn {
        Conn::Sqlite(_) => {
            let mut open = Vec::new();
            for &vm in vms {
                open.extend(open_of_vm(conn, vm).await?);
            }
            Ok(open)
        }
        Conn::Pg(_) => open_of_vms(conn, vms).await,
    }
}

/// For each of `snapshots` whose deletes have failed: how many have, and when the last
/// one ended. On `tasks_snapshot`: a snapshot has few tasks.
pub async fn failed_deletes(
    conn: &mut Conn<'_>,
    snapshots: &[i64],
) -> QueryResult<Vec<(i64, i64, Option<NaiveDateTime>)>> {
    use diesel::dsl::{count_star, max};
    run!(conn, |c| tasks
        .filter(snapshot_id.eq_any(snapshots))
        .filter(kind.eq(crate::domain::TaskKind::Scrub.as_str()))
        .filter(state.eq(TaskState::Failed.as_str()))
        .group_by(snapshot_id)
        .select((snapshot_id, count_star(), max(finished_at)))
        .load(c)
        .await)
}

pub async fn by_id(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<Option<Task>> {
    run!(conn, |c| tasks
        .find(wanted)
        .select(Task::as_select())
        .first(c)
        .await
        .optional())
}

pub async fn by_ids(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<Task>> {
    run!(conn, |c| tasks
        .filter(id.eq_any(ids))
        .select(Task::as_select())
        .load(c)
        .await)
}

/// The queued or running task of each of `vms` that has one.
pub async fn open_of_vms(conn: &mut Conn<'_>, vms: &[i64]) -> QueryResult<Vec<Task>> {
    run!(conn, |c| tasks
        .filter(vm_id.eq_any(vms))
        .filter(state.eq(Queued).or(state.eq(Running)))
        .select(Task::as_select())
        .load(c)
        .await)
}

/// The queued or running task of VM `vm`, if any (one VM: unlike a list, a statement
/// SQLite can keep prepared).
pub async fn open_of_vm(conn: &mut Conn<'_>, vm: i64) -> QueryResult<Option<Task>> {
    run!(conn, |c| tasks
        .filter(vm_id.eq(vm))
        .filter(state.eq(Queued).or(state.eq(Running)))
        .select(Task::as_select())
        .first(c)
        .await
        .optional())
}

/// Pages of the tasks that acted on snapshots (each page's scope a snapshot), on
/// `tasks_snapshot`.
pub async fn pages_of_snapshots(conn: &mut Conn<'_>, pages: &[Page]) -> QueryResult<Vec<Task>> {
    read_pages!(conn, pages, tasks, snapshot_id, id, Task)
}

/// Which tasks a listing shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Only tasks of this project's VMs (none: every project's).
    pub project: Option<i64>,
    /// Only tasks of this VM.
    pub vm: Option<i64>,
    /// Only tasks in this state (none: any).
    pub state: Option<TaskState>,
}

/// Up to `limit` tasks older than `before`, newest first.
pub async fn page(
    conn: &mut Conn<'_>,
    filter: Filter,
    before: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Task>> {
    run!(conn, |c| {
        let mut query = tasks
            .select(Task::as_select())
            .order(id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(project) = filter.project {
            query = query.filter(project_id.eq(project));
        }
        if let Some(vm) = filter.vm {
            query = query.filter(vm_id.eq(vm));
        }
        if let Some(wanted) = filter.state {
            query = query.filter(state.eq(wanted.as_str()));
        }
        if let Some(before) = before {
            query = query.filter(id.lt(before));
        }
        query.load(c).await
    })
}

/// A task a robot may claim at `at`: queued, or running under a lease that has run out
/// (its robot died). Keep `claimable_at_sql!` in step.
#[diesel::dsl::auto_type]
fn claimable_at(at: NaiveDateTime) -> _ {
    state
        .eq(Queued)
        .or(state.eq(Running).and(lease_expires_at.lt(at)))
}

/// [`claimable_at`] in SQL, at the statement's parameter `$at`, for a statement over many
/// tasks.
macro_rules! claimable_at_sql {
    ($at:literal) => {
        concat!(
            "(tasks.state = 'QUEUED' OR (tasks.state = 'RUNNING' AND tasks.lease_expires_at < ",
            $at,
            "))"
        )
    };
}

/// A task some robot holds at `at`: running under a live lease. These count against
/// their host's `max_concurrent_tasks`.
#[diesel::dsl::auto_type]
fn held_at(at: NaiveDateTime) -> _ {
    state.eq(Running).and(lease_expires_at.ge(at))
}

/// Task `wanted`, as long as the claim whose fence is `claim` holds it: running, and
/// taken by no later claim. A robot whose lease ran out and whose task was claimed
/// again (by another robot, or by its own process) can write nothing more.
#[diesel::dsl::auto_type]
fn held_under(wanted: i64, claim: i64) -> _ {
    let running: Running = Running;
    tasks
        .find(wanted)
        .filter(state.eq(running))
        .filter(fence.eq(claim))
}

/// [`held_under`] in SQL (keep the two in step), for a statement over many tasks that
/// joins each to the fence of its claim as `v.fence`.
macro_rules! held_under_each {
    () => {
        "tasks.state = 'RUNNING' AND tasks.fence = v.fence"
    };
}

// The parts of the queue's life, each in a file of its own. Declared below the SQL
// macros above, which they use (a macro is visible only after its definition).
mod claim;
mod progress;
mod rooms;

pub use claim::{Among, claim, claimable, release, renew, take, take_all};
pub use progress::{Ending, Report, Why, finish, finish_all, request_cancel, set_progress_all};
pub use rooms::{Room, full_hosts, room_on, rooms_in_line, rooms_on, waiting_on};

/// The PostgreSQL channel that tells robots in other processes a task was queued, or
/// that a host has room again (sent after the commit, by
/// `crate::events::EventBus::announce_queued`).
pub const PG_CHANNEL: &str = "snaptree_tasks";

/// The queue as the database holds it, read for `/metrics` at a scrape.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    /// Tasks waiting for a robot.
    pub queued: i64,
    /// Seconds the oldest queued task has waited (0 with none).
    pub oldest_seconds: f64,
    /// Running tasks per host name.
    pub running: Vec<(String, i64)>,
}

/// The queue for `/metrics`: how many tasks wait, how long the oldest has waited, and
/// how many run on each host (by name).
pub async fn queue(conn: &mut Conn<'_>, now: NaiveDateTime) -> QueryResult<Queue> {
    use super::schema::{hosts, tasks};
    let queued: i64 = run!(conn, |c| tasks::table
        .filter(tasks::state.eq(QUEUED))
        .count()
        .get_result(c)
        .await)?;
    let oldest: Option<NaiveDateTime> = run!(conn, |c| tasks::table
        .filter(tasks::state.eq(QUEUED))
        .select(diesel::dsl::min(tasks::created_at))
        .first(c)
        .await)?;
    let running: Vec<(String, i64)> = run!(conn, |c| tasks::table
        .inner_join(hosts::table)
        .filter(tasks::state.eq(RUNNING))
        .group_by(hosts::name)
        .select((hosts::name, diesel::dsl::count_star()))
        .load(c)
        .await)?;
    Ok(Queue {
        queued,
        oldest_seconds: oldest.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        }),
        running,
    })
}

#[cfg(test)]
mod literal_tests {
    use crate::domain::TaskState;

    #[test]
    fn the_literals_are_the_states() {
        assert_eq!(TaskState::Queued.as_str(), "QUEUED");
        assert_eq!(TaskState::Running.as_str(), "RUNNING");
    }
}
