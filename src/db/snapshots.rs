//! Snapshots, and writing a set of tree [`Changes`] with their history rows.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::models::{Actor, NewHistoryEntry, NewSnapshot, Snapshot, Vm};
use super::pages::{Page, read_pages};
use super::schema::snapshots::dsl::*;
use super::{Cached, Conn, SqliteConn, history, now, run, sql_constant};

// CLOSED as a literal, as in `snapshots_open_name`'s condition (see `sql_constant!`).
sql_constant!(Closed, diesel::sql_types::Integer, "99");

use crate::domain::SnapshotState;
use crate::domain::tree::{Changes, Node};

/// Inserts a snapshot and its first history row.
pub async fn insert(
    conn: &mut Conn<'_>,
    vm: &Vm,
    new: NewSnapshot<'_>,
    actor: Actor<'_>,
) -> QueryResult<Snapshot> {
    let row: Snapshot = run!(conn, |c| diesel::insert_into(snapshots)
        .values(&new)
        .returning(Snapshot::as_returning())
        .get_result(c)
        .await)?;
    history::insert(conn, &[entry(vm, row.id, row.state, actor)]).await?;
    Ok(row)
}

/// Inserts snapshots, each of its VM with its first history row by its actor: on
/// PostgreSQL one statement for the rows and one for their history. The rows come back
/// in the order given.
pub async fn insert_all(
    conn: &mut Conn<'_>,
    new: &[(&Vm, NewSnapshot<'_>, Actor<'_>)],
) -> QueryResult<Vec<Snapshot>> {
    let rows: Vec<Snapshot> = match conn {
        Conn::Sqlite(c) => {
            let mut rows = Vec::with_capacity(new.len());
            for (_, row, _) in new {
                rows.push(
                    diesel::insert_into(snapshots)
                        .values(row)
                        .returning(Snapshot::as_returning())
                        .get_result(&mut **c)
                        .await?,
                );
            }
            rows
        }
        Conn::Pg(c) => {
            let values: Vec<&NewSnapshot<'_>> = new.iter().map(|(_, row, _)| row).collect();
            let mut rows: Vec<Snapshot> = diesel::insert_into(snapshots)
                .values(values)
                .returning(Snapshot::as_returning())
                .get_results(&mut **c)
                .await?;
            // RETURNING gives no promise of order; ids are handed out in it.
            rows.sort_by_key(|s| s.id);
            rows
        }
    };
    let entries: Vec<_> = new
        .iter()
        .zip(&rows)
        .map(|((vm, _, actor), row)| entry(vm, row.id, row.state, *actor))
        .collect();
    history::insert(conn, &entries).await?;
    Ok(rows)
}

/// Sets the host names of snapshots `(id, name)`: on PostgreSQL in one statement.
pub async fn set_host_names(conn: &mut Conn<'_>, names: &[(i64, String)]) -> QueryResult<()> {
    match conn {
        Conn::Pg(c) if names.len() > 1 => {
            use diesel::sql_types::{Array, BigInt, Text};
            let (ids, new): (Vec<i64>, Vec<&str>) =
                names.iter().map(|(i, n)| (*i, n.as_str())).unzip();
            Cached(
                diesel::sql_query(
                    "UPDATE snapshots SET host_name = v.host_name \
                     FROM unnest($1::bigint[], $2::text[]) AS v(id, host_name) \
                     WHERE snapshots.id = v.id",
                )
                .bind::<Array<BigInt>, _>(ids)
                .bind::<Array<Text>, _>(new),
            )
            .execute(&mut **c)
            .await?;
        }
        _ => {
            for (snapshot, new) in names {
                set_host_name(conn, *snapshot, new).await?;
            }
        }
    }
    Ok(())
}

fn entry<'a>(vm: &Vm, snapshot: i64, code: i32, actor: Actor<'a>) -> NewHistoryEntry<'a> {
    NewHistoryEntry {
        snapshot_id: snapshot,
        vm_id: vm.id,
        project_id: vm.project_id,
        state: code,
        actor: actor.name,
        at: now(),
        reason: actor.reason.as_str(),
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

/// What a person may change of a snapshot without a task.
#[derive(Clone, Copy, Debug)]
pub struct Details<'a> {
    /// Its name (already checked).
    pub name: &'a str,
    /// Its description; `None`: none.
    pub description: Option<&'a str>,
    /// Kept from every delete.
    pub protected: bool,
    /// When the expiry sweep deletes it; `None`: never.
    pub expires_at: Option<NaiveDateTime>,
}

