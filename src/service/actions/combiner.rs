//! Actions that arrive together are recorded together (group commit): a combiner per
//! process takes whatever has queued up while its last batch was written, and checks and
//! writes it in one transaction, each kind of read and write one statement for the whole
//! batch on PostgreSQL (where a few combiners take turns at the queue, so that one
//! batch's round trips overlap another's; SQLite has one writer, and one combiner). A
//! round trip and an executor start per row, twenty per action, were most of what an
//! action cost there. Each action is checked against its VM as the
//! transaction sees it, in the order a lone action meets its errors; a rejected one is
//! answered with its error and writes nothing. Two actions on one VM never share a
//! batch: the second waits for the next one, and finds the VM busy. If a batch's
//! transaction fails, each of its actions is tried again alone, so that one bad action
//! cannot take the others down with it and each gets its own error.

use super::write::write_snapshots;
use super::*;

/// Actions checked and written in one transaction at most.
const BATCH: usize = 64;

/// Sends actions to this process's combiner, which stops when every handle is gone.
pub(crate) struct Combiner {
    /// Requests for the batch writers, which take turns receiving from it.
    queue: mpsc::UnboundedSender<Request>,
}

impl Combiner {
    /// Starts as many writers of batches as the database runs write transactions at once
    /// well ([`db::Db::writers`]), taking turns at the queue.
    fn spawn(actions: Actions) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        let requests = Arc::new(tokio::sync::Mutex::new(requests));
        for _ in 0..actions.core.db.writers() {
            tokio::spawn(combine(actions.clone(), Arc::clone(&requests)));
        }
        Self { queue }
    }
}

/// One writer of batches: whatever has queued when its turn at the queue comes.
async fn combine(
    actions: Actions,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if batch.is_empty() {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
        } else if let Ok(mut queue) = queue.try_lock() {
            // Actions left for this batch go first, then whatever else has come. When
            // another writer holds the queue (it waits there for new actions, which may
            // never come), the ones left go alone: waiting for its turn would leave them
            // unanswered until the next action arrives.
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        // A panic (a bug) fails only this batch's actions, whose answers are then dropped
        // ("the action combiner stopped"), not every action after it.
        let work = actions.act_batch(std::mem::take(&mut batch));
        match std::panic::AssertUnwindSafe(work).catch_unwind().await {
            Ok(later) => batch = later,
            Err(_) => tracing::error!("a batch of actions panicked; its actions failed"),
        }
    }
}

