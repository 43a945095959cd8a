//! Eager dispatch. A robot running in this process registers here; when it has a free
//! worker, the transaction that queues a task also claims it for that robot, and the task
//! is handed over once the transaction commits. That saves the robot a transaction of its
//! own, which is most of snaptree's overhead on a quick host operation. If a hand-off is
//! lost (the request was cancelled after the commit, the robot is stopping), the task's
//! lease runs out and it is taken up again like any other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::tasks::Claimed;

/// A task claimed in the queueing transaction, with the worker slot reserved for it.
pub struct Handoff {
    pub claimed: Claimed,
    pub permit: OwnedSemaphorePermit,
}

/// The robot of this process, as the service sees it.
pub struct LocalRobot {
    /// The robot's name in leases.
    pub owner: String,
    pub lease: Duration,
    /// The hosts it serves (`None`: all).
    pub hosts: Option<Vec<i64>>,
    /// Its free workers, shared with its own claims.
    pub workers: Arc<Semaphore>,
    pub handoffs: mpsc::UnboundedSender<Handoff>,
}

impl LocalRobot {
    /// A free worker for a task of host `host`, if the robot serves it and has one.
    pub(crate) fn slot(&self, host: i64) -> Option<OwnedSemaphorePermit> {
        let serves = self.hosts.as_ref().is_none_or(|h| h.contains(&host));
        if !serves || self.handoffs.is_closed() {
            return None;
        }
        Arc::clone(&self.workers).try_acquire_owned().ok()
    }
}
