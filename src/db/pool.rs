//! The database's pools: one writer and a pool of readers on SQLite, one pool on
//! PostgreSQL; transactions, listeners for notifications, and a count of statements.

use super::*;

/// The database: pools for one backend, and a count of the statements they ran.
#[derive(Clone)]
pub struct Db {
    /// Shared by every clone: one set of pools per process.
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database is (for connections of their own, like a listener).
    url: DatabaseUrl,
    /// The connections, of the backend `url` names.
    pools: Pools,
    /// Every statement any connection of this `Db` started (diesel instrumentation).
    statements: Arc<AtomicU64>,
}

enum Pools {
    /// The embedded database: one writer, several readers.
    Sqlite {
        /// One connection: SQLite has one writer.
        writer: Pool<SqliteConn>,
        /// Read-only connections; WAL lets them read while the writer writes.
        readers: Pool<SqliteConn>,
    },
    /// PostgreSQL: one pool for all.
    Pg(Pool<AsyncPgConnection>),
}

impl Db {
    /// Runs pending migrations, then opens the pools.
    pub async fn connect(url: &DatabaseUrl) -> DbResult<Self> {
        if let DatabaseUrl::Sqlite(_) = url {
            // Before any connection opens (the migrations' first).
            prepare_sqlite();
        }
        migrate(url).await?;
        let statements = Arc::new(AtomicU64::new(0));
        let pools = match url {
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy().into_owned();
                Pools::Sqlite {
                    writer: sqlite_pool(&path, 1, false, &statements)?,
                    readers: sqlite_pool(&path, 4, true, &statements)?,
                }
            }
            DatabaseUrl::Postgres(url) => Pools::Pg(pg_pool(url, &statements)?),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.clone(),
                pools,
                statements,
            }),
        })
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self.inner.pools {
            Pools::Sqlite { .. } => "sqlite",
            Pools::Pg(_) => "postgres",
        }
    }

    /// How many write transactions are worth running at once: one on SQLite, which has
    /// one writer; on PostgreSQL several, so that one's round trips overlap another's.
    pub fn writers(&self) -> usize {
        match self.inner.pools {
            Pools::Sqlite { .. } => 1,
            Pools::Pg(_) => 4,
        }
    }

    /// How many SQL statements this database's connections have started so far.
    pub fn statement_count(&self) -> u64 {
        self.inner.statements.load(Ordering::Relaxed)
    }

    /// A connection for reading, outside any transaction.
    pub async fn reader(&self) -> DbResult<Pooled> {
        Ok(match &self.inner.pools {
            Pools::Sqlite { readers, .. } => Pooled::Sqlite(readers.get().await?),
            Pools::Pg(pool) => Pooled::Pg(Box::new(pool.get().await?)),
        })
    }

    /// Starts a write transaction; end it with [`Tx::finish`].
    pub async fn begin(&self) -> DbResult<Tx> {
        let mut conn = match &self.inner.pools {
            Pools::Sqlite { writer, .. } => Pooled::Sqlite(writer.get().await?),
            Pools::Pg(pool) => Pooled::Pg(Box::new(pool.get().await?)),
        };
        match &mut conn {
            Pooled::Sqlite(c) => {
                // May wait (busy_timeout) for another process's write: let the runtime
                // move its other work off this thread meanwhile.
                let mut begin = || {
                    c.spawn_blocking(|c| SyncAnsi::begin_transaction_sql(c, "BEGIN IMMEDIATE"))
                        .now_or_never()
                        .expect("inline calls are ready at once")
                };
                match tokio::runtime::Handle::current().runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::CurrentThread => begin()?,
                    _ => tokio::task::block_in_place(begin)?,
                }
            }
            Pooled::Pg(c) => AnsiTransactionManager::begin_transaction(&mut ***c).await?,
        }
        Ok(Tx { conn })
    }
}

/// Notifications from other processes, on PostgreSQL (`LISTEN`).
pub struct Listener {
    /// A connection of its own, outside the pool, that has run `LISTEN` on each channel.
    conn: AsyncPgConnection,
}

