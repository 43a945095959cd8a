//! The expiry sweep, which goes with every robot: every [`EVERY`] it asks for the delete
//! of the snapshots whose expiry has passed, one per VM at a time, as a user's delete of
//! each alone would (children move up). `domain::lifetime` says which it may delete:
//! never a protected one, never a VM's active one. Each delete is an ordinary action of
//! snaptree itself (`expiry`, history reason `expired`), so two processes sweeping at
//! once meet the checks two users would: the second finds the VM busy. A snapshot whose
//! delete keeps failing on its host waits longer before each try.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::NaiveDateTime;
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Caller, Service};
use crate::db::snapshots::{self, ExpiryCursor};
use crate::db::{tasks, vms};
use crate::domain::Reason;
use crate::error::AppResult;

/// How often each process sweeps: an expired snapshot goes within a minute.
pub const EVERY: Duration = Duration::from_secs(10);
/// The most expired snapshots one sweep reads; the next goes on after the last.
const BATCH: i64 = 200;
/// The name the sweep's deletes are recorded under.
pub const ACTOR: &str = "expiry";
/// How long after a failed delete the sweep tries again; each failure doubles it, up
/// to [`FAILED_CAP`].
const FAILED_WAIT: chrono::Duration = chrono::Duration::minutes(1);
/// The longest wait after failed deletes.
const FAILED_CAP: chrono::Duration = chrono::Duration::hours(1);

/// Sweeps every [`EVERY`] until `stop`.
pub fn spawn(service: Service, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sweep = Sweep::default();
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = sweep.run(&service).await {
                        tracing::warn!(error = %err, "could not sweep expired snapshots");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}

/// One process's sweep, and where it goes on from.
#[derive(Debug, Default)]
pub struct Sweep {
    /// The last snapshot the previous sweep read, when it read a full batch; `None`:
    /// start from the earliest expiry. So snapshots that stay due (a VM that is
    /// stopped, a delete that keeps failing) never hide the ones behind them.
    after: Option<ExpiryCursor>,
}

impl Sweep {
    /// One sweep: asks for the deletes due; returns how many were accepted.
    pub async fn run(&mut self, service: &Service) -> AppResult<usize> {
        let now = service.clock().now_naive();
        let (due, projects, failures) = {
            let mut conn = service.db().reader().await?;
            let conn = &mut conn.conn();
            let read = snapshots::expired(conn, now, self.after, BATCH).await?;
            self.after = match read.last() {
                Some(&(id, _, at)) if read.len() as i64 == BATCH => Some((at, id)),
                _ => None,
            };
            // One per VM: a VM acts on one snapshot at a time.
            let mut seen = HashSet::new();
            let due: Vec<(i64, i64)> = read
                .into_iter()
                .filter(|&(_, vm, _)| seen.insert(vm))
                .map(|(id, vm, _)| (id, vm))
                .collect();
            if due.is_empty() {
                return Ok(0);
            }
            let vm_ids: Vec<i64> = due.iter().map(|&(_, vm)| vm).collect();
            let ids: Vec<i64> = due.iter().map(|&(id, _)| id).collect();
            let projects: HashMap<i64, i64> = vms::by_ids(conn, &vm_ids)
                .await?
                .into_iter()
                .map(|vm| (vm.id, vm.project_id))
                .collect();
            let failures: HashMap<i64, (i64, Option<NaiveDateTime>)> =
                tasks::failed_deletes(conn, &ids)
                    .await?
                    .into_iter()
                    .map(|(id, count, last)| (id, (count, last)))
                    .collect();
            (due, projects, failures)
        };
        let asks = due
            .into_iter()
            .filter(|(id, _)| {
                failures
                    .get(id)
                    .is_none_or(|&(count, last)| waited(count, last, now))
            })
            .filter_map(|(id, vm)| Some((id, *projects.get(&vm)?)))
            .map(|(id, project)| async move {
                let caller = Caller::snaptree(project, ACTOR, Reason::Expired);
                (id, service.actions().expire_snapshot(&caller, id).await)
            });
        let mut accepted = 0;
        for (id, asked) in join_all(asks).await {
            match asked {
                Ok(a) => {
                    accepted += 1;
                    tracing::info!(
                        snapshot = id,
                        task = a.task.id,
                        "an expired snapshot is deleted"
                    );
                }
                // Busy, active since, changed, or the VM cannot act now: a later sweep sees.
                Err(err) => {
                    tracing::debug!(snapshot = id, error = %err, "an expired snapshot is kept for now")
                }
            }
        }
        Ok(accepted)
    }
}

/// Whether a snapshot whose deletes failed `count` times, the last ending at `last`, has
/// waited long enough at `now` to be tried again.
fn waited(count: i64, last: Option<NaiveDateTime>, now: NaiveDateTime) -> bool {
    let doublings = u32::try_from(count.clamp(1, 7) - 1).unwrap_or(0);
    let wait = (FAILED_WAIT * 2_i32.pow(doublings)).min(FAILED_CAP);
    last.is_none_or(|last| now >= last + wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_deletes_wait_longer_each_time_up_to_an_hour() {
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let m = |n: i64| t0 + chrono::Duration::minutes(n);
        assert!(!waited(1, Some(t0), m(0)));
        assert!(waited(1, Some(t0), m(1)));
        assert!(!waited(2, Some(t0), m(1)));
        assert!(waited(2, Some(t0), m(2)));
        assert!(!waited(30, Some(t0), m(59)));
        assert!(waited(30, Some(t0), m(60)));
        assert!(waited(3, None, t0));
    }
}
