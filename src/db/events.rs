//! Task events: every change of a task's state, phase or progress, numbered in one
//! sequence across the whole system.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{NewTaskEvent, TaskEvent};
use super::schema::task_events::dsl::*;
use super::{Conn, run};

pub async fn insert(conn: &mut Conn<'_>, new: NewTaskEvent<'_>) -> QueryResult<TaskEvent> {
    run!(conn, |c| diesel::insert_into(task_events)
        .values(&new)
        .returning(TaskEvent::as_returning())
        .get_result(c)
        .await)
}

/// The events of `vms`' tasks, oldest first.
pub async fn of_vms(conn: &mut Conn<'_>, vms: &[i64]) -> QueryResult<Vec<TaskEvent>> {
    run!(conn, |c| task_events
        .filter(vm_id.eq_any(vms))
        .select(TaskEvent::as_select())
        .order(id)
        .load(c)
        .await)
}
