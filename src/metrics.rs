//! Prometheus metrics of this process, in one registry (prometheus-client), served at
//! `/metrics` in the Prometheus text format. Labels are bounded: task kinds and states,
//! error codes, outcomes, and host and project names (which only an ADMIN sets); never a
//! token, a VM or a snapshot name.
//!
//! Counters and histograms are kept as things happen; the queue's depth and age, the
//! running tasks and the hosts' health are read from the database at each scrape, and
//! each project's snapshots at most once a minute, so that every process sees the whole
//! fleet, whichever robot holds the tasks. `src/monitoring` holds the alerts and the
//! dashboard built on them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::retention::Growth;
use crate::db::snapshots::ProjectSnapshots;
use crate::db::tasks::Queue;
use crate::domain::{TaskKind, TaskState};
use crate::error::AppError;

/// A task's kind and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ended {
    /// The task's kind (`TaskKind::as_str`: `BUILD`, `UPDATE`, `SCRUB`).
    pub kind: &'static str,
    /// The task's final state (`TaskState::as_str`: `SUCCEEDED`, `FAILED` or `CANCELLED`).
    pub state: &'static str,
}

/// A host and a kind of work on it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OnHost {
    /// The host's name (set by an ADMIN, so the label's values stay few).
    pub host: String,
    /// The kind of the task the work was for (`TaskKind::as_str`).
    pub kind: &'static str,
}

/// Whether a failed host call is worth retrying.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorClass {
    /// The host may answer later (unreachable, busy, timed out): retried.
    Transient,
    /// The host refused for good: the task fails.
    Permanent,
}

impl ErrorClass {
    fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

/// A failed host call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostError {
    /// The host's name.
    pub host: String,
    /// The kind of the task the call was for (`TaskKind::as_str`).
    pub kind: &'static str,
    /// `transient` or `permanent` (`ErrorClass`); a call cut off by its time limit is transient.
    pub class: &'static str,
}

/// A GraphQL operation's outcome: `ok`, `error` (with its code) or `refused` (not run).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// `ok`, `error` or `refused`.
    pub outcome: &'static str,
    /// The (first) error's code: one of `AppError::CODES`, else `OTHER`; empty when `ok`.
    pub code: &'static str,
}

/// The error codes of the API (`extensions.code`), as labels: anything else is OTHER, so
/// that no caller can make a label of its own.
pub fn known_code(code: &str) -> &'static str {
    AppError::CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("OTHER")
}

/// A kind of row retention retires.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// `events`, `tasks`, `policy_runs`, `snapshots` or `snapshot_history`.
    pub kind: &'static str,
}

/// A table of the database.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Table {
    /// Its name.
    pub table: &'static str,
}

/// One host's running tasks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Host {
    /// The host's name.
    pub host: String,
}

/// One project's snapshots.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Project {
    /// The project's name.
    pub project: String,
}

/// What a scrape reads from the database and the drivers.
pub struct Reading<'a> {
    /// The queue: its depth, its oldest task's wait, the running tasks by host.
    pub queue: &'a Queue,
    /// Each retired table's rows and oldest row.
    pub growth: &'a [Growth],
    /// Each project's open snapshots, when read this time (at most once a minute).
    pub snapshots: Option<&'a [ProjectSnapshots]>,
    /// Each host's name and whether it answers (hosts never called are left out).
    pub hosts: &'a [(String, bool)],
    /// The connections this process has opened to each host so far.
    pub connections: &'a [(String, u64)],
    /// The time of the reading (the service's clock), which ages rows.
    pub now: chrono::NaiveDateTime,
}

/// When the projects' snapshots were last read (`None`: never), and each project's
/// oldest snapshot's time then.
type SnapshotsRead = (
    Option<std::time::Instant>,
    Vec<(String, chrono::NaiveDateTime)>,
);

/// A WebSocket or a subscription counted as open until dropped.
pub struct SocketOpen(Gauge);

impl Drop for SocketOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

type Seconds = Family<OnHost, Histogram, fn() -> Histogram>;

