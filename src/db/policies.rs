//! Snapshot policies and their runs. A slot is taken by moving `next_due_at` on with a
//! compare-and-set, so that one process, of however many share the database, runs it;
//! a run is tried by the process that claims it, until `claimed_until`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{NewPolicy, NewPolicyRun, Policy, PolicyRun};
use super::schema::{policy_runs, snapshot_policies, snapshots};
use super::{Conn, run, sql_constant};

sql_constant!(Closed, diesel::sql_types::Integer, "99");

pub async fn insert(conn: &mut Conn<'_>, new: &NewPolicy<'_>) -> QueryResult<Policy> {
    run!(conn, |c| diesel::insert_into(snapshot_policies::table)
        .values(new)
        .returning(Policy::as_returning())
        .get_result(c)
        .await)
}

pub async fn by_id(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Policy>> {
    run!(conn, |c| snapshot_policies::table
        .find(id)
        .select(Policy::as_select())
        .first(c)
        .await
        .optional())
}

/// Every policy, or those of project `only`; by id.
pub async fn list(conn: &mut Conn<'_>, only: Option<i64>) -> QueryResult<Vec<Policy>> {
    run!(conn, |c| {
        let mut query = snapshot_policies::table
            .select(Policy::as_select())
            .order(snapshot_policies::id)
            .into_boxed();
        if let Some(project) = only {
            query = query.filter(snapshot_policies::project_id.eq(project));
        }
        query.load(c).await
    })
}

/// How many policies project `project` has.
pub async fn count_of_project(conn: &mut Conn<'_>, project: i64) -> QueryResult<i64> {
    run!(conn, |c| snapshot_policies::table
        .filter(snapshot_policies::project_id.eq(project))
        .count()
        .get_result(c)
        .await)
}

/// Deletes policy `id` and its runs; its snapshots stay, no longer its own.
pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<bool> {
    run!(conn, |c| {
        diesel::update(snapshots::table.filter(snapshots::policy_id.eq(id)))
            .set(snapshots::policy_id.eq(None::<i64>))
            .execute(c)
            .await?;
        diesel::delete(policy_runs::table.filter(policy_runs::policy_id.eq(id)))
            .execute(c)
            .await?;
        diesel::delete(snapshot_policies::table.find(id))
            .execute(c)
            .await
            .map(|n| n > 0)
    })
}

/// The policies whose next slot is at or before `now`.
pub async fn due(conn: &mut Conn<'_>, now: NaiveDateTime) -> QueryResult<Vec<Policy>> {
    run!(conn, |c| snapshot_policies::table
        .filter(snapshot_policies::next_due_at.le(now))
        .filter(snapshot_policies::paused_because.is_null())
        .select(Policy::as_select())
        .order(snapshot_policies::id)
        .load(c)
        .await)
}

/// Takes policy `id`'s slot: moves `next_due_at` from `seen` to `next`. False when
/// another process took it first.
pub async fn take_slot(
    conn: &mut Conn<'_>,
    id: i64,
    seen: NaiveDateTime,
    next: NaiveDateTime,
) -> QueryResult<bool> {
    run!(conn, |c| diesel::update(
        snapshot_policies::table
            .filter(snapshot_policies::id.eq(id))
            .filter(snapshot_policies::next_due_at.eq(seen))
    )
    .set(snapshot_policies::next_due_at.eq(next))
    .execute(c)
    .await
    .map(|n| n == 1))
}

/// Records the runs of a slot (one that exists already is left as it is).
pub async fn insert_runs(conn: &mut Conn<'_>, new: &[NewPolicyRun]) -> QueryResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    // One statement per row: SQLite's diesel has no batch insert with ON CONFLICT.
    for row in new {
        run!(conn, |c| diesel::insert_into(policy_runs::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c)
            .await)?;
    }
    Ok(())
}

/// Runs of policy `id` still pending from slots before `slot`: missed.
pub async fn miss_older(
    conn: &mut Conn<'_>,
    id: i64,
    slot: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    run!(conn, |c| diesel::update(
        policy_runs::table
            .filter(policy_runs::policy_id.eq(id))
            .filter(policy_runs::state.eq("PENDING"))
            .filter(policy_runs::due_at.lt(slot))
    )
    .set((
        policy_runs::state.eq("MISSED"),
        policy_runs::claimed_until.eq(None::<NaiveDateTime>),
        policy_runs::updated_at.eq(now),
    ))
    .execute(c)
    .await)
}

/// Pending runs no process holds at `now`: at most `per_project` of each project's, and
/// `most` in all, taken in turn (every project's first, then every project's second,
/// ...), so that a project with many runs that keep being refused cannot fill the list
/// and starve the others'.
pub async fn pending(
    conn: &mut Conn<'_>,
    now: NaiveDateTime,
    per_project: i64,
    most: i64,
) -> QueryResult<Vec<PolicyRun>> {
    use diesel::sql_types::{BigInt, Timestamp};
    const PENDING: &str = "SELECT id, policy_id, vm_id, due_at, state, attempts, last_error, \
         snapshot_id, task_id, claimed_until, created_at, updated_at FROM ( \
         SELECT policy_runs.*, ROW_NUMBER() OVER ( \
           PARTITION BY snapshot_policies.project_id ORDER BY policy_runs.id) AS place \
         FROM policy_runs JOIN snapshot_policies ON snapshot_policies.id = policy_runs.policy_id \
         WHERE policy_runs.state = 'PENDING' AND snapshot_policies.paused_because IS NULL \
           AND (policy_runs.claimed_until IS NULL OR policy_runs.claimed_until < ";
    // The backends differ only in how they number parameters.
    let sql = match conn {
        Conn::Sqlite(_) => {
            format!("{PENDING}?)) AS r WHERE r.place <= ? ORDER BY r.place, r.id LIMIT ?")
        }
        Conn::Pg(_) => {
            format!("{PENDING}$1)) AS r WHERE r.place <= $2 ORDER BY r.place, r.id LIMIT $3")
        }
    };
    run!(conn, |c| diesel::sql_query(sql)
        .bind::<Timestamp, _>(now)
        .bind::<BigInt, _>(per_project)
        .bind::<BigInt, _>(most)
        .load(c)
        .await)
}

/// Claims pending run `id` until `until`; false when another process holds it.
pub async fn claim(
    conn: &mut Conn<'_>,
    id: i64,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> QueryResult<bool> {
    run!(conn, |c| diesel::update(
        policy_runs::table
            .filter(policy_runs::id.eq(id))
            .filter(policy_runs::state.eq("PENDING"))
            .filter(
                policy_runs::claimed_until
                    .is_null()
                    .or(policy_runs::claimed_until.lt(now))
            )
    )
    .set(policy_runs::claimed_until.eq(until))
    .execute(c)
    .await
    .map(|n| n == 1))
}

/// Counts `n` more runs of policy `id` missed in a row; the count now.
pub async fn missed(conn: &mut Conn<'_>, id: i64, n: i32) -> QueryResult<i32> {
    run!(conn, |c| diesel::update(snapshot_policies::table.find(id))
        .set(snapshot_policies::misses.eq(snapshot_policies::misses + n))
        .returning(snapshot_policies::misses)
        .get_result(c)
        .await)
}

/// A run of policy `id` made its snapshot: no run is missed in a row any more.
pub async fn made(conn: &mut Conn<'_>, id: i64) -> QueryResult<()> {
    run!(conn, |c| diesel::update(snapshot_policies::table.find(id))
        .set(snapshot_policies::misses.eq(0))
        .execute(c)
        .await
        .map(drop))
}

/// Pauses policy `id` (`Some(why)`), or resumes it (`None`, its misses forgotten).
pub async fn set_paused(conn: &mut Conn<'_>, id: i64, why: Option<&str>) -> QueryResult<()> {
    run!(conn, |c| diesel::update(snapshot_policies::table.find(id))
        .set((
            snapshot_policies::paused_because.eq(why),
            snapshot_policies::misses.eq(0),
        ))
        .execute(c)
        .await
        .map(drop))
}

/// Run `id` asked for its snapshot (task `task`).
pub async fn created(
    conn: &mut Conn<'_>,
    id: i64,
    snapshot: i64,
    task: Option<i64>,
    now: NaiveDateTime,
) -> QueryResult<()> {
    run!(conn, |c| diesel::update(policy_runs::table.find(id))
        .set((
            policy_runs::state.eq("CREATED"),
            policy_runs::snapshot_id.eq(snapshot),
            policy_runs::task_id.eq(task),
            policy_runs::attempts.eq(policy_runs::attempts + 1),
            policy_runs::claimed_until.eq(None::<NaiveDateTime>),
            policy_runs::updated_at.eq(now),
        ))
        .execute(c)
        .await
        .map(drop))
}

/// Run `id` was refused (`why`): tried again after `retry`, or missed for good when
/// `retry` is `None`.
pub async fn refused(
    conn: &mut Conn<'_>,
    id: i64,
    why: &str,
    retry: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let state = if retry.is_some() { "PENDING" } else { "MISSED" };
    run!(conn, |c| diesel::update(policy_runs::table.find(id))
        .set((
            policy_runs::state.eq(state),
            policy_runs::last_error.eq(why),
            policy_runs::attempts.eq(policy_runs::attempts + 1),
            policy_runs::claimed_until.eq(retry),
            policy_runs::updated_at.eq(now),
        ))
        .execute(c)
        .await
        .map(drop))
}

/// Policy `id`'s runs, newest first.
pub async fn runs_of(conn: &mut Conn<'_>, id: i64, first: i64) -> QueryResult<Vec<PolicyRun>> {
    run!(conn, |c| policy_runs::table
        .filter(policy_runs::policy_id.eq(id))
        .select(PolicyRun::as_select())
        .order((policy_runs::due_at.desc(), policy_runs::id.desc()))
        .limit(first)
        .load(c)
        .await)
}

/// The non-closed snapshots policy `id` made on VM `vm`: (id, slot, active, name).
pub async fn made_by(
    conn: &mut Conn<'_>,
    id: i64,
    vm: i64,
) -> QueryResult<Vec<(i64, Option<NaiveDateTime>, bool, String, i32, bool)>> {
    run!(conn, |c| snapshots::table
        .filter(snapshots::policy_id.eq(id))
        .filter(snapshots::vm_id.eq(vm))
        .filter(snapshots::state.ne(Closed))
        .select((
            snapshots::id,
            snapshots::policy_due_at,
            snapshots::active,
            snapshots::name,
            snapshots::state,
            snapshots::protected,
        ))
        .order(snapshots::id)
        .load(c)
        .await)
}
