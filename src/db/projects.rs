//! Projects: the unit of isolation. A token, and every VM, belongs to one.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::Project;
use super::schema::projects::dsl::*;
use super::{Conn, now, run};

pub async fn insert(conn: &mut Conn<'_>, new_name: &str) -> QueryResult<Project> {
    run!(conn, |c| diesel::insert_into(projects)
        .values((name.eq(new_name), created_at.eq(now())))
        .returning(Project::as_returning())
        .get_result(c)
        .await)
}

pub async fn by_name(conn: &mut Conn<'_>, wanted: &str) -> QueryResult<Option<Project>> {
    run!(conn, |c| projects
        .filter(name.eq(wanted))
        .select(Project::as_select())
        .first(c)
        .await
        .optional())
}

pub async fn by_id(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<Option<Project>> {
    run!(conn, |c| projects
        .find(wanted)
        .select(Project::as_select())
        .first(c)
        .await
        .optional())
}

pub async fn by_ids(conn: &mut Conn<'_>, wanted: &[i64]) -> QueryResult<Vec<Project>> {
    run!(conn, |c| projects
        .filter(id.eq_any(wanted))
        .select(Project::as_select())
        .load(c)
        .await)
}

/// Every project, or only `only` when given; by id.
pub async fn list(conn: &mut Conn<'_>, only: Option<i64>) -> QueryResult<Vec<Project>> {
    // Boxed queries belong to one backend, so each arm of `run!` builds its own.
    run!(conn, |c| {
        let mut query = projects.select(Project::as_select()).order(id).into_boxed();
        if let Some(only) = only {
            query = query.filter(id.eq(only));
        }
        query.load(c).await
    })
}

/// Sets project `wanted`'s [`Limits`]; the row as it is now.
pub async fn set_limits(conn: &mut Conn<'_>, wanted: i64, new: Limits) -> QueryResult<Project> {
    run!(conn, |c| diesel::update(projects.find(wanted))
        .set((
            max_snapshots.eq(new.max_snapshots),
            max_lifetime_hours.eq(new.max_lifetime_hours),
        ))
        .returning(Project::as_returning())
        .get_result(c)
        .await)
}

/// What limits the new snapshots of a project.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most non-closed snapshots across its VMs; `None`: no quota.
    pub max_snapshots: Option<i32>,
    /// The longest lifetime of a new snapshot, in hours; `None`: none.
    pub max_lifetime_hours: Option<i32>,
}

/// The limits of those of `wanted` that have any, their rows locked on PostgreSQL (as
/// an update that changes no key), so that two creates in one project on different VMs
/// (whose VM locks do not meet) are counted one after the other. SQLite has one writer:
/// its transactions are already so.
pub async fn lock_limits(
    conn: &mut Conn<'_>,
    wanted: &[i64],
) -> QueryResult<std::collections::HashMap<i64, Limits>> {
    let limited = max_snapshots
        .is_not_null()
        .or(max_lifetime_hours.is_not_null());
    let rows: Vec<(i64, Option<i32>, Option<i32>)> = match conn {
        Conn::Sqlite(c) => {
            projects
                .filter(id.eq_any(wanted))
                .filter(limited)
                .select((id, max_snapshots, max_lifetime_hours))
                .load(&mut **c)
                .await?
        }
        Conn::Pg(c) => {
            projects
                .filter(id.eq_any(wanted))
                .filter(limited)
                .select((id, max_snapshots, max_lifetime_hours))
                .order(id)
                // Not FOR UPDATE: that would also block every insert that refers to the
                // project (history and event rows, through their foreign keys), the
                // robot's among them, while this transaction waits on the robot.
                .for_no_key_update()
                .load(&mut **c)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(project, quota, hours)| {
            let limits = Limits {
                max_snapshots: quota,
                max_lifetime_hours: hours,
            };
            (project, limits)
        })
        .collect())
}
