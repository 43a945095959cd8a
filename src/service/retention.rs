//! Retention: what has aged out of the `Retention` settings is retired, by every process
//! sharing the database, in small batches (`db::retention`), each its own short
//! transaction, so that the API and the robot go on between them. Events of ended tasks
//! go first (after `--keep-events`), ended tasks with what is left of theirs and their
//! policy runs next (`--keep-tasks`), closed snapshots with their history last
//! (`--keep-history`, the auditors' record, kept longest).
//!
//! Two processes never retire the same row: each batch's rows come back from the
//! statement that deleted them, and a row deleted by one is not there for the other. On
//! PostgreSQL a pass also takes an advisory lock, so that only one process at a time
//! spends work on it; SQLite's one writer serialises them anyway.
//!
//! With an archive directory, a batch's rows are written there (gzipped JSON lines)
//! before its transaction commits: a crash between the two writes a batch twice, never
//! loses one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Service;
use crate::config::Retention;
use crate::db;
use crate::db::retention::{self, Retired};
use crate::error::{AppError, AppResult};

/// Checks that `r` can be kept to: closed snapshots can only go once their tasks have.
pub fn check(r: &Retention) -> Result<(), String> {
    match (r.tasks, r.history) {
        (None, Some(_)) => Err("--keep-history needs --keep-tasks: a closed snapshot is kept while a task refers to it".into()),
        (Some(tasks), Some(history)) if history < tasks => Err(format!(
            "--keep-history ({}) must be at least --keep-tasks ({}): a closed snapshot is kept while a task refers to it",
            humantime::format_duration(history),
            humantime::format_duration(tasks)
        )),
        _ => Ok(()),
    }
}

/// Retires, every `r.every` (again soon after a pass that found a full batch), until
/// `stop`.
pub fn spawn(service: Service, r: Retention, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let began = std::time::Instant::now();
            let pause = match service.retire(&r).await {
                // More is waiting: go on after a pause as long as the pass (at least
                // 20 ms), so that catching up on a backlog takes at most half of the
                // time, and the API and the robot have the rest.
                Ok(done) if done.total() as i64 >= r.batch => {
                    began.elapsed().max(Duration::from_millis(20))
                }
                Ok(_) => r.every,
                Err(err) => {
                    tracing::warn!(error = %err, "retention could not retire");
                    r.every
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

impl Service {
    /// One pass of retention: a batch of each kind that has a keep age.
    pub async fn retire(&self, r: &Retention) -> AppResult<Retired> {
        let now = self.clock().now();
        let before = |age: Duration| {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            now.checked_sub_signed(age).unwrap_or_default().naive_utc()
        };
        let archive = r.archive.as_deref().map(|dir| Archive::new(dir, now));
        let archive = archive.as_ref();
        let mut done = Retired::default();
        if let Some(age) = r.events {
            done.events = self.retire_events(before(age), r.batch, archive).await?;
        }
        if let Some(age) = r.tasks {
            let (tasks, events, runs) = self.retire_tasks(before(age), r.batch, archive).await?;
            done.tasks = tasks;
            done.events += events;
            done.runs = runs;
        }
        if let Some(age) = r.history {
            let (snapshots, history) = self.retire_snapshots(before(age), r.batch, archive).await?;
            done.snapshots = snapshots;
            done.history = history;
        }
        // Persisted queries are bounded by count, not age.
        let mut tx = self.core.db.begin().await?;
        let trimmed = db::persisted::trim(&mut tx.conn(), super::persisted::KEPT)
            .await
            .map_err(AppError::from);
        tx.finish(trimmed).await?;
        if done.total() > 0 {
            self.metrics().retired(&done);
            tracing::info!(?done, "retention retired rows");
        }
        Ok(done)
    }

    /// A batch of events of ended tasks made before `at`.
    async fn retire_events(
        &self,
        at: chrono::NaiveDateTime,
        batch: i64,
        archive: Option<&Archive>,
    ) -> AppResult<usize> {
        let mut tx = self.core.db.begin().await?;
        let result = async {
            let conn = &mut tx.conn();
            if !retention::lock(conn).await? {
                return Ok(0);
            }
            let events = retention::events(conn, at, batch).await?;
            if let Some(archive) = archive {
                archive.write("events", &events)?;
            }
            Ok(events.len())
        }
        .await;
        tx.finish(result).await
    }

    /// A batch of tasks ended before `at`, with their events and policy runs: how many
    /// of each.
    async fn retire_tasks(
        &self,
        at: chrono::NaiveDateTime,
        batch: i64,
        archive: Option<&Archive>,
    ) -> AppResult<(usize, usize, usize)> {
        let mut tx = self.core.db.begin().await?;
        let result = async {
            let conn = &mut tx.conn();
            if !retention::lock(conn).await? {
                return Ok((0, 0, 0));
            }
            let gone = retention::tasks(conn, at, batch).await?;
            if let Some(archive) = archive {
                archive.write("events", &gone.events)?;
                archive.write("policy_runs", &gone.runs)?;
                archive.write("tasks", &gone.tasks)?;
            }
            Ok((gone.tasks.len(), gone.events.len(), gone.runs.len()))
        }
        .await;
        tx.finish(result).await
    }

    /// A batch of snapshots closed before `at`, with their history: how many of each.
    async fn retire_snapshots(
        &self,
        at: chrono::NaiveDateTime,
        batch: i64,
        archive: Option<&Archive>,
    ) -> AppResult<(usize, usize)> {
        let mut tx = self.core.db.begin().await?;
        let result = async {
            let conn = &mut tx.conn();
            if !retention::lock(conn).await? {
                return Ok((0, 0));
            }
            let gone = retention::closed_snapshots(conn, at, batch).await?;
            if let Some(archive) = archive {
                archive.write("snapshot_history", &gone.history)?;
                archive.write("snapshots", &gone.snapshots)?;
            }
            Ok((gone.snapshots.len(), gone.history.len()))
        }
        .await;
        tx.finish(result).await
    }
}

/// Where retired rows are written: `<dir>/<kind>-<day>-<pid>.jsonl.gz`, one gzip member
/// per batch appended (gzip readers read the members as one stream).
struct Archive {
    /// The directory.
    dir: PathBuf,
    /// The day of the pass, in the files' names.
    day: String,
}

impl Archive {
    fn new(dir: &Path, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            dir: dir.to_owned(),
            day: now.format("%Y-%m-%d").to_string(),
        }
    }

    /// Appends `rows` to the file of `kind`, and waits until they are on disk.
    fn write<T: Serialize>(&self, kind: &str, rows: &[T]) -> AppResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(format!(
            "{kind}-{}-{}.jsonl.gz",
            self.day,
            std::process::id()
        ));
        let failed = |e: std::io::Error| {
            AppError::internal(format!("cannot archive to {}: {e}", path.display()))
        };
        tokio::task::block_in_place(|| {
            std::fs::create_dir_all(&self.dir).map_err(failed)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(failed)?;
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            for row in rows {
                serde_json::to_writer(&mut gz, row).map_err(|e| failed(e.into()))?;
                gz.write_all(b"\n").map_err(failed)?;
            }
            gz.finish().map_err(failed)?.sync_all().map_err(failed)
        })
    }
}
