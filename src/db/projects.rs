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

/// Sets project `wanted`'s snapshot quota (`None`: no quota); the row, if any.
pub async fn set_max_snapshots(
    conn: &mut Conn<'_>,
    wanted: i64,
    quota: Option<i32>,
) -> QueryResult<Option<Project>> {
    run!(conn, |c| diesel::update(projects.find(wanted))
        .set(max_snapshots.eq(quota))
        .returning(Project::as_returning())
        .get_result(c)
        .await
        .optional())
}

/// The quotas of those of `wanted` that have one, their rows locked on PostgreSQL (as
/// an update that changes no key), so
/// that two creates in one project on different VMs (whose VM locks do not meet) are
/// counted one after the other. SQLite has one writer: its transactions are already so.
pub async fn lock_quotas(
    conn: &mut Conn<'_>,
    wanted: &[i64],
) -> QueryResult<std::collections::HashMap<i64, i32>> {
    let rows: Vec<(i64, Option<i32>)> = match conn {
        Conn::Sqlite(c) => {
            projects
                .filter(id.eq_any(wanted))
                .filter(max_snapshots.is_not_null())
                .select((id, max_snapshots))
                .load(&mut **c)
                .await?
        }
        Conn::Pg(c) => {
            projects
                .filter(id.eq_any(wanted))
                .filter(max_snapshots.is_not_null())
                .select((id, max_snapshots))
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
        .filter_map(|(project, quota)| quota.map(|q| (project, q)))
        .collect())
}