/// Every metric of the process.
pub struct Metrics {
    /// Holds every metric below (prefix `snaptree`); `render` encodes it.
    registry: Registry,
    /// `tasks_ended`: tasks ended here, by kind and final state.
    tasks_ended: Family<Ended, Counter>,
    /// `task_duration_seconds`: from a task's start to its end, by host and kind.
    task_seconds: Seconds,
    /// `host_call_duration_seconds`: one attempt of a host call, by host and kind.
    host_call_seconds: Seconds,
    /// `host_call_errors`: failed host calls, by host, kind and class.
    host_call_errors: Family<HostError, Counter>,
    /// `graphql_operations`: GraphQL operations over HTTP, by outcome and error code.
    operations: Family<Operation, Counter>,
    /// `websockets_open`: subscription WebSockets open in this process (`socket_open`).
    sockets: Gauge,
    /// `subscriptions_open`: subscriptions running in this process (`subscription_open`).
    subscriptions: Gauge,
    /// `event_pump_lag_seconds`: from an event's write to its delivery here (`pumped`).
    pump_lag: Histogram,
    /// `tasks_queued`: queued tasks in the whole database, set from the database at a scrape.
    queued: Gauge,
    /// `oldest_queued_task_age_seconds`: the oldest queued task's wait, set at a scrape.
    oldest_queued: Gauge<f64, AtomicU64>,
    /// `tasks_running`: running tasks per host name, cleared and set again at each scrape.
    running: Family<Host, Gauge>,
    /// `host_connections_opened`: connections opened to each host, brought up to the
    /// drivers' own counts at a scrape.
    connections: Family<Host, Counter>,
    /// `retired_rows`: rows this process's retention retired, by kind.
    retired: Family<Kind, Counter>,
    /// `table_rows`: each table's rows (the span of its ids), set at a scrape.
    table_rows: Family<Table, Gauge>,
    /// `table_oldest_row_age_seconds`: how old each table's oldest kept row is.
    table_oldest: Family<Table, Gauge<f64, AtomicU64>>,
    /// `host_reachable`: 1 when a host answers, 0 when it does not, by host.
    reachable: Family<Host, Gauge>,
    /// `snapshots_open`: each project's non-closed snapshots.
    snapshots_open: Family<Project, Gauge>,
    /// `snapshot_oldest_age_seconds`: how old each project's oldest open snapshot is.
    snapshot_oldest: Family<Project, Gauge<f64, AtomicU64>>,
    /// `snapshot_chain_depth_max`: each project's longest chain of snapshots.
    chain_depth: Family<Project, Gauge>,
    /// When the projects' snapshots were last read (`None`: never), and when each
    /// project's oldest snapshot was made, so its age is brought up to date at every
    /// scrape in between.
    snapshots_read: std::sync::Mutex<SnapshotsRead>,
}

/// 1 ms to about 27 minutes: host calls and tasks both, on a simulated host or a slow one.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 3.0, 14))
}

