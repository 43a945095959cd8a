//! Claiming: a robot takes queued tasks (or ones whose lease ran out) on hosts with room,
//! each under a lease and a fence; it renews the lease while it works, and hands a task
//! back when it stops.

use super::*;

/// The hosts whose tasks a claim may take.
#[derive(Clone, Copy, Debug)]
pub struct Among<'a> {
    /// Only these (`None`: every host).
    pub hosts: Option<&'a [i64]>,
    /// Never these.
    pub except: &'a [i64],
}

/// The hosts none of whose tasks may be claimed at `at`: the full ones and the excepted.
async fn closed_hosts(
    conn: &mut Conn<'_>,
    at: NaiveDateTime,
    except: &[i64],
) -> QueryResult<Vec<i64>> {
    let mut closed = full_hosts(conn, at).await?;
    closed.extend_from_slice(except);
    Ok(closed)
}

/// Whether any task could be claimed now (see [`claim`]); a read, so that looking for
/// work does not take SQLite's one write lock.
pub async fn claimable(
    conn: &mut Conn<'_>,
    at: NaiveDateTime,
    among: Among<'_>,
) -> QueryResult<bool> {
    let every_host = among.hosts.is_none();
    let hosts = among.hosts.unwrap_or_default();
    let full = closed_hosts(conn, at, among.except).await?;
    let found: Option<i64> = run!(conn, |c| tasks
        .filter(
            claimable_at(at)
                .and(host_id.eq_any(hosts).or(every_host.into_sql::<Bool>()))
                .and(host_id.ne_all(&full)),
        )
        .select(id)
        .first(c)
        .await
        .optional())?;
    Ok(found.is_some())
}

/// Claims up to `max` of the oldest tasks that are queued, or running under an expired
/// lease (their robot died), on hosts with room, for `owner` until `until`, counting one
/// more attempt each. `among` limits the claim to some hosts. Tasks of a full host wait,
/// in order, until one of its tasks ends. On PostgreSQL the tasks come from one host (the
/// one whose task has waited longest), read and taken a few statements for all.
/// One function: the two backends' ways to claim side by side, in one loop that shares `taken`
/// and `full`, so that they stay in step.
pub async fn claim(
    conn: &mut Conn<'_>,
    owner: &str,
    at: NaiveDateTime,
    until: NaiveDateTime,
    among: Among<'_>,
    max: usize,
) -> QueryResult<Vec<Task>> {
    // `hosts: None` claims for every host; a bound boolean keeps the query unboxed, which
    // the locking clause needs.
    let every_host = among.hosts.is_none();
    let hosts = among.hosts.unwrap_or_default();
    let mut taken = Vec::new();
    let mut full = closed_hosts(conn, at, among.except).await?;
    while taken.len() < max {
        let wanted = claimable_at(at)
            .and(host_id.eq_any(hosts).or(every_host.into_sql::<Bool>()))
            .and(host_id.ne_all(full.clone()));
        let host = match conn {
            // The write transaction is IMMEDIATE: no other writer runs meanwhile, and
            // `full` is exact (read again after each take).
            Conn::Sqlite(c) => {
                let found = tasks
                    .filter(wanted)
                    .select(Task::as_select())
                    .order(id)
                    .first(&mut **c)
                    .await
                    .optional()?;
                let Some(task) = found else {
                    break;
                };
                taken.extend(take(conn, &task, owner, at, until, Room::default()).await?);
                full = closed_hosts(conn, at, among.except).await?;
                continue;
            }
            // The host of the oldest task that waits is the one to claim for.
            Conn::Pg(c) => tasks
                .filter(wanted)
                .select(host_id)
                .order(id)
                .first(&mut **c)
                .await
                .optional()?,
        };
        let Some(host) = host else {
            break;
        };
        use crate::db::schema::hosts;
        let limit: i32 = run!(conn, |c| hosts::table
            .find(host)
            .select(hosts::max_concurrent_tasks)
            .first(c)
            .await)?;
        let rooms = rooms_on(conn, host, limit, max - taken.len(), at).await?;
        if !rooms.is_empty() {
            let Conn::Pg(c) = conn else {
                unreachable!("SQLite continued above")
            };
            // The host's oldest waiting tasks. Not `SKIP LOCKED`: a claim for the same
            // host in another process that holds them is waited for, so that the host's
            // tasks start in the order they were queued.
            let found = tasks
                .filter(claimable_at(at))
                .filter(host_id.eq(host))
                .select(Task::as_select())
                .order(id)
                .limit(i64::try_from(rooms.len()).unwrap_or(i64::MAX))
                .for_no_key_update()
                .load(&mut **c)
                .await?;
            let got = found.len();
            let takes: Vec<(&Task, Room)> = found.iter().zip(rooms).collect();
            taken.extend(take_all(conn, &takes, owner, at, until).await?);
            if got > 0 {
                // One host per claim: the next call starts again from the oldest.
                break;
            }
        }
        full.push(host);
    }
    Ok(taken)
}

