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
    Done(Outcome),
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

    /// Claims tasks while workers are free (up to [`CLAIM_BATCH`] at a time); sleeps until a task is queued (or the slow
    /// poll comes round, for tasks queued by other processes and expired leases).
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
                // As many tasks as there are free workers, in one claim.
                let mut permits = vec![permit];
                while permits.len() < CLAIM_BATCH {
                    match Arc::clone(&workers).try_acquire_owned() {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    }
                }
                match self
                    .ledger
                    .claim_tasks(
                        &self.owner,
                        self.config.lease,
                        hosts.as_deref(),
                        permits.len(),
                    )
                    .await
                {
                    Ok(claimed) if !claimed.is_empty() => {
                        for (claimed, permit) in claimed.into_iter().zip(permits) {
                            running.spawn(Arc::clone(&self).work(
                                claimed,
                                permit,
                                shutdown.clone(),
                            ));
                        }
                        continue;
                    }
                    Ok(_) => look = false,
                    Err(err) => {
                        tracing::error!(error = %err, "robot could not claim a task");
                        look = false;
                    }
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
        // No more hand-offs; any already sent stop at their first safe point, like the rest.
        handed.close();
        while let Ok((claimed, permit)) = handed.try_recv() {
            running.spawn(Arc::clone(&self).work(claimed, permit, shutdown.clone()));
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
        let _ = health.await;
        tracing::info!(owner = %self.owner, "robot stopped");
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

    /// Runs one claimed task to its end, or until it is interrupted.
    async fn work(
        self: Arc<Self>,
        claimed: Claimed,
        permit: OwnedSemaphorePermit,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let task = claimed.task.id;
        // Every line about the task, here and below, carries its id, kind and host.
        let span = tracing::info_span!(
            "task",
            id = task,
            kind = claimed.task.kind().as_str(),
            host = %claimed.host.name,
        );
        self.work_in(claimed, permit, &mut shutdown)
            .instrument(span)
            .await;
    }

    /// [`Self::work`], in the task's span.
    async fn work_in(
        self: Arc<Self>,
        claimed: Claimed,
        permit: OwnedSemaphorePermit,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let mut worker = Some(permit);
        let task = claimed.task.id;
        let began = Instant::now();
        tracing::info!(attempt = claimed.task.attempts, "task started");
        let claimed = Arc::new(claimed);
        self.running
            .lock()
            .unwrap()
            .insert(task, Arc::clone(&claimed));
        let result = match self.run(&claimed, &mut worker, shutdown).await {
            Ending::Done(outcome) => {
                let state = outcome.state();
                self.steps
                    .write(&claimed, Step::Finish(outcome))
                    .await
                    .map(|held| {
                        if held {
                            tracing::info!(
                                state = state.as_str(),
                                ms = began.elapsed().as_millis() as u64,
                                "task ended"
                            );
                            self.ledger.metrics().task_ended(
                                &claimed.host.name,
                                claimed.task.kind(),
                                state,
                                began.elapsed(),
                            );
                        } else {
                            tracing::warn!(task, "task was taken over before it could end here");
                        }
                    })
            }
            Ending::Interrupted(Interrupt::Stopping) => {
                tracing::info!("stopping: the task goes back to the queue");
                self.ledger.release_task(&claimed, STOPPING).await
            }
            Ending::Interrupted(Interrupt::Lost) => {
                tracing::warn!(
                    task,
                    "gave the task up: its lease was not renewed in time, or it was claimed again"
                );
                // Back in the queue at once if the database answers now (it was only
                // slow), rather than when the lease runs out; under a later claim, this
                // changes nothing.
                let release = self.ledger.release_task(&claimed, GAVE_UP);
                match timeout(self.config.lease, release).await {
                    Ok(released) => released,
                    Err(_) => Ok(()),
                }
            }
            Ending::Interrupted(Interrupt::Cancel) => {
                unreachable!("run turns a cancel into an outcome")
            }
        };
        {
            // Unless this process has claimed the task again meanwhile.
            let mut running = self.running.lock().unwrap();
            if running
                .get(&task)
                .is_some_and(|c| c.task.fence == claimed.task.fence)
            {
                running.remove(&task);
            }
        }
        if let Err(err) = result {
            // The lease runs out and the task is taken up again.
            tracing::error!(task, error = %err, "could not record what became of a task");
        }
    }

    async fn run(
        &self,
        claimed: &Arc<Claimed>,
        worker: &mut Option<OwnedSemaphorePermit>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ending {
        let found = crate::service::host_ref(&claimed.host)
            .and_then(|host| self.ledger.drivers().for_host(&host));
        let driver = match found {
            Ok(driver) => driver,
            Err(err) => {
                return Ending::Done(Outcome::Failed {
                    failure: err.failure(),
                    host: None,
                });
            }
        };
        // A task whose runs keep being cut short (its robots die, or lose their leases)
        // ends rather than come back for ever.
        if claimed.task.attempts > self.config.max_attempts {
            let tried = claimed.task.attempts - 1;
            let failure = Failure::new(FailureCode::CutShort, None)
                .context(&format!("gave up after {tried} attempts"));
            return Ending::Done(self.failed(claimed, &*driver, failure).await);
        }
        let started = Instant::now();
        // One lease for the whole run, renewed apart from the attempts and waits.
        let mut lease = Lease::keep(self.ledger.clone(), Arc::clone(claimed), self.config.lease);
        // The claim counted this run's first attempt.
        let mut attempt = claimed.task.attempts;
        let mut cancel = claimed.task.cancel_requested;
        loop {
            // A safe point: between attempts nothing is half done on the host.
            if lease.is_lost() {
                return Ending::Interrupted(Interrupt::Lost);
            }
            if cancel {
                let tried = attempt - 1;
                return tokio::select! {
                    outcome = self.cancelled(claimed, &*driver, tried) => Ending::Done(outcome),
                    _ = lease.lost() => Ending::Interrupted(Interrupt::Lost),
                };
            }
            if *shutdown.borrow() {
                return Ending::Interrupted(Interrupt::Stopping);
            }
            let failure = match self.attempt(claimed, &*driver, attempt, &mut lease).await {
                Ok(Ok(())) => return Ending::Done(Outcome::Succeeded),
                Err(interrupt) => return Ending::Interrupted(interrupt),
                Ok(Err(transient)) if transient.error.is_transient() => transient.failure(),
                Ok(Err(permanent)) => {
                    let failure = permanent.failure();
                    let detail = failure.detail.as_deref().unwrap_or_default();
                    tracing::info!(task = claimed.task.id, error = %detail, "attempt failed for good");
                    return Ending::Done(self.failed(claimed, &*driver, failure).await);
                }
            };
            let detail = failure.detail.clone().unwrap_or_default();
            tracing::info!(task = claimed.task.id, attempt, error = %detail, "attempt failed");
            let delay = self.backoff(attempt);
            if attempt >= self.config.max_attempts
                || started.elapsed() + delay > self.config.give_up_after
            {
                let failure = failure.context(&format!("gave up after {attempt} attempts"));
                return Ending::Done(self.failed(claimed, &*driver, failure).await);
            }
            let failure = failure.context(&format!("attempt {attempt} failed"));
            let message = format!(
                "{}; retrying in {:.1}s",
                failure.message,
                delay.as_secs_f64()
            );
            let note = (message.as_str(), failure.detail.as_deref());
            let waiting = self.report(claimed, attempt, None, "waiting to retry", Some(note));
            tokio::select! {
                _ = waiting => {}
                _ = lease.lost() => return Ending::Interrupted(Interrupt::Lost),
            }
            match self
                .hold(claimed, delay, worker, shutdown, &mut lease)
                .await
            {
                Ok(()) => {}
                Err(Interrupt::Cancel) => cancel = true,
                Err(interrupt) => return Ending::Interrupted(interrupt),
            }
            attempt += 1;
            let phase = format!("attempt {attempt} of {}", self.config.max_attempts);
            if !cancel {
                let held = tokio::select! {
                    held = self.report(claimed, attempt, None, &phase, None) => held,
                    _ = lease.lost() => false,
                };
                if !held {
                    return Ending::Interrupted(Interrupt::Lost);
                }
            }
        }
    }

    /// One driver call, with progress reports while it runs; cut if the lease is lost.
    async fn attempt(
        &self,
        claimed: &Arc<Claimed>,
        driver: &dyn Driver,
        attempt: i32,
        lease: &mut Lease,
    ) -> Result<Result<(), CallFailed>, Interrupt> {
        let vm = claimed.vm.identifier.as_str();
        let name = claimed.snapshot.host_name.as_str();
        let (progress, mut updates) = Progress::channel();
        let limit = self.config.timeouts.of(claimed.task.kind());
        let began = Instant::now();
        let call = timeout(limit, async {
            match claimed.task.kind() {
                TaskKind::Build => driver.create(vm, name, &progress).await.map_err(Into::into),
                TaskKind::Update => match claimed.task.save_snapshot_id {
                    // The save first (idempotent, as every driver operation: a run taken
                    // up again finds it done), then the apply.
                    Some(save) => {
                        let save = host_snapshot_name(claimed.vm.id, save);
                        let saving = progress.stage(0, 50, "saving the current state");
                        driver
                            .create(vm, &save, &saving)
                            .await
                            .map_err(|e| CallFailed::doing(e, SAVE_FAILED))?;
                        let applying = progress.stage(50, 100, "applying");
                        driver
                            .apply(vm, name, &applying)
                            .await
                            .map_err(|e| CallFailed::doing(e, APPLY_AFTER_SAVE_FAILED))
                    }
                    None => driver.apply(vm, name, &progress).await.map_err(Into::into),
                },
                TaskKind::Scrub => {
                    let subtree = claimed.snapshot.remove_subtree;
                    driver
                        .delete(vm, name, subtree, &progress)
                        .await
                        .map_err(Into::into)
                }
            }
        });
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                done = &mut call => {
                    // Every report becomes an event, even one the call outran.
                    while let Ok(update) = updates.try_recv() {
                        self.report_later(claimed, attempt, update.percent, update.phase);
                    }
                    let done = done.unwrap_or_else(|_| Err(CallFailed::from(DriverError::Transient(format!(
                        "the host did not finish within {:.1}s",
                        limit.as_secs_f64()
                    )))));
                    let class = done.as_ref().err().map(|e| match e.error.is_transient() {
                        true => ErrorClass::Transient,
                        false => ErrorClass::Permanent,
                    });
                    let host = &claimed.host.name;
                    self.ledger.metrics().host_call(host, claimed.task.kind(), began.elapsed(), class);
                    return Ok(done);
                }
                Some(update) = updates.recv() => {
                    self.report_later(claimed, attempt, update.percent, update.phase);
                }
                // Dropping the call cuts it: another robot may take the task up soon.
                _ = lease.lost() => return Err(Interrupt::Lost),
            }
        }
    }

    /// Waits `delay` before a retry, keeping the lease. While the host is unreachable,
    /// the task lends its worker to other hosts' tasks, and takes one back to retry.
    async fn hold(
        &self,
        claimed: &Claimed,
        delay: Duration,
        worker: &mut Option<OwnedSemaphorePermit>,
        shutdown: &mut watch::Receiver<bool>,
        lease: &mut Lease,
    ) -> Result<(), Interrupt> {
        let health = self.ledger.drivers().health();
        if health.is_unreachable(claimed.host.id) {
            worker.take();
        }
        let until = tokio::time::Instant::now() + delay;
        loop {
            let waited = tokio::time::Instant::now() >= until;
            if waited && worker.is_some() {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until), if !waited => {}
                permit = Arc::clone(&self.workers).acquire_owned(), if waited => {
                    *worker = Some(permit.expect("never closed"));
                }
                _ = shutdown.changed() => return Err(Interrupt::Stopping),
                standing = lease.interrupted() => return Err(match standing {
                    Standing::Cancel => Interrupt::Cancel,
                    _ => Interrupt::Lost,
                }),
            }
        }
    }

    /// Records progress and waits for it; false when the lease was lost. A database
    /// error only loses the report.
    async fn report(
        &self,
        claimed: &Arc<Claimed>,
        attempt: i32,
        percent: Option<i32>,
        phase: &str,
        message: Option<(&str, Option<&str>)>,
    ) -> bool {
        let step = Step::Progress {
            attempt,
            percent,
            phase: phase.to_owned(),
            message: message.map(|(words, _)| words.to_owned()),
            detail: message.and_then(|(_, detail)| detail.map(str::to_owned)),
        };
        self.steps.write(claimed, step).await.unwrap_or_else(|err| {
            tracing::warn!(task = claimed.task.id, error = %err, "could not record progress");
            true
        })
    }

    /// Records the host's progress without waiting: the call goes on meanwhile, and a
    /// lost lease shows at the next heartbeat or at the end.
    fn report_later(
        &self,
        claimed: &Arc<Claimed>,
        attempt: i32,
        percent: Option<i32>,
        phase: String,
    ) {
        let step = Step::Progress {
            attempt,
            percent,
            phase,
            message: None,
            detail: None,
        };
        self.steps.send(claimed, step);
    }

    /// The next retry delay: exponential, capped, with ±25% jitter.
    fn backoff(&self, attempt: i32) -> Duration {
        let exp = self
            .config
            .retry_base
            .saturating_mul(1 << attempt.clamp(1, 16).saturating_sub(1));
        exp.min(self.config.retry_cap)
            .mul_f64(0.75 + fastrand::f64() / 2.0)
    }

    /// A failure, with what the host reports now (apply and delete need it).
    async fn failed(&self, claimed: &Claimed, driver: &dyn Driver, failure: Failure) -> Outcome {
        let host = match claimed.task.kind() {
            TaskKind::Build => None,
            _ => self.listing(claimed, driver).await,
        };
        Outcome::Failed { failure, host }
    }

    /// A cancel at a safe point, after `tried` attempts. A create that may have reached
    /// the host is undone.
    async fn cancelled(&self, claimed: &Claimed, driver: &dyn Driver, tried: i32) -> Outcome {
        match claimed.task.kind() {
            TaskKind::Build => {
                // Bounded as any host call: a host that hangs must not hold the task.
                let limit = self.config.timeouts.of(TaskKind::Scrub);
                let ignore = Progress::ignore();
                let vm = claimed.vm.identifier.as_str();
                let undo = driver.delete(vm, &claimed.snapshot.host_name, false, &ignore);
                let cleaned_up = tried == 0 || matches!(timeout(limit, undo).await, Ok(Ok(())));
                Outcome::Cancelled {
                    host: None,
                    cleaned_up,
                }
            }
            _ => Outcome::Cancelled {
                host: self.listing(claimed, driver).await,
                cleaned_up: false,
            },
        }
    }

    async fn listing(&self, claimed: &Claimed, driver: &dyn Driver) -> Option<Vec<HostSnapshot>> {
        let limit = self.config.timeouts.of(TaskKind::Scrub);
        match timeout(limit, driver.list(&claimed.vm.identifier)).await {
            Ok(Ok(listed)) => Some(listed),
            _ => None,
        }
    }
}

/// What the robot was doing when a call of an apply that saves first failed: its own
/// words, shown to tenants with the failure.
const SAVE_FAILED: &str = "saving the current state failed; nothing was applied";
const APPLY_AFTER_SAVE_FAILED: &str = "the current state was saved, but applying failed";

/// A failed host call, and what the robot was doing, when it says more than the call.
struct CallFailed {
    /// The driver's error (the host's own words).
    error: DriverError,
    /// The robot's words for the step that failed.
    doing: Option<&'static str>,
}

impl CallFailed {
    fn doing(error: DriverError, doing: &'static str) -> Self {
        Self {
            error,
            doing: Some(doing),
        }
    }

    /// The failure as the task records it.
    fn failure(&self) -> Failure {
        let failure = self.error.failure();
        match self.doing {
            Some(doing) => Failure {
                detail: Some(format!("{doing}: {}", self.error)),
                ..failure.context(doing)
            },
            None => failure,
        }
    }
}

impl From<DriverError> for CallFailed {
    fn from(error: DriverError) -> Self {
        Self { error, doing: None }
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
