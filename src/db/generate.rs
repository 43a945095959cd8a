//! A simulated past, for benchmarks: fills an empty database with the VMs of a busy
//! cloud, a year (or any span) of their snapshots made and deleted by tasks, with each
//! task's events and each snapshot's history, and a present that is the same whatever
//! the past (each VM's snapshots made and deleted in the first half of the last day, and
//! its three open snapshots, made in the second). Rows are made by
//! the database itself (`INSERT ... SELECT` over a series of numbers), a few million a
//! minute, with the times they would have had: the server's clock needs no moving.
//!
//! Ids are given, not drawn, so that every row can name the rows it refers to, and
//! they grow with time, as real ones do.

use chrono::{DateTime, Duration, Utc};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use super::{Conn, DbResult, Error, run};

/// What to make.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// VMs, spread over [`PROJECTS`] projects on one simulated host.
    pub vms: i64,
    /// Snapshots each VM made and deleted in the past (two tasks each).
    pub past_snapshots_per_vm: i64,
    /// How far back the past goes; it ends a day before `now`.
    pub past: Duration,
    /// Snapshots each VM made and deleted in the first half of the last day: the present
    /// has tasks enough to fill a page, whatever the past.
    pub recent_snapshots_per_vm: i64,
    /// The present: the last day ends here.
    pub now: DateTime<Utc>,
}

/// Projects the VMs are spread over (`gen-0` ...).
pub const PROJECTS: i64 = 10;
/// Open snapshots each VM has now, in a chain, the last one active.
pub const OPEN_PER_VM: i64 = 3;
/// Events of each task: queued, running at 0, 20, 40, 60, 80 %, then done.
const EVENTS_PER_TASK: i64 = 7;

/// What was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Made {
    /// VMs made.
    pub vms: i64,
    /// Snapshot rows, open and closed.
    pub snapshots: i64,
    /// Tasks, all of them ended.
    pub tasks: i64,
    /// Task events.
    pub events: i64,
    /// Snapshot history entries.
    pub history: i64,
}

/// Fills the empty database behind `conn` as `spec` says.
pub async fn fill(conn: &mut Conn<'_>, spec: Spec) -> DbResult<Made> {
    let sql = Sql::new(conn, spec);
    let v = spec.vms;
    let day = spec.now - Duration::days(1);
    let past = Churn {
        start: day - spec.past,
        span: spec.past,
        vms: v,
        per_vm: spec.past_snapshots_per_vm,
        snapshots: 0,
        history: 0,
        actor: "policy gen",
    };
    let recent = Churn {
        start: day,
        span: Duration::hours(12),
        vms: v,
        per_vm: spec.recent_snapshots_per_vm,
        snapshots: past.snapshots + past.count(),
        history: past.history + 6 * past.count(),
        actor: "ops",
    };
    let open = recent.snapshots + recent.count();
    let present = v * OPEN_PER_VM;
    let tasks = 2 * open + present;
    let statements = [
        sql.projects(),
        sql.host(),
        sql.vms(),
        sql.churn_snapshots(&past),
        sql.churn_snapshots(&recent),
        sql.present_snapshots(open),
        sql.churn_tasks(&past),
        sql.churn_tasks(&recent),
        sql.present_tasks(open),
        sql.events(0, tasks, 0),
        sql.churn_history(&past),
        sql.churn_history(&recent),
        sql.present_history(open, recent.history + 6 * recent.count()),
    ];
    for statement in statements.iter().filter(|s| !s.is_empty()) {
        exec(conn, statement).await?;
    }
    if let Conn::Pg(c) = conn {
        sequences(c).await?;
        c.batch_execute("ANALYZE").await?;
    }
    Ok(Made {
        vms: v,
        snapshots: open + present,
        tasks,
        events: tasks * EVENTS_PER_TASK,
        history: 6 * open + 3 * present,
    })
}

