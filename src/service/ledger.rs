//! The robot's side of the service: claiming tasks, renewing and releasing their
//! leases, and the task ledger that records their steps with group commit.
//!
//! Every progress report and every task end of this process's workers goes through one
//! writer, which writes whatever has queued up meanwhile in one transaction: one commit
//! (and, on PostgreSQL, one flush to disk) for many events instead of one each. Steps are
//! written in the order they were sent, so a task's events keep their order. A task's end
//! is acknowledged only after its commit, as before; a progress report may be sent
//! without waiting for it (a crash loses only reports nobody saw, and the task is taken
//! up again anyway). If a batch fails, each of its steps is written alone, so one bad
//! step cannot take the others down with it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::tasks::{Claimed, Note, Step, lease_until, record, write_steps};
use super::{Core, handoff};
use crate::db::models::{Host, HostHealth, NewTaskEvent};
use crate::db::{self, Tx, hosts, tasks};
use crate::domain::TaskState;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::hypervisor::Drivers;

/// What a robot may do with the service, and all it sees of it.
#[derive(Clone)]
pub struct TaskLedger {
    /// What every part of the service shares.
    pub(super) core: Arc<Core>,
}

impl TaskLedger {
    /// Registers this process's robot for eager dispatch (once).
    pub fn attach(&self, robot: Arc<dyn handoff::Taker>) {
        if self.core.local.set(robot).is_err() {
            tracing::warn!("a second robot in one process gets no hand-offs");
        }
    }

    /// Starts the writer of this process's task steps.
    pub fn step_writer(&self) -> StepWriter {
        let (queue, entries) = mpsc::unbounded_channel();
        tokio::spawn(write(self.clone(), entries));
        StepWriter { queue }
    }

    /// Writes the hosts' health as this process's calls find it, whenever it changes,
    /// until `shutdown`: where other processes' robots and the API see it.
    pub fn spawn_health_writer(
        &self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            let book = Arc::clone(ledger.core.drivers.health());
            loop {
                let stopping = tokio::select! {
                    _ = book.changed() => false,
                    _ = shutdown.changed() => true,
                };
                let changes: Vec<HostHealth> = book
                    .take_changes()
                    .into_iter()
                    .map(|(host_id, h)| HostHealth {
                        host_id,
                        reachable: h.reachable,
                        since: h.since,
                        last_error: h.last_error,
                    })
                    .collect();
                if !changes.is_empty() {
                    let written = async {
                        let mut tx = ledger.core.db.begin().await?;
                        let result = hosts::set_health(&mut tx.conn(), &changes)
                            .await
                            .map_err(AppError::from);
                        tx.finish(result).await
                    };
                    if let Err(err) = written.await {
                        tracing::warn!(error = %err, "could not record the hosts' health");
                    }
                }
                if stopping {
                    return;
                }
            }
        })
    }

    /// Committed events, and the wake-ups for queued work.
    pub fn bus(&self) -> &EventBus {
        &self.core.bus
    }

    /// The hosts' drivers.
    pub fn drivers(&self) -> &Arc<Drivers> {
        &self.core.drivers
    }

    /// What the robot counts: task ends, host calls.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.core.metrics
    }
}

/// Steps written in one transaction at most.
const BATCH: usize = 256;

/// Sends steps to the writer; the writer stops when every handle is gone.
#[derive(Clone)]
pub struct StepWriter {
    /// To the one writer task, which writes entries in the order they were sent.
    queue: mpsc::UnboundedSender<Entry>,
}

/// A step waiting to be written, and who waits for it.
struct Entry {
    /// The task, under the claim the step is written for.
    claimed: Arc<Claimed>,
    /// What to write: a progress report, or the task's end.
    step: Step,
    /// Told whether the robot still held the task (the step was written).
    done: Option<oneshot::Sender<AppResult<bool>>>,
}

impl StepWriter {
    /// Writes `step` and waits for its commit: true when written, false when the claim no
    /// longer held the task (nothing was written).
    pub async fn write(&self, claimed: &Arc<Claimed>, step: Step) -> AppResult<bool> {
        let (done, written) = oneshot::channel();
        self.enqueue(claimed, step, Some(done));
        written
            .await
            .unwrap_or_else(|_| Err(AppError::internal("the task ledger stopped")))
    }

    /// Sends `step` to be written after the ones sent before it, without waiting.
    pub fn send(&self, claimed: &Arc<Claimed>, step: Step) {
        self.enqueue(claimed, step, None);
    }

    fn enqueue(
        &self,
        claimed: &Arc<Claimed>,
        step: Step,
        done: Option<oneshot::Sender<AppResult<bool>>>,
    ) {
        let entry = Entry {
            claimed: Arc::clone(claimed),
            step,
            done,
        };
        if let Err(lost) = self.queue.send(entry)
            && let Some(done) = lost.0.done
        {
            let _ = done.send(Err(AppError::internal("the task ledger stopped")));
        }
    }
}

