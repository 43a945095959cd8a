//! Running one claimed task: its attempts on the host, with retries and backoff within
//! the robot's limits, its lease held and its progress reported meanwhile, and its end
//! recorded through the service.

use super::*;

impl Robot {
    /// Runs one claimed task to its end, or until it is interrupted.
    pub(super) async fn work(
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
    /// Long mostly because of its match: one arm per way `run` ends, each logging and recording
    /// it; around it, the task's entry in `running`, added before and removed after.
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

    /// Runs `claimed`'s attempts until one succeeds, one fails for good, the tries or the time run
    /// out, or the run is interrupted; a cancel ends it at the next safe point.
    /// One function: the retry loop reads in order, any step may end the run with its own
    /// `Ending`, and all share the lease, the attempt number and the cancel flag.
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
        let (progress, mut updates) = Progress::channel();
        let limit = self.config.timeouts.of(claimed.task.kind());
        let began = Instant::now();
        let call = timeout(limit, drive(driver, claimed, &progress));
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

/// The driver call that does `claimed`'s work, reporting to `progress`.
async fn drive(
    driver: &dyn Driver,
    claimed: &Claimed,
    progress: &Progress,
) -> Result<(), CallFailed> {
    let vm = claimed.vm.identifier.as_str();
    let name = claimed.snapshot.host_name.as_str();
    match claimed.task.kind() {
        TaskKind::Build => driver.create(vm, name, progress).await.map_err(Into::into),
        TaskKind::Update => match claimed.task.save_snapshot_id {
            // The save first (idempotent, as every driver operation: a run taken up again
            // finds it done), then the apply.
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
            None => driver.apply(vm, name, progress).await.map_err(Into::into),
        },
        TaskKind::Scrub => driver
            .delete(vm, name, claimed.snapshot.remove_subtree, progress)
            .await
            .map_err(Into::into),
    }
}
