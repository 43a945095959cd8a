//! Room on a host: how many more tasks it may run at once (`max_concurrent_tasks`),
//! counted exactly on SQLite and through slots held under advisory locks on PostgreSQL.

use super::*;

/// The hosts whose held tasks fill their `max_concurrent_tasks` at `at`: none of their
/// tasks may be claimed now.
pub async fn full_hosts(conn: &mut Conn<'_>, at: NaiveDateTime) -> QueryResult<Vec<i64>> {
    use crate::db::schema::hosts;
    let held: Vec<(i64, i64)> = run!(conn, |c| tasks
        .filter(held_at(at))
        .group_by(host_id)
        .select((host_id, diesel::dsl::count_star()))
        .load(c)
        .await)?;
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let busy: Vec<i64> = held.iter().map(|(host, _)| *host).collect();
    let limits: Vec<(i64, i32)> = run!(conn, |c| hosts::table
        .filter(hosts::id.eq_any(&busy))
        .select((hosts::id, hosts::max_concurrent_tasks))
        .load(c)
        .await)?;
    Ok(limits
        .into_iter()
        .filter(|(host, limit)| {
            held.iter()
                .any(|(h, n)| h == host && *n >= i64::from(*limit))
        })
        .map(|(host, _)| host)
        .collect())
}

/// Room for one more task on a host: on PostgreSQL, the slot the task takes there.
#[derive(Clone, Copy, Debug, Default)]
pub struct Room {
    /// On PostgreSQL, the slot (`0..limit`) this take has locked and stores on the task;
    /// `None` on SQLite, where counting the held tasks is exact.
    pub(super) slot: Option<i32>,
}

/// The most free slots a take tries to lock before it leaves the task to wait.
const SLOT_TRIES: usize = 8;

/// Whether host `host`, of limit `limit`, has room for one more task at `at`.
pub async fn room_on(
    conn: &mut Conn<'_>,
    host: i64,
    limit: i32,
    at: NaiveDateTime,
) -> QueryResult<Option<Room>> {
    Ok(rooms_on(conn, host, limit, 1, at).await?.pop())
}

/// Room on host `host`, of limit `limit`, for up to `wanted` more tasks at `at`.
///
/// SQLite's writers run one at a time: counting the host's held tasks is exact. On
/// PostgreSQL, transactions that take tasks for one host run at once, and a count would
/// not see the others' uncommitted takes. Each held task there has a slot, `0..limit`;
/// a take picks slots no held task has and locks them (advisory locks until its
/// commit), then checks again, in a statement that sees every take committed before the
/// locks were had, that no held task has them. Takes for one host therefore never share
/// a slot and never exceed the limit, without waiting for each other's commits (as a
/// lock on the host's row made them do). A slot is free again once its task is no
/// longer held: ended, queued again, or its lease run out.
/// One function: the count both backends share, then PostgreSQL's slot loop, whose steps
/// (pick, lock, check again) depend on each other, as described above.
pub async fn rooms_on(
    conn: &mut Conn<'_>,
    host: i64,
    limit: i32,
    wanted: usize,
    at: NaiveDateTime,
) -> QueryResult<Vec<Room>> {
    let held: Vec<Option<i32>> = run!(conn, |c| tasks
        .filter(host_id.eq(host))
        .filter(held_at(at))
        .select(slot)
        .load(c)
        .await)?;
    let free = usize::try_from(limit)
        .unwrap_or(0)
        .saturating_sub(held.len());
    let wanted = wanted.min(free);
    let Conn::Pg(c) = conn else {
        return Ok(vec![Room::default(); wanted]);
    };
    if wanted == 0 {
        return Ok(Vec::new());
    }
    let taken: HashSet<i32> = held.into_iter().flatten().collect();
    let free: Vec<i32> = (0..limit).filter(|s| !taken.contains(s)).collect();
    // From a random free slot on, so that takes at the same moment rarely try the same;
    // as many as are wanted at a time, so that no more are locked than used.
    let start = fastrand::usize(..free.len().max(1));
    let mut candidates = free[start..].iter().chain(&free[..start]).copied();
    let mut rooms = Vec::with_capacity(wanted);
    let mut tried = 0;
    while rooms.len() < wanted && tried < SLOT_TRIES.max(wanted) {
        let round: Vec<i32> = candidates.by_ref().take(wanted - rooms.len()).collect();
        if round.is_empty() {
            break;
        }
        tried += round.len();
        use diesel::sql_types::{Array, Integer};
        // The two-integer keys are a space of their own, apart from the migrations' lock.
        let locked: Vec<SlotNumber> = Cached(
            diesel::sql_query(
                "SELECT s AS slot FROM unnest($2::integer[]) AS s \
                 WHERE pg_try_advisory_xact_lock($1, s)",
            )
            .bind::<Integer, _>(host as i32)
            .bind::<Array<Integer>, _>(round),
        )
        .load(&mut **c)
        .await?;
        let locked: Vec<i32> = locked.into_iter().map(|s| s.number).collect();
        if locked.is_empty() {
            continue;
        }
        let holders: Vec<Option<i32>> = tasks
            .filter(host_id.eq(host))
            .filter(slot.eq_any(&locked))
            .filter(held_at(at))
            .select(slot)
            .load(&mut **c)
            .await?;
        rooms.extend(
            locked
                .into_iter()
                .filter(|s| !holders.contains(&Some(*s)))
                .map(|s| Room { slot: Some(s) }),
        );
    }
    Ok(rooms)
}

#[derive(QueryableByName)]
struct SlotNumber {
    /// A slot whose advisory lock this transaction got.
    #[diesel(sql_type = diesel::sql_types::Integer, column_name = slot)]
    number: i32,
}

/// Whether a task waits on any of `hosts` (queued there).
pub async fn waiting_on(conn: &mut Conn<'_>, hosts: &[i64]) -> QueryResult<bool> {
    let found: Option<i64> = run!(conn, |c| tasks
        .filter(state.eq(Queued))
        .filter(host_id.eq_any(hosts))
        .select(id)
        .first(c)
        .await
        .optional())?;
    Ok(found.is_some())
}

/// Room for the robot of the queueing process to take at once up to `wanted` of the
/// tasks just queued on host `host` (of limit `limit`), the oldest of them `first`: the
/// host has room (see [`rooms_on`]) and no older task waits there before them.
pub async fn rooms_in_line(
    conn: &mut Conn<'_>,
    host: i64,
    limit: i32,
    first: i64,
    wanted: usize,
    at: NaiveDateTime,
) -> QueryResult<Vec<Room>> {
    let older: Option<i64> = run!(conn, |c| tasks
        .filter(claimable_at(at))
        .filter(host_id.eq(host))
        .filter(id.lt(first))
        .select(id)
        .first(c)
        .await
        .optional())?;
    if older.is_some() {
        return Ok(Vec::new());
    }
    rooms_on(conn, host, limit, wanted, at).await
}
