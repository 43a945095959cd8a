//! Task events: every change of a task's state, phase or progress, numbered in one
//! sequence across the whole system.
//!
//! Readers follow the table in id order, so they must never pass an id that could still
//! commit. SQLite has one writer: ids commit in order, and a missing id never comes. On
//! PostgreSQL, concurrent transactions take ids from a sequence and may commit out of
//! order; rather than serialise their commits, readers wait at a gap until it fills or is
//! known final, which [`observe`] tells them: a transaction takes its transaction id
//! before its first event id, so every id up to a value of the sequence is final once no
//! transaction older than one begun after that value was read is running. (A snapshot's
//! `xmax` would not do: it follows the last *completed* transaction, and a running one
//! may be newer.) Other processes hear of
//! new events from a notification sent after the commit (`crate::events`), not from
//! one inside the transaction, which would serialise commits.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{NewTaskEvent, TaskEvent};
use super::pages::{Page, read_pages};
use super::schema::task_events::dsl::*;
use super::{Conn, run};

/// The PostgreSQL channel that tells other processes events were committed.
pub const PG_CHANNEL: &str = "snaptree_events";

/// Stores `new` events, in this order (one statement for all, and on PostgreSQL one
/// more first, see the module's doc). Other processes hear of them from
/// [`crate::events::EventBus::committed`], after the commit.
pub async fn insert(conn: &mut Conn<'_>, new: &[NewTaskEvent]) -> QueryResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    match conn {
        // A statement is a function call in-process: one per event costs nothing.
        Conn::Sqlite(c) => {
            for event in new {
                diesel::insert_into(task_events)
                    .values(event)
                    .execute(&mut **c)
                    .await?;
            }
        }
        Conn::Pg(c) => {
            // The transaction id first (see the module's doc).
            diesel::sql_query("SELECT pg_current_xact_id()")
                .execute(&mut **c)
                .await?;
            diesel::insert_into(task_events)
                .values(new)
                .execute(&mut **c)
                .await?;
        }
    }
    Ok(())
}

/// Pages of tasks' events (each page's scope a task), on `task_events_task`.
pub async fn pages_of_tasks(conn: &mut Conn<'_>, pages: &[Page]) -> QueryResult<Vec<TaskEvent>> {
    read_pages!(conn, pages, task_events, task_id, id, TaskEvent)
}

/// Which events a reader follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this project's (none: all).
    pub project: Option<i64>,
    /// Only this VM's (none: all).
    pub vm: Option<i64>,
    /// Only this task's (none: all).
    pub task: Option<i64>,
}

impl Filter {
    pub fn matches(&self, event: &TaskEvent) -> bool {
        self.project.is_none_or(|p| p == event.project_id)
            && self.vm.is_none_or(|v| v == event.vm_id)
            && self.task.is_none_or(|t| t == event.task_id)
    }
}

/// Up to `limit` events after id `after` (and up to `upto`, when given), oldest first.
pub async fn after(
    conn: &mut Conn<'_>,
    filter: Filter,
    after: i64,
    upto: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<TaskEvent>> {
    run!(conn, |c| {
        let mut query = task_events
            .filter(id.gt(after))
            .select(TaskEvent::as_select())
            .order(id)
            .limit(limit)
            .into_boxed();
        if let Some(upto) = upto {
            query = query.filter(id.le(upto));
        }
        if let Some(p) = filter.project {
            query = query.filter(project_id.eq(p));
        }
        if let Some(v) = filter.vm {
            query = query.filter(vm_id.eq(v));
        }
        if let Some(t) = filter.task {
            query = query.filter(task_id.eq(t));
        }
        query.load(c).await
    })
}

/// The newest event of task `task`.
pub async fn latest_of_task(conn: &mut Conn<'_>, task: i64) -> QueryResult<Option<TaskEvent>> {
    run!(conn, |c| task_events
        .filter(task_id.eq(task))
        .select(TaskEvent::as_select())
        .order(id.desc())
        .first(c)
        .await
        .optional())
}

/// The id of the newest event, 0 when there is none.
pub async fn newest_id(conn: &mut Conn<'_>) -> QueryResult<i64> {
    let newest: Option<i64> = run!(conn, |c| task_events
        .select(diesel::dsl::max(id))
        .first(c)
        .await)?;
    Ok(newest.unwrap_or(0))
}

/// What a reader on PostgreSQL sees of ids that may still commit: the newest event id
/// handed out, a transaction id assigned after it was read (the observer's own), and the
/// oldest transaction still running when the statement began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, QueryableByName)]
pub struct Observation {
    /// The sequence's last value: the newest event id handed out, committed or not (0: none yet).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub last_id: i64,
    /// The observer's own transaction id, assigned after `last_id` was read.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub xid: i64,
    /// The oldest transaction still running when the statement began: every older one has ended.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub xmin: i64,
}

/// Observes the event sequence and running transactions (PostgreSQL; `None` on SQLite,
/// where a missing id never comes). Takes a transaction id, whose commit need not wait
/// for the disk: it records nothing.
pub async fn observe(conn: &mut Conn<'_>) -> QueryResult<Option<Observation>> {
    let Conn::Pg(c) = conn else {
        return Ok(None);
    };
    diesel::sql_query(
        "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('task_events', 'id')::regclass), 0) AS last_id, \
                pg_current_xact_id()::text::bigint AS xid, \
                pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, \
                set_config('synchronous_commit', 'off', true) AS off",
    )
    .get_result(&mut **c)
    .await
    .map(Some)
}