/// The writer: everything queued, in one transaction at a time.
async fn write(ledger: TaskLedger, mut queue: mpsc::UnboundedReceiver<Entry>) {
    let mut entries = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut entries, BATCH).await > 0 {
        let results = match ledger.write_guarded(&entries).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            Err(err) => {
                if entries.len() > 1 {
                    tracing::warn!(error = %err, steps = entries.len(), "a batch of task steps failed; writing them one by one");
                }
                let mut results = Vec::with_capacity(entries.len());
                for entry in &entries {
                    results.push(
                        ledger
                            .write_guarded(std::slice::from_ref(entry))
                            .await
                            .map(|written| written[0]),
                    );
                }
                results
            }
        };
        for (entry, result) in entries.drain(..).zip(results) {
            match entry.done {
                Some(done) => {
                    let _ = done.send(result);
                }
                None => {
                    if let Err(err) = result {
                        let task = entry.claimed.task.id;
                        tracing::warn!(task, error = %err, "could not record a task step");
                    }
                }
            }
        }
    }
}

impl TaskLedger {
    /// [`Self::write_batch`], with a panic (a bug) an error of this batch's steps rather
    /// than the end of the writer, which every later step would wait on.
    async fn write_guarded(&self, entries: &[Entry]) -> AppResult<Vec<bool>> {
        std::panic::AssertUnwindSafe(self.write_batch(entries))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(AppError::internal("writing task steps panicked")))
    }

    /// Writes `entries` in one transaction (see [`write_steps`]); for each, whether the
    /// robot still held the task. The events are stored together, in order.
    async fn write_batch(&self, entries: &[Entry]) -> AppResult<Vec<bool>> {
        let steps: Vec<_> = entries.iter().map(|e| (&*e.claimed, &e.step)).collect();
        let mut tx = self.core.db.begin().await?;
        let result: AppResult<_> = async {
            let mut conn = tx.conn();
            let events = write_steps(&mut conn, &steps).await?;
            let held: Vec<bool> = events.iter().map(Option::is_some).collect();
            // Stored now, together: one time for all, so that their times keep their order.
            let at = db::now();
            let events: Vec<NewTaskEvent> = events
                .into_iter()
                .flatten()
                .map(|event| NewTaskEvent { at, ..event })
                .collect();
            db::events::insert(&mut conn, &events).await?;
            // A task that ended made room on its host: if tasks wait there, every robot
            // hears of it (after the commit), as when a task is queued.
            let freed: Vec<i64> = entries
                .iter()
                .zip(&held)
                .filter(|(e, held)| **held && matches!(e.step, Step::Finish(_)))
                .map(|(e, _)| e.claimed.task.host_id)
                .collect();
            let wake = !freed.is_empty() && db::tasks::waiting_on(&mut conn, &freed).await?;
            Ok((held, wake))
        }
        .await;
        let (held, wake) = tx.finish(result).await?;
        if held.iter().any(|h| *h) {
            self.core.bus.committed();
        }
        if wake {
            self.core.bus.announce_queued();
        }
        Ok(held)
    }
}

impl TaskLedger {
    /// Ends a robot step's transaction, waking the event pump when the step stored an
    /// event. False when the robot no longer held the task (nothing was written).
    async fn end_step<T>(&self, tx: Tx, result: AppResult<Option<T>>) -> AppResult<bool> {
        let stored = tx.finish(result).await?.is_some();
        if stored {
            self.core.bus.committed();
        }
        Ok(stored)
    }

    /// Extends `claimed`'s lease to `lease` from now (computed once the database
    /// answers the pool: a time taken before the call is earlier). Returns whether a cancel was asked for, or `None`
    /// when the claim lost the task (its lease ran out and another claim took it).
    pub async fn renew_task(&self, claimed: &Claimed, lease: Duration) -> AppResult<Option<bool>> {
        let mut tx = self.core.db.begin().await?;
        let claim = claimed.task.fence;
        let result = tasks::renew(&mut tx.conn(), claimed.task.id, claim, lease_until(lease))
            .await
            .map_err(AppError::from);
        tx.finish(result).await
    }

    /// Puts a task back in the queue while `claimed`'s claim still holds it, saying `why`
    /// in its event.
    pub async fn release_task(&self, claimed: &Claimed, why: &str) -> AppResult<()> {
        let mut tx = self.core.db.begin().await?;
        let result = async {
            let mut conn = tx.conn();
            if !tasks::release(&mut conn, claimed.task.id, claimed.task.fence).await? {
                return Ok(None);
            }
            let note = Note {
                state: TaskState::Queued,
                progress: None,
                phase: None,
                message: Some(why),
                detail: None,
            };
            Ok(Some(
                record(&mut conn, &claimed.task, &claimed.vm, note).await?,
            ))
        }
        .await;
        if self.end_step(tx, result).await? {
            self.core.bus.announce_queued();
        }
        Ok(())
    }
}

impl TaskLedger {
    /// For robot placement: the hosts with these names.
    pub async fn hosts_by_names(&self, names: &[String]) -> AppResult<Vec<Host>> {
        Ok(hosts::by_names(&mut self.core.db.reader().await?.conn(), names).await?)
    }
}
