//! Retiring what has aged out (`service::retention` decides when): ended tasks with
//! their events and policy runs, events of ended tasks, and closed snapshots with their
//! history. Each call retires one batch, the oldest rows first, and hands the rows back
//! (for the archive) as the statement that deleted them returned them, so that two
//! processes retiring at once never both return a row.
//!
//! A batch is found by id, never by age: the candidates are the lowest ids of their
//! kind (skipping the few rows that can never go, such as a running task's), and only
//! the prefix old enough is taken. Ids grow with time, so that is the oldest rows, and
//! the statement reads about a batch of rows however large the table is.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{HistoryEntry, PolicyRun, Snapshot, Task, TaskEvent};
use super::schema::{
    policy_runs, retention_marks, snapshot_history, snapshots, task_events, tasks,
};
use super::{Conn, run, sql_constant};
use crate::domain::TaskState;

sql_constant!(Closed, diesel::sql_types::Integer, "99");

const OPEN: [&str; 2] = [TaskState::Queued.as_str(), TaskState::Running.as_str()];

/// The mark of retired events: a replay from before it may have lost some.
const EVENTS_MARK: &str = "events";

/// The advisory lock a PostgreSQL process holds while it retires (an arbitrary constant,
/// `snaptree` in ASCII).
const PG_LOCK: i64 = 0x736e_6170_7472_6565;

/// Takes the right to retire for this transaction: false when another process holds it
/// (PostgreSQL); always true on SQLite, whose one writer serialises passes anyway.
pub async fn lock(conn: &mut Conn<'_>) -> QueryResult<bool> {
    match conn {
        Conn::Sqlite(_) => Ok(true),
        Conn::Pg(c) => {
            diesel::select(pg_try_advisory_xact_lock(PG_LOCK))
                .get_result(&mut **c)
                .await
        }
    }
}

diesel::define_sql_function! {
    /// PostgreSQL's lock for the rest of the transaction, if it is free.
    fn pg_try_advisory_xact_lock(key: diesel::sql_types::BigInt) -> diesel::sql_types::Bool;
}

/// Rows one pass retired, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    /// Progress events of ended tasks.
    pub events: usize,
    /// Ended tasks (with what was left of their events).
    pub tasks: usize,
    /// Policy runs that pointed at those tasks.
    pub runs: usize,
    /// Closed snapshots' rows.
    pub snapshots: usize,
    /// History entries of those snapshots.
    pub history: usize,
}

impl Retired {
    pub fn total(&self) -> usize {
        self.events + self.tasks + self.runs + self.snapshots + self.history
    }
}

/// What one batch of tasks took with it.
#[derive(Debug, Default)]
pub struct RetiredTasks {
    /// The tasks, as they were.
    pub tasks: Vec<Task>,
    /// Their events that were still stored.
    pub events: Vec<TaskEvent>,
    /// The policy runs that named them.
    pub runs: Vec<PolicyRun>,
}

/// What one batch of closed snapshots took with it.
#[derive(Debug, Default)]
pub struct RetiredSnapshots {
    /// The closed snapshots, as they were.
    pub snapshots: Vec<Snapshot>,
    /// Their history entries, for the archive.
    pub history: Vec<HistoryEntry>,
}

/// Retires up to `batch` events of ended tasks made before `before`, oldest first.
pub async fn events(
    conn: &mut Conn<'_>,
    before: NaiveDateTime,
    batch: i64,
) -> QueryResult<Vec<TaskEvent>> {
    let candidates: Vec<(i64, NaiveDateTime)> = run!(conn, |c| task_events::table
        .filter(
            task_events::task_id.ne_all(
                tasks::table
                    .filter(tasks::state.eq_any(OPEN))
                    .select(tasks::id),
            ),
        )
        .select((task_events::id, task_events::at))
        .order(task_events::id)
        .limit(batch)
        .load(c)
        .await)?;
    let ids = old_prefix(&candidates, before);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let retired: Vec<TaskEvent> = run!(conn, |c| diesel::delete(
        task_events::table.filter(task_events::id.eq_any(&ids))
    )
    .returning(TaskEvent::as_returning())
    .get_results(c)
    .await)?;
    mark_events(conn, &retired).await?;
    Ok(retired)
}

