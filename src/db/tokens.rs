//! API tokens. Only the SHA-256 of a token's secret is stored.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{NewToken, Token};
use super::schema::tokens::dsl::*;
use super::{Conn, now, run};

pub async fn insert(conn: &mut Conn<'_>, new: NewToken<'_>) -> QueryResult<Token> {
    run!(conn, |c| diesel::insert_into(tokens)
        .values(&new)
        .returning(Token::as_returning())
        .get_result(c)
        .await)
}

/// The token whose secret hashes to `hash`, revoked or not.
pub async fn by_hash(conn: &mut Conn<'_>, hash: &str) -> QueryResult<Option<Token>> {
    run!(conn, |c| tokens
        .filter(secret_hash.eq(hash))
        .select(Token::as_select())
        .first(c)
        .await
        .optional())
}

/// Revokes token `wanted`; false when there is no such unrevoked token.
pub async fn revoke(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<bool> {
    let changed = run!(conn, |c| diesel::update(
        tokens.filter(id.eq(wanted)).filter(revoked_at.is_null())
    )
    .set(revoked_at.eq(now()))
    .execute(c)
    .await)?;
    Ok(changed == 1)
}

pub async fn exists(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<bool> {
    let found: Option<i64> = run!(conn, |c| tokens
        .find(wanted)
        .select(id)
        .first(c)
        .await
        .optional())?;
    Ok(found.is_some())
}

/// The tokens among `ids` that have ended at `at`: revoked, or expired.
pub async fn ended_among(
    conn: &mut Conn<'_>,
    ids: &[i64],
    at: NaiveDateTime,
) -> QueryResult<Vec<i64>> {
    run!(conn, |c| tokens
        .filter(id.eq_any(ids))
        .filter(revoked_at.is_not_null().or(expires_at.le(at)))
        .select(id)
        .load(c)
        .await)
}

/// Which of tokens `wanted` are live at `at` (see [`is_live`]), in one statement.
pub async fn live_of(
    conn: &mut Conn<'_>,
    wanted: &[i64],
    at: NaiveDateTime,
) -> QueryResult<std::collections::HashSet<i64>> {
    if let [one] = wanted {
        let live = is_live(conn, *one, at).await?;
        return Ok(live.then_some(*one).into_iter().collect());
    }
    let query = tokens
        .filter(id.eq_any(wanted))
        .filter(revoked_at.is_null())
        .filter(expires_at.is_null().or(expires_at.gt(at)))
        .select(id);
    let found: Vec<i64> = match conn {
        Conn::Pg(c) => query.for_share().load(&mut **c).await?,
        Conn::Sqlite(c) => query.load(&mut **c).await?,
    };
    Ok(found.into_iter().collect())
}

/// Whether token `wanted` is live at `at`: neither revoked nor expired. In a write
/// transaction on PostgreSQL the row stays share-locked until the transaction ends, so a
/// revocation either waits for the transaction or is seen by it; on SQLite the
/// transaction excludes every other writer anyway.
pub async fn is_live(conn: &mut Conn<'_>, wanted: i64, at: NaiveDateTime) -> QueryResult<bool> {
    let query = tokens
        .find(wanted)
        .filter(revoked_at.is_null())
        .filter(expires_at.is_null().or(expires_at.gt(at)))
        .select(id);
    let found: Option<i64> = match conn {
        Conn::Pg(c) => query.for_share().first(&mut **c).await.optional()?,
        Conn::Sqlite(c) => query.first(&mut **c).await.optional()?,
    };
    Ok(found.is_some())
}

/// The tokens of `ids` that exist, one statement for all.
pub async fn by_ids(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<Token>> {
    run!(conn, |c| tokens
        .filter(id.eq_any(ids))
        .select(Token::as_select())
        .load(c)
        .await)
}

pub async fn by_id(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<Option<Token>> {
    run!(conn, |c| tokens
        .find(wanted)
        .select(Token::as_select())
        .first(c)
        .await
        .optional())
}
