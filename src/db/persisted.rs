//! Automatic persisted queries' documents, by their SHA-256 (hex), shared by every
//! process on the database.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::schema::persisted_queries::dsl::*;
use super::{Conn, now, run};

/// The document of hash `wanted`, if one was stored.
pub async fn document_of(conn: &mut Conn<'_>, wanted: &str) -> QueryResult<Option<String>> {
    run!(conn, |c| persisted_queries
        .find(wanted)
        .select(document)
        .first(c)
        .await
        .optional())
}

/// Stores `text` as the document of hash `key`; a hash stored already is kept as it is
/// (the same hash is the same document).
pub async fn insert(conn: &mut Conn<'_>, key: &str, text: &str) -> QueryResult<()> {
    run!(conn, |c| diesel::insert_into(persisted_queries)
        .values((hash.eq(key), document.eq(text), created_at.eq(now())))
        .on_conflict_do_nothing()
        .execute(c)
        .await)?;
    Ok(())
}

/// Deletes all but the newest `keep` documents; how many went.
pub async fn trim(conn: &mut Conn<'_>, keep: i64) -> QueryResult<usize> {
    // The newest `keep`-th row's time: older ones go (on `persisted_queries_created`).
    let edge: Option<chrono::NaiveDateTime> = run!(conn, |c| persisted_queries
        .select(created_at)
        .order(created_at.desc())
        .offset(keep)
        .first(c)
        .await
        .optional())?;
    let Some(edge) = edge else {
        return Ok(0);
    };
    run!(conn, |c| diesel::delete(
        persisted_queries.filter(created_at.le(edge))
    )
    .execute(c)
    .await)
}