/// Retires up to `batch` tasks that ended before `before`, oldest first, with their
/// events and policy runs, and the runs that made no task, due before `before`.
/// One function: one batch's deletes in the order the references need (events and runs
/// before their tasks), sharing the ids the first read picked.
pub async fn tasks(
    conn: &mut Conn<'_>,
    before: NaiveDateTime,
    batch: i64,
) -> QueryResult<RetiredTasks> {
    let candidates: Vec<(i64, Option<NaiveDateTime>)> = run!(conn, |c| tasks::table
        .filter(tasks::state.ne_all(OPEN))
        .select((tasks::id, tasks::finished_at))
        .order(tasks::id)
        .limit(batch)
        .load(c)
        .await)?;
    let ended: Vec<(i64, NaiveDateTime)> = candidates
        .into_iter()
        .map(|(id, at)| (id, at.unwrap_or_default()))
        .collect();
    let ids = old_prefix(&ended, before);
    let mut retired = RetiredTasks::default();
    if !ids.is_empty() {
        // What refers to the tasks goes first.
        retired.events = run!(conn, |c| diesel::delete(
            task_events::table.filter(task_events::task_id.eq_any(&ids))
        )
        .returning(TaskEvent::as_returning())
        .get_results(c)
        .await)?;
        mark_events(conn, &retired.events).await?;
        retired.runs = run!(conn, |c| diesel::delete(
            policy_runs::table.filter(policy_runs::task_id.eq_any(&ids))
        )
        .returning(PolicyRun::as_returning())
        .get_results(c)
        .await)?;
        retired.tasks = run!(conn, |c| diesel::delete(
            tasks::table.filter(tasks::id.eq_any(&ids))
        )
        .returning(Task::as_returning())
        .get_results(c)
        .await)?;
    }
    // Runs that never made a task (missed ones), by their slot.
    let missed: Vec<i64> = run!(conn, |c| policy_runs::table
        .filter(policy_runs::task_id.is_null())
        .filter(policy_runs::state.ne("PENDING"))
        .filter(policy_runs::due_at.lt(before))
        .select(policy_runs::id)
        .order(policy_runs::id)
        .limit(batch)
        .load(c)
        .await)?;
    if !missed.is_empty() {
        let runs: Vec<PolicyRun> = run!(conn, |c| diesel::delete(
            policy_runs::table.filter(policy_runs::id.eq_any(&missed))
        )
        .returning(PolicyRun::as_returning())
        .get_results(c)
        .await)?;
        retired.runs.extend(runs);
    }
    Ok(retired)
}

/// Retires up to `batch` snapshots closed before `before`, the longest closed first
/// (on `snapshots_closed`: a snapshot kept for years and closed today goes last), with
/// their history: those no task or policy run refers to any more (tasks retire sooner,
/// see `service::retention`). A closed child that stays loses its link to the parent.
pub async fn closed_snapshots(
    conn: &mut Conn<'_>,
    before: NaiveDateTime,
    batch: i64,
) -> QueryResult<RetiredSnapshots> {
    let mut ids: Vec<i64> = run!(conn, |c| snapshots::table
        .filter(snapshots::state.eq(Closed))
        .filter(snapshots::updated_at.lt(before))
        .select(snapshots::id)
        .order((snapshots::updated_at, snapshots::id))
        .limit(batch)
        .load(c)
        .await)?;
    if ids.is_empty() {
        return Ok(RetiredSnapshots::default());
    }
    let held = held_snapshots(conn, &ids).await?;
    ids.retain(|id| !held.contains(id));
    if ids.is_empty() {
        return Ok(RetiredSnapshots::default());
    }
    run!(conn, |c| diesel::update(
        snapshots::table
            .filter(snapshots::parent_id.eq_any(&ids))
            .filter(snapshots::state.eq(Closed))
    )
    .set(snapshots::parent_id.eq(None::<i64>))
    .execute(c)
    .await)?;
    let history: Vec<HistoryEntry> = run!(conn, |c| diesel::delete(
        snapshot_history::table.filter(snapshot_history::snapshot_id.eq_any(&ids))
    )
    .returning(HistoryEntry::as_returning())
    .get_results(c)
    .await)?;
    let snapshots: Vec<Snapshot> = run!(conn, |c| diesel::delete(
        snapshots::table.filter(snapshots::id.eq_any(&ids))
    )
    .returning(Snapshot::as_returning())
    .get_results(c)
    .await)?;
    Ok(RetiredSnapshots { snapshots, history })
}

/// Which of snapshots `ids` something still refers to: a task (acting on it, saving to
/// it, or returning to it), a policy's run, or an open child (which never happens: a
/// deleted snapshot's children move up; but if one did, it would keep its parent).
async fn held_snapshots(
    conn: &mut Conn<'_>,
    ids: &[i64],
) -> QueryResult<std::collections::HashSet<i64>> {
    let by_tasks: Vec<(i64, Option<i64>, Option<i64>)> = run!(conn, |c| tasks::table
        .filter(
            tasks::snapshot_id
                .eq_any(ids)
                .or(tasks::save_snapshot_id.eq_any(ids))
                .or(tasks::prev_active_id.eq_any(ids)),
        )
        .select((
            tasks::snapshot_id,
            tasks::save_snapshot_id,
            tasks::prev_active_id
        ))
        .load(c)
        .await)?;
    let by_runs: Vec<Option<i64>> = run!(conn, |c| policy_runs::table
        .filter(policy_runs::snapshot_id.eq_any(ids))
        .select(policy_runs::snapshot_id)
        .load(c)
        .await)?;
    let by_children: Vec<Option<i64>> = run!(conn, |c| snapshots::table
        .filter(snapshots::parent_id.eq_any(ids))
        .filter(snapshots::state.ne(Closed))
        .select(snapshots::parent_id)
        .load(c)
        .await)?;
    Ok(by_tasks
        .into_iter()
        .flat_map(|(a, b, c)| [Some(a), b, c])
        .chain(by_runs)
        .chain(by_children)
        .flatten()
        .collect())
}

