//! Snapshot history: a row per state change, with who asked.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{HistoryEntry, NewHistoryEntry};
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

/// The history of `vms`' snapshots, oldest first.
pub async fn of_vms(conn: &mut Conn<'_>, vms: &[i64]) -> QueryResult<Vec<HistoryEntry>> {
    run!(conn, |c| snapshot_history
        .filter(vm_id.eq_any(vms))
        .select(HistoryEntry::as_select())
        .order(id)
        .load(c)
        .await)
}

/// The history of snapshots `ids`, oldest first.
pub async fn of_snapshots(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<HistoryEntry>> {
    run!(conn, |c| snapshot_history
        .filter(snapshot_id.eq_any(ids))
        .select(HistoryEntry::as_select())
        .order(id)
        .load(c)
        .await)
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
