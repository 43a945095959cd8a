//! The life of a task after it is queued, as data and writes: what a claim starts, the
//! events a step makes, and how a batch of the robot's steps is written (the task, the
//! snapshots through the rules of [`lifecycle`], history). The
//! [`TaskLedger`](super::TaskLedger) runs these in its transactions, and
//! [`Actions`](super::Actions) when an action's task is claimed at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::ROBOT;
use crate::db::models::{Host, NewTaskEvent, Snapshot, Task, Vm};
use crate::db::{self, Conn, history, snapshots, tasks};
use crate::domain::lifecycle::{self, HostView, TaskFacts};
use crate::domain::tree::{Changes, Tree};
use crate::domain::{Failure, FailureCode, TaskKind, TaskState};
use crate::error::AppResult;
use crate::hypervisor::HostSnapshot;

/// A task a robot holds, with what it needs to run it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The task as the claim left it; its `fence` is the claim's.
    pub task: Task,
    /// The task's VM, as the claim read it.
    pub vm: Vm,
    /// The host the task runs on (`task.host_id`): the driver to call.
    pub host: Host,
    /// The snapshot the task acts on, in its working state.
    pub snapshot: Snapshot,
    /// When the claim's lease began, by this process's clock: taken before its end was
    /// computed, so the database holds the lease at least until this plus its length.
    pub leased_at: Instant,
}

/// A lease of `length` from now: when it begins by this process's clock, and when it
/// ends in the database.
pub(crate) fn lease_from_now(length: Duration) -> (Instant, chrono::NaiveDateTime) {
    let began = Instant::now();
    (began, lease_until(length))
}

/// How a task ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The host did what the task asked.
    Succeeded,
    /// For good, or out of retries. `host` is the host's snapshot list, when it could tell.
    Failed {
        failure: Failure,
        host: Option<Vec<HostSnapshot>>,
    },
    /// Stopped at a safe point on request. `host` as for `Failed`; for a create,
    /// `cleaned_up` says the host does not have the snapshot.
    Cancelled {
        host: Option<Vec<HostSnapshot>>,
        cleaned_up: bool,
    },
}

impl Outcome {
    /// The task's final state.
    pub fn state(&self) -> TaskState {
        match self {
            Outcome::Succeeded => TaskState::Succeeded,
            Outcome::Failed { .. } => TaskState::Failed,
            Outcome::Cancelled { .. } => TaskState::Cancelled,
        }
    }
}

/// One event to record: the task's state, with progress, phase and message.
pub(crate) struct Note<'a> {
    /// The task's state the event reports.
    pub state: TaskState,
    /// Percent done, when known.
    pub progress: Option<i32>,
    /// What the robot is doing; `None` when nothing is under way (queued, ended).
    pub phase: Option<&'a str>,
    /// Snaptree's words, for every token of the project.
    pub message: Option<&'a str>,
    /// What the host said behind `message` (ADMIN only).
    pub detail: Option<&'a str>,
}

impl<'a> Note<'a> {
    /// A task just queued, with `message` (who asked for what).
    pub fn queued(message: &'a str) -> Self {
        Self {
            state: TaskState::Queued,
            progress: None,
            phase: None,
            message: Some(message),
            detail: None,
        }
    }
}

/// The event `note` makes of task `task` of VM `vm`.
pub(crate) fn event(task: &Task, vm: &Vm, note: Note<'_>) -> NewTaskEvent {
    NewTaskEvent {
        task_id: task.id,
        vm_id: vm.id,
        project_id: vm.project_id,
        state: note.state.as_str(),
        progress: note.progress,
        phase: note.phase.map(str::to_owned),
        message: note.message.map(str::to_owned),
        at: db::now(),
        detail: note.detail.map(str::to_owned),
    }
}

/// Stores a task event (in the caller's transaction).
pub(crate) async fn record(
    conn: &mut Conn<'_>,
    task: &Task,
    vm: &Vm,
    note: Note<'_>,
) -> AppResult<()> {
    Ok(db::events::insert(conn, &[event(task, vm, note)]).await?)
}

