//! Storage: connection pools for SQLite and PostgreSQL, the schema, and every query.
//! Nothing above this module writes SQL.
//!
//! Both backends are first-class. A query is written once and expanded for either
//! connection by [`run!`]; the few places where the backends differ (claiming tasks,
//! row locks) match on [`Conn`] themselves.
//!
//! On SQLite one writer connection serialises all writes (SQLite allows one writer
//! anyway) and every write transaction starts `IMMEDIATE`, so no transaction ever has
//! to upgrade a read lock and fail with `SQLITE_BUSY`; readers use their own pool (WAL).

pub mod events;
pub mod generate;
pub mod history;
pub mod hosts;
pub mod listing;
mod migrate;
pub mod models;
pub mod pages;
pub mod persisted;
pub mod policies;
mod pool;
pub mod projects;
pub mod retention;
pub mod schema;
pub mod snapshots;
mod stamp;
pub mod tasks;
pub mod tokens;
pub mod vms;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::SqliteConnection;
use diesel::connection::{
    AnsiTransactionManager as SyncAnsi, Instrumentation, InstrumentationEvent,
    TransactionManager as SyncTm,
};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use futures_util::FutureExt;

use crate::config::DatabaseUrl;

pub use migrate::migrate;
pub use pool::{Db, Listener, Pooled, Tx};

/// An async SQLite connection: diesel's sync one, its calls run where they are made.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// Runs SQLite calls on the calling thread. A statement on a local file takes
/// microseconds, far less than the two thread switches of `spawn_blocking`, which cost
/// about 80 µs per statement on a busy 2-core machine (a third of a quick snapshot's
/// overhead). The one call that can wait long, `BEGIN IMMEDIATE` behind another process's
/// write, goes through `block_in_place` in [`Db::begin`].
pub struct Inline;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures_util::future::BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync>>>
    where
        R: Send + 'static,
    {
        futures_util::future::ready(Ok(task())).boxed()
    }

    fn get_runtime() -> Self {
        Inline
    }
}
/// What getting a pooled connection can fail with.
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

/// What the database layer fails with. None of it is a client's doing: the service
/// answers it as an internal error and keeps the cause for its log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A statement failed.
    #[error("database: {0}")]
    Query(#[from] DieselError),
    /// No connection could be had from a pool.
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    /// The database could not be opened, reached or migrated.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    fn setup(what: impl std::fmt::Display) -> Self {
        Self::Setup(what.to_string())
    }
}

/// The result of the database layer's own calls.
pub type DbResult<T> = Result<T, Error>;

/// A borrowed connection to either backend.
pub enum Conn<'c> {
    /// The embedded database's (diesel's sync connection, run on a blocking thread).
    Sqlite(&'c mut SqliteConn),
    /// PostgreSQL's, async and pipelining.
    Pg(&'c mut AsyncPgConnection),
}

/// Expands one diesel query for either backend: `run!(conn, |c| query.load(c).await)`.
macro_rules! run {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite(inner) => {
                let $c = &mut **inner;
                $body
            }
            $crate::db::Conn::Pg(inner) => {
                let $c = &mut **inner;
                $body
            }
        }
    };
}
pub(crate) use run;

/// A statement kept prepared though diesel would not keep it: diesel never caches an
/// UPDATE (a changeset of optional fields can change its text from run to run). The
/// caches snaptree's connections use here key statements by their text (diesel-async's
/// SQLite connection always does, and diesel's PostgreSQL one for a statement without a
/// static id, as this), so caching is right whatever the text. Meant for statements of
/// one shape that run often; parsing them again each time was a large part of every
/// robot step on SQLite.
#[derive(Clone, Copy, Debug)]
pub struct Cached<Q>(pub Q);

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Cached<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Cached<Q> {
    type QueryId = ();
    // No static id: the cache keys the statement by its text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

// For statements run through diesel's own (sync) API on a SQLite connection.
impl<Q, C> diesel::RunQueryDsl<C> for Cached<Q> {}

/// A constant written into a statement's text rather than bound, as a unit type:
/// `sql_constant!(Queued, Text, "'QUEUED'")`. A condition that decides whether a
/// partial index applies must be a literal: SQLite cannot use the index for a bound
/// parameter and, worse, recompiles the statement every time that parameter is bound.
/// Unlike `diesel::dsl::sql`, whose text diesel cannot vouch for, such a constant keeps
/// the statement in the prepared-statement cache, so it is not parsed on every run.
macro_rules! sql_constant {
    ($(#[$doc:meta])* $name:ident, $sql_type:ty, $text:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, diesel::query_builder::QueryId, diesel::expression::ValidGrouping)]
        pub struct $name;

        impl diesel::expression::Expression for $name {
            type SqlType = $sql_type;
        }

        impl<QS> diesel::expression::AppearsOnTable<QS> for $name {}

        impl<QS> diesel::expression::SelectableExpression<QS> for $name {}

        impl<DB: diesel::backend::Backend> diesel::query_builder::QueryFragment<DB> for $name {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> diesel::QueryResult<()> {
                out.push_sql($text);
                Ok(())
            }
        }
    };
}
pub(crate) use sql_constant;

/// True when `err` is a unique-constraint violation (a lost race the index caught).
pub fn is_unique_violation(err: &DieselError) -> bool {
    matches!(
        err,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// The current time as stored: UTC without an offset.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}
