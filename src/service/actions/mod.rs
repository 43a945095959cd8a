//! The five snapshot actions. Each is checked on its own and queues exactly one task; a
//! rejected action changes nothing. The public actions are here; how actions that arrive
//! together are checked and written in one transaction is in [`combiner`], [`check`]
//! and [`write`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::claiming::{self, take_at_once};
use super::handoff::Reserved;
use super::tasks::{Note, event, start_work};
use super::{Caller, Claimed, Core, ROBOT};
use crate::db::models::{Host, NewSnapshot, NewTask, NewTaskEvent, Snapshot, Task, Vm};
use crate::db::{self, Conn, hosts, snapshots, tasks, tokens, vms};
use crate::domain::lifecycle::{self, Plan};
use crate::domain::offer::precheck;
use crate::domain::tree::{Changes, Node, Tree};
use crate::domain::{Rejection, SnapshotState, TaskKind, TaskState, names};
use crate::error::{AppError, AppResult};

mod check;
mod combiner;
mod write;

pub(crate) use combiner::Combiner;

/// The five snapshot actions and cancelling a task: what the API's callers ask for.
#[derive(Clone)]
pub struct Actions {
    /// What every part of the service shares (the combiner among it).
    pub(super) core: Arc<Core>,
}

/// An accepted action: its snapshot and the task that carries it out.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The snapshot the task acts on (for a create, the new one), as the action left it.
    pub snapshot: Snapshot,
    /// The task that carries it out: QUEUED, or RUNNING when the robot here took it at once.
    pub task: Task,
}

/// What an action names: a VM, or one of its snapshots.
#[derive(Clone, Copy)]
enum Target {
    /// The VM of this id (create, revert).
    Vm(i64),
    /// The snapshot of this id (apply, delete).
    Snapshot(i64),
}

impl Target {
    /// The error for a target that does not exist, or that the caller may not see.
    fn not_found(self) -> AppError {
        match self {
            Self::Vm(id) => AppError::not_found("VM", id),
            Self::Snapshot(id) => AppError::not_found("snapshot", id),
        }
    }
}

/// What the rules decided for an action.
enum Step {
    /// A new snapshot under `parent`.
    Create {
        name: String,
        description: Option<String>,
        parent: Option<i64>,
        /// The policy whose run asks for it, and the run's slot.
        policy: Option<(i64, chrono::NaiveDateTime)>,
        /// Kept from every delete until unprotected.
        protected: bool,
    },
    /// A change to existing snapshots (apply, revert, delete), as the domain planned it.
    Change(Plan),
    /// An apply with the current state saved first, as a new snapshot (`save`).
    ApplySaving { save: NewChild, apply: Plan },
}

impl Step {
    /// It makes a new snapshot (and so counts against the project's quota).
    fn creates(&self) -> bool {
        matches!(self, Self::Create { .. } | Self::ApplySaving { .. })
    }
}

/// A snapshot to create, a child of `parent`.
struct NewChild {
    /// Its name, already checked (`names::name`).
    name: String,
    /// Its description (none for an apply's save).
    description: Option<String>,
    /// The VM's active snapshot when the action was checked (`None`: it becomes a root).
    parent: Option<i64>,
}

/// The rules of one action: given its VM's host and tree, what it does.
type Decide = Box<dyn Fn(&Host, &Tree) -> AppResult<Step> + Send + Sync>;

/// An action waiting for the combiner, and who waits for its answer.
struct Request {
    /// Who asks: their token must still be live, and their role and project decide.
    caller: Caller,
    /// The VM or snapshot the action names.
    target: Target,
    /// The action's rules, run on its VM's host and tree as the batch's transaction sees them.
    decide: Decide,
    /// Gets the answer once the batch has committed (or failed).
    reply: oneshot::Sender<AppResult<Accepted>>,
}

/// What a create asks for besides its VM.
#[derive(Clone, Copy, Debug, Default)]
pub struct Create<'a> {
    /// The new snapshot's name (checked here).
    pub name: &'a str,
    /// Its description; `None`: none.
    pub description: Option<&'a str>,
    /// Kept from every delete until unprotected.
    pub protected: bool,
}

impl Actions {
    /// Creates a snapshot of VM `vm_id`, a child of its active snapshot.
    pub async fn create_snapshot(
        &self,
        caller: &Caller,
        vm_id: i64,
        ask: Create<'_>,
    ) -> AppResult<Accepted> {
        self.create_made_by(caller, vm_id, ask, None).await
    }

    /// [`Self::create_snapshot`], made by policy `policy.0`'s run of slot `policy.1`
    /// (recorded on the snapshot, which only that policy's retention may prune).
    pub(crate) async fn create_made_by(
        &self,
        caller: &Caller,
        vm_id: i64,
        ask: Create<'_>,
        policy: Option<(i64, chrono::NaiveDateTime)>,
    ) -> AppResult<Accepted> {
        let name = names::name("snapshot name", ask.name)?;
        let description = names::description(ask.description)?;
        let protected = ask.protected;
        let core = Arc::clone(&self.core);
        self.act(caller, Target::Vm(vm_id), move |host, tree| {
            let limit = core.snapshot_limit(host.max_snapshots_per_vm);
            let plan = lifecycle::create(tree, &name, Some(limit))?;
            Ok(Step::Create {
                name: name.clone(),
                description: description.clone(),
                parent: plan.parent,
                policy,
                protected,
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
        protected: Option<bool>,
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
            if protected.is_some() {
                lifecycle::protect(&tree, id)?;
            }
            let description = description.unwrap_or_else(|| current.description.clone());
            let protected = protected.unwrap_or(current.protected);
            snapshots::set_details(conn, id, &name, description.as_deref(), protected)
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
}

/// What became of a request in a batch.
enum Fate {
    /// Not refused (yet): accepted once its writes are done.
    Open,
    /// Refused, with the error its caller gets.
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
    /// The VM acted on.
    vm: i64,
    /// The VM's project, copied onto the task.
    project: i64,
    /// The VM's host: its snapshot limit, and its task limit for a take at once.
    host: Host,
    /// The VM's tree, kept as the writes change it.
    tree: Tree,
    /// The VM's active snapshot before the action, stored on the task (`prev_active_id`) so
    /// that a failed one can put it back.
    prev_active: Option<i64>,
    /// What the rules decided, until it is written.
    step: Option<Step>,
    /// The snapshot the task is for, once known.
    target: i64,
    /// The task's kind, once known (`Build` until then).
    kind: TaskKind,
    /// The snapshot an apply saves the current state as, once known.
    save: Option<i64>,
}
