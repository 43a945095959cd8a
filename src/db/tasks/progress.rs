//! What a robot records while it holds a task: its progress, its end, and a cancel asked
//! of it.

use super::*;

diesel::define_sql_function! {
    /// SQL's `COALESCE` of two nullable integers: the first that is not NULL.
    fn coalesce(x: diesel::sql_types::Nullable<diesel::sql_types::Integer>, y: diesel::sql_types::Nullable<diesel::sql_types::Integer>) -> diesel::sql_types::Nullable<diesel::sql_types::Integer>;
}

/// A progress report on a task a robot holds.
pub struct Report<'a> {
    /// The task reported on.
    pub task: i64,
    /// The fence of the claim it reports under.
    pub claim: i64,
    /// Percent done, as the driver last said (`None`: it cannot tell); replaces the stored value.
    pub progress: Option<i32>,
    /// What the robot is doing now; replaces the stored phase.
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
    /// The task to end.
    pub task: i64,
    /// The fence of the claim it ends under.
    pub claim: i64,
    /// The state it ends in: SUCCEEDED, FAILED or CANCELLED.
    pub state: TaskState,
    /// Why, unless it succeeded.
    pub why: Option<Why<'a>>,
    /// The progress it is left with.
    pub progress: Option<i32>,
}

/// Ends the tasks of `endings` at `at`, each only while its robot still holds it;
/// returns the ones ended. On PostgreSQL one statement for all.
/// One function: the two backends' statements side by side, so that they stay in step; most
/// lines are PostgreSQL's binds, one array per column.
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
                     phase = NULL, lease_owner = NULL, lease_expires_at = NULL, \
                     progress = COALESCE(v.progress, tasks.progress), \
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
    /// A task the statement changed (`RETURNING tasks.id`).
    #[diesel(sql_type = diesel::sql_types::BigInt, column_name = id)]
    task: i64,
}

/// Ends a task, leaving `final_progress` (`None`: the progress last reported stays, as
/// a failed or cancelled task got). With `claim` (a claim's fence), only while that
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
            diesel::update(held_under(wanted, claim))
                .set((values, progress.eq(coalesce(final_progress, progress))))
        )
        .execute(c)
        .await)?,
        None => run!(conn, |c| Cached(
            diesel::update(tasks.find(wanted).filter(state.eq(Queued)))
                .set((values, progress.eq(coalesce(final_progress, progress))))
        )
        .execute(c)
        .await)?,
    };
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