/// Takes task `task` (just read, queued or under an expired lease) for `owner` until
/// `until`, in `room` on its host, counting the attempt it starts. `None` if another
/// robot was quicker.
pub async fn take(
    conn: &mut Conn<'_>,
    task: &Task,
    owner: &str,
    at: NaiveDateTime,
    until: NaiveDateTime,
    room: Room,
) -> QueryResult<Option<Task>> {
    let first_start = task.started_at.unwrap_or(at);
    run!(conn, |c| Cached(
        diesel::update(tasks.find(task.id).filter(claimable_at(at)))
            .set((
                state.eq(RUNNING),
                lease_owner.eq(owner),
                lease_expires_at.eq(until),
                started_at.eq(first_start),
                attempts.eq(task.attempts + 1),
                slot.eq(room.slot),
                fence.eq(fence + 1),
            ))
            .returning(Task::as_returning())
    )
    .get_result(c)
    .await
    .optional())
}

/// [`take`] for each of `takes` (tasks just read, each with its room): on PostgreSQL one
/// statement. Returns the ones taken, in id order; another robot may have been quicker
/// to the others.
pub async fn take_all(
    conn: &mut Conn<'_>,
    takes: &[(&Task, Room)],
    owner: &str,
    at: NaiveDateTime,
    until: NaiveDateTime,
) -> QueryResult<Vec<Task>> {
    let mut taken = Vec::with_capacity(takes.len());
    match conn {
        Conn::Pg(c) if takes.len() > 1 => {
            use diesel::sql_types::{Array, BigInt, Integer, Nullable, Timestamp};
            taken = Cached(
                diesel::sql_query(concat!(
                    "UPDATE tasks SET state = 'RUNNING', lease_owner = $2, lease_expires_at = $3, \
                     started_at = COALESCE(tasks.started_at, $4), attempts = tasks.attempts + 1, \
                     slot = v.slot, fence = tasks.fence + 1 \
                     FROM unnest($1::bigint[], $5::integer[]) AS v(id, slot) \
                     WHERE tasks.id = v.id AND ",
                    claimable_at_sql!("$4"),
                    " RETURNING tasks.*"
                ))
                .bind::<Array<BigInt>, _>(takes.iter().map(|(t, _)| t.id).collect::<Vec<_>>())
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(until)
                .bind::<Timestamp, _>(at)
                .bind::<Array<Nullable<Integer>>, _>(
                    takes.iter().map(|(_, room)| room.slot).collect::<Vec<_>>(),
                ),
            )
            .load(&mut **c)
            .await?;
            taken.sort_by_key(|t: &Task| t.id);
        }
        _ => {
            for (task, room) in takes {
                taken.extend(take(conn, task, owner, at, until, *room).await?);
            }
        }
    }
    Ok(taken)
}

/// Extends the lease of claim `claim` (its fence) on task `wanted`. Returns whether a
/// cancel was asked for, or `None` when the claim no longer holds the task.
pub async fn renew(
    conn: &mut Conn<'_>,
    wanted: i64,
    claim: i64,
    until: NaiveDateTime,
) -> QueryResult<Option<bool>> {
    run!(conn, |c| Cached(
        diesel::update(held_under(wanted, claim))
            .set(lease_expires_at.eq(until))
            .returning(cancel_requested)
    )
    .get_result(c)
    .await
    .optional())
}

/// Puts a task back in the queue while claim `claim` (its fence) holds it (its robot is
/// stopping).
pub async fn release(conn: &mut Conn<'_>, wanted: i64, claim: i64) -> QueryResult<bool> {
    let changed = run!(conn, |c| Cached(
        diesel::update(held_under(wanted, claim)).set((
            state.eq(QUEUED),
            lease_owner.eq(None::<String>),
            lease_expires_at.eq(None::<NaiveDateTime>),
        ))
    )
    .execute(c)
    .await)?;
    Ok(changed == 1)
}
