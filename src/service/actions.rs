//! The five snapshot actions. Each is checked on its own and queues exactly one task; a
//! rejected action changes nothing.
//!
//! Actions that arrive together are recorded together (group commit): a combiner per
//! process takes whatever has queued up while its last batch was written, and checks and
//! writes it in one transaction, each kind of read and write one statement for the whole
//! batch on PostgreSQL (where a few combiners take turns at the queue, so that one
//! batch's round trips overlap another's; SQLite has one writer, and one combiner). A round trip and an executor start per row, twenty per action,
//! were most of what an action cost there. Each action is checked against its VM as the
//! transaction sees it, in the order a lone action meets its errors; a rejected one is
//! answered with its error and writes nothing. Two actions on one VM never share a
//! batch: the second waits for the next one, and finds the VM busy. If a batch's
//! transaction fails, each of its actions is tried again alone, so that one bad action
//! cannot take the others down with it and each gets its own error.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::handoff::{Reserved, Taker};
use super::tasks::{Note, event, lease_until, start_work};
use super::{Caller, Claimed, Core, ROBOT};
use crate::db::models::{Host, NewSnapshot, NewTask, NewTaskEvent, Snapshot, Task, Vm};
use crate::db::{self, Conn, hosts, snapshots, tasks, tokens, vms};
use crate::domain::lifecycle::{self, Plan};
use crate::domain::tree::{Changes, Node, Tree};
use crate::domain::{Rejection, SnapshotState, TaskKind, TaskState, names};
use crate::error::{AppError, AppResult};

/// The five snapshot actions and cancelling a task: what the API's callers ask for.
#[derive(Clone)]
pub struct Actions {
    pub(super) core: Arc<Core>,
}

/// Actions checked and written in one transaction at most.
const BATCH: usize = 64;

/// An accepted action: its snapshot and the task that carries it out.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub snapshot: Snapshot,
    pub task: Task,
}

/// What an action names: a VM, or one of its snapshots.
#[derive(Clone, Copy)]
enum Target {
    Vm(i64),
    Snapshot(i64),
}

/// What the rules decided for an action.
enum Step {
    Create {
        name: String,
        description: Option<String>,
        parent: Option<i64>,
        /// The policy whose run asks for it, and the run's slot.
        policy: Option<(i64, chrono::NaiveDateTime)>,
    },
    Change(Plan),
    /// An apply with the current state saved first, as a new snapshot (`save`).
    ApplySaving {
        save: NewChild,
        apply: Plan,
    },
}

impl Step {
    /// It makes a new snapshot (and so counts against the project's quota).
    fn creates(&self) -> bool {
        matches!(self, Self::Create { .. } | Self::ApplySaving { .. })
    }
}

/// A snapshot to create, a child of `parent`.
struct NewChild {
    name: String,
    description: Option<String>,
    parent: Option<i64>,
}

/// The rules of one action: given its VM's host and tree, what it does.
type Decide = Box<dyn Fn(&Host, &Tree) -> AppResult<Step> + Send + Sync>;

/// An action waiting for the combiner, and who waits for its answer.
struct Request {
    caller: Caller,
    target: Target,
    decide: Decide,
    reply: oneshot::Sender<AppResult<Accepted>>,
}

/// Sends actions to this process's combiner, which stops when every handle is gone.
pub(crate) struct Combiner {
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
    /// Creates a snapshot of VM `vm_id`, a child of its active snapshot.
    pub async fn create_snapshot(
        &self,
        caller: &Caller,
        vm_id: i64,
        name: &str,
        description: Option<&str>,
    ) -> AppResult<Accepted> {
        self.create_made_by(caller, vm_id, name, description, None)
            .await
    }

    /// [`Self::create_snapshot`], made by policy `policy.0`'s run of slot `policy.1`
    /// (recorded on the snapshot, which only that policy's retention may prune).
    pub(crate) async fn create_made_by(
        &self,
        caller: &Caller,
        vm_id: i64,
        name: &str,
        description: Option<&str>,
        policy: Option<(i64, chrono::NaiveDateTime)>,
    ) -> AppResult<Accepted> {
        let name = names::name("snapshot name", name)?;
        let description = names::description(description)?;
        let core = Arc::clone(&self.core);
        self.act(caller, Target::Vm(vm_id), move |host, tree| {
            let limit = core.snapshot_limit(host.max_snapshots_per_vm);
            let plan = lifecycle::create(tree, &name, Some(limit))?;
            Ok(Step::Create {
                name: name.clone(),
                description: description.clone(),
                parent: plan.parent,
                policy,
            })
        })
        .await
    }