/// Sets snapshot `wanted`'s [`Details`]; the row as it is now.
pub async fn set_details(
    conn: &mut Conn<'_>,
    wanted: i64,
    new: Details<'_>,
) -> QueryResult<Snapshot> {
    run!(conn, |c| diesel::update(snapshots.find(wanted))
        .set((
            name.eq(new.name),
            description.eq(new.description),
            protected.eq(new.protected),
            expires_at.eq(new.expires_at),
            updated_at.eq(now()),
        ))
        .returning(Snapshot::as_returning())
        .get_result(c)
        .await)
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

/// One project's open snapshots, for `/metrics` and its alerts.
#[derive(QueryableByName, Clone, Debug, PartialEq)]
pub struct ProjectSnapshots {
    /// The project's name.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub project: String,
    /// Its non-closed snapshots.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub open: i64,
    /// When its oldest non-closed snapshot was made.
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    pub oldest: NaiveDateTime,
    /// Its longest chain: the most snapshots from a root down to one of its VMs' leaves.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub deepest: i64,
}

/// Every project with open snapshots, with their count, the oldest and the longest
/// chain. A walk of every open snapshot (down `snapshots_parent` from the roots: an
/// open snapshot's parent is open, since children move up when theirs closes), so its
/// cost follows the fleet's open snapshots, which each VM's limit bounds; the service
/// reads it at most once a minute.
pub async fn per_project(conn: &mut Conn<'_>) -> QueryResult<Vec<ProjectSnapshots>> {
    let sql = "WITH RECURSIVE chain (id, depth) AS ( \
           SELECT id, 1 FROM snapshots WHERE parent_id IS NULL AND state <> 99 \
           UNION ALL \
           SELECT s.id, chain.depth + 1 FROM snapshots s JOIN chain ON s.parent_id = chain.id \
           WHERE s.state <> 99) \
         SELECT p.name AS project, COUNT(*) AS open, MIN(s.created_at) AS oldest, \
           CAST(MAX(chain.depth) AS BIGINT) AS deepest \
         FROM chain JOIN snapshots s ON s.id = chain.id JOIN vms v ON v.id = s.vm_id \
           JOIN projects p ON p.id = v.project_id \
         GROUP BY p.name ORDER BY p.name";
    run!(conn, |c| diesel::sql_query(sql).load(c).await)
}

/// A place in the expiry sweep's order: an expiry and a snapshot id.
pub type ExpiryCursor = (NaiveDateTime, i64);

/// Up to `limit` snapshots the expiry sweep may delete (expired by `now`, not closed,
/// protected or active) after `after` in (expiry, id) order, as (id, VM, expiry). The
/// conditions are `snapshots_expiry`'s, word for word, so that the read walks that
/// index and costs what is due, not what has ever expired.
pub async fn expired(
    conn: &mut Conn<'_>,
    now: NaiveDateTime,
    after: Option<ExpiryCursor>,
    limit: i64,
) -> QueryResult<Vec<(i64, i64, NaiveDateTime)>> {
    use diesel::dsl::not;
    // From the start: every expiry is after 1970 (it was in the future when set).
    let (from_at, from_id) = after.unwrap_or((chrono::DateTime::UNIX_EPOCH.naive_utc(), 0));
    let rows: Vec<(i64, i64, Option<NaiveDateTime>)> = run!(conn, |c| snapshots
        .filter(expires_at.le(now))
        .filter(state.ne(Closed))
        .filter(not(protected))
        .filter(not(active))
        .filter(
            expires_at
                .gt(from_at)
                .or(expires_at.eq(from_at).and(id.gt(from_id))),
        )
        .select((id, vm_id, expires_at))
        .order((expires_at, id))
        .limit(limit)
        .load(c)
        .await)?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, vm, at)| Some((s, vm, at?)))
        .collect())
}

/// The snapshots of `vms`, oldest first; the closed ones only with `include_closed`.
///
/// The hottest read there is (every snapshot tree), so on SQLite it is a kept statement
/// read through diesel's own API: the async wrapper copies every value of every row
/// before decoding it, a tenth of the time a tree took.
pub async fn of_vms(
    conn: &mut Conn<'_>,
    vms: &[i64],
    include_closed: bool,
) -> QueryResult<Vec<Snapshot>> {
    macro_rules! query {
        ($vms:expr) => {{
            let mut query = snapshots
                .filter(vm_id.eq_any($vms))
                .select(Snapshot::as_select())
                .order(id)
                .into_boxed();
            if !include_closed {
                query = query.filter(state.ne(Closed));
            }
            query
        }};
    }
    match conn {
        Conn::Pg(c) => query!(vms).load(&mut **c).await,
        Conn::Sqlite(c) => {
            // `IN (?, ?, ...)` has a text per number of ids; padding the list to a power
            // of two (repeating an id changes nothing) keeps those texts few enough to
            // keep prepared.
            let mut padded = vms.to_vec();
            if let Some(&last) = vms.last() {
                padded.resize(vms.len().next_power_of_two(), last);
            }
            let query = Cached(query!(padded));
            c.spawn_blocking(move |c| diesel::RunQueryDsl::load(query, c))
                .await
        }
    }
}