impl Listener {
    /// The next notification's channel; `None` when the connection is gone.
    pub async fn next(&mut self) -> Option<String> {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(self.conn.notifications_stream());
        match stream.next().await {
            Some(Ok(notification)) => Some(notification.channel),
            _ => None,
        }
    }
}

impl Db {
    /// Listens on `channels` with a connection of its own; `None` on SQLite, where every
    /// writer shares this process.
    pub async fn listen(&self, channels: &[&str]) -> DbResult<Option<Listener>> {
        let DatabaseUrl::Postgres(url) = &self.inner.url else {
            return Ok(None);
        };
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .map_err(|e| Error::setup(format!("cannot connect to PostgreSQL: {e}")))?;
        for channel in channels {
            conn.batch_execute(&format!("LISTEN {channel}")).await?;
        }
        Ok(Some(Listener { conn }))
    }
}

impl Db {
    /// Sends a notification on each of `channels` at once, outside any transaction
    /// (PostgreSQL; nothing on SQLite).
    pub async fn notify(&self, channels: &[&str]) -> DbResult<()> {
        let Pools::Pg(pool) = &self.inner.pools else {
            return Ok(());
        };
        let calls: Vec<String> = channels
            .iter()
            .map(|c| format!("pg_notify('{c}', '')"))
            .collect();
        let mut conn = pool.get().await?;
        conn.batch_execute(&format!("SELECT {}", calls.join(", ")))
            .await?;
        Ok(())
    }
}

/// A pooled connection to either backend.
pub enum Pooled {
    /// From SQLite's writer or readers.
    Sqlite(Object<SqliteConn>),
    /// Boxed: a PostgreSQL connection is several times the size of a SQLite one.
    Pg(Box<Object<AsyncPgConnection>>),
}

impl Pooled {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Pg(c) => Conn::Pg(c),
        }
    }
}

/// An open write transaction. Dropped without [`Tx::finish`] (a cancelled request), its
/// connection still counts as inside a transaction, so the pool discards it, and the
/// database rolls the transaction back.
pub struct Tx {
    /// The connection the transaction is open on: SQLite's one writer, or one from the pool.
    conn: Pooled,
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        self.conn.conn()
    }

    /// Commits when `result` is `Ok`, rolls back otherwise; returns `result`, or the
    /// commit's failure.
    pub async fn finish<T, E: From<Error>>(mut self, result: Result<T, E>) -> Result<T, E> {
        let end = match (&mut self.conn, result.is_ok()) {
            (Pooled::Sqlite(c), true) => {
                c.spawn_blocking(<SyncAnsi as SyncTm<SqliteConnection>>::commit_transaction)
                    .await
            }
            (Pooled::Sqlite(c), false) => {
                c.spawn_blocking(<SyncAnsi as SyncTm<SqliteConnection>>::rollback_transaction)
                    .await
            }
            (Pooled::Pg(c), true) => AnsiTransactionManager::commit_transaction(&mut ***c).await,
            (Pooled::Pg(c), false) => AnsiTransactionManager::rollback_transaction(&mut ***c).await,
        };
        match (end, result) {
            (Ok(()), result) => result,
            // A failed commit loses the work; a failed rollback only matters if the work
            // had succeeded (the connection is discarded either way).
            (Err(e), Ok(_)) => Err(Error::Query(e).into()),
            (Err(_), Err(e)) => Err(e),
        }
    }
}

