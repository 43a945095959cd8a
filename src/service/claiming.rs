//! Claiming: which queued tasks a robot takes, and when. Tasks are taken on two paths,
//! both here: the robot's claim loop ([`TaskLedger::claim_tasks`]), and the robot of the
//! process that queues a task taking it in the queueing transaction ([`take_at_once`]),
//! which spares it a round trip through the queue. Both meet the same rules: a host with
//! room for one more task (`max_concurrent_tasks`, counted in `db::tasks`), nothing older
//! waiting there before it, and a host this process can reach ([`unreachable`]): an
//! unreachable host's tasks wait for it to answer again rather than tie up workers.

use std::collections::HashMap;
use std::time::Duration;

use super::handoff::{Reserved, Taker};
use super::ledger::TaskLedger;
use super::tasks::{Claimed, lease_from_now, lease_until, start_work};
use super::{Core, ROBOT};
use crate::db::models::{Host, Snapshot, Task, Vm};
use crate::db::{self, Conn, hosts, snapshots, tasks, vms};
use crate::domain::tree::Tree;
use crate::error::{AppError, AppResult};

/// The hosts whose tasks this process leaves queued: the ones its calls find
/// unreachable now.
pub(super) fn unreachable(core: &Core) -> Vec<i64> {
    core.drivers.health().unreachable_hosts()
}

impl TaskLedger {
    /// Claims up to `max` tasks for robot `owner` (for `hosts` only, when given) and marks
    /// their snapshots as being worked on, in one transaction. Tasks of hosts this process
    /// cannot reach wait for them to answer again, rather than tie up workers.
    /// One function: one transaction that claims the tasks, reads their rows in four batched
    /// reads and records their start; every step uses the tasks taken and the rows read.
    pub async fn claim_tasks(
        &self,
        owner: &str,
        lease: Duration,
        hosts: Option<&[i64]>,
        max: usize,
    ) -> AppResult<Vec<Claimed>> {
        let unreachable = unreachable(&self.core);
        let among = tasks::Among {
            hosts,
            except: &unreachable,
        };
        if !tasks::claimable(&mut self.core.db.reader().await?.conn(), db::now(), among).await? {
            return Ok(Vec::new());
        }
        let mut tx = self.core.db.begin().await?;
        let result: AppResult<_> = async {
            let mut conn = tx.conn();
            let (leased_at, until) = lease_from_now(lease);
            let taken = tasks::claim(&mut conn, owner, db::now(), until, among, max).await?;
            if taken.is_empty() {
                return Ok(Vec::new());
            }
            let ids = |f: fn(&Task) -> i64| {
                let mut ids: Vec<i64> = taken.iter().map(f).collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            };
            let (vm_ids, host_ids, snapshot_ids) =
                (ids(|t| t.vm_id), ids(|t| t.host_id), ids(|t| t.snapshot_id));
            let mut vms: HashMap<i64, Vm> = vms::by_ids(&mut conn, &vm_ids)
                .await?
                .into_iter()
                .map(|v| (v.id, v))
                .collect();
            let hosts: HashMap<i64, Host> = hosts::by_ids(&mut conn, &host_ids)
                .await?
                .into_iter()
                .map(|h| (h.id, h))
                .collect();
            let mut rows: HashMap<i64, Snapshot> = snapshots::by_ids(&mut conn, &snapshot_ids)
                .await?
                .into_iter()
                .map(|s| (s.id, s))
                .collect();
            let mut trees = snapshots::nodes_of_all(&mut conn, &vm_ids).await?;
            let mut claimed = Vec::with_capacity(taken.len());
            let mut changes = Vec::with_capacity(taken.len());
            let mut events = Vec::with_capacity(taken.len());
            for task in taken {
                let missing = || AppError::internal(format!("task {} lost its rows", task.id));
                let vm = vms.remove(&task.vm_id).ok_or_else(missing)?;
                let host = hosts.get(&task.host_id).cloned().ok_or_else(missing)?;
                let snapshot = rows.remove(&task.snapshot_id).ok_or_else(missing)?;
                let tree = Tree::new(trees.remove(&task.vm_id).unwrap_or_default());
                let (change, started, event) =
                    start_work(task, vm, host, snapshot, &tree, (owner, leased_at));
                changes.push(change);
                events.push(event);
                claimed.push(started);
            }
            let all: Vec<_> = claimed
                .iter()
                .zip(&changes)
                .map(|(c, change)| (&c.vm, change, ROBOT))
                .collect();
            snapshots::apply_all(&mut conn, &all).await?;
            db::events::insert(&mut conn, &events).await?;
            Ok(claimed)
        }
        .await;
        let claimed = tx.finish(result).await?;
        if !claimed.is_empty() {
            self.core.bus.committed();
        }
        Ok(claimed)
    }
}

/// Claims for the robot here, in the queueing transaction, the tasks just queued that it
/// has free workers for and whose hosts have room with nothing older waiting there: each
/// host's in the order queued, except on hosts known to be `unreachable`. Returns them
/// by id, with their workers.
pub(super) async fn take_at_once(
    conn: &mut Conn<'_>,
    robot: &dyn Taker,
    queued: &[(&Host, &Task)],
    unreachable: &[i64],
) -> AppResult<HashMap<i64, (Task, Reserved)>> {
    let mut by_host: Vec<(&Host, Vec<&Task>)> = Vec::new();
    for &(host, task) in queued {
        match by_host.iter_mut().find(|(h, _)| h.id == host.id) {
            Some((_, tasks)) => tasks.push(task),
            None => by_host.push((host, vec![task])),
        }
    }
    let mut taken = HashMap::new();
    let until = lease_until(robot.lease());
    for (host, mut waiting) in by_host {
        if unreachable.contains(&host.id) {
            continue;
        }
        waiting.sort_by_key(|t| t.id);
        let workers: Vec<Reserved> = waiting
            .iter()
            .map_while(|_| robot.reserve(host.id))
            .collect();
        if workers.is_empty() {
            continue;
        }
        let now = db::now();
        let limit = host.max_concurrent_tasks;
        let rooms =
            tasks::rooms_in_line(conn, host.id, limit, waiting[0].id, workers.len(), now).await?;
        let takes: Vec<(&Task, tasks::Room)> = waiting.into_iter().zip(rooms).collect();
        let running = tasks::take_all(conn, &takes, robot.owner(), now, until).await?;
        // Each task taken gets a worker; the rest go back with the unused workers.
        for (task, worker) in running.into_iter().zip(workers) {
            taken.insert(task.id, (task, worker));
        }
    }
    Ok(taken)
}