/// Pages of VMs' snapshots, closed ones too (each page's scope a VM), on
/// `snapshots_vm`.
pub async fn pages_of_vms(conn: &mut Conn<'_>, pages: &[Page]) -> QueryResult<Vec<Snapshot>> {
    read_pages!(conn, pages, snapshots, vm_id, id, Snapshot)
}

/// The tree rules' view of VM `vm`'s non-closed snapshots, oldest first: only the
/// columns they use (every column would cost two timestamps parsed per row).
pub async fn nodes_of(conn: &mut Conn<'_>, vm: i64) -> QueryResult<Vec<Node>> {
    let rows: Vec<NodeRow> = run!(conn, |c| snapshots
        .filter(vm_id.eq(vm))
        .filter(state.ne(Closed))
        .select((id, parent_id, name, state, active, protected, expires_at))
        .order(id)
        .load(c)
        .await)?;
    Ok(rows.into_iter().map(node_of).collect())
}

/// [`nodes_of`] for each of `vms` (every one of them has an entry).
pub async fn nodes_of_all(
    conn: &mut Conn<'_>,
    vms: &[i64],
) -> QueryResult<std::collections::HashMap<i64, Vec<Node>>> {
    let mut trees: std::collections::HashMap<i64, Vec<Node>> =
        vms.iter().map(|vm| (*vm, Vec::new())).collect();
    match conn {
        // One VM at a time: a statement of one shape, which SQLite keeps prepared.
        Conn::Sqlite(_) => {
            for &vm in vms {
                trees.insert(vm, nodes_of(conn, vm).await?);
            }
        }
        Conn::Pg(c) => {
            let rows: Vec<(i64, NodeRow)> = snapshots
                .filter(vm_id.eq_any(vms))
                .filter(state.ne(Closed))
                .select((
                    vm_id,
                    (id, parent_id, name, state, active, protected, expires_at),
                ))
                .order(id)
                .load(&mut **c)
                .await?;
            for (vm, row) in rows {
                trees.entry(vm).or_default().push(node_of(row));
            }
        }
    }
    Ok(trees)
}

/// A node's columns: id, parent, name, state, active, protected, expiry.
type NodeRow = (
    i64,
    Option<i64>,
    String,
    i32,
    bool,
    bool,
    Option<NaiveDateTime>,
);

fn node_of((node, parent, named, code, is_active, kept, expiry): NodeRow) -> Node {
    Node {
        id: node,
        parent_id: parent,
        name: named,
        state: SnapshotState::from_code(code).expect("snapshots.state is checked by the database"),
        active: is_active,
        protected: kept,
        expires_at: expiry,
    }
}

/// Writes `changes` to `vm`'s snapshots, with a history row per state change.
pub async fn apply(
    conn: &mut Conn<'_>,
    vm: &Vm,
    changes: &Changes,
    actor: Actor<'_>,
) -> QueryResult<()> {
    apply_all(conn, &[(vm, changes, actor)]).await
}

/// Writes each VM's changes to its snapshots, with a history row per state change by its
/// actor. On PostgreSQL each kind of change is one statement for all the VMs (a round
/// trip and an executor start per row were most of what a batch of task ends cost);
/// SQLite runs a statement per row, a function call in-process.
pub async fn apply_all(conn: &mut Conn<'_>, all: &[(&Vm, &Changes, Actor<'_>)]) -> QueryResult<()> {
    // Each VM once: the statements below apply all of one kind of change at a time.
    debug_assert!(
        all.iter()
            .map(|(vm, ..)| vm.id)
            .collect::<std::collections::HashSet<_>>()
            .len()
            == all.len(),
        "apply_all with a VM twice"
    );
    let writes = Writes::of(all);
    let at = now();
    match conn {
        Conn::Sqlite(c) => writes.sqlite(c, at).await?,
        Conn::Pg(c) => writes.pg(c, at).await?,
    }
    let entries: Vec<_> = all
        .iter()
        .flat_map(|(vm, c, actor)| {
            c.states
                .iter()
                .map(|&(target, new_state)| entry(vm, target, new_state.code(), *actor))
        })
        .collect();
    history::insert(conn, &entries).await
}

/// The changes of many VMs, gathered by kind: each kind is written at once.
struct Writes {
    /// New parents, by snapshot.
    parents: Vec<(i64, Option<i64>)>,
    /// VMs whose active marker is cleared (before any state changes: a CLOSED snapshot is
    /// never active).
    clear: Vec<i64>,
    /// New state codes, by snapshot.
    states: Vec<(i64, i32)>,
    /// Snapshots that become active.
    set: Vec<i64>,
}

