//! Snapshots, and writing a set of tree [`Changes`] with their history rows.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{NewHistoryEntry, NewSnapshot, Snapshot, Vm};
use super::schema::snapshots::dsl::*;
use super::{Cached, Conn, history, now, run, sql_constant};

// CLOSED as a literal, as in `snapshots_open_name`'s condition (see `sql_constant!`).
sql_constant!(Closed, diesel::sql_types::Integer, "99");

use crate::domain::SnapshotState;
use crate::domain::tree::{Changes, Node};

/// Inserts a snapshot and its first history row.
pub async fn insert(
    conn: &mut Conn<'_>,
    vm: &Vm,
    new: NewSnapshot<'_>,
    actor: &str,
) -> QueryResult<Snapshot> {
    let row: Snapshot = run!(conn, |c| diesel::insert_into(snapshots)
        .values(&new)
        .returning(Snapshot::as_returning())
        .get_result(c)
        .await)?;
    history::insert(conn, &[entry(vm, row.id, row.state, actor)]).await?;
    Ok(row)
}

fn entry<'a>(vm: &Vm, snapshot: i64, code: i32, actor: &'a str) -> NewHistoryEntry<'a> {
    NewHistoryEntry {
        snapshot_id: snapshot,
        vm_id: vm.id,
        project_id: vm.project_id,
        state: code,
        actor,
        at: now(),
    }
}

pub async fn set_host_name(conn: &mut Conn<'_>, wanted: i64, new: &str) -> QueryResult<()> {
    run!(conn, |c| Cached(
        diesel::update(snapshots.find(wanted)).set(host_name.eq(new))
    )
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn set_remove_subtree(conn: &mut Conn<'_>, wanted: i64, value: bool) -> QueryResult<()> {
    run!(conn, |c| Cached(
        diesel::update(snapshots.find(wanted)).set(remove_subtree.eq(value))
    )
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn by_id(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<Option<Snapshot>> {
    run!(conn, |c| snapshots
        .find(wanted)
        .select(Snapshot::as_select())
        .first(c)
        .await
        .optional())
}

pub async fn by_ids(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<Snapshot>> {
    run!(conn, |c| snapshots
        .filter(id.eq_any(ids))
        .select(Snapshot::as_select())
        .load(c)
        .await)
}

/// The snapshots of `vms`, oldest first; the closed ones only with `include_closed`.
pub async fn of_vms(
    conn: &mut Conn<'_>,
    vms: &[i64],
    include_closed: bool,
) -> QueryResult<Vec<Snapshot>> {
    run!(conn, |c| {
        let mut query = snapshots
            .filter(vm_id.eq_any(vms))
            .select(Snapshot::as_select())
            .order(id)
            .into_boxed();
        if !include_closed {
            query = query.filter(state.ne(Closed));
        }
        query.load(c).await
    })
}

/// The tree rules' view of VM `vm`'s non-closed snapshots, oldest first: only the
/// columns they use (every column would cost two timestamps parsed per row).
pub async fn nodes_of(conn: &mut Conn<'_>, vm: i64) -> QueryResult<Vec<Node>> {
    let rows: Vec<(i64, Option<i64>, String, i32, bool)> = run!(conn, |c| snapshots
        .filter(vm_id.eq(vm))
        .filter(state.ne(Closed))
        .select((id, parent_id, name, state, active))
        .order(id)
        .load(c)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(node, parent, named, code, is_active)| Node {
            id: node,
            parent_id: parent,
            name: named,
            state: SnapshotState::from_code(code)
                .expect("snapshots.state is checked by the database"),
            active: is_active,
        })
        .collect())
}

/// Writes `changes` to `vm`'s snapshots, with a history row per state change.
pub async fn apply(
    conn: &mut Conn<'_>,
    vm: &Vm,
    changes: &Changes,
    actor: &str,
) -> QueryResult<()> {
    let at = now();
    for &(child, parent) in &changes.parents {
        run!(conn, |c| Cached(
            diesel::update(snapshots.find(child)).set((parent_id.eq(parent), updated_at.eq(at)))
        )
        .execute(c)
        .await)?;
    }
    // Clear the old marker before any state change: a CLOSED snapshot is never active.
    if changes.active.is_some() {
        run!(conn, |c| Cached(
            diesel::update(snapshots.filter(vm_id.eq(vm.id)).filter(active))
                .set((active.eq(false), updated_at.eq(at)))
        )
        .execute(c)
        .await)?;
    }
    for &(target, new_state) in &changes.states {
        run!(conn, |c| Cached(
            diesel::update(snapshots.find(target))
                .set((state.eq(new_state.code()), updated_at.eq(at)))
        )
        .execute(c)
        .await)?;
    }
    if let Some(Some(new_active)) = changes.active {
        run!(conn, |c| Cached(
            diesel::update(snapshots.find(new_active)).set((active.eq(true), updated_at.eq(at)))
        )
        .execute(c)
        .await)?;
    }
    let entries: Vec<_> = changes
        .states
        .iter()
        .map(|&(target, new_state)| entry(vm, target, new_state.code(), actor))
        .collect();
    history::insert(conn, &entries).await
}

#[cfg(test)]
mod literal_tests {
    use crate::domain::SnapshotState;

    #[test]
    fn the_literal_is_closed() {
        assert_eq!(SnapshotState::Closed.code(), 99);
    }
}