/// Counts every statement a connection starts.
fn counting(statements: &Arc<AtomicU64>) -> impl Instrumentation {
    let statements = Arc::clone(statements);
    move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { .. } = event {
            statements.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sets SQLite up for this process, once, before its first connection opens:
///
/// - **No memory statistics.** The bundled SQLite counts every allocation under one
///   global mutex, for statistics snaptree never reads; readers on different threads
///   waited for each other there (with the futex wake-ups that caused, a large share of
///   the server's time serving trees). The connections stay in SQLite's "serialized"
///   mode: multi-thread mode would drop their own (uncontended) mutexes too, and a
///   run of the suite crashed (SIGSEGV) with it once, cause not found.
/// - **The query planner stability guarantee** for every connection. Without it, SQLite
///   plans some statements by the values bound to them and marks those statements to be
///   compiled again whenever a value is bound: every `LIMIT ?` (diesel binds the limit of
///   `first()`), and any parameter compared with a partial index's condition. That
///   recompiled most of snaptree's statements on every run, a fifth of the server's
///   time. Plans no longer depend on bound values; the conditions that must match a
///   partial index are literals (`sql_constant!`).
fn prepare_sqlite() {
    use libsqlite3_sys as ffi;
    use std::ffi::{c_char, c_int};

    unsafe extern "C" fn on_open(
        db: *mut ffi::sqlite3,
        _error: *mut *mut c_char,
        _api: *const ffi::sqlite3_api_routines,
    ) -> c_int {
        // SAFETY: SQLite passes the connection it is opening; the option takes an int
        // (on) and a pointer for the new setting, which may be null.
        unsafe {
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                1 as c_int,
                std::ptr::null_mut::<c_int>(),
            )
        }
    }

    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called before SQLite is initialised (it refuses
        // with SQLITE_MISUSE otherwise, and changes nothing), from one thread (`ONCE`);
        // MEMSTATUS takes one int.
        let configured = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
        if configured != ffi::SQLITE_OK {
            tracing::warn!(
                code = configured,
                "SQLite was initialised before snaptree could set it up"
            );
        }
        // SAFETY: `on_open` has the signature of an extension's entry point and stays
        // valid for the life of the process.
        let registered = unsafe { ffi::sqlite3_auto_extension(Some(on_open)) };
        if registered != ffi::SQLITE_OK {
            tracing::warn!(code = registered, "could not make SQLite's plans stable");
        }
    });
}

fn sqlite_pool(
    path: &str,
    size: usize,
    read_only: bool,
    statements: &Arc<AtomicU64>,
) -> DbResult<Pool<SqliteConn>> {
    let statements = Arc::clone(statements);
    let mut config = ManagerConfig::<SqliteConn>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let statements = Arc::clone(&statements);
        let url = url.to_owned();
        async move {
            let mut conn = SqliteConn::establish(&url).await?;
            // busy_timeout first: switching to WAL may itself wait for a lock.
            let pragmas = if read_only {
                "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA query_only = ON;"
            } else {
                "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
            };
            conn.batch_execute(pragmas)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(counting(&statements));
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(Error::setup)
}

/// Most PostgreSQL connections one process holds (besides its one LISTEN connection).
/// Servers and robots share one database, and PostgreSQL's default `max_connections`
/// (100, 3 of them kept for superusers) must hold them all: 10 each fits eight processes
/// with room to spare; 16 each made a fleet of five refuse connections under load ("too
/// many clients already"). Ten are more than two cores keep busy.
const PG_POOL: usize = 10;

/// How long PostgreSQL lets a transaction of snaptree's sit idle before it ends it.
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = '5s'";

fn pg_pool(url: &str, statements: &Arc<AtomicU64>) -> DbResult<Pool<AsyncPgConnection>> {
    let statements = Arc::clone(statements);
    // No test query per checkout: a closed or mid-transaction connection is discarded
    // anyway (diesel-async's `is_broken`), and the round trip would cost every request.
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let statements = Arc::clone(&statements);
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            // A transaction of this process's is milliseconds between its statements. One
            // left open longer was cut off from its process (a network partition, a
            // frozen process): PostgreSQL ends it, and the locks it holds (a task's row,
            // which every robot's claim waits on) go with it.
            conn.batch_execute(IDLE_IN_TRANSACTION)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(counting(&statements));
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(PG_POOL)
        .build()
        .map_err(Error::setup)
}
