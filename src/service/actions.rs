//! The five snapshot actions. Each is checked and recorded in one transaction and queues
//! exactly one task; a rejected action changes nothing.

use super::tasks::{Note, begin_work, event, lease_until, load_tree};
use super::{Caller, Service};
use crate::db::models::{Host, NewSnapshot, NewTask, Snapshot, Task, Vm};
use crate::db::{self, Conn, hosts, snapshots, tasks, vms};
use crate::domain::lifecycle::{self, Plan};
use crate::domain::tree::{Node, Tree};
use crate::domain::{SnapshotState, TaskKind, TaskState, names};
use crate::error::{AppError, AppResult};

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
    },
    Change(Plan),
}

impl Service {
    /// Creates a snapshot of VM `vm_id`, a child of its active snapshot.
    pub async fn create_snapshot(
        &self,
        caller: &Caller,
        vm_id: i64,
        name: &str,
        description: Option<&str>,
    ) -> AppResult<Accepted> {
        let name = names::name("snapshot name", name)?;
        let description = names::description(description)?;
        self.act(caller, Target::Vm(vm_id), |host, tree| {
            let limit = self.snapshot_limit(host.max_snapshots_per_vm);
            let plan = lifecycle::create(tree, &name, Some(limit))?;
            Ok(Step::Create {
                name,
                description,
                parent: plan.parent,
            })
        })
        .await
    }

    /// Applies snapshot `id`: the VM returns to it, and it becomes active.
    pub async fn apply_snapshot(&self, caller: &Caller, id: i64) -> AppResult<Accepted> {
        self.act(caller, Target::Snapshot(id), |_, tree| {
            lifecycle::apply(tree, id).map(Step::Change)
        })
        .await
    }