    /// Applies snapshot `id`: the VM returns to it, and it becomes active.
    pub async fn apply_snapshot(&self, caller: &Caller, id: i64) -> AppResult<Accepted> {
        self.act(caller, Target::Snapshot(id), move |_, tree| {
            Ok(Step::Change(lifecycle::apply(tree, id)?))
        })
        .await
    }

    /// Applies snapshot `id` after saving the VM's current state as a new snapshot named
    /// `save_as`: one task, the save first; if the save fails, nothing is applied.
    pub async fn apply_snapshot_saving(
        &self,
        caller: &Caller,
        id: i64,
        save_as: &str,
    ) -> AppResult<Accepted> {
        let name = names::name("snapshot name", save_as)?;
        let core = Arc::clone(&self.core);
        self.act(caller, Target::Snapshot(id), move |host, tree| {
            let limit = core.snapshot_limit(host.max_snapshots_per_vm);
            let (save, apply) = lifecycle::apply_saving(tree, id, &name, Some(limit))?;
            Ok(Step::ApplySaving {
                save: NewChild {
                    name: name.clone(),
                    description: None,
                    parent: save.parent,
                },
                apply,
            })
        })
        .await
    }

    /// Reverts VM `vm_id` to its active snapshot.
    pub async fn revert_snapshot(&self, caller: &Caller, vm_id: i64) -> AppResult<Accepted> {
        self.act(caller, Target::Vm(vm_id), |_, tree| {
            Ok(Step::Change(lifecycle::revert(tree)?))
        })
        .await
    }

    /// Deletes snapshot `id` (its children move up) or, with `subtree`, it and all below.
    pub async fn delete_snapshot(
        &self,
        caller: &Caller,
        id: i64,
        subtree: bool,
    ) -> AppResult<Accepted> {
        self.act(caller, Target::Snapshot(id), move |_, tree| {
            Ok(Step::Change(lifecycle::delete(tree, id, subtree)?))
        })
        .await
    }

