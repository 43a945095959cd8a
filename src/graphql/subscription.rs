//! Subscriptions: task events as they happen. Each stream starts from the table (what the
//! client missed, or the task's current state) and continues live, in order, with no gap
//! and no duplicate.

use async_graphql::{Context, ID, Result, ResultExt, Subscription as Sub};
use futures_util::{Stream, StreamExt};

use super::parse_id;
use super::types::TaskEvent;
use crate::service::{Caller, Follow, Service};

pub struct Subscription;

async fn follow(
    ctx: &Context<'_>,
    what: Follow,
) -> Result<impl Stream<Item = Result<TaskEvent>> + use<>> {
    let service = ctx.data_unchecked::<Service>();
    let caller = ctx.data_unchecked::<Caller>();
    let events = service.reads().follow(caller, what).await.extend()?;
    // Counted as open for as long as the stream lives (its client, or its end, drops it).
    let open = service.metrics().subscription_open();
    Ok(events.map(move |e| {
        let _open = &open;
        e.map(TaskEvent).extend()
    }))
}

fn after(after: Option<ID>) -> Result<Option<i64>> {
    after
        .map(|a| {
            // 0 replays everything.
            a.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                crate::AppError::validation(format!("{:?} is not an event id.", a.as_str()))
            })
        })
        .transpose()
        .extend()
}

#[Sub]
impl Subscription {
    /// The task's events from its current state on; completes after its final event.
    async fn task_events(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
    ) -> Result<impl Stream<Item = Result<TaskEvent>>> {
        let task = parse_id(&task_id, "task").extend()?;
        follow(ctx, Follow::Task(task)).await
    }

    /// Every event of the VM's tasks; `after` (an event id) replays the ones after it.
    async fn vm_events(
        &self,
        ctx: &Context<'_>,
        vm_id: ID,
        after: Option<ID>,
    ) -> Result<impl Stream<Item = Result<TaskEvent>>> {
        let vm = parse_id(&vm_id, "VM").extend()?;
        follow(
            ctx,
            Follow::Vm {
                vm,
                after: self::after(after)?,
            },
        )
        .await
    }

    /// Every event the caller may see; `after` (an event id) replays the ones after it.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<ID>,
    ) -> Result<impl Stream<Item = Result<TaskEvent>>> {
        follow(
            ctx,
            Follow::All {
                after: self::after(after)?,
            },
        )
        .await
    }
}