impl Writes {
    fn of(all: &[(&Vm, &Changes, Actor<'_>)]) -> Self {
        Self {
            parents: all
                .iter()
                .flat_map(|(_, c, _)| c.parents.iter().copied())
                .collect(),
            clear: all
                .iter()
                .filter(|(_, c, _)| c.active.is_some())
                .map(|(vm, ..)| vm.id)
                .collect(),
            states: all
                .iter()
                .flat_map(|(_, c, _)| c.states.iter().map(|&(s, new)| (s, new.code())))
                .collect(),
            set: all
                .iter()
                .filter_map(|(_, c, _)| c.active.flatten())
                .collect(),
        }
    }

    /// On SQLite: a statement per row, each kept prepared.
    async fn sqlite(&self, c: &mut SqliteConn, at: NaiveDateTime) -> QueryResult<()> {
        let w = self;
        for &(child, parent) in &w.parents {
            Cached(
                diesel::update(snapshots.find(child))
                    .set((parent_id.eq(parent), updated_at.eq(at))),
            )
            .execute(&mut *c)
            .await?;
        }
        for &vm in &w.clear {
            Cached(
                diesel::update(snapshots.filter(vm_id.eq(vm)).filter(active))
                    .set((active.eq(false), updated_at.eq(at))),
            )
            .execute(&mut *c)
            .await?;
        }
        for &(target, code) in &w.states {
            Cached(diesel::update(snapshots.find(target)).set((state.eq(code), updated_at.eq(at))))
                .execute(&mut *c)
                .await?;
        }
        for &target in &w.set {
            Cached(
                diesel::update(snapshots.find(target)).set((active.eq(true), updated_at.eq(at))),
            )
            .execute(&mut *c)
            .await?;
        }
        Ok(())
    }

    /// On PostgreSQL: one statement per kind of change, for every row of that kind.
    async fn pg(&self, c: &mut AsyncPgConnection, at: NaiveDateTime) -> QueryResult<()> {
        let w = self;
        use diesel::sql_types::{Array, BigInt, Integer, Nullable, Timestamp};
        if !w.parents.is_empty() {
            let (ids, new): (Vec<i64>, Vec<Option<i64>>) = w.parents.iter().copied().unzip();
            Cached(
                diesel::sql_query(
                    "UPDATE snapshots SET parent_id = v.parent_id, updated_at = $3 \
                 FROM unnest($1::bigint[], $2::bigint[]) AS v(id, parent_id) \
                 WHERE snapshots.id = v.id",
                )
                .bind::<Array<BigInt>, _>(ids)
                .bind::<Array<Nullable<BigInt>>, _>(new)
                .bind::<Timestamp, _>(at),
            )
            .execute(&mut *c)
            .await?;
        }
        if !w.clear.is_empty() {
            Cached(
                diesel::update(snapshots.filter(vm_id.eq_any(&w.clear)).filter(active))
                    .set((active.eq(false), updated_at.eq(at))),
            )
            .execute(&mut *c)
            .await?;
        }
        if !w.states.is_empty() {
            let (ids, codes): (Vec<i64>, Vec<i32>) = w.states.iter().copied().unzip();
            Cached(
                diesel::sql_query(
                    "UPDATE snapshots SET state = v.state, updated_at = $3 \
                 FROM unnest($1::bigint[], $2::integer[]) AS v(id, state) \
                 WHERE snapshots.id = v.id",
                )
                .bind::<Array<BigInt>, _>(ids)
                .bind::<Array<Integer>, _>(codes)
                .bind::<Timestamp, _>(at),
            )
            .execute(&mut *c)
            .await?;
        }
        if !w.set.is_empty() {
            Cached(
                diesel::update(snapshots.filter(id.eq_any(&w.set)))
                    .set((active.eq(true), updated_at.eq(at))),
            )
            .execute(&mut *c)
            .await?;
        }
        Ok(())
    }
}

/// How many non-closed snapshots each of `wanted` projects has over all its VMs (every
/// one of them has an entry).
pub async fn open_counts_of_projects(
    conn: &mut Conn<'_>,
    wanted: &[i64],
) -> QueryResult<std::collections::HashMap<i64, i64>> {
    use super::schema::vms;
    let rows: Vec<(i64, i64)> = run!(conn, |c| snapshots
        .inner_join(vms::table.on(vms::id.eq(vm_id)))
        .filter(vms::project_id.eq_any(wanted))
        .filter(state.ne(Closed))
        .group_by(vms::project_id)
        .select((vms::project_id, diesel::dsl::count_star()))
        .load(c)
        .await)?;
    let mut counts: std::collections::HashMap<i64, i64> = wanted.iter().map(|p| (*p, 0)).collect();
    counts.extend(rows);
    Ok(counts)
}

#[cfg(test)]
mod literal_tests {
    use crate::domain::SnapshotState;

    #[test]
    fn the_literal_is_closed() {
        assert_eq!(SnapshotState::Closed.code(), 99);
    }
}