impl Default for Metrics {
    /// Registers every metric under the `snaptree` prefix, with its help text.
    /// Long because it is a list: one registration per metric, then the struct that holds them.
    fn default() -> Self {
        let mut registry = Registry::with_prefix("snaptree");
        let tasks_ended = Family::<Ended, Counter>::default();
        registry.register(
            "tasks_ended",
            "Tasks ended, by kind and final state",
            tasks_ended.clone(),
        );
        let task_seconds: Seconds = Family::new_with_constructor(seconds);
        registry.register(
            "task_duration_seconds",
            "Time from a task's start to its end, by host and kind",
            task_seconds.clone(),
        );
        let host_call_seconds: Seconds = Family::new_with_constructor(seconds);
        registry.register(
            "host_call_duration_seconds",
            "Time of one call to a host (an attempt), by host and kind",
            host_call_seconds.clone(),
        );
        let host_call_errors = Family::<HostError, Counter>::default();
        registry.register(
            "host_call_errors",
            "Failed host calls, by host, kind and class",
            host_call_errors.clone(),
        );
        let operations = Family::<Operation, Counter>::default();
        registry.register(
            "graphql_operations",
            "GraphQL operations over HTTP, by outcome and error code",
            operations.clone(),
        );
        let sockets = Gauge::default();
        registry.register(
            "websockets_open",
            "Subscription WebSockets open in this process",
            sockets.clone(),
        );
        let subscriptions = Gauge::default();
        registry.register(
            "subscriptions_open",
            "Subscriptions running in this process, on every WebSocket",
            subscriptions.clone(),
        );
        // 1 ms to about 16 s: a pump that keeps up is within milliseconds of the commit.
        let pump_lag = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "event_pump_lag_seconds",
            "Time from a task event's write to its delivery to this process's subscribers",
            pump_lag.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "tasks_queued",
            "Tasks waiting for a robot, in the whole database",
            queued.clone(),
        );
        let oldest_queued = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_queued_task_age_seconds",
            "How long the oldest queued task has waited",
            oldest_queued.clone(),
        );
        let running = Family::<Host, Gauge>::default();
        registry.register(
            "tasks_running",
            "Tasks running, by host, in the whole database",
            running.clone(),
        );
        let connections = Family::<Host, Counter>::default();
        registry.register(
            "host_connections_opened",
            "Connections this process has opened to each host (virsh shells, SSH sessions)",
            connections.clone(),
        );
        let retired = Family::<Kind, Counter>::default();
        registry.register(
            "retired_rows",
            "Rows retention retired in this process, by kind",
            retired.clone(),
        );
        let table_rows = Family::<Table, Gauge>::default();
        registry.register(
            "table_rows",
            "Rows of each table retention retires from (the span of its ids), in the whole database",
            table_rows.clone(),
        );
        let table_oldest = Family::<Table, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "table_oldest_row_age_seconds",
            "How old each table's oldest kept row is",
            table_oldest.clone(),
        );
        let reachable = Family::<Host, Gauge>::default();
        registry.register(
            "host_reachable",
            "Whether each host answers (1) or not (0), as the processes that call it last found",
            reachable.clone(),
        );
        let snapshots_open = Family::<Project, Gauge>::default();
        registry.register(
            "snapshots_open",
            "Non-closed snapshots, by project, read at most once a minute",
            snapshots_open.clone(),
        );
        let snapshot_oldest = Family::<Project, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "snapshot_oldest_age_seconds",
            "How old each project's oldest non-closed snapshot is",
            snapshot_oldest.clone(),
        );
        let chain_depth = Family::<Project, Gauge>::default();
        registry.register(
            "snapshot_chain_depth_max",
            "Each project's longest chain of snapshots, from a root to a leaf",
            chain_depth.clone(),
        );
        Self {
            reachable,
            snapshots_open,
            snapshot_oldest,
            chain_depth,
            snapshots_read: std::sync::Mutex::new((None, Vec::new())),
            registry,
            retired,
            table_rows,
            table_oldest,
            connections,
            tasks_ended,
            task_seconds,
            host_call_seconds,
            host_call_errors,
            operations,
            sockets,
            subscriptions,
            pump_lag,
            queued,
            oldest_queued,
            running,
        }
    }
}

