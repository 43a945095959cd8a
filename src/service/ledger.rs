//! The robot's task ledger: group commit for the steps of the tasks it runs.
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

use tokio::sync::{mpsc, oneshot};

use super::Service;
use super::tasks::{Claimed, Step, write_steps};
use crate::db::{self, models::NewTaskEvent};
use crate::error::{AppError, AppResult};

/// Steps written in one transaction at most.
const BATCH: usize = 256;

/// Sends steps to the writer; the writer stops when every handle is gone.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::UnboundedSender<Entry>,
}

/// A step waiting to be written, and who waits for it.
struct Entry {
    claimed: Arc<Claimed>,
    /// The robot that holds the task.
    owner: Arc<str>,
    step: Step,
    /// Told whether the robot still held the task (the step was written).
    done: Option<oneshot::Sender<AppResult<bool>>>,
}

impl Ledger {
    /// Starts the writer for `service`'s database.
    pub fn spawn(service: Service) -> Self {
        let (queue, entries) = mpsc::unbounded_channel();
        tokio::spawn(write(service, entries));
        Self { queue }
    }

    /// Writes `step` and waits for its commit: true when written, false when the robot no
    /// longer held the task (nothing was written).
    pub async fn write(
        &self,
        claimed: &Arc<Claimed>,
        owner: &Arc<str>,
        step: Step,
    ) -> AppResult<bool> {
        let (done, written) = oneshot::channel();
        self.enqueue(claimed, owner, step, Some(done));
        written
            .await
            .unwrap_or_else(|_| Err(AppError::internal("the task ledger stopped")))
    }

    /// Sends `step` to be written after the ones sent before it, without waiting.
    pub fn send(&self, claimed: &Arc<Claimed>, owner: &Arc<str>, step: Step) {
        self.enqueue(claimed, owner, step, None);
    }

    fn enqueue(
        &self,
        claimed: &Arc<Claimed>,
        owner: &Arc<str>,
        step: Step,
        done: Option<oneshot::Sender<AppResult<bool>>>,
    ) {
        let entry = Entry {
            claimed: Arc::clone(claimed),
            owner: Arc::clone(owner),
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
async fn write(service: Service, mut queue: mpsc::UnboundedReceiver<Entry>) {
    let mut entries = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut entries, BATCH).await > 0 {
        let results = match service.write_batch(&entries).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            Err(err) => {
                if entries.len() > 1 {
                    tracing::warn!(error = %err, steps = entries.len(), "a batch of task steps failed; writing them one by one");
                }
                let mut results = Vec::with_capacity(entries.len());
                for entry in &entries {
                    results.push(
                        service
                            .write_batch(std::slice::from_ref(entry))
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

impl Service {
    /// Writes `entries` in one transaction (see [`write_steps`]); for each, whether the
    /// robot still held the task. The events are stored together, in order.
    async fn write_batch(&self, entries: &[Entry]) -> AppResult<Vec<bool>> {
        let steps: Vec<_> = entries
            .iter()
            .map(|e| (&*e.claimed, &*e.owner, &e.step))
            .collect();
        let mut tx = self.db.begin().await?;
        let result = async {
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
            self.bus.committed();
        }
        if wake {
            self.bus.announce_queued();
        }
        Ok(held)
    }
}