impl Actions {
    /// Hands the action to the combiner and waits for its answer.
    pub(super) async fn act(
        &self,
        caller: &Caller,
        target: Target,
        decide: impl Fn(&Host, &Tree) -> AppResult<Step> + Send + Sync + 'static,
    ) -> AppResult<Accepted> {
        let stopped = || AppError::internal("the action combiner stopped");
        let combiner = self
            .core
            .combiner
            .get_or_init(|| Combiner::spawn(self.clone()));
        let (reply, answer) = oneshot::channel();
        let request = Request {
            caller: caller.clone(),
            target,
            decide: Box::new(decide),
            reply,
        };
        combiner.queue.send(request).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Records `requests` and answers them; returns the ones left for the next batch.
    async fn act_batch(&self, requests: Vec<Request>) -> Vec<Request> {
        match self.record(&requests).await {
            Ok(recorded) => self.conclude(requests, recorded),
            Err(err) if requests.len() > 1 => {
                tracing::warn!(error = %err, actions = requests.len(), "a batch of actions failed; recording them one by one");
                for request in requests {
                    let recorded = self.record(std::slice::from_ref(&request)).await;
                    match recorded {
                        Ok(recorded) => {
                            // Alone, an action is never left for later.
                            let _ = self.conclude(vec![request], recorded);
                        }
                        Err(err) => {
                            let _ = request.reply.send(Err(err));
                        }
                    }
                }
                Vec::new()
            }
            Err(err) => {
                for request in requests {
                    let _ = request.reply.send(Err(err.clone()));
                }
                Vec::new()
            }
        }
    }

    /// After the commit: answers, hand-offs to the robot here, and wake-ups.
    fn conclude(&self, requests: Vec<Request>, recorded: Recorded) -> Vec<Request> {
        let mut later = Vec::new();
        let mut accepted = false;
        for (request, result) in requests.into_iter().zip(recorded.results) {
            match result {
                Some(result) => {
                    accepted |= result.is_ok();
                    let _ = request.reply.send(result);
                }
                None => later.push(request),
            }
        }
        if accepted {
            self.core.bus.committed();
        }
        if let Some(robot) = self.core.local.get() {
            for (claimed, worker) in recorded.handoffs {
                robot.hand_over(claimed, worker);
            }
        }
        if recorded.queued {
            // Robots here and in other processes hear of it.
            self.core.bus.announce_queued();
        }
        later
    }

    /// Checks and writes `requests` in one transaction.
    async fn record(&self, requests: &[Request]) -> AppResult<Recorded> {
        let mut tx = self.core.db.begin().await?;
        let result = self.record_in(&mut tx.conn(), requests).await;
        tx.finish(result).await
    }

    /// Checks `requests`, writes the accepted ones' snapshots and tasks, and starts on
    /// the robot here the tasks it can take at once.
    /// One function: one transaction's steps in order over the same `works`, `queued` and
    /// `taken`; its loop pairs each work with its task and starts it here or leaves it queued.
    async fn record_in(&self, conn: &mut Conn<'_>, requests: &[Request]) -> AppResult<Recorded> {
        let mut fates: Vec<Fate> = requests.iter().map(|_| Fate::Open).collect();
        let (vms, mut works) = self.check(conn, requests, &mut fates).await?;
        if works.is_empty() {
            // Every action refused or left for later: nothing to write.
            return Ok(Recorded::answering(fates, HashMap::new()));
        }
        let alone = requests.len() == 1;
        write_snapshots(conn, requests, &vms, &mut works, alone).await?;
        let queued = queue_tasks(conn, requests, &works, alone).await?;
        // Before the lease's end is computed: the lease holds at least until this plus its
        // length.
        let leased_at = std::time::Instant::now();
        let mut taken = match self.core.local.get() {
            Some(robot) => {
                let unreachable = claiming::unreachable(&self.core);
                let pairs: Vec<(&Host, &Task)> =
                    works.iter().map(|w| &w.host).zip(&queued).collect();
                take_at_once(conn, robot.as_ref(), &pairs, &unreachable).await?
            }
            None => HashMap::new(),
        };
        let ids: Vec<i64> = works.iter().map(|w| w.target).collect();
        let mut rows: HashMap<i64, Snapshot> = snapshots::by_ids(conn, &ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let owner = self.core.local.get().map(|r| r.owner().to_owned());
        let owner = owner.unwrap_or_default();
        let mut started = Vec::new();
        let mut events: Vec<NewTaskEvent> = Vec::new();
        let mut accepted: HashMap<usize, Accepted> = HashMap::new();
        let (mut handoffs, mut waiting) = (Vec::new(), false);
        for (work, task) in works.iter().zip(queued) {
            let vm = vms[&work.vm].clone();
            let message = format!(
                "{} requested by {}",
                work.kind, requests[work.request].caller.name
            );
            events.push(event(&task, &vm, Note::queued(&message)));
            let snapshot = rows
                .remove(&work.target)
                .ok_or_else(|| AppError::internal(format!("snapshot {} vanished", work.target)))?;
            let Some((running, worker)) = taken.remove(&task.id) else {
                waiting = true;
                accepted.insert(work.request, Accepted { snapshot, task });
                continue;
            };
            let (changes, claimed, running) = start_work(
                running,
                vm,
                work.host.clone(),
                snapshot,
                &work.tree,
                (&owner, leased_at),
            );
            events.push(running);
            let answer = Accepted {
                snapshot: claimed.snapshot.clone(),
                task: claimed.task.clone(),
            };
            accepted.insert(work.request, answer);
            started.push((claimed.vm.clone(), changes));
            handoffs.push((claimed, worker));
        }
        let all: Vec<_> = started.iter().map(|(vm, c)| (vm, c, ROBOT)).collect();
        snapshots::apply_all(conn, &all).await?;
        db::events::insert(conn, &events).await?;
        let mut recorded = Recorded::answering(fates, accepted);
        (recorded.handoffs, recorded.queued) = (handoffs, waiting);
        Ok(recorded)
    }
}

/// Inserts the accepted works' tasks, QUEUED, one statement for all; returns them in
/// the works' order.
async fn queue_tasks(
    conn: &mut Conn<'_>,
    requests: &[Request],
    works: &[Work],
    alone: bool,
) -> AppResult<Vec<Task>> {
    let now = db::now();
    let new: Vec<NewTask> = works
        .iter()
        .map(|w| NewTask {
            kind: w.kind.as_str(),
            state: TaskState::Queued.as_str(),
            vm_id: w.vm,
            project_id: w.project,
            host_id: w.host.id,
            snapshot_id: w.target,
            prev_active_id: w.prev_active,
            save_snapshot_id: w.save,
            requested_by: &requests[w.request].caller.name,
            created_at: now,
        })
        .collect();
    tasks::insert_all(conn, &new).await.map_err(|e| {
        // The unique index over open tasks caught a race the VM's lock did not: alone,
        // the action is told its VM is busy; in a batch, each is tried again alone.
        match (alone, db::is_unique_violation(&e)) {
            (true, true) => AppError::vm_busy(None),
            _ => e.into(),
        }
    })
}

/// What a batch wrote, for after its commit.
pub(super) struct Recorded {
    /// Per request: its answer, or `None` when it goes in the next batch.
    results: Vec<Option<AppResult<Accepted>>>,
    /// Tasks claimed for the robot here, with the workers reserved for them.
    handoffs: Vec<(Claimed, Reserved)>,
    /// A task was queued for a robot to claim.
    queued: bool,
}

impl Recorded {
    /// The answers of a batch whose fates are `fates`, the accepted ones from `accepted`
    /// (by request), with nothing handed off or left queued yet.
    fn answering(fates: Vec<Fate>, mut accepted: HashMap<usize, Accepted>) -> Self {
        let results = fates
            .into_iter()
            .enumerate()
            .map(|(i, fate)| match fate {
                Fate::Refused(err) => Some(Err(err)),
                Fate::Later => None,
                Fate::Open => Some(
                    accepted
                        .remove(&i)
                        .ok_or_else(|| AppError::internal("an accepted action was not recorded")),
                ),
            })
            .collect();
        Self {
            results,
            handoffs: Vec::new(),
            queued: false,
        }
    }
}