/// The tree the rules work on: a VM's non-closed snapshots.
pub(crate) async fn load_tree(conn: &mut Conn<'_>, vm: i64) -> AppResult<Tree> {
    Ok(Tree::new(snapshots::nodes_of(conn, vm).await?))
}

pub(crate) fn facts(task: &Task, snapshot: &Snapshot) -> TaskFacts {
    TaskFacts {
        kind: task.kind(),
        target: task.snapshot_id,
        remove_subtree: snapshot.remove_subtree,
        prev_active: task.prev_active_id,
        save: task.save_snapshot_id,
    }
}

/// Maps the host's snapshot list onto the VM's snapshots (by their names on the host).
fn host_view(rows: &[Snapshot], listed: &[HostSnapshot]) -> HostView {
    let by_name: HashMap<&str, i64> = rows.iter().map(|s| (s.host_name.as_str(), s.id)).collect();
    let existing: HashSet<i64> = listed
        .iter()
        .filter_map(|s| by_name.get(s.name.as_str()).copied())
        .collect();
    let current = listed
        .iter()
        .find(|s| s.current)
        .and_then(|s| by_name.get(s.name.as_str()).copied());
    HostView { existing, current }
}

pub(crate) fn lease_until(lease: Duration) -> chrono::NaiveDateTime {
    db::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10))
}

/// Starts a task robot `owner` has just taken under a lease that began at `leased_at`,
/// `snapshot` and `tree` as the taking transaction sees them: the changes that move its
/// snapshots to their working states (for the caller to apply, as [`ROBOT`]), the task as
/// the robot holds it, and the RUNNING event that says who took it (for the caller to
/// store).
pub(crate) fn start_work(
    task: Task,
    vm: Vm,
    host: Host,
    snapshot: Snapshot,
    tree: &Tree,
    (owner, leased_at): (&str, Instant),
) -> (Changes, Claimed, NewTaskEvent) {
    let mut snapshot = snapshot;
    let changes = lifecycle::started(tree, &facts(&task, &snapshot));
    if let Some(&(_, state)) = changes.states.iter().find(|(id, _)| *id == snapshot.id) {
        snapshot.state = state.code();
    }
    // The claim counted this attempt; more means an earlier run was cut short.
    let message = if task.attempts > 1 {
        format!(
            "taken up again by {owner} after {} attempts",
            task.attempts - 1
        )
    } else {
        format!("started by {owner}")
    };
    let note = Note {
        state: TaskState::Running,
        progress: task.progress,
        phase: Some("starting"),
        message: Some(&message),
        detail: None,
    };
    let event = event(&task, &vm, note);
    let claimed = Claimed {
        task,
        vm,
        host,
        snapshot,
        leased_at,
    };
    (changes, claimed, event)
}

/// One step of the robot's work on a task it holds, written by the [`super::ledger`].
pub enum Step {
    /// Progress of attempt `attempt`.
    Progress {
        attempt: i32,
        percent: Option<i32>,
        phase: String,
        /// Snaptree's words, for every token of the project.
        message: Option<String>,
        /// What the host said behind `message` (ADMIN only).
        detail: Option<String>,
    },
    /// The end, moving the task's snapshots to their final states.
    Finish(Outcome),
}

/// A step of a task, under the claim that holds it.
pub(crate) type Held<'a> = (&'a Claimed, &'a Step);

