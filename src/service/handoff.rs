//! Eager dispatch, the seam between the service and a robot in the same process. The
//! service defines what it needs ([`Taker`]); the robot implements it and attaches itself.
//! When the robot has a free worker for the task's host, the transaction that queues a
//! task also claims it for that robot, and the task is handed over once the transaction
//! commits. That saves the robot a transaction of its own, which is most of snaptree's
//! overhead on a quick host operation. If a hand-off is lost (the request was cancelled
//! after the commit, the robot is stopping), the task's lease runs out and it is taken up
//! again like any other.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::tasks::Claimed;

/// A worker of the robot, reserved for a task the queueing transaction claims for it;
/// given back when dropped.
pub struct Reserved(pub OwnedSemaphorePermit);

/// What a robot in this process offers the service for eager dispatch.
pub trait Taker: Send + Sync {
    /// The robot's name in leases.
    fn owner(&self) -> &str;
    /// How long its claims hold without a heartbeat.
    fn lease(&self) -> Duration;
    /// A free worker for a task of host `host`, if the robot serves that host and has
    /// one (and is not stopping).
    fn reserve(&self, host: i64) -> Option<Reserved>;
    /// Hands over `claimed`, claimed for this robot in a transaction that has committed,
    /// with the worker reserved for it.
    fn hand_over(&self, claimed: Claimed, worker: Reserved);
}
