//! Cancelling a task: a queued one at once, a running one at the robot's next safe point.

use super::Actions;
use super::Caller;
use super::tasks::{Note, facts, load_tree, record};
use crate::db::models::Task;
use crate::db::{self, history, snapshots, tasks, vms};
use crate::domain::lifecycle;
use crate::domain::{FailureCode, Rejection, TaskKind, TaskState};
use crate::error::{AppError, AppResult};

impl Actions {
    /// Cancels task `id`: a queued one at once, a running one at the robot's next safe
    /// point.
    /// One function: both ways a cancel goes (a queued task ended here, a running one asked to
    /// stop) decide on the same rows, read under the VM's lock, in one transaction.
    pub async fn cancel_task(&self, caller: &Caller, id: i64) -> AppResult<Task> {
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let mut conn = tx.conn();
            let not_found = || AppError::not_found("task", id);
            let task = tasks::by_id(&mut conn, id).await?.ok_or_else(not_found)?;
            let vm = vms::lock(&mut conn, task.vm_id)
                .await?
                .filter(|vm| caller.can_see(vm.project_id))
                .ok_or_else(not_found)?;
            caller.require_operator()?;
            let message = format!("cancel requested by {}", caller.name);
            match lifecycle::cancel(task.state(), task.cancel_requested) {
                Ok(()) => {}
                // Cancelled, or asked to stop, already: asking again is not an error, and
                // changes nothing.
                Err(Rejection::CancelAsked) => return Ok(task),
                Err(_) if task.state() == TaskState::Cancelled => return Ok(task),
                Err(rejection) => return Err(rejection.into()),
            }
            let why = format!("cancelled by {}", caller.name);
            let why = tasks::Why {
                message: &why,
                code: FailureCode::Cancelled.as_str(),
                detail: None,
            };
            let (end, progress) = (TaskState::Cancelled, task.progress);
            // A queued task ends here, unless a robot claimed it since it was read (a
            // claim does not lock the VM): then it is running, and asked to stop.
            let ended = task.state() == TaskState::Queued
                && tasks::finish(&mut conn, id, None, end, Some(why), progress, db::now()).await?;
            let note = if ended {
                let snapshot = snapshots::by_id(&mut conn, task.snapshot_id)
                    .await?
                    .ok_or_else(not_found)?;
                let tree = load_tree(&mut conn, vm.id).await?;
                let facts = facts(&task, &snapshot);
                let before = history::states_before_scrub(&mut conn, &facts.scope(&tree)).await?;
                let changes = lifecycle::cancelled(&tree, &facts, &before);
                snapshots::apply(&mut conn, &vm, &changes, caller.actor()).await?;
                if facts.kind == TaskKind::Scrub {
                    snapshots::set_remove_subtree(&mut conn, snapshot.id, false).await?;
                }
                Note {
                    state: TaskState::Cancelled,
                    progress: task.progress,
                    phase: None,
                    message: Some(&message),
                    detail: None,
                }
            } else {
                if !tasks::request_cancel(&mut conn, id).await? {
                    // It ended meanwhile, or was asked already: nothing to record.
                    return tasks::by_id(&mut conn, id).await?.ok_or_else(not_found);
                }
                Note {
                    state: TaskState::Running,
                    progress: task.progress,
                    phase: Some("cancelling at the next safe point"),
                    message: Some(&message),
                    detail: None,
                }
            };
            record(&mut conn, &task, &vm, note).await?;
            tasks::by_id(&mut conn, id).await?.ok_or_else(not_found)
        }
        .await;
        let task = tx.finish(result).await?;
        self.core.bus.committed();
        Ok(task)
    }
}