/// Writes `steps` (in the caller's transaction) and returns, for each, its event for the
/// caller to store, or `None` when its claim no longer held the task (nothing was written
/// for it). Each kind of write is one statement for the whole batch on PostgreSQL: a
/// task's progress row is updated once, by its last report (the earlier ones share that
/// answer); ends are written together, and so are their snapshots' changes.
pub(crate) async fn write_steps(
    conn: &mut Conn<'_>,
    steps: &[Held<'_>],
) -> AppResult<Vec<Option<NewTaskEvent>>> {
    let reported = write_reports(conn, steps).await?;
    let (ends, ended) = write_ends(conn, steps).await?;
    let mut ends = ends.into_iter();
    Ok(steps
        .iter()
        .map(|&(claimed, step)| {
            let task = &claimed.task;
            match step {
                Step::Progress {
                    percent,
                    phase,
                    message,
                    detail,
                    ..
                } => reported.contains(&task.id).then(|| {
                    let note = Note {
                        state: TaskState::Running,
                        progress: *percent,
                        phase: Some(phase),
                        message: message.as_deref(),
                        detail: detail.as_deref(),
                    };
                    event(task, &claimed.vm, note)
                }),
                Step::Finish(_) => {
                    let (.., end) = ends.next().expect("one end per Finish step");
                    ended.contains(&task.id).then(|| {
                        let note = Note {
                            state: end.state,
                            progress: end.progress,
                            phase: None,
                            message: Some(&end.message),
                            detail: end.why.as_ref().and_then(|f| f.detail.as_deref()),
                        };
                        event(task, &claimed.vm, note)
                    })
                }
            }
        })
        .collect())
}

/// Writes each task's last progress report among `steps`, one statement for all on
/// PostgreSQL; returns the tasks whose claim still held them.
async fn write_reports(conn: &mut Conn<'_>, steps: &[Held<'_>]) -> AppResult<HashSet<i64>> {
    let mut last_report: HashMap<i64, usize> = HashMap::new();
    for (i, (claimed, step)) in steps.iter().enumerate() {
        if matches!(step, Step::Progress { .. }) {
            last_report.insert(claimed.task.id, i);
        }
    }
    let mut reports: Vec<usize> = last_report.values().copied().collect();
    reports.sort_unstable();
    let reports: Vec<tasks::Report> = reports
        .into_iter()
        .map(|i| {
            let (claimed, step) = steps[i];
            let Step::Progress {
                attempt,
                percent,
                phase,
                ..
            } = step
            else {
                unreachable!("only reports are in last_report")
            };
            tasks::Report {
                task: claimed.task.id,
                claim: claimed.task.fence,
                progress: *percent,
                phase: Some(phase),
                attempts: *attempt,
            }
        })
        .collect();
    Ok(tasks::set_progress_all(conn, &reports).await?)
}

/// A task's end among the steps: its claim, its outcome, and what it writes.
type End<'a> = (&'a Claimed, &'a Outcome, Ending);

/// Ends the tasks `steps` finish, and moves their snapshots as `snapshots.md` says;
/// returns every end and the tasks whose claim still held them (the others were left as
/// they were).
async fn write_ends<'a>(
    conn: &mut Conn<'_>,
    steps: &[Held<'a>],
) -> AppResult<(Vec<End<'a>>, HashSet<i64>)> {
    let ends: Vec<End<'a>> = steps
        .iter()
        .filter_map(|&(claimed, step)| match step {
            Step::Finish(outcome) => Some((claimed, outcome, ending(outcome))),
            Step::Progress { .. } => None,
        })
        .collect();
    let rows: Vec<tasks::Ending> = ends
        .iter()
        .map(|(claimed, _, end)| tasks::Ending {
            task: claimed.task.id,
            claim: claimed.task.fence,
            state: end.state,
            why: end.why.as_ref().map(|f| tasks::Why {
                message: &f.message,
                code: f.code.as_str(),
                detail: f.detail.as_deref(),
            }),
            progress: end.progress,
        })
        .collect();
    let ended = tasks::finish_all(conn, &rows, db::now()).await?;
    let ended_vms: Vec<i64> = ends
        .iter()
        .filter(|(claimed, ..)| ended.contains(&claimed.task.id))
        .map(|(claimed, ..)| claimed.vm.id)
        .collect();
    let mut trees = snapshots::nodes_of_all(conn, &ended_vms).await?;
    let mut changes = Vec::new();
    for (claimed, outcome, _) in ends.iter().filter(|(c, ..)| ended.contains(&c.task.id)) {
        let tree = Tree::new(trees.remove(&claimed.vm.id).unwrap_or_default());
        changes.push((
            &claimed.vm,
            end_changes(conn, claimed, outcome, &tree).await?,
        ));
    }
    let all: Vec<_> = changes.iter().map(|(vm, c)| (*vm, c, ROBOT)).collect();
    snapshots::apply_all(conn, &all).await?;
    for (claimed, outcome, _) in ends.iter().filter(|(c, ..)| ended.contains(&c.task.id)) {
        if claimed.task.kind() == TaskKind::Scrub
            && matches!(outcome, Outcome::Failed { .. } | Outcome::Cancelled { .. })
        {
            snapshots::set_remove_subtree(conn, claimed.task.snapshot_id, false).await?;
        }
    }
    Ok((ends, ended))
}