/// Adds a day of churn after what is stored (by [`fill`] and earlier days): one snapshot
/// made and deleted on each of the first `vms` VMs, spread over the day from `start`,
/// with its two tasks, their events and its history, ids after the largest stored. A
/// simulated month is made a day at a time, the clock moved between them.
pub async fn day(conn: &mut Conn<'_>, vms: i64, start: DateTime<Utc>) -> DbResult<Made> {
    let snapshots = last_id(conn, "snapshots").await?;
    // A task's id is read off its snapshot's (`2s + 1`, `2s + 2`): they must be free.
    if last_id(conn, "tasks").await? > 2 * snapshots {
        return Err(Error::setup(
            "the tasks' ids have outrun the snapshots': only generated databases take a day",
        ));
    }
    let churn = Churn {
        start,
        span: Duration::days(1),
        vms,
        per_vm: 1,
        snapshots,
        history: last_id(conn, "snapshot_history").await?,
        actor: "policy gen",
    };
    let spec = Spec {
        vms,
        past_snapshots_per_vm: 0,
        past: Duration::zero(),
        recent_snapshots_per_vm: 0,
        now: start,
    };
    let sql = Sql::new(conn, spec);
    let tasks = 2 * churn.count();
    let events = last_id(conn, "task_events").await?;
    let statements = [
        sql.churn_snapshots(&churn),
        sql.churn_tasks(&churn),
        sql.events(2 * snapshots, tasks, events),
        sql.churn_history(&churn),
    ];
    for statement in statements.iter().filter(|s| !s.is_empty()) {
        exec(conn, statement).await?;
    }
    if let Conn::Pg(c) = conn {
        sequences(c).await?;
    }
    Ok(Made {
        vms: 0,
        snapshots: churn.count(),
        tasks,
        events: tasks * EVENTS_PER_TASK,
        history: 6 * churn.count(),
    })
}

/// The largest id stored in `table` (0 when empty).
async fn last_id(conn: &mut Conn<'_>, table: &str) -> DbResult<i64> {
    #[derive(diesel::QueryableByName)]
    struct Last {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let sql = format!("SELECT COALESCE(MAX(id), 0) AS id FROM {table}");
    let last: Last = run!(conn, |c| diesel::sql_query(&sql).get_result(c).await)?;
    Ok(last.id)
}

/// After PostgreSQL's identity columns were given their values: moves each sequence past
/// them.
async fn sequences(c: &mut diesel_async::AsyncPgConnection) -> DbResult<()> {
    for table in [
        "projects",
        "hosts",
        "vms",
        "snapshots",
        "tasks",
        "task_events",
        "snapshot_history",
    ] {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        );
        diesel::sql_query(sql).execute(c).await?;
    }
    Ok(())
}

async fn exec(conn: &mut Conn<'_>, sql: &str) -> DbResult<()> {
    match conn {
        Conn::Sqlite(c) => c.batch_execute(sql).await,
        Conn::Pg(c) => c.batch_execute(sql).await,
    }
    .map_err(Error::from)
}

/// Snapshots made and deleted over a span of time, two tasks each (ids `2s + 1` and
/// `2s + 2` for the `s`-th snapshot overall, so that a task's id is read off its
/// snapshot's), six history rows each.
struct Churn {
    /// When the first is made.
    start: DateTime<Utc>,
    /// Over how long they are spread.
    span: Duration,
    /// The VMs they are made on: the first `vms`.
    vms: i64,
    /// How many per VM.
    per_vm: i64,
    /// Snapshots made before these (their ids come after).
    snapshots: i64,
    /// History rows made before these.
    history: i64,
    /// Who asked for them.
    actor: &'static str,
}

impl Churn {
    fn count(&self) -> i64 {
        self.vms * self.per_vm
    }

    /// Seconds between two of them, over all its VMs.
    fn step(&self) -> f64 {
        self.span.num_seconds() as f64 / self.count().max(1) as f64
    }
}

/// The statements, in each backend's words.
struct Sql {
    /// What to make.
    spec: Spec,
    /// PostgreSQL's words rather than SQLite's (they differ in series and casts).
    pg: bool,
    /// When everything begins (projects, the host, the VMs).
    start: DateTime<Utc>,
}

impl Sql {
    fn new(conn: &Conn<'_>, spec: Spec) -> Self {
        Self {
            spec,
            pg: matches!(conn, Conn::Pg(_)),
            start: spec.now - Duration::days(1) - spec.past,
        }
    }