/// The ids of `rows` (id, time; in id order) up to the first one at or after `before`:
/// ids grow with time, so past that row the rest are younger still.
fn old_prefix(rows: &[(i64, NaiveDateTime)], before: NaiveDateTime) -> Vec<i64> {
    rows.iter()
        .take_while(|(_, at)| *at < before)
        .map(|(id, _)| *id)
        .collect()
}

/// Moves the events mark past `retired`.
async fn mark_events(conn: &mut Conn<'_>, retired: &[TaskEvent]) -> QueryResult<()> {
    let Some(through) = retired.iter().map(|e| e.id).max() else {
        return Ok(());
    };
    let current = events_retired_through(conn).await?;
    if current >= through {
        return Ok(());
    }
    if current == 0 {
        run!(conn, |c| diesel::insert_into(retention_marks::table)
            .values((
                retention_marks::name.eq(EVENTS_MARK),
                retention_marks::through_id.eq(through),
            ))
            .execute(c)
            .await)?;
    } else {
        run!(conn, |c| diesel::update(
            retention_marks::table.filter(retention_marks::name.eq(EVENTS_MARK))
        )
        .set(retention_marks::through_id.eq(through))
        .execute(c)
        .await)?;
    }
    Ok(())
}

/// The highest event id retention has retired (0: none): a replay from before it may
/// have lost events.
pub async fn events_retired_through(conn: &mut Conn<'_>) -> QueryResult<i64> {
    let mark: Option<i64> = run!(conn, |c| retention_marks::table
        .filter(retention_marks::name.eq(EVENTS_MARK))
        .select(retention_marks::through_id)
        .first(c)
        .await
        .optional())?;
    Ok(mark.unwrap_or(0))
}

/// How much one table holds: what `/metrics` shows of the database's growth.
#[derive(Clone, Debug, PartialEq)]
pub struct Growth {
    /// The table's name.
    pub table: &'static str,
    /// Its rows, as the span of its ids from the oldest kept row to the newest (the
    /// rows, give or take the few gaps a rollback leaves: two index lookups, where a
    /// count would read the whole table).
    pub rows: i64,
    /// When its oldest kept row was made, if it has one.
    pub oldest: Option<NaiveDateTime>,
}

/// The growth of every table retention retires from.
pub async fn growth(conn: &mut Conn<'_>) -> QueryResult<Vec<Growth>> {
    // (lowest id, highest id, the lowest row's time), on each table's own columns.
    macro_rules! span {
        ($table:ident, $at:expr) => {{
            let low: Option<(i64, NaiveDateTime)> = run!(conn, |c| $table::table
                .select(($table::id, $at))
                .order($table::id)
                .first(c)
                .await
                .optional())?;
            let high: Option<i64> = run!(conn, |c| $table::table
                .select($table::id)
                .order($table::id.desc())
                .first(c)
                .await
                .optional())?;
            Growth {
                table: stringify!($table),
                rows: match (low, high) {
                    (Some((low, _)), Some(high)) => high - low + 1,
                    _ => 0,
                },
                oldest: low.map(|(_, at)| at),
            }
        }};
    }
    Ok(vec![
        span!(task_events, task_events::at),
        span!(tasks, tasks::created_at),
        span!(policy_runs, policy_runs::created_at),
        span!(snapshot_history, snapshot_history::at),
        span!(snapshots, snapshots::created_at),
    ])
}

/// The oldest event still kept, if any.
pub async fn oldest_event(conn: &mut Conn<'_>) -> QueryResult<Option<i64>> {
    run!(conn, |c| task_events::table
        .select(task_events::id)
        .order(task_events::id)
        .first(c)
        .await
        .optional())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_the_prefix_old_enough() {
        let at = |h: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
                .unwrap()
                .and_hms_opt(h, 0, 0)
                .unwrap()
        };
        let rows = [(1, at(1)), (2, at(2)), (5, at(5)), (3, at(3))];
        assert_eq!(old_prefix(&rows, at(3)), [1, 2]);
        assert_eq!(old_prefix(&rows, at(1)), Vec::<i64>::new());
        assert_eq!(old_prefix(&rows, at(9)), [1, 2, 5, 3]);
    }
}