/// What a task's end writes on the task.
struct Ending {
    /// SUCCEEDED, FAILED or CANCELLED, from the outcome.
    state: TaskState,
    /// Why, unless it succeeded.
    why: Option<Failure>,
    /// Its last event's message.
    message: String,
    /// 100 on success; otherwise the task's progress as last recorded.
    progress: Option<i32>,
}

fn ending(outcome: &Outcome) -> Ending {
    let (state, why, message) = match outcome {
        Outcome::Succeeded => (TaskState::Succeeded, None, "done".to_owned()),
        Outcome::Failed { failure, .. } => (
            TaskState::Failed,
            Some(failure.clone()),
            format!("failed: {}", failure.message),
        ),
        Outcome::Cancelled { .. } => {
            let why = Failure::new(FailureCode::Cancelled, None);
            let message = why.message.clone();
            (TaskState::Cancelled, Some(why), message)
        }
    };
    // A task that did not succeed keeps the progress its robot last reported (stored
    // since the claim; this copy of the task is as it was claimed).
    let progress = match outcome {
        Outcome::Succeeded => Some(100),
        _ => None,
    };
    Ending {
        state,
        why,
        message,
        progress,
    }
}

/// The changes a task's end makes to its VM's snapshots, `tree` as it stood before.
async fn end_changes(
    conn: &mut Conn<'_>,
    claimed: &Claimed,
    outcome: &Outcome,
    tree: &Tree,
) -> AppResult<Changes> {
    // `remove_subtree` is as the claim read it: only this task's own end changes it.
    let facts = facts(&claimed.task, &claimed.snapshot);
    // Only a delete that did not go through needs the states before it.
    let before = match (outcome, facts.kind) {
        (Outcome::Succeeded, _) | (_, TaskKind::Build | TaskKind::Update) => Default::default(),
        _ => history::states_before_scrub(conn, &facts.scope(tree)).await?,
    };
    // What the host reported, mapped onto the snapshots by their names there.
    let listed = match outcome {
        Outcome::Failed { host, .. } | Outcome::Cancelled { host, .. } => host.as_deref(),
        Outcome::Succeeded => None,
    };
    let view = match listed {
        Some(listed) => {
            let rows = snapshots::of_vms(conn, &[claimed.vm.id], false).await?;
            Some(host_view(&rows, listed))
        }
        None => None,
    };
    // An apply's save of the current state that the host does not have.
    let unsaved = facts
        .save
        .filter(|save| view.as_ref().is_some_and(|v| !v.existing.contains(save)));
    Ok(match (outcome, unsaved) {
        (Outcome::Succeeded, _) => lifecycle::succeeded(tree, &facts),
        (
            Outcome::Cancelled {
                cleaned_up: true, ..
            },
            _,
        ) if facts.kind == TaskKind::Build => lifecycle::cancelled(tree, &facts, &before),
        // Cancelled before the host had the save: nothing is left of it.
        (Outcome::Cancelled { .. }, Some(save)) => {
            lifecycle::cancelled_before_save(tree, &facts, save)
        }
        (Outcome::Failed { .. } | Outcome::Cancelled { .. }, _) => {
            lifecycle::failed(tree, &facts, &before, view.as_ref())
        }
    })
}