    /// Reverts VM `vm_id` to its active snapshot.
    pub async fn revert_snapshot(&self, caller: &Caller, vm_id: i64) -> AppResult<Accepted> {
        self.act(caller, Target::Vm(vm_id), |_, tree| {
            lifecycle::revert(tree).map(Step::Change)
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
        self.act(caller, Target::Snapshot(id), |_, tree| {
            lifecycle::delete(tree, id, subtree).map(Step::Change)
        })
        .await
    }

    /// The shape every action shares: find and lock the VM, check who asks and whether
    /// the VM is free, let `decide` apply the rules, then write the changes and the task.
    async fn act(
        &self,
        caller: &Caller,
        target: Target,
        decide: impl FnOnce(&Host, &Tree) -> AppResult<Step> + Send,
    ) -> AppResult<Accepted> {
        let mut tx = self.begin_for(caller).await?;
        let result = async {
            let mut conn = tx.conn();
            let vm = lock_target(&mut conn, caller, target).await?;
            caller.require_operator()?;
            if let Some(open) = tasks::open_of_vm(&mut conn, vm.id).await? {
                return Err(AppError::vm_busy(vm.id, open.id));
            }
            lifecycle::check_vm_state(vm.state)?;
            let host = hosts::by_id(&mut conn, vm.host_id)
                .await?
                .ok_or_else(|| AppError::internal(format!("VM {} has no host", vm.id)))?;
            let mut tree = load_tree(&mut conn, vm.id).await?;
            let step = decide(&host, &tree)?;
            let prev_active = tree.active();
            let (target, kind) = match step {
                Step::Create {
                    name,
                    description,
                    parent,
                } => {
                    let id = insert_requested(&mut conn, caller, &vm, &name, description, parent)
                        .await?;
                    let changes = lifecycle::created(id);
                    snapshots::apply(&mut conn, &vm, &changes, &caller.name).await?;
                    tree.insert(Node {
                        id,
                        parent_id: parent,
                        name,
                        state: SnapshotState::Requested,
                        active: false,
                    });
                    tree.apply(&changes);
                    (id, TaskKind::Build)
                }
                Step::Change(plan) => {
                    snapshots::apply(&mut conn, &vm, &plan.changes, &caller.name).await?;
                    tree.apply(&plan.changes);
                    if plan.remove_subtree {
                        snapshots::set_remove_subtree(&mut conn, plan.target, true).await?;
                    }
                    (plan.target, plan.kind)
                }
            };
            let snapshot = snapshots::by_id(&mut conn, target)
                .await?
                .ok_or_else(|| AppError::internal(format!("snapshot {target} vanished")))?;
            let task = tasks::insert(
                &mut conn,
                NewTask {
                    kind: kind.as_str(),
                    state: TaskState::Queued.as_str(),
                    vm_id: vm.id,
                    host_id: vm.host_id,
                    snapshot_id: snapshot.id,
                    prev_active_id: prev_active,
                    requested_by: &caller.name,
                    created_at: db::now(),
                },
            )
            .await
            .map_err(|e| {
                // The unique index over open tasks caught a race the lock did not.
                if db::is_unique_violation(&e) {
                    AppError::vm_busy(vm.id, 0)
                } else {
                    e.into()
                }
            })?;
            let message = format!("{} requested by {}", kind, caller.name);
            let note = Note {
                state: TaskState::Queued,
                progress: None,
                phase: None,
                message: Some(&message),
            };
            let queued = event(&task, &vm, note);
            // A free worker of this process's robot takes the task in this transaction.
            let slot = self
                .local
                .get()
                .and_then(|robot| Some((robot, robot.reserve(vm.host_id)?)));
            let room = match slot {
                Some(_) => {
                    tasks::first_in_line(&mut conn, &task, host.max_concurrent_tasks, db::now())
                        .await?
                }
                None => None,
            };
            let taken = match (slot, room) {
                (Some((robot, worker)), Some(room)) => {
                    let until = lease_until(robot.lease());
                    tasks::take(&mut conn, &task, robot.owner(), db::now(), until, room)
                        .await?
                        .map(|taken| (robot, worker, taken))
                }
                _ => None,
            };
            let Some((robot, worker, taken)) = taken else {
                db::events::insert(&mut conn, &[queued]).await?;
                return Ok((Accepted { snapshot, task }, None));
            };
            let (claimed, running) =
                begin_work(&mut conn, taken, vm, host, snapshot, &tree, robot.owner()).await?;
            db::events::insert(&mut conn, &[queued, running]).await?;
            let accepted = Accepted {
                snapshot: claimed.snapshot.clone(),
                task: claimed.task.clone(),
            };
            Ok((accepted, Some((claimed, worker))))
        }
        .await;
        let (accepted, handoff) = tx.finish(result).await?;
        self.bus.committed();
        match (handoff, self.local.get()) {
            (Some((claimed, worker)), Some(robot)) => robot.hand_over(claimed, worker),
            // Robots here and in other processes hear of it.
            _ => self.bus.announce_queued(),
        }
        Ok(accepted)
    }
}

/// Finds the VM an action is about and locks it; what the caller may not see does not
/// exist.
async fn lock_target(conn: &mut Conn<'_>, caller: &Caller, target: Target) -> AppResult<Vm> {
    let (vm_id, not_found) = match target {
        Target::Vm(id) => (Some(id), AppError::not_found("VM", id)),
        Target::Snapshot(id) => (
            snapshots::by_id(conn, id).await?.map(|s| s.vm_id),
            AppError::not_found("snapshot", id),
        ),
    };
    let Some(vm_id) = vm_id else {
        return Err(not_found);
    };
    vms::lock(conn, vm_id)
        .await?
        .filter(|vm| caller.can_see(vm.project_id))
        .ok_or(not_found)
}

/// Inserts a new snapshot in REQUESTED, with its generated name on the host.
async fn insert_requested(
    conn: &mut Conn<'_>,
    caller: &Caller,
    vm: &Vm,
    name: &str,
    description: Option<String>,
    parent: Option<i64>,
) -> AppResult<i64> {
    let now = db::now();
    let snapshot = snapshots::insert(
        conn,
        vm,
        NewSnapshot {
            vm_id: vm.id,
            parent_id: parent,
            name,
            description: description.as_deref(),
            // Set below, once the id is known.
            host_name: "",
            active: false,
            state: SnapshotState::Requested.code(),
            created_at: now,
            updated_at: now,
        },
        &caller.name,
    )
    .await
    .map_err(|e| {
        if db::is_unique_violation(&e) {
            AppError::validation(format!(
                "This VM already has a snapshot named {name:?}; choose another name."
            ))
        } else {
            e.into()
        }
    })?;
    let host_name = names::host_snapshot_name(vm.id, snapshot.id);
    snapshots::set_host_name(conn, snapshot.id, &host_name).await?;
    Ok(snapshot.id)
}
