//! A claim's lease, kept while its task runs.
//!
//! The database ends a lease at the task's `lease_expires_at`, after which any robot may
//! claim the task again. Every write under a claim is fenced (`tasks.fence`), so a robot
//! whose task was claimed again records nothing more: the record stays true. The host
//! needs more: a robot that went on with a host call after its lease ran out would run
//! it beside the robot that took the task up. So a robot that cannot renew its lease gives
//! the task up while a third of the lease is still left, cutting its host call (as a stop
//! past its grace does: driver operations are idempotent, and the next claim runs the
//! operation again). That third (3.3 s of the default 10 s) is the margin for the cut
//! call to end and for the clocks of the robots' machines to differ.
//!
//! Renewals run in a task of their own, every sixth of the lease (so that a database
//! slow to answer one still has room for the next before the time to give up): they
//! never hold up the host call, and a renewal that has not come back by the time to give
//! up is as good as lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::service::{Claimed, TaskLedger};

/// Where a claim stands, as its keeper last learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// Renewed in time.
    Held,
    /// Held, and a user asked to cancel the task.
    Cancel,
    /// Given up: not renewed in time, or the task was claimed again.
    Lost,
}

/// The lease of a claim a worker runs; its keeper stops when it is dropped.
pub(super) struct Lease {
    /// Where the claim stands, as its keeper last told.
    standing: watch::Receiver<Standing>,
    /// The task that renews the lease; aborted when the lease is dropped.
    keeper: AbortHandle,
}

impl Lease {
    /// Keeps `claimed`'s lease, of `length`, through `ledger`.
    pub fn keep(ledger: TaskLedger, claimed: Arc<Claimed>, length: Duration) -> Self {
        let first = match claimed.task.cancel_requested {
            true => Standing::Cancel,
            false => Standing::Held,
        };
        let (tell, standing) = watch::channel(first);
        let keeper = tokio::spawn(keep(ledger, claimed, length, tell)).abort_handle();
        Self { standing, keeper }
    }

    /// Whether the claim was given up.
    pub fn is_lost(&self) -> bool {
        *self.standing.borrow() == Standing::Lost
    }

    /// Resolves once the claim is given up.
    pub async fn lost(&mut self) {
        // A keeper that is gone cannot renew: as good as lost.
        let _ = self.standing.wait_for(|s| *s == Standing::Lost).await;
    }

    /// Resolves once the claim is given up or a cancel is asked for (now or before).
    pub async fn interrupted(&mut self) -> Standing {
        match self.standing.wait_for(|s| *s != Standing::Held).await {
            Ok(standing) => *standing,
            Err(_) => Standing::Lost,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews the lease every sixth of `length` until it is lost, telling `tell` of a cancel
/// and of the loss.
async fn keep(
    ledger: TaskLedger,
    claimed: Arc<Claimed>,
    length: Duration,
    tell: watch::Sender<Standing>,
) {
    let period = length / 6;
    // The database holds the lease at least until then, by this process's clock.
    let mut held_until = Instant::from_std(claimed.leased_at) + length;
    let mut next = Instant::from_std(claimed.leased_at) + period;
    loop {
        let give_up = held_until - length / 3;
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = sleep_until(give_up) => break,
        }
        let asked = Instant::now();
        match timeout_at(give_up, ledger.renew_task(&claimed, length)).await {
            Ok(Ok(Some(cancel))) => {
                held_until = asked + length;
                next = asked + period;
                if cancel {
                    tell.send_replace(Standing::Cancel);
                }
            }
            Ok(Ok(None)) => {
                tracing::warn!(task = claimed.task.id, "the task was claimed again");
                break;
            }
            Ok(Err(err)) => {
                // Tried again soon: the lease is given up if no try succeeds in time.
                tracing::warn!(task = claimed.task.id, error = %err, "could not renew a lease");
                next = Instant::now() + period / 2;
            }
            Err(_) => {
                tracing::warn!(
                    task = claimed.task.id,
                    "the database did not renew a lease in time"
                );
                break;
            }
        }
    }
    tell.send_replace(Standing::Lost);
}
