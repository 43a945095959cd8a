//! Tasks: the robot's queue. A claimed task carries a lease (owner and expiry) that its
//! robot renews while it works; a task whose lease expired can be claimed again.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;

use super::models::{NewTask, Task};
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

/// Every task of `vms`, oldest first.
pub async fn of_vms(conn: &mut Conn<'_>, vms: &[i64]) -> QueryResult<Vec<Task>> {
    run!(conn, |c| tasks
        .filter(vm_id.eq_any(vms))
        .select(Task::as_select())
        .order(id)
        .load(c)
        .await)
}

/// Which tasks a listing shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Only tasks of this project's VMs (none: every project's).
    pub project: Option<i64>,
    /// Only tasks of this VM.
    pub vm: Option<i64>,
    pub state: Option<TaskState>,
}

/// Up to `limit` tasks older than `before`, newest first.
pub async fn page(
    conn: &mut Conn<'_>,
    filter: Filter,
    before: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Task>> {
    use super::schema::vms;
    run!(conn, |c| {
        let mut query = tasks
            .select(Task::as_select())
            .order(id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(project) = filter.project {
            query = query.filter(
                vm_id.eq_any(
                    vms::table
                        .filter(vms::project_id.eq(project))
                        .select(vms::id),
                ),
            );
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

/// The hosts whose held tasks fill their `max_concurrent_tasks` at `at`: none of their
/// tasks may be claimed now.
pub async fn full_hosts(conn: &mut Conn<'_>, at: NaiveDateTime) -> QueryResult<Vec<i64>> {
    use super::schema::hosts;
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
    slot: Option<i32>,
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

/// Claims up to `max` of the oldest tasks that are queued, or running under an expired
/// lease (their robot died), on hosts with room, for `owner` until `until`, counting one
/// more attempt each. `among` limits the claim to some hosts. Tasks of a full host wait,
/// in order, until one of its tasks ends. On PostgreSQL the tasks come from one host (the
/// one whose task has waited longest), read and taken a few statements for all.
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
        use super::schema::hosts;
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

/// [`held_under`] in SQL (keep the two in step), for a statement over many tasks that
/// joins each to the fence of its claim as `v.fence`.
macro_rules! held_under_each {
    () => {
        "tasks.state = 'RUNNING' AND tasks.fence = v.fence"
    };
}

/// A progress report on a task a robot holds.
pub struct Report<'a> {
    pub task: i64,
    /// The fence of the claim it reports under.
    pub claim: i64,
    pub progress: Option<i32>,
    pub phase: Option<&'a str>,
    /// The attempt the robot is on.
    pub attempts: i32,
}

/// Records `reports` (one per task at most); returns the tasks whose robot still held
/// them (the others are left as they were). On PostgreSQL one statement for all.
pub async fn set_progress_all(
    conn: &mut Conn<'_>,
    reports: &[Report<'_>],
) -> QueryResult<HashSet<i64>> {
    let mut held = HashSet::new();
    if reports.is_empty() {
        return Ok(held);
    }
    match conn {
        Conn::Sqlite(c) => {
            for r in reports {
                let changed = Cached(diesel::update(held_under(r.task, r.claim)).set((
                    progress.eq(r.progress),
                    phase.eq(r.phase),
                    attempts.eq(r.attempts),
                )))
                .execute(&mut **c)
                .await?;
                if changed == 1 {
                    held.insert(r.task);
                }
            }
        }
        Conn::Pg(c) => {
            use diesel::sql_types::{Array, BigInt, Integer, Nullable};
            let rows: Vec<TaskId> = Cached(
                diesel::sql_query(concat!(
                    "UPDATE tasks SET progress = v.progress, phase = v.phase, attempts = v.attempts \
                     FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::text[], $5::integer[]) \
                     AS v(id, fence, progress, phase, attempts) \
                     WHERE tasks.id = v.id AND ",
                    held_under_each!(),
                    " RETURNING tasks.id"
                ))
                .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.task).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.claim).collect::<Vec<_>>())
                .bind::<Array<Nullable<Integer>>, _>(
                    reports.iter().map(|r| r.progress).collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(
                    reports.iter().map(|r| r.phase).collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(reports.iter().map(|r| r.attempts).collect::<Vec<_>>()),
            )
            .load(&mut **c)
            .await?;
            held.extend(rows.into_iter().map(|r| r.task));
        }
    }
    Ok(held)
}

/// Why a task ended other than in success, as it is stored.
#[derive(Clone, Copy, Debug)]
pub struct Why<'a> {
    /// Snaptree's words (`tasks.error`).
    pub message: &'a str,
    /// The stable code.
    pub code: &'a str,
    /// What the host said (ADMIN only).
    pub detail: Option<&'a str>,
}

/// The end of a task a robot holds.
pub struct Ending<'a> {
    pub task: i64,
    /// The fence of the claim it ends under.
    pub claim: i64,
    pub state: TaskState,
    /// Why, unless it succeeded.
    pub why: Option<Why<'a>>,
    /// The progress it is left with.
    pub progress: Option<i32>,
}

/// Ends the tasks of `endings` at `at`, each only while its robot still holds it;
/// returns the ones ended. On PostgreSQL one statement for all.
pub async fn finish_all(
    conn: &mut Conn<'_>,
    endings: &[Ending<'_>],
    at: NaiveDateTime,
) -> QueryResult<HashSet<i64>> {
    let mut ended = HashSet::new();
    if endings.is_empty() {
        return Ok(ended);
    }
    match conn {
        Conn::Sqlite(_) => {
            for e in endings {
                if finish(conn, e.task, Some(e.claim), e.state, e.why, e.progress, at).await? {
                    ended.insert(e.task);
                }
            }
        }
        Conn::Pg(c) => {
            use diesel::sql_types::{Array, BigInt, Integer, Nullable, Timestamp};
            let rows: Vec<TaskId> = Cached(
                diesel::sql_query(concat!(
                    "UPDATE tasks SET state = v.state, error = v.error, finished_at = $6, \
                     phase = NULL, lease_owner = NULL, lease_expires_at = NULL, progress = v.progress, \
                     error_code = v.code, error_detail = v.detail \
                     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::integer[], \
                     $7::text[], $8::text[]) \
                     AS v(id, fence, state, error, progress, code, detail) \
                     WHERE tasks.id = v.id AND ",
                    held_under_each!(),
                    " RETURNING tasks.id"
                ))
                .bind::<Array<BigInt>, _>(endings.iter().map(|e| e.task).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(endings.iter().map(|e| e.claim).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(
                    endings.iter().map(|e| e.state.as_str()).collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(
                    endings
                        .iter()
                        .map(|e| e.why.map(|w| w.message))
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Integer>>, _>(
                    endings.iter().map(|e| e.progress).collect::<Vec<_>>(),
                )
                .bind::<Timestamp, _>(at)
                .bind::<Array<Nullable<Text>>, _>(
                    endings
                        .iter()
                        .map(|e| e.why.map(|w| w.code))
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(
                    endings
                        .iter()
                        .map(|e| e.why.and_then(|w| w.detail))
                        .collect::<Vec<_>>(),
                ),
            )
            .load(&mut **c)
            .await?;
            ended.extend(rows.into_iter().map(|r| r.task));
        }
    }
    Ok(ended)
}

#[derive(QueryableByName)]
struct TaskId {
    #[diesel(sql_type = diesel::sql_types::BigInt, column_name = id)]
    task: i64,
}

/// Ends a task, leaving `final_progress`. With `claim` (a claim's fence), only while that
/// claim still holds it; without, only while it is still queued. False when the task was
/// not in that position any more.
pub async fn finish(
    conn: &mut Conn<'_>,
    wanted: i64,
    claim: Option<i64>,
    end: TaskState,
    why: Option<Why<'_>>,
    final_progress: Option<i32>,
    at: NaiveDateTime,
) -> QueryResult<bool> {
    let values = (
        state.eq(end.as_str()),
        error.eq(why.map(|w| w.message)),
        error_code.eq(why.map(|w| w.code)),
        error_detail.eq(why.and_then(|w| w.detail)),
        finished_at.eq(at),
        phase.eq(None::<String>),
        lease_owner.eq(None::<String>),
        lease_expires_at.eq(None::<NaiveDateTime>),
    );
    let changed = match claim {
        Some(claim) => run!(conn, |c| Cached(
            diesel::update(held_under(wanted, claim)).set((values, progress.eq(final_progress)))
        )
        .execute(c)
        .await)?,
        None => run!(conn, |c| Cached(
            diesel::update(tasks.find(wanted).filter(state.eq(Queued)))
                .set((values, progress.eq(final_progress)))
        )
        .execute(c)
        .await)?,
    };
    Ok(changed == 1)
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

/// Asks the robot running task `wanted` to stop at its next safe point; false when it is
/// not running or was asked already.
pub async fn request_cancel(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<bool> {
    let changed = run!(conn, |c| Cached(
        diesel::update(
            tasks
                .find(wanted)
                .filter(state.eq(Running))
                .filter(cancel_requested.eq(false))
        )
        .set(cancel_requested.eq(true))
    )
    .execute(c)
    .await)?;
    Ok(changed == 1)
}

/// The PostgreSQL channel that tells robots in other processes a task was queued, or
/// that a host has room again (sent after the commit, by
/// `crate::events::EventBus::announce_queued`).
pub const PG_CHANNEL: &str = "snaptree_tasks";

/// The queue for `/metrics`: how many tasks wait, how long the oldest has waited, and
/// how many run on each host (by name).
pub async fn queue(conn: &mut Conn<'_>, now: NaiveDateTime) -> QueryResult<crate::metrics::Queue> {
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
    Ok(crate::metrics::Queue {
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