    /// Renames snapshot `id` or changes its description (`Some(None)` clears it); what is
    /// not given is kept. No task: the host knows snapshots by ids, not names.
    pub async fn update_snapshot(
        &self,
        caller: &Caller,
        id: i64,
        name: Option<&str>,
        description: Option<Option<&str>>,
    ) -> AppResult<Snapshot> {
        caller.require_operator()?;
        let name = name.map(|n| names::name("snapshot name", n)).transpose()?;
        let description = description.map(names::description).transpose()?;
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let conn = &mut tx.conn();
            let not_found = || AppError::not_found("snapshot", id);
            let current = snapshots::by_ids(conn, &[id])
                .await?
                .pop()
                .ok_or_else(not_found)?;
            let vm = vms::by_ids(conn, &[current.vm_id]).await?.pop();
            if !vm.is_some_and(|vm| caller.can_see(vm.project_id)) {
                return Err(not_found());
            }
            let tree = super::tasks::load_tree(conn, current.vm_id).await?;
            let name = name.unwrap_or_else(|| current.name.clone());
            lifecycle::rename(&tree, id, &name)?;
            let description = description.unwrap_or_else(|| current.description.clone());
            snapshots::set_details(conn, id, &name, description.as_deref())
                .await
                .map_err(|err| match db::is_unique_violation(&err) {
                    // Another rename to the same name committed first.
                    true => Rejection::NameTaken { name: name.clone() }.into(),
                    false => AppError::from(db::Error::from(err)),
                })
        }
        .await;
        tx.finish(result).await
    }

    /// Hands the action to the combiner and waits for its answer.
    async fn act(
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

    async fn record_in(&self, conn: &mut Conn<'_>, requests: &[Request]) -> AppResult<Recorded> {
        let mut fates: Vec<Fate> = requests.iter().map(|_| Fate::Open).collect();
        let (vms, mut works) = self.check(conn, requests, &mut fates).await?;
        if works.is_empty() {
            // Every action refused or left for later: nothing to write.
            return Ok(Recorded {
                results: fates
                    .into_iter()
                    .map(|fate| match fate {
                        Fate::Refused(err) => Some(Err(err)),
                        Fate::Later => None,
                        Fate::Open => Some(Err(AppError::internal("an open action had no work"))),
                    })
                    .collect(),
                handoffs: Vec::new(),
                queued: false,
            });
        }
        let alone = requests.len() == 1;
        write_snapshots(conn, requests, &vms, &mut works, alone).await?;

        let ids: Vec<i64> = works.iter().map(|w| w.target).collect();
        let mut rows: HashMap<i64, Snapshot> = snapshots::by_ids(conn, &ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let now = db::now();
        let new: Vec<NewTask> = works
            .iter()
            .map(|w| NewTask {
                kind: w.kind.as_str(),
                state: TaskState::Queued.as_str(),
                vm_id: w.vm,
                host_id: w.host.id,
                snapshot_id: w.target,
                prev_active_id: w.prev_active,
                save_snapshot_id: w.save,
                requested_by: &requests[w.request].caller.name,
                created_at: now,
            })
            .collect();
        let queued = tasks::insert_all(conn, &new).await.map_err(|e| {
            // The unique index over open tasks caught a race the lock did not.
            match (alone, db::is_unique_violation(&e)) {
                (true, true) => AppError::vm_busy(0),
                _ => e.into(),
            }
        })?;

        // Before the lease's end is computed: the lease holds at least until this plus its
        // length.
        let leased_at = std::time::Instant::now();
        let mut taken = match self.core.local.get() {
            Some(robot) => {
                let unreachable = self.core.drivers.health().unreachable_hosts();
                take_at_once(conn, robot.as_ref(), &works, &queued, &unreachable).await?
            }
            None => HashMap::new(),
        };
        let mut started = Vec::new();
        let mut events: Vec<NewTaskEvent> = Vec::new();
        let mut recorded = Recorded {
            results: Vec::new(),
            handoffs: Vec::new(),
            queued: false,
        };
        let mut accepted: HashMap<usize, Accepted> = HashMap::new();
        let owner: String = self
            .core
            .local
            .get()
            .map(|r| r.owner().to_owned())
            .unwrap_or_default();
        for (work, task) in works.iter().zip(queued) {
            let vm = vms[&work.vm].clone();
            let caller = &requests[work.request].caller;
            let message = format!("{} requested by {}", work.kind, caller.name);
            let note = Note {
                state: TaskState::Queued,
                progress: None,
                phase: None,
                message: Some(&message),
                detail: None,
            };
            events.push(event(&task, &vm, note));
            let snapshot = rows
                .remove(&work.target)
                .ok_or_else(|| AppError::internal(format!("snapshot {} vanished", work.target)))?;
            match taken.remove(&task.id) {
                Some((running, worker)) => {
                    let (changes, claimed, running) = start_work(
                        running,
                        vm,
                        work.host.clone(),
                        snapshot,
                        &work.tree,
                        (&owner, leased_at),
                    );
                    events.push(running);
                    accepted.insert(
                        work.request,
                        Accepted {
                            snapshot: claimed.snapshot.clone(),
                            task: claimed.task.clone(),
                        },
                    );
                    started.push((claimed.vm.clone(), changes));
                    recorded.handoffs.push((claimed, worker));
                }
                None => {
                    recorded.queued = true;
                    accepted.insert(work.request, Accepted { snapshot, task });
                }
            }
        }
        let all: Vec<_> = started.iter().map(|(vm, c)| (vm, c, ROBOT)).collect();
        snapshots::apply_all(conn, &all).await?;
        db::events::insert(conn, &events).await?;

        recorded.results = fates
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
        Ok(recorded)
    }

    /// Checks each request, in the order a lone action meets its errors: a live token,
    /// a target the caller may see, the role, a VM that is free and in a state to act
    /// on, then the rules. Returns the VMs read (locked) and what the accepted ones do.
    async fn check(
        &self,
        conn: &mut Conn<'_>,
        requests: &[Request],
        fates: &mut [Fate],
    ) -> AppResult<(HashMap<i64, Vm>, Vec<Work>)> {
        let mut token_ids: Vec<i64> = requests.iter().map(|r| r.caller.token_id).collect();
        token_ids.sort_unstable();
        token_ids.dedup();
        let live = tokens::live_of(conn, &token_ids, self.core.clock.now_naive()).await?;
        let named: Vec<i64> = requests
            .iter()
            .filter_map(|r| match r.target {
                Target::Snapshot(id) => Some(id),
                Target::Vm(_) => None,
            })
            .collect();
        let owners: HashMap<i64, i64> = if named.is_empty() {
            HashMap::new()
        } else {
            snapshots::by_ids(conn, &named)
                .await?
                .into_iter()
                .map(|s| (s.id, s.vm_id))
                .collect()
        };
        let not_found = |target: Target| match target {
            Target::Vm(id) => AppError::not_found("VM", id),
            Target::Snapshot(id) => AppError::not_found("snapshot", id),
        };
        let mut vm_of = vec![0; requests.len()];
        for (i, r) in requests.iter().enumerate() {
            let vm = match r.target {
                Target::Vm(id) => Some(id),
                Target::Snapshot(id) => owners.get(&id).copied(),
            };
            match (live.contains(&r.caller.token_id), vm) {
                (false, _) => fates[i] = Fate::Refused(AppError::revoked()),
                (true, None) => fates[i] = Fate::Refused(not_found(r.target)),
                (true, Some(vm)) => vm_of[i] = vm,
            }
        }
        let mut wanted: Vec<i64> = open(fates).map(|i| vm_of[i]).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let vms: HashMap<i64, Vm> = vms::lock_all(conn, &wanted)
            .await?
            .into_iter()
            .map(|vm| (vm.id, vm))
            .collect();
        let mut acting = HashSet::new();
        for i in open(fates).collect::<Vec<_>>() {
            let r = &requests[i];
            let visible = vms
                .get(&vm_of[i])
                .is_some_and(|vm| r.caller.can_see(vm.project_id));
            fates[i] = if !visible {
                Fate::Refused(not_found(r.target))
            } else if let Err(err) = r.caller.require_operator() {
                Fate::Refused(err)
            } else if !acting.insert(vm_of[i]) {
                Fate::Later
            } else {
                Fate::Open
            };
        }

        let acting: Vec<i64> = open(fates).map(|i| vm_of[i]).collect();
        let busy: HashMap<i64, i64> = tasks::open_of_each(conn, &acting)
            .await?
            .into_iter()
            .map(|t| (t.vm_id, t.id))
            .collect();
        for i in open(fates).collect::<Vec<_>>() {
            let vm = &vms[&vm_of[i]];
            if let Some(task) = busy.get(&vm.id) {
                fates[i] = Fate::Refused(AppError::vm_busy(*task));
            } else if let Err(err) = lifecycle::check_vm_state(vm.state) {
                fates[i] = Fate::Refused(err.into());
            }
        }
        let acting: Vec<i64> = open(fates).map(|i| vm_of[i]).collect();
        let mut host_ids: Vec<i64> = acting.iter().map(|vm| vms[vm].host_id).collect();
        host_ids.sort_unstable();
        host_ids.dedup();
        let hosts: HashMap<i64, Host> = if host_ids.is_empty() {
            HashMap::new()
        } else {
            hosts::by_ids(conn, &host_ids)
                .await?
                .into_iter()
                .map(|h| (h.id, h))
                .collect()
        };
        let mut trees = snapshots::nodes_of_all(conn, &acting).await?;

        let mut works = Vec::new();
        for i in open(fates).collect::<Vec<_>>() {
            let vm = &vms[&vm_of[i]];
            let Some(host) = hosts.get(&vm.host_id) else {
                fates[i] = Fate::Refused(AppError::internal(format!("VM {} has no host", vm.id)));
                continue;
            };
            let tree = Tree::new(trees.remove(&vm.id).unwrap_or_default());
            match (requests[i].decide)(host, &tree) {
                Ok(step) => works.push(Work {
                    request: i,
                    vm: vm.id,
                    host: host.clone(),
                    prev_active: tree.active(),
                    tree,
                    step: Some(step),
                    target: 0,
                    kind: TaskKind::Build,
                    save: None,
                }),
                Err(err) => fates[i] = Fate::Refused(err),
            }
        }
        check_quotas(conn, &vms, &mut works, fates).await?;
        Ok((vms, works))
    }
}

/// Refuses the creates (and saves) that would take a project past its quota: counted
/// over the project's VMs, with the ones accepted earlier in this batch, in order.
async fn check_quotas(
    conn: &mut Conn<'_>,
    vms: &HashMap<i64, Vm>,
    works: &mut Vec<Work>,
    fates: &mut [Fate],
) -> AppResult<()> {
    let mut projects: Vec<i64> = works
        .iter()
        .filter(|w| w.step.as_ref().is_some_and(Step::creates))
        .map(|w| vms[&w.vm].project_id)
        .collect();
    if projects.is_empty() {
        return Ok(());
    }
    projects.sort_unstable();
    projects.dedup();
    let quotas = db::projects::lock_quotas(conn, &projects).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let limited: Vec<i64> = quotas.keys().copied().collect();
    let mut used = snapshots::open_counts_of_projects(conn, &limited).await?;
    works.retain(|w| {
        let project = vms[&w.vm].project_id;
        let (Some(&quota), true) = (
            quotas.get(&project),
            w.step.as_ref().is_some_and(Step::creates),
        ) else {
            return true;
        };
        let count = used.entry(project).or_default();
        match lifecycle::quota(*count, Some(quota)) {
            Ok(()) => {
                *count += 1;
                true
            }
            Err(err) => {
                fates[w.request] = Fate::Refused(err.into());
                false
            }
        }
    });
    Ok(())
}

/// What became of a request in a batch.
enum Fate {
    /// Not refused (yet): accepted once its writes are done.
    Open,
    Refused(AppError),
    /// Another action on its VM is in this batch: it goes in the next.
    Later,
}

/// The requests still open.
fn open(fates: &[Fate]) -> impl Iterator<Item = usize> + '_ {
    fates
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Fate::Open))
        .map(|(i, _)| i)
}

