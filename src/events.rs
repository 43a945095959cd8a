//! In-process fan-out. Every task event is stored first (in the transaction that made the
//! change) and published here after the commit; a new task also wakes the robot at once,
//! so it never waits for a poll.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::db::models::TaskEvent;

/// How many events a slow subscriber may fall behind before it must replay from the table.
const BUFFER: usize = 4096;

/// Published events and the robot's wake-up.
#[derive(Clone)]
pub struct EventBus {
    /// Every stored task event, after its commit.
    events: broadcast::Sender<TaskEvent>,
    /// Signalled when a task is queued.
    queued: Arc<Notify>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            events: broadcast::channel(BUFFER).0,
            queued: Arc::new(Notify::new()),
        }
    }
}

impl EventBus {
    /// Publishes committed events, in order.
    pub fn publish(&self, events: impl IntoIterator<Item = TaskEvent>) {
        for event in events {
            // No subscriber is fine: the events are in the table.
            let _ = self.events.send(event);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    /// Tells the robot a task was queued.
    pub fn task_queued(&self) {
        self.queued.notify_one();
    }

    /// Waits until a task is queued (or was queued since the last wait).
    pub async fn wait_for_task(&self) {
        self.queued.notified().await;
    }
}
