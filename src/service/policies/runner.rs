//! The policy runner, which goes with every robot: each tick it takes the slots that are
//! due, tries the pending runs fairly across projects, and prunes what retention says.

use super::*;

/// Runs policies every `every` until `stop`.
pub fn spawn_runner(
    service: Service,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = service.run_policies().await {
                        tracing::warn!(error = %err, "could not run the snapshot policies");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}

impl Service {
    /// One tick of the runner.
    pub async fn run_policies(&self) -> AppResult<()> {
        let now = self.clock().now();
        self.take_due_slots(now).await?;
        self.try_pending().await?;
        self.prune(now).await
    }

    /// Takes each due slot (if no other process took it first) and records its runs.
    async fn take_due_slots(&self, now: DateTime<Utc>) -> AppResult<()> {
        let due = {
            let mut conn = self.core.db.reader().await?;
            policies::due(&mut conn.conn(), now.naive_utc()).await?
        };
        for p in due {
            let schedule = match schedule_of(&p) {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(policy = p.id, error = %err, "a policy's schedule is unreadable");
                    continue;
                }
            };
            let slot = slot_at(&schedule, &p, now);
            let Some(next) = schedule.next_after(now) else {
                continue;
            };
            let mut tx = self.core.db.begin().await?;
            let result = async {
                let conn = &mut tx.conn();
                if !policies::take_slot(conn, p.id, p.next_due_at, next.naive_utc()).await? {
                    return AppResult::Ok(());
                }
                let at = db::now();
                let missed = policies::miss_older(conn, p.id, slot.naive_utc(), at).await?;
                if self.missed(conn, &p, missed).await? {
                    return Ok(());
                }
                let runs: Vec<NewPolicyRun> = targets(conn, &p)
                    .await?
                    .into_iter()
                    .map(|vm| NewPolicyRun {
                        policy_id: p.id,
                        vm_id: vm.id,
                        due_at: slot.naive_utc(),
                        state: "PENDING",
                        created_at: at,
                        updated_at: at,
                    })
                    .collect();
                tracing::info!(policy = p.id, slot = %slot, vms = runs.len(), "policy slot taken");
                policies::insert_runs(conn, &runs).await?;
                Ok(())
            }
            .await;
            tx.finish(result).await?;
        }
        Ok(())
    }

    /// The caller a policy acts as: its token, named after it; `None` once the token is
    /// revoked (the policy then makes nothing).
    async fn policy_caller(
        &self,
        conn: &mut db::Conn<'_>,
        p: &Policy,
    ) -> AppResult<Option<Caller>> {
        let Some(token) = tokens::by_id(conn, p.token_id).await? else {
            return Ok(None);
        };
        if !token.is_live_at(self.clock().now_naive()) {
            return Ok(None);
        }
        Ok(Some(Caller {
            token_id: token.id,
            name: format!("policy {}", p.name),
            project_id: token.project_id,
            role: token.role(),
            expires_at: token.expires_at,
            reason: crate::domain::Reason::Policy,
        }))
    }

    /// Tries each pending run that no process holds.
    async fn try_pending(&self) -> AppResult<()> {
        let pending = {
            let mut conn = self.core.db.reader().await?;
            policies::pending(&mut conn.conn(), db::now(), RUNS_PER_PROJECT, RUNS_PER_TICK).await?
        };
        for run in pending {
            let mut tx = self.core.db.begin().await?;
            let claimed = async {
                let conn = &mut tx.conn();
                let at = db::now();
                if !policies::claim(conn, run.id, at, at + CLAIM).await? {
                    return Ok(None);
                }
                let Some(p) = policies::by_id(conn, run.policy_id).await? else {
                    return Ok(None);
                };
                let vm = vms::by_id(conn, run.vm_id).await?;
                let caller = self.policy_caller(conn, &p).await?;
                let why = match (&vm, &caller) {
                    (None, _) => Some("the VM is gone"),
                    (_, None) => {
                        let token = tokens::by_id(conn, p.token_id).await?;
                        stopped_because(token.as_ref(), self.clock().now_naive())
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    policies::refused(conn, run.id, why, None, at).await?;
                }
                AppResult::Ok(Some((p, vm, caller)))
            }
            .await;
            let Some((p, Some(vm), Some(caller))) = tx.finish(claimed).await? else {
                continue;
            };
            // A policy's work is its token's: it spends the token's budget of requests,
            // as the token's own requests do.
            if let Err(err) = self.throttle().request(&caller) {
                let mut tx = self.core.db.begin().await?;
                let result = self
                    .record_run(&mut tx.conn(), &run, &p, &vm, "", Err(err))
                    .await;
                tx.finish(result).await?;
                continue;
            }
            self.try_run(&run, &p, &vm, &caller).await?;
        }
        Ok(())
    }

    async fn try_run(
        &self,
        run: &PolicyRun,
        p: &Policy,
        vm: &Vm,
        caller: &Caller,
    ) -> AppResult<()> {
        let zone = schedule_of(p)
            .map(|s| s.zone())
            .unwrap_or(chrono_tz::Tz::UTC);
        let name = policy::snapshot_name(
            &p.name_template,
            &p.name,
            &vm.name,
            run.due_at.and_utc(),
            zone,
        );
        let description = format!("made by policy {:?}", p.name);
        let asked = self
            .actions()
            .create_made_by(
                caller,
                vm.id,
                Create {
                    name: &name,
                    description: Some(&description),
                    protected: false,
                    // Retention prunes a policy's snapshots; a project's maximum
                    // lifetime still applies.
                    expires_at: None,
                },
                Some((p.id, run.due_at)),
            )
            .await;
        let mut tx = self.core.db.begin().await?;
        let result = self
            .record_run(&mut tx.conn(), run, p, vm, &name, asked)
            .await;
        tx.finish(result).await
    }

    /// Records what became of run `run`'s ask.
    async fn record_run(
        &self,
        conn: &mut db::Conn<'_>,
        run: &PolicyRun,
        p: &Policy,
        vm: &Vm,
        name: &str,
        asked: AppResult<crate::service::Accepted>,
    ) -> AppResult<()> {
        let at = db::now();
        match asked {
            Ok(accepted) => {
                tracing::info!(
                    policy = p.id,
                    vm = vm.id,
                    task = accepted.task.id,
                    "policy run asked for its snapshot"
                );
                policies::created(
                    conn,
                    run.id,
                    accepted.snapshot.id,
                    Some(accepted.task.id),
                    at,
                )
                .await?;
                policies::made(conn, p.id).await?;
            }
            Err(err) => {
                // A run taken up again after a crash finds its snapshot made.
                let own = policies::made_by(conn, p.id, vm.id)
                    .await?
                    .into_iter()
                    .find(|(_, due, _, made, ..)| *made == name && *due == Some(run.due_at));
                if let Some((snapshot, ..)) = own {
                    policies::created(conn, run.id, snapshot, None, at).await?;
                    return Ok(());
                }
                let retry = match err.code() {
                    // Busy, at a limit, out of budget, or the VM not running: later, and
                    // later each time.
                    "VM_BUSY" | "LIMIT_REACHED" | "INVALID_STATE" | "RATE_LIMITED" | "INTERNAL"
                    | "TIMEOUT" => Some(at + retry_after(run.attempts + 1)),
                    _ => None,
                };
                tracing::info!(policy = p.id, vm = vm.id, error = %err, retry = retry.is_some(), "policy run refused");
                policies::refused(conn, run.id, &err.public_message(), retry, at).await?;
                if retry.is_none() {
                    self.missed(conn, p, 1).await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes, per VM with no task under way, the oldest snapshot retention prunes.
    async fn prune(&self, now: DateTime<Utc>) -> AppResult<()> {
        let all = {
            let mut conn = self.core.db.reader().await?;
            policies::list(&mut conn.conn(), None).await?
        };
        for p in all
            .iter()
            .filter(|p| p.keep_last.is_some() || p.max_age_seconds.is_some())
        {
            let (doomed, caller) = {
                let mut conn = self.core.db.reader().await?;
                let conn = &mut conn.conn();
                let Some(caller) = self.policy_caller(conn, p).await? else {
                    continue;
                };
                let mut doomed = Vec::new();
                for vm in targets(conn, p).await? {
                    if tasks::open_of_vm(conn, vm.id).await?.is_some() {
                        continue;
                    }
                    let made = made_by(conn, p, vm.id).await?;
                    if let Some(first) = policy::prune(&made, retention_of(p), now).first() {
                        doomed.push(*first);
                    }
                }
                (doomed, caller)
            };
            for id in doomed {
                match self.actions().delete_snapshot(&caller, id, false).await {
                    Ok(accepted) => tracing::info!(
                        policy = p.id,
                        snapshot = id,
                        task = accepted.task.id,
                        "policy prunes a snapshot"
                    ),
                    // Busy since, or no longer deletable: the next tick sees.
                    Err(err) => {
                        tracing::debug!(policy = p.id, snapshot = id, error = %err, "policy could not prune yet")
                    }
                }
            }
        }
        Ok(())
    }
}
