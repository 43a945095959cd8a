//! API tokens. Only the SHA-256 of a token's secret is stored.

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
