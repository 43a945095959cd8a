//! The robot: a job runner backed by the tasks table. It claims queued tasks, drives the
//! host's driver, and ends each task through the service, which moves the snapshots as
//! `snapshots.md` says.
//!
//! A claim is a lease, renewed while the task runs ([`lease`]); if this process dies, the
//! lease runs out and any robot (this one restarted, or another) takes the task up again.
//! A robot that cannot renew a lease gives the task up before then, and a claim's writes
//! are fenced, so one task never runs on two robots at once. Driver operations are
//! idempotent, so running a task again after a cut is safe. Transient failures retry
//! with exponential backoff and jitter, within a number of attempts and a time budget;
//! permanent ones end the task at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{MissedTickBehavior, interval, timeout};
use tracing::Instrument;

use crate::config::RobotConfig;
use crate::domain::names::host_snapshot_name;
use crate::domain::{Failure, FailureCode, TaskKind};
use crate::hypervisor::{Driver, DriverError, HostSnapshot, Progress};
use crate::metrics::ErrorClass;
use crate::service::TaskLedger;
use crate::service::ledger::StepWriter;
use crate::service::tasks::{Claimed, Outcome, Step};

mod lease;
mod run;
mod taker;

use lease::{Lease, Standing};
use taker::{Handoff, Workers};

/// The event of a task its robot hands back because it is stopping.
const STOPPING: &str = "queued again: its robot is stopping";

/// The event of a task its robot hands back because it could not renew its lease.
const GAVE_UP: &str = "queued again: its robot could not renew its lease in time";

/// The most tasks one claim takes: more free workers claim again at once.
const CLAIM_BATCH: usize = 16;

/// Runs tasks until told to stop.
pub struct Robot {
    /// All the robot sees of the service.
    ledger: TaskLedger,
    /// How it runs tasks: workers, lease, retries, timeouts, the hosts it serves.
    config: RobotConfig,
    /// Names this process in leases and events.
    owner: Arc<str>,
    /// Writes the steps of every task this robot runs, many in one transaction.
    steps: StepWriter,
    /// The tasks it runs now, by id: what it releases if they outlast a shutdown's grace.
    running: std::sync::Mutex<std::collections::HashMap<i64, Arc<Claimed>>>,
    /// Its free workers: each running task holds one, except while it waits for an
    /// unreachable host.
    workers: Arc<Semaphore>,
}

/// Why a task stopped before it ended.
enum Interrupt {
    /// The lease was given up (not renewed in time) or the task claimed again.
    Lost,
    /// This robot is stopping; the task goes back to the queue.
    Stopping,
    /// A user asked to cancel it.
    Cancel,
}

/// How a run of a task ended.
enum Ending {
    /// The task ended here, as recorded.
    Done(Outcome),
    /// The run stopped before the task ended (lease lost, shutdown): another run finishes it.
    Interrupted(Interrupt),
}

impl Robot {
    /// A robot for `ledger`'s tasks (inside a runtime: its step writer starts now).
    pub fn new(ledger: TaskLedger, config: RobotConfig) -> Self {
        let owner = format!(
            "robot-{}-{:06x}",
            std::process::id(),
            fastrand::u32(..0xFF_FFFF)
        );
        Self {
            steps: ledger.step_writer(),
            ledger,
            owner: owner.into(),
            running: Default::default(),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
        }
    }

