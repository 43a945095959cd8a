//! The robot's side of eager dispatch ([`crate::service::handoff`]): its free workers,
//! and the channel on which its dispatcher receives the tasks handed over to it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::service::Claimed;
use crate::service::handoff::{Reserved, Taker};

/// A task claimed for this robot by the transaction that queued it, with its worker.
pub(super) type Handoff = (Claimed, OwnedSemaphorePermit);

/// What the robot attaches to the service of its process.
pub(super) struct Workers {
    /// The robot's name in leases.
    pub owner: Arc<str>,
    /// The lease a task taken at once gets: the robot's own (`RobotConfig::lease`).
    pub lease: Duration,
    /// The hosts it serves (`None`: all).
    pub hosts: Option<Vec<i64>>,
    /// Its free workers, shared with its own claims.
    pub free: Arc<Semaphore>,
    /// To its dispatcher; closed when the robot stops.
    pub handoffs: mpsc::UnboundedSender<Handoff>,
}

impl Taker for Workers {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn reserve(&self, host: i64) -> Option<Reserved> {
        let serves = self.hosts.as_ref().is_none_or(|h| h.contains(&host));
        if !serves || self.handoffs.is_closed() {
            return None;
        }
        Arc::clone(&self.free)
            .try_acquire_owned()
            .ok()
            .map(Reserved)
    }

    fn hand_over(&self, claimed: Claimed, worker: Reserved) {
        // A robot that has stopped meanwhile leaves the task to its lease.
        let _ = self.handoffs.send((claimed, worker.0));
    }
}