/// An accepted action on its way to the database.
struct Work {
    /// Its request's index in the batch.
    request: usize,
    vm: i64,
    host: Host,
    /// The VM's tree, kept as the writes change it.
    tree: Tree,
    prev_active: Option<i64>,
    /// What the rules decided, until it is written.
    step: Option<Step>,
    /// The snapshot the task is for, once known.
    target: i64,
    kind: TaskKind,
    /// The snapshot an apply saves the current state as, once known.
    save: Option<i64>,
}

/// What a batch wrote, for after its commit.
struct Recorded {
    /// Per request: its answer, or `None` when it goes in the next batch.
    results: Vec<Option<AppResult<Accepted>>>,
    /// Tasks claimed for the robot here, with the workers reserved for them.
    handoffs: Vec<(Claimed, Reserved)>,
    /// A task was queued for a robot to claim.
    queued: bool,
}

/// Writes the new snapshots (REQUESTED, with their names on the host) and every work's
/// changes to its tree.
async fn write_snapshots(
    conn: &mut Conn<'_>,
    requests: &[Request],
    vms: &HashMap<i64, Vm>,
    works: &mut [Work],
    alone: bool,
) -> AppResult<()> {
    let now = db::now();
    type Creating<'a> = (
        usize,
        &'a str,
        Option<&'a str>,
        Option<i64>,
        Option<(i64, chrono::NaiveDateTime)>,
    );
    let creates: Vec<Creating> = works
        .iter()
        .enumerate()
        .filter_map(|(w, work)| match &work.step {
            Some(Step::Create {
                name,
                description,
                parent,
                policy,
            }) => Some((w, name.as_str(), description.as_deref(), *parent, *policy)),
            Some(Step::ApplySaving {
                save:
                    NewChild {
                        name,
                        description,
                        parent,
                    },
                ..
            }) => Some((w, name.as_str(), description.as_deref(), *parent, None)),
            Some(Step::Change(_)) | None => None,
        })
        .collect();
    let new: Vec<(&Vm, NewSnapshot, &str)> = creates
        .iter()
        .map(|&(w, name, description, parent, policy)| {
            let vm = &vms[&works[w].vm];
            let row = NewSnapshot {
                vm_id: vm.id,
                parent_id: parent,
                name,
                description,
                // Set below, once the id is known.
                host_name: "",
                active: false,
                state: SnapshotState::Requested.code(),
                created_at: now,
                updated_at: now,
                policy_id: policy.map(|p| p.0),
                policy_due_at: policy.map(|p| p.1),
            };
            (vm, row, requests[works[w].request].caller.name.as_str())
        })
        .collect();
    let rows = if new.is_empty() {
        Vec::new()
    } else {
        snapshots::insert_all(conn, &new).await.map_err(|e| {
            match (alone, db::is_unique_violation(&e)) {
                (true, true) => AppError::validation(format!(
                    "This VM already has a snapshot named {:?}; choose another name.",
                    new[0].1.name
                )),
                _ => e.into(),
            }
        })?
    };
    let created: Vec<(usize, i64)> = creates
        .iter()
        .map(|c| c.0)
        .zip(rows.iter().map(|r| r.id))
        .collect();
    drop(new);
    let host_names: Vec<(i64, String)> = created
        .iter()
        .map(|&(w, id)| (id, names::host_snapshot_name(works[w].vm, id)))
        .collect();
    snapshots::set_host_names(conn, &host_names).await?;
    let created: HashMap<usize, i64> = created.into_iter().collect();

    let mut changes: Vec<Changes> = Vec::with_capacity(works.len());
    let mut remove_subtree = Vec::new();
    for (w, work) in works.iter_mut().enumerate() {
        let change = match work.step.take().expect("each work is written once") {
            Step::Create { name, parent, .. } => {
                let id = created[&w];
                let change = lifecycle::created(id);
                work.tree.insert(Node {
                    id,
                    parent_id: parent,
                    name,
                    state: SnapshotState::Requested,
                    active: false,
                });
                (work.target, work.kind) = (id, TaskKind::Build);
                change
            }
            Step::Change(plan) => {
                if plan.remove_subtree {
                    remove_subtree.push(plan.target);
                }
                (work.target, work.kind) = (plan.target, plan.kind);
                plan.changes
            }
            Step::ApplySaving { save, apply } => {
                let id = created[&w];
                work.tree.insert(Node {
                    id,
                    parent_id: save.parent,
                    name: save.name,
                    state: SnapshotState::Requested,
                    active: false,
                });
                (work.target, work.kind, work.save) = (apply.target, apply.kind, Some(id));
                apply.changes
            }
        };
        work.tree.apply(&change);
        changes.push(change);
    }
    let all: Vec<_> = works
        .iter()
        .zip(&changes)
        .map(|(work, c)| {
            let actor = requests[work.request].caller.name.as_str();
            (&vms[&work.vm], c, actor)
        })
        .collect();
    snapshots::apply_all(conn, &all).await?;
    for target in remove_subtree {
        snapshots::set_remove_subtree(conn, target, true).await?;
    }
    Ok(())
}

