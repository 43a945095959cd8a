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
use crate::domain::lifetime;
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
        /// The expiry asked for (`None`: none; the project's maximum lifetime may set one).
        expires_at: Option<chrono::NaiveDateTime>,
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
    /// When the expiry sweep deletes it; `None`: never, unless its project's maximum
    /// lifetime says when.
    pub expires_at: Option<chrono::NaiveDateTime>,
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
        let expires_at = ask.expires_at;
        // Refused before any lock; the project's maximum is checked with its quota.
        lifetime::expiry(
            expires_at,
            None,
            self.core.clock.now_naive(),
            self.core.clock.now_naive(),
        )?;
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
                expires_at,
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

    /// The expiry sweep's delete of snapshot `id` (see `domain::lifetime::expire`),
    /// asked by `caller` (snaptree's own, for [`Reason::Expired`](crate::domain::Reason)).
    pub(crate) async fn expire_snapshot(&self, caller: &Caller, id: i64) -> AppResult<Accepted> {
        let now = self.core.clock.now_naive();
        self.act(caller, Target::Snapshot(id), move |_, tree| {
            Ok(Step::Change(lifetime::expire(tree, id, now)?))
        })
        .await
    }

    /// Changes snapshot `id`'s name, description, protection or expiry, as `change`
    /// says; what it leaves out is kept. No task: the host knows snapshots by ids, not
    /// names, and protection and expiry are snaptree's.
    pub async fn update_snapshot(
        &self,
        caller: &Caller,
        id: i64,
        change: Change<'_>,
    ) -> AppResult<Snapshot> {
        caller.require_operator()?;
        let name = change
            .name
            .map(|n| names::name("snapshot name", n))
            .transpose()?;
        let description = change.description.map(names::description).transpose()?;
        let now = self.core.clock.now_naive();
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let conn = &mut tx.conn();
            let not_found = || AppError::not_found("snapshot", id);
            let vm_id = snapshots::by_ids(conn, &[id])
                .await?
                .pop()
                .ok_or_else(not_found)?
                .vm_id;
            // The VM's lock, as actions take it: an expiry changed here and the expiry
            // sweep's delete of the snapshot see each other, one after the other.
            let vm = vms::lock_all(conn, &[vm_id])
                .await?
                .pop()
                .filter(|vm| caller.can_see(vm.project_id))
                .ok_or_else(not_found)?;
            let current = snapshots::by_ids(conn, &[id])
                .await?
                .pop()
                .ok_or_else(not_found)?;
            let tree = super::tasks::load_tree(conn, vm_id).await?;
            let name = name.unwrap_or_else(|| current.name.clone());
            lifecycle::rename(&tree, id, &name)?;
            if change.protected.is_some() || change.expires_at.is_some() {
                lifecycle::protect(&tree, id)?;
            }
            let expires_at = match change.expires_at {
                None => current.expires_at,
                Some(asked) => {
                    let max = db::projects::by_id(conn, vm.project_id)
                        .await?
                        .and_then(|p| p.max_lifetime_hours);
                    lifetime::change_expiry(asked, max, current.created_at, now)?
                }
            };
            let details = snapshots::Details {
                name: &name,
                description: match &description {
                    Some(asked) => asked.as_deref(),
                    None => current.description.as_deref(),
                },
                protected: change.protected.unwrap_or(current.protected),
                expires_at,
            };
            snapshots::set_details(conn, id, details)
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

/// What an update changes in a snapshot; `None` keeps what it has.
#[derive(Clone, Copy, Debug, Default)]
pub struct Change<'a> {
    /// A new name (checked here).
    pub name: Option<&'a str>,
    /// A new description; `Some(None)` clears it.
    pub description: Option<Option<&'a str>>,
    /// Protect or unprotect it.
    pub protected: Option<bool>,
    /// A new expiry; `Some(None)` removes it (refused when its project has a maximum
    /// lifetime).
    pub expires_at: Option<Option<chrono::NaiveDateTime>>,
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
    /// When the snapshot it creates expires, once its project's lifetime is checked.
    expires: Option<chrono::NaiveDateTime>,
}
