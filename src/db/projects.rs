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
