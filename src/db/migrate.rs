//! Embedded migrations, run at start-up (and by `snaptree migrate`).

use diesel::{Connection, RunQueryDsl, SqliteConnection};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{DbResult, Error};
use crate::config::DatabaseUrl;

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Any key will do, as long as nothing else on the server uses it.
const PG_MIGRATION_LOCK: i64 = 0x736e_6170_7472_6565; // "snaptree"

/// Brings the database's schema up to date. Returns how many migrations ran.
pub async fn migrate(url: &DatabaseUrl) -> DbResult<usize> {
    let url = url.clone();
    // The harness is synchronous; it runs on a blocking thread.
    tokio::task::spawn_blocking(move || match url {
        DatabaseUrl::Sqlite(path) => {
            let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                .map_err(|e| Error::setup(format!("cannot open {}: {e}", path.display())))?;
            diesel::sql_query("PRAGMA busy_timeout = 10000").execute(&mut conn)?;
            run(&mut conn, SQLITE)
        }
        DatabaseUrl::Postgres(url) => {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
                .map_err(|e| Error::setup(format!("cannot connect to PostgreSQL: {e}")))?;
            // Several processes may start at once; one migrates, the others wait.
            diesel::sql_query(format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                .execute(&mut conn)?;
            let result = run(&mut conn, POSTGRES);
            diesel::sql_query(format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"))
                .execute(&mut conn)?;
            result
        }
    })
    .await
    .map_err(Error::setup)?
}

fn run<C: MigrationHarness<B>, B: diesel::backend::Backend>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
) -> DbResult<usize> {
    conn.run_pending_migrations(migrations)
        .map(|done| done.len())
        .map_err(|e| Error::setup(format!("migration failed: {e}")))
}
