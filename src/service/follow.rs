//! Following task events for subscriptions: what the caller missed, from the table, then
//! live, with no gap and no duplicate (see [`crate::events`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::stream::{self, BoxStream};
use tokio::sync::broadcast;

use super::Published;
use super::{Caller, Reads};
use crate::db::events::{self, Filter};
use crate::db::models::{Task, TaskEvent};
use crate::db::{retention, tasks};
use crate::error::{AppError, AppResult};
use crate::events::EventBus;

/// What to follow.
#[derive(Clone, Copy, Debug)]
pub enum Follow {
    /// One task, from its current state on, until its final event.
    Task(i64),
    /// One VM's tasks; `after` an event id replays what came after it.
    Vm { vm: i64, after: Option<i64> },
    /// Everything the caller may see.
    All { after: Option<i64> },
}

/// Events read from the table at a time.
const BATCH: i64 = 500;

struct Follower {
    /// Reads the table: what was missed, and each event's task.
    reads: Reads,
    /// Tells the pump's position after the follower fell behind the broadcast.
    bus: EventBus,
    /// The broadcast, tapped before the replay's end (`upto`) was taken.
    live: broadcast::Receiver<Arc<Published>>,
    /// Which events are delivered: the caller's project (unless ADMIN), and the task or VM.
    filter: Filter,
    /// Every matching event up to this id has been queued or delivered.
    cursor: i64,
    /// Read the table up to here before listening again.
    upto: i64,
    /// Events read or received that match, not yet delivered, oldest first.
    pending: VecDeque<Arc<Published>>,
    /// End after the task's final event.
    until_final: bool,
    /// The stream has ended: the final event delivered, an error, or the broadcast closed.
    done: bool,
}

impl Reads {
    /// Refuses a replay from `after` when retention has retired events after it: the
    /// client would otherwise miss them without knowing. 0 asks for everything still
    /// kept, and is never refused.
    async fn check_cursor(&self, after: Option<i64>) -> AppResult<()> {
        let Some(after) = after.filter(|a| *a > 0) else {
            return Ok(());
        };
        let mut conn = self.core.db.reader().await?;
        let conn = &mut conn.conn();
        if after >= retention::events_retired_through(conn).await? {
            return Ok(());
        }
        Err(AppError::CursorExpired {
            after,
            oldest_event_id: retention::oldest_event(conn).await?,
        })
    }

    /// The events `what` names that the caller may see.
    pub async fn follow(
        &self,
        caller: &Caller,
        what: Follow,
    ) -> AppResult<BoxStream<'static, AppResult<Arc<Published>>>> {
        let scope = Filter {
            project: caller.scope(),
            ..Filter::default()
        };
        // Tap first: what the tap does not carry, the table holds.
        let (live, position) = self.core.bus.tap();
        let (filter, cursor, until_final) = match what {
            Follow::Task(id) => {
                self.task(caller, id)
                    .await?
                    .ok_or_else(|| AppError::not_found("task", id))?;
                let latest = events::latest_of_task(&mut self.core.db.reader().await?.conn(), id)
                    .await?
                    .ok_or_else(|| AppError::internal(format!("task {id} has no events")))?;
                let filter = Filter {
                    task: Some(id),
                    ..scope
                };
                // From its current state on: its newest event first.
                (filter, latest.id - 1, true)
            }
            Follow::Vm { vm, after } => {
                self.vm(caller, vm)
                    .await?
                    .ok_or_else(|| AppError::not_found("VM", vm))?;
                self.check_cursor(after).await?;
                let filter = Filter {
                    vm: Some(vm),
                    ..scope
                };
                (filter, after.unwrap_or(position), false)
            }
            Follow::All { after } => {
                self.check_cursor(after).await?;
                (scope, after.unwrap_or(position), false)
            }
        };
        let follower = Follower {
            reads: self.clone(),
            bus: self.core.bus.clone(),
            live,
            filter,
            cursor,
            upto: position,
            pending: VecDeque::new(),
            until_final,
            done: false,
        };
        Ok(Box::pin(stream::unfold(follower, next)))
    }
}

/// The task has ended (succeeded, failed or cancelled).
fn is_final(event: &TaskEvent) -> bool {
    !event.state().is_open()
}

async fn next(mut f: Follower) -> Option<(AppResult<Arc<Published>>, Follower)> {
    loop {
        if f.done {
            return None;
        }
        if let Some(event) = f.pending.pop_front() {
            if f.until_final && is_final(&event.event) {
                f.done = true;
            }
            return Some((Ok(event), f));
        }
        if f.cursor < f.upto {
            match read(&f).await {
                Ok(batch) => {
                    f.cursor = match batch.last() {
                        Some(last) if batch.len() as i64 == BATCH => last.event.id,
                        _ => f.upto,
                    };
                    f.pending.extend(batch);
                    continue;
                }
                Err(err) => {
                    f.done = true;
                    return Some((Err(err), f));
                }
            }
        }
        match f.live.recv().await {
            Ok(published) if published.event.id > f.cursor => {
                f.cursor = published.event.id;
                f.upto = published.event.id;
                if f.filter.matches(&published.event) {
                    f.pending.push_back(published);
                }
            }
            Ok(_) => {}
            // Fell behind the broadcast: the table has what was dropped.
            Err(broadcast::error::RecvError::Lagged(_)) => f.upto = f.bus.position(),
            Err(broadcast::error::RecvError::Closed) => f.done = true,
        }
    }
}

/// The next events from the table, each with its task as it stands now, the tasks read
/// in one statement for the batch (a subscription resolves each event alone, so a task
/// asked for per event would be one round trip each: a fifth of the replay rate on
/// PostgreSQL).
async fn read(f: &Follower) -> AppResult<Vec<Arc<Published>>> {
    let mut pooled = f.reads.core.db.reader().await?;
    let mut conn = pooled.conn();
    let batch = events::after(&mut conn, f.filter, f.cursor, Some(f.upto), BATCH).await?;
    let mut ids: Vec<i64> = batch.iter().map(|e| e.task_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let tasks: HashMap<i64, Task> = tasks::by_ids(&mut conn, &ids)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    Ok(batch
        .into_iter()
        .map(|event| {
            let task = tasks.get(&event.task_id).cloned();
            Arc::new(Published { event, task })
        })
        .collect())
}