    /// Starts the robot; it stops when `shutdown` turns true.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(Arc::new(self).dispatch(shutdown))
    }

    /// Claims tasks while workers are free (up to [`CLAIM_BATCH`] at a time); sleeps
    /// until a task is queued (or the slow poll comes round, for tasks queued by other
    /// processes and expired leases).
    async fn dispatch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let health = self.ledger.spawn_health_writer(shutdown.clone());
        let hosts = self.placement().await;
        let workers = Arc::clone(&self.workers);
        let (handoffs, mut handed) = mpsc::unbounded_channel::<Handoff>();
        self.ledger.attach(Arc::new(Workers {
            owner: Arc::clone(&self.owner),
            lease: self.config.lease,
            hosts: hosts.clone(),
            free: Arc::clone(&workers),
            handoffs,
        }));
        let mut running = JoinSet::new();
        tracing::info!(owner = %self.owner, workers = self.config.workers, "robot started");
        // Whether tasks may wait for a claim: at the start, after a wake-up or the poll,
        // and while claims find some. A task handed over brings its own worker and says
        // nothing of the queue, so it does not send the robot looking (with free
        // workers, that would be a read per task for nothing).
        let mut look = true;
        let mut poll = interval(self.config.poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            while running.try_join_next().is_some() {}
            if look {
                // A hand-off brings its own worker; a claim needs a free one.
                let permit = tokio::select! {
                    Some((claimed, permit)) = handed.recv() => {
                        running.spawn(Arc::clone(&self).work(claimed, permit, shutdown.clone()));
                        continue;
                    }
                    permit = Arc::clone(&workers).acquire_owned() => permit.expect("never closed"),
                    _ = shutdown.changed() => break,
                };
                let claimed = self.claim(permit, hosts.as_deref()).await;
                if claimed.is_empty() {
                    // Nothing waits: sleep below until something may.
                    look = false;
                } else {
                    for (claimed, permit) in claimed {
                        running.spawn(Arc::clone(&self).work(claimed, permit, shutdown.clone()));
                    }
                    continue;
                }
            }
            tokio::select! {
                Some((claimed, permit)) = handed.recv() => {
                    running.spawn(Arc::clone(&self).work(claimed, permit, shutdown.clone()));
                }
                _ = self.ledger.bus().wait_for_task() => look = true,
                // Its tasks waited for it.
                _ = self.ledger.drivers().health().recovered() => look = true,
                _ = poll.tick() => look = true,
                _ = shutdown.changed() => break,
            }
        }
        self.wind_down(running, handed, &shutdown).await;
        let _ = health.await;
        tracing::info!(owner = %self.owner, "robot stopped");
    }

    /// Claims as many tasks as there are free workers (`first` and those free now, up to
    /// [`CLAIM_BATCH`]), each with its worker; none when nothing waits or the claim
    /// failed (the robot looks again at the next wake-up).
    async fn claim(
        &self,
        first: OwnedSemaphorePermit,
        hosts: Option<&[i64]>,
    ) -> Vec<(Claimed, OwnedSemaphorePermit)> {
        let mut permits = vec![first];
        while permits.len() < CLAIM_BATCH {
            match Arc::clone(&self.workers).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let (owner, lease) = (&self.owner, self.config.lease);
        match self
            .ledger
            .claim_tasks(owner, lease, hosts, permits.len())
            .await
        {
            Ok(claimed) => claimed.into_iter().zip(permits).collect(),
            Err(err) => {
                tracing::error!(error = %err, "robot could not claim a task");
                Vec::new()
            }
        }
    }

    /// Stops taking work and lets the running tasks reach a safe point within the grace;
    /// the ones that do not are cut short and handed back to the queue.
    async fn wind_down(
        self: &Arc<Self>,
        mut running: JoinSet<()>,
        mut handed: mpsc::UnboundedReceiver<Handoff>,
        shutdown: &watch::Receiver<bool>,
    ) {
        // No more hand-offs; any already sent stop at their first safe point, like the rest.
        handed.close();
        while let Ok((claimed, permit)) = handed.try_recv() {
            running.spawn(Arc::clone(self).work(claimed, permit, shutdown.clone()));
        }
        // Running tasks see the same signal and stop at their next safe point (a host
        // call in flight finishes first).
        let drained = timeout(self.config.shutdown_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Cut short; the host's call is killed, and the tasks go back to the queue at
            // once for another robot (their operations are idempotent), rather than when
            // their leases run out.
            running.abort_all();
            while running.join_next().await.is_some() {}
            let left: Vec<Arc<Claimed>> = self
                .running
                .lock()
                .unwrap()
                .drain()
                .map(|(_, c)| c)
                .collect();
            for claimed in left {
                if let Err(err) = self.ledger.release_task(&claimed, STOPPING).await {
                    tracing::warn!(task = claimed.task.id, error = %err, "could not release a task; its lease will run out");
                }
            }
        }
    }

    /// The ids of the hosts this robot serves, or `None` for all.
    async fn placement(&self) -> Option<Vec<i64>> {
        if self.config.hosts.is_empty() {
            return None;
        }
        match self.ledger.hosts_by_names(&self.config.hosts).await {
            Ok(found) => {
                for name in &self.config.hosts {
                    if !found.iter().any(|h| &h.name == name) {
                        tracing::warn!(host = %name, "robot placement names an unknown host");
                    }
                }
                Some(found.into_iter().map(|h| h.id).collect())
            }
            Err(err) => {
                tracing::error!(error = %err, "robot could not resolve its hosts; serving none");
                Some(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults promise that a task that keeps failing gives up within about a
    /// minute: even with the longest jitter, its retry delays add up to less.
    #[test]
    fn default_retries_give_up_within_a_minute() {
        let config = RobotConfig::default();
        let longest: Duration = (1..config.max_attempts)
            .map(|attempt| {
                let exp = config.retry_base * (1 << (attempt - 1));
                exp.min(config.retry_cap).mul_f64(1.25)
            })
            .sum();
        assert!(longest <= config.give_up_after, "{longest:?}");
        assert!(config.give_up_after <= Duration::from_secs(60));
    }
}