/// Claims for the robot here, in the queueing transaction, the tasks just queued that it
/// has free workers for and whose hosts have room with nothing older waiting there: each
/// host's in the order queued, except on hosts known to be `unreachable`. Returns them
/// by id, with their workers.
async fn take_at_once(
    conn: &mut Conn<'_>,
    robot: &dyn Taker,
    works: &[Work],
    queued: &[Task],
    unreachable: &[i64],
) -> AppResult<HashMap<i64, (Task, Reserved)>> {
    let mut by_host: Vec<(&Host, Vec<&Task>)> = Vec::new();
    for (work, task) in works.iter().zip(queued) {
        match by_host.iter_mut().find(|(h, _)| h.id == work.host.id) {
            Some((_, tasks)) => tasks.push(task),
            None => by_host.push((&work.host, vec![task])),
        }
    }
    let mut taken = HashMap::new();
    let until = lease_until(robot.lease());
    for (host, mut waiting) in by_host {
        if unreachable.contains(&host.id) {
            continue;
        }
        waiting.sort_by_key(|t| t.id);
        let workers: Vec<Reserved> = waiting
            .iter()
            .map_while(|_| robot.reserve(host.id))
            .collect();
        if workers.is_empty() {
            continue;
        }
        let now = db::now();
        let limit = host.max_concurrent_tasks;
        let rooms =
            tasks::rooms_in_line(conn, host.id, limit, waiting[0].id, workers.len(), now).await?;
        let takes: Vec<(&Task, tasks::Room)> = waiting.into_iter().zip(rooms).collect();
        let running = tasks::take_all(conn, &takes, robot.owner(), now, until).await?;
        // Each task taken gets a worker; the rest go back with the unused workers.
        for (task, worker) in running.into_iter().zip(workers) {
            taken.insert(task.id, (task, worker));
        }
    }
    Ok(taken)
}
