//! Snapshot history: a row per state change, with who asked.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{HistoryEntry, NewHistoryEntry};
use super::pages::{Page, read_pages};
use super::schema::snapshot_history::dsl::*;
use super::{Conn, run};
use crate::domain::SnapshotState;

pub async fn insert(conn: &mut Conn<'_>, entries: &[NewHistoryEntry<'_>]) -> QueryResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    match conn {
        // One statement per row: batch inserts do not reach SQLite through diesel-async
        // (and a statement is a function call in-process).
        Conn::Sqlite(c) => {
            for entry in entries {
                diesel::insert_into(snapshot_history)
                    .values(entry)
                    .execute(&mut **c)
                    .await?;
            }
        }
        Conn::Pg(c) => {
            diesel::insert_into(snapshot_history)
                .values(entries)
                .execute(&mut **c)
                .await?;
        }
    }
    Ok(())
}

/// Which history a page is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A VM's snapshots' (on `snapshot_history_vm`).
    Vm,
    /// One snapshot's (on `snapshot_history_snapshot`).
    Snapshot,
}

/// Pages of history, each page's scope a VM or a snapshot as `scope` says.
pub async fn pages(
    conn: &mut Conn<'_>,
    scope: Scope,
    pages: &[Page],
) -> QueryResult<Vec<HistoryEntry>> {
    match scope {
        Scope::Vm => read_pages!(conn, pages, snapshot_history, vm_id, id, HistoryEntry),
        Scope::Snapshot => {
            read_pages!(conn, pages, snapshot_history, snapshot_id, id, HistoryEntry)
        }
    }
}

/// Each snapshot's last state before it was scrubbed (SCRUB, SCRUBBING), so that a failed
/// delete can put it back.
pub async fn states_before_scrub(
    conn: &mut Conn<'_>,
    ids: &[i64],
) -> QueryResult<HashMap<i64, SnapshotState>> {
    let scrubbing = [SnapshotState::Scrub.code(), SnapshotState::Scrubbing.code()];
    let rows: Vec<(i64, i32)> = run!(conn, |c| snapshot_history
        .filter(snapshot_id.eq_any(ids))
        .filter(state.ne_all(scrubbing))
        .select((snapshot_id, state))
        .order(id)
        .load(c)
        .await)?;
    // Later rows overwrite earlier ones: the last state wins.
    Ok(rows
        .into_iter()
        .filter_map(|(snapshot, code)| Some((snapshot, SnapshotState::from_code(code)?)))
        .collect())
}