    /// `INSERT INTO table (columns) SELECT select FROM` the numbers 0 to `n` - 1 as `i`.
    fn insert(&self, table: &str, columns: &str, n: i64, select: &str) -> String {
        if n <= 0 {
            return String::new();
        }
        let last = n - 1;
        if self.pg {
            format!(
                "INSERT INTO {table} ({columns}) OVERRIDING SYSTEM VALUE SELECT {select} \
                 FROM generate_series(0, {last}) AS n(i)"
            )
        } else {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO {table} ({columns}) SELECT {select} FROM n"
            )
        }
    }

    /// The time `seconds` (an SQL expression) after `at`.
    fn time(&self, at: DateTime<Utc>, seconds: &str) -> String {
        let at = at.format("%Y-%m-%d %H:%M:%S");
        if self.pg {
            format!("(TIMESTAMP '{at}' + ({seconds}) * INTERVAL '1 second')")
        } else {
            format!("datetime('{at}', '+' || CAST(({seconds}) AS INTEGER) || ' seconds')")
        }
    }

    fn flag(&self, expr: &str) -> String {
        if self.pg {
            format!("({expr})")
        } else {
            format!("CASE WHEN {expr} THEN 1 ELSE 0 END")
        }
    }

    fn projects(&self) -> String {
        let at = self.time(self.start, "0");
        self.insert(
            "projects",
            "id, name, created_at",
            PROJECTS,
            &format!("i + 1, 'gen-' || i, {at}"),
        )
    }

    fn host(&self) -> String {
        let at = self.time(self.start, "0");
        self.insert(
            "hosts",
            "id, name, hypervisor, uri, created_at",
            1,
            &format!("1, 'gen-sim', 'SIMULATED', 'sim://', {at}"),
        )
    }

    fn vms(&self) -> String {
        let at = self.time(self.start, "0");
        self.insert(
            "vms",
            "id, host_id, project_id, name, identifier, state, created_at",
            self.spec.vms,
            &format!("i + 1, 1, (i % {PROJECTS}) + 1, 'vm-' || i, 'gen-' || i, 4, {at}"),
        )
    }

    /// `c`'s snapshot `i` (0-based) is VM `i % V`'s `i / V`-th; made at `start + i *
    /// step`, deleted a minute later.
    fn churn_snapshots(&self, c: &Churn) -> String {
        let v = c.vms;
        let step = c.step();
        let made = self.time(c.start, &format!("i * {step}"));
        let gone = self.time(c.start, &format!("i * {step} + 60"));
        let base = c.snapshots;
        self.insert(
            "snapshots",
            "id, vm_id, name, host_name, active, state, remove_subtree, created_at, updated_at",
            c.count(),
            &format!(
                "{base} + i + 1, (i % {v}) + 1, 'gone-' || ({base} + i), 'gone-' || ({base} + i), {}, 99, {}, {made}, {gone}",
                self.flag("1 = 0"),
                self.flag("1 = 0")
            ),
        )
    }

    /// Open snapshot `i` is VM `i % V`'s `i / V`-th, a child of its previous one, made
    /// in the last twelve hours (its id after the `base` snapshots before it); the last
    /// is active.
    fn present_snapshots(&self, base: i64) -> String {
        let v = self.spec.vms;
        let (at, step) = self.present();
        let made = self.time(at, &format!("i * {step}"));
        self.insert(
            "snapshots",
            "id, vm_id, parent_id, name, host_name, active, state, remove_subtree, created_at, updated_at",
            v * OPEN_PER_VM,
            &format!(
                "{base} + i + 1, (i % {v}) + 1, CASE WHEN i < {v} THEN NULL ELSE {base} + i + 1 - {v} END, \
                 'now-' || (i / {v}), 'now-' || (i / {v}), {}, 4, {}, {made}, {made}",
                self.flag(&format!("i >= {}", v * (OPEN_PER_VM - 1))),
                self.flag("1 = 0")
            ),
        )
    }

    /// When the open snapshots begin, and the seconds between two.
    fn present(&self) -> (DateTime<Utc>, f64) {
        let step = 43_200.0 / (self.spec.vms * OPEN_PER_VM).max(1) as f64;
        (self.spec.now - Duration::hours(12), step)
    }

    /// Two tasks per snapshot of `c`: its create, then its delete a minute later.
    fn churn_tasks(&self, c: &Churn) -> String {
        let v = c.vms;
        let step = c.step();
        let s = "(i / 2)";
        let began = self.time(c.start, &format!("{s} * {step} + (i % 2) * 60"));
        let ended = self.time(c.start, &format!("{s} * {step} + (i % 2) * 60 + 5"));
        let base = c.snapshots;
        self.insert(
            "tasks",
            "id, kind, state, vm_id, project_id, host_id, snapshot_id, requested_by, progress, \
             attempts, cancel_requested, created_at, started_at, finished_at, fence",
            2 * c.count(),
            &format!(
                "2 * {base} + i + 1, CASE WHEN i % 2 = 0 THEN 'BUILD' ELSE 'SCRUB' END, 'SUCCEEDED', \
                 ({s} % {v}) + 1, (({s} % {v}) % {PROJECTS}) + 1, 1, {base} + {s} + 1, '{}', 100, 1, {}, {began}, {began}, {ended}, 1",
                c.actor,
                self.flag("1 = 0")
            ),
        )
    }

    /// One create per open snapshot (task ids after the `2 * base` of the churns).
    fn present_tasks(&self, base: i64) -> String {
        let v = self.spec.vms;
        let (at, step) = self.present();
        let began = self.time(at, &format!("i * {step}"));
        let ended = self.time(at, &format!("i * {step} + 5"));
        self.insert(
            "tasks",
            "id, kind, state, vm_id, project_id, host_id, snapshot_id, requested_by, progress, \
             attempts, cancel_requested, created_at, started_at, finished_at, fence",
            v * OPEN_PER_VM,
            &format!(
                "2 * {base} + i + 1, 'BUILD', 'SUCCEEDED', (i % {v}) + 1, ((i % {v}) % {PROJECTS}) + 1, 1, {base} + i + 1, 'ops', 100, 1, {}, \
                 {began}, {began}, {ended}, 1",
                self.flag("1 = 0")
            ),
        )
    }

    /// [`EVENTS_PER_TASK`] events of each of the `tasks` tasks after the first `skip`, a
    /// second apart from its start, read off the task; their ids after `base`.
    fn events(&self, skip: i64, tasks: i64, base: i64) -> String {
        let e = EVENTS_PER_TASK;
        let n = tasks * e;
        if n == 0 {
            return String::new();
        }
        let last = n - 1;
        let at = if self.pg {
            format!("t.started_at + (n.i % {e}) * INTERVAL '1 second'")
        } else {
            format!("datetime(t.started_at, '+' || (n.i % {e}) || ' seconds')")
        };
        let columns = "id, task_id, vm_id, project_id, state, progress, phase, at";
        let select = format!(
            "{base} + n.i + 1, t.id, t.vm_id, v.project_id, \
             CASE n.i % {e} WHEN 0 THEN 'QUEUED' WHEN {} THEN 'SUCCEEDED' ELSE 'RUNNING' END, \
             CASE n.i % {e} WHEN 0 THEN NULL WHEN {} THEN 100 ELSE ((n.i % {e}) - 1) * 20 END, \
             CASE n.i % {e} WHEN 0 THEN NULL WHEN {} THEN NULL ELSE 'working' END, {at} \
             FROM tasks t JOIN vms v ON v.id = t.vm_id",
            e - 1,
            e - 1,
            e - 1
        );
        if self.pg {
            format!(
                "INSERT INTO task_events ({columns}) OVERRIDING SYSTEM VALUE SELECT {select} \
                 JOIN generate_series(0, {last}) AS n(i) ON t.id = {skip} + n.i / {e} + 1"
            )
        } else {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO task_events ({columns}) SELECT {select} \
                 JOIN n ON t.id = {skip} + n.i / {e} + 1"
            )
        }
    }

    /// Six rows per snapshot of `c`: requested, building, running; then scrub,
    /// scrubbing, closed a minute later.
    fn churn_history(&self, c: &Churn) -> String {
        let v = c.vms;
        let step = c.step();
        let s = "(i / 6)";
        let at = self.time(
            c.start,
            &format!("{s} * {step} + ((i % 6) / 3) * 60 + (i % 3)"),
        );
        let (base, snapshots) = (c.history, c.snapshots);
        self.insert(
            "snapshot_history",
            "id, snapshot_id, vm_id, project_id, state, actor, at",
            6 * c.count(),
            &format!(
                "{base} + i + 1, {snapshots} + {s} + 1, ({s} % {v}) + 1, (({s} % {v}) % {PROJECTS}) + 1, \
                 CASE i % 6 WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 4 WHEN 3 THEN 8 WHEN 4 THEN 17 ELSE 99 END, \
                 CASE WHEN i % 6 < 3 THEN '{}' ELSE 'robot' END, {at}",
                c.actor
            ),
        )
    }

    /// Three rows per open snapshot (ids after `snapshots` snapshots and `base` rows):
    /// requested, building, running.
    fn present_history(&self, snapshots: i64, base: i64) -> String {
        let v = self.spec.vms;
        let (start, step) = self.present();
        let s = "(i / 3)";
        let at = self.time(start, &format!("{s} * {step} + (i % 3)"));
        self.insert(
            "snapshot_history",
            "id, snapshot_id, vm_id, project_id, state, actor, at",
            3 * v * OPEN_PER_VM,
            &format!(
                "{base} + i + 1, {snapshots} + {s} + 1, ({s} % {v}) + 1, (({s} % {v}) % {PROJECTS}) + 1, \
                 CASE i % 3 WHEN 0 THEN 1 WHEN 1 THEN 2 ELSE 4 END, 'ops', {at}"
            ),
        )
    }
}