impl Metrics {
    /// A task ended after `took` (from its start).
    pub fn task_ended(&self, host: &str, kind: TaskKind, state: TaskState, took: Duration) {
        self.tasks_ended
            .get_or_create(&Ended {
                kind: kind.as_str(),
                state: state.as_str(),
            })
            .inc();
        self.task_seconds
            .get_or_create(&OnHost {
                host: host.to_owned(),
                kind: kind.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// One host call took `took`, and failed as `error` says.
    pub fn host_call(&self, host: &str, kind: TaskKind, took: Duration, error: Option<ErrorClass>) {
        self.host_call_seconds
            .get_or_create(&OnHost {
                host: host.to_owned(),
                kind: kind.as_str(),
            })
            .observe(took.as_secs_f64());
        if let Some(class) = error {
            self.host_call_errors
                .get_or_create(&HostError {
                    host: host.to_owned(),
                    kind: kind.as_str(),
                    class: class.as_str(),
                })
                .inc();
        }
    }

    /// A GraphQL operation's outcome.
    pub fn operation(&self, outcome: &'static str, code: &'static str) {
        self.operations
            .get_or_create(&Operation { outcome, code })
            .inc();
    }

    /// Counts a subscription WebSocket as open until the guard is dropped.
    pub fn socket_open(&self) -> SocketOpen {
        self.sockets.inc();
        SocketOpen(self.sockets.clone())
    }

    /// Counts a subscription as open until the guard is dropped.
    pub fn subscription_open(&self) -> SocketOpen {
        self.subscriptions.inc();
        SocketOpen(self.subscriptions.clone())
    }

    /// A pass of retention retired `done`.
    pub fn retired(&self, done: &crate::db::retention::Retired) {
        for (kind, n) in [
            ("events", done.events),
            ("tasks", done.tasks),
            ("policy_runs", done.runs),
            ("snapshots", done.snapshots),
            ("snapshot_history", done.history),
        ] {
            self.retired.get_or_create(&Kind { kind }).inc_by(n as u64);
        }
    }

    /// The event pump delivered an event written `lag` ago.
    pub fn pumped(&self, lag: Duration) {
        self.pump_lag.observe(lag.as_secs_f64());
    }

    /// Whether the projects' snapshots are to be read at this scrape: not within a
    /// minute of the last read (a walk of every open snapshot of the fleet).
    pub fn snapshots_due(&self) -> bool {
        let read = self.snapshots_read.lock().expect("not poisoned");
        read.0
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
    }

    /// The text a scrape gets, from what it read (`reading`).
    pub fn render(&self, reading: &Reading<'_>) -> String {
        let Reading {
            queue,
            growth,
            snapshots,
            hosts,
            connections,
            now,
        } = *reading;
        let age = |at: chrono::NaiveDateTime| (now - at).as_seconds_f64().max(0.0);
        for g in growth {
            let table = Table { table: g.table };
            self.table_rows.get_or_create(&table).set(g.rows);
            self.table_oldest
                .get_or_create(&table)
                .set(g.oldest.map_or(0.0, age));
        }
        for (host, opened) in connections {
            let counter = self.connections.get_or_create(&Host { host: host.clone() });
            counter.inc_by(opened.saturating_sub(counter.get()));
        }
        for (host, up) in hosts {
            self.reachable
                .get_or_create(&Host { host: host.clone() })
                .set(i64::from(*up));
        }
        self.render_snapshots(snapshots, age);
        self.queued.set(queue.queued);
        self.oldest_queued.set(queue.oldest_seconds);
        self.running.clear();
        for (host, count) in &queue.running {
            self.running
                .get_or_create(&Host { host: host.clone() })
                .set(*count);
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Sets the projects' snapshot gauges from `read` when they were read this time, and
    /// otherwise brings the ages of the last read up to date (`age` of a time).
    fn render_snapshots(
        &self,
        read: Option<&[ProjectSnapshots]>,
        age: impl Fn(chrono::NaiveDateTime) -> f64,
    ) {
        let mut last = self.snapshots_read.lock().expect("not poisoned");
        if let Some(read) = read {
            // Projects without open snapshots (or gone) leave the families.
            self.snapshots_open.clear();
            self.snapshot_oldest.clear();
            self.chain_depth.clear();
            for p in read {
                let project = Project {
                    project: p.project.clone(),
                };
                self.snapshots_open.get_or_create(&project).set(p.open);
                self.chain_depth.get_or_create(&project).set(p.deepest);
            }
            *last = (
                Some(std::time::Instant::now()),
                read.iter().map(|p| (p.project.clone(), p.oldest)).collect(),
            );
        }
        for (project, oldest) in &last.1 {
            let project = Project {
                project: project.clone(),
            };
            self.snapshot_oldest
                .get_or_create(&project)
                .set(age(*oldest));
        }
    }
}
