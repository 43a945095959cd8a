//! Reads, filtered to what the caller may see. The batch reads at the end serve the
//! GraphQL loaders, which only reach objects hanging off something the caller already saw.

use std::sync::Arc;

use super::admin::host_failed_for_tenants;
use super::{Caller, Core};
use crate::db::listing::{self, HistoryField, Listing, SnapshotField};
use crate::db::models::{
    HistoryEntry, Host, HostHealth, Project, Snapshot, Task, TaskEvent, Token, Vm,
};
use crate::db::pages::Page;
use crate::db::{events, history, hosts, projects, snapshots, tasks, tokens, vms};
use crate::domain::TaskState;
use crate::domain::drift::{self, Drift, Listed, Recorded};
use crate::error::{AppError, AppResult};
use crate::hypervisor::ReadFailed;

/// Everything a caller may read.
#[derive(Clone)]
pub struct Reads {
    /// What every part of the service shares.
    pub(super) core: Arc<Core>,
}

/// Which VMs [`Reads::vms`] lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct VmFilter {
    /// Only VMs on this host (none: every host's); the caller's scope applies besides.
    pub host: Option<i64>,
}

/// Which tasks [`Reads::tasks`] lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskFilter {
    /// Only this VM's tasks (none: every VM's); not found unless the caller may see the VM.
    pub vm: Option<i64>,
    /// Only tasks in this state (none: any).
    pub state: Option<TaskState>,
}

impl Reads {
    /// VM `id`, or `None` when it does not exist for the caller.
    pub async fn vm(&self, caller: &Caller, id: i64) -> AppResult<Option<Vm>> {
        let vm = vms::by_id(&mut self.core.db.reader().await?.conn(), id).await?;
        Ok(vm.filter(|vm| caller.can_see(vm.project_id)))
    }

    pub async fn snapshot(&self, caller: &Caller, id: i64) -> AppResult<Option<Snapshot>> {
        let mut pooled = self.core.db.reader().await?;
        let mut conn = pooled.conn();
        let Some(snapshot) = snapshots::by_id(&mut conn, id).await? else {
            return Ok(None);
        };
        let vm = vms::by_id(&mut conn, snapshot.vm_id).await?;
        Ok(vm
            .filter(|vm| caller.can_see(vm.project_id))
            .map(|_| snapshot))
    }

    pub async fn task(&self, caller: &Caller, id: i64) -> AppResult<Option<Task>> {
        let mut pooled = self.core.db.reader().await?;
        let mut conn = pooled.conn();
        let Some(task) = tasks::by_id(&mut conn, id).await? else {
            return Ok(None);
        };
        let vm = vms::by_id(&mut conn, task.vm_id).await?;
        Ok(vm.filter(|vm| caller.can_see(vm.project_id)).map(|_| task))
    }

    /// The hosts the caller may see: all for ADMIN, else those its project has VMs on.
    pub async fn hosts(&self, caller: &Caller) -> AppResult<Vec<Host>> {
        Ok(hosts::list(&mut self.core.db.reader().await?.conn(), caller.scope()).await?)
    }

    pub async fn host(&self, caller: &Caller, id: i64) -> AppResult<Option<Host>> {
        let all = self.hosts(caller).await?;
        Ok(all.into_iter().find(|h| h.id == id))
    }

    /// Up to `limit` VMs after id `after`, by id.
    pub async fn vms(
        &self,
        caller: &Caller,
        filter: VmFilter,
        after: Option<i64>,
        limit: i64,
    ) -> AppResult<Vec<Vm>> {
        let filter = vms::Filter {
            project: caller.scope(),
            host: filter.host,
        };
        Ok(vms::page(
            &mut self.core.db.reader().await?.conn(),
            filter,
            after,
            limit,
        )
        .await?)
    }

    /// Up to `limit` tasks older than `before`, newest first.
    pub async fn tasks(
        &self,
        caller: &Caller,
        filter: TaskFilter,
        before: Option<i64>,
        limit: i64,
    ) -> AppResult<Vec<Task>> {
        if let Some(vm) = filter.vm
            && self.vm(caller, vm).await?.is_none()
        {
            return Err(AppError::not_found("VM", vm));
        }
        let filter = tasks::Filter {
            // A VM's tasks are its project's: the VM's index alone reads them, and a
            // second scope would let SQLite's planner pick the wider one.
            project: caller.scope().filter(|_| filter.vm.is_none()),
            vm: filter.vm,
            state: filter.state,
        };
        Ok(tasks::page(
            &mut self.core.db.reader().await?.conn(),
            filter,
            before,
            limit,
        )
        .await?)
    }

    /// A page of the snapshots the caller may see, closed ones too, and how many match.
    pub async fn snapshot_list(
        &self,
        caller: &Caller,
        listing: &Listing<SnapshotField>,
    ) -> AppResult<(Vec<Snapshot>, i64)> {
        let mut conn = self.core.db.reader().await?;
        Ok(listing::snapshots(&mut conn.conn(), caller.scope(), listing).await?)
    }

    /// A page of the snapshot history the caller may see, and how many rows match.
    pub async fn history_list(
        &self,
        caller: &Caller,
        listing: &Listing<HistoryField>,
    ) -> AppResult<(Vec<HistoryEntry>, i64)> {
        let mut conn = self.core.db.reader().await?;
        Ok(listing::history(&mut conn.conn(), caller.scope(), listing).await?)
    }

    /// The newest `n` history rows of each of snapshots `ids`, oldest first.
    pub async fn recent_history_of_snapshots(
        &self,
        ids: &[i64],
        n: i64,
    ) -> AppResult<Vec<HistoryEntry>> {
        let pages: Vec<Page> = ids.iter().map(|&id| Page::newest(id, n)).collect();
        let mut rows = self.history_pages(history::Scope::Snapshot, &pages).await?;
        rows.sort_by_key(|h| h.id);
        Ok(rows)
    }

    /// Snapshot `id`'s first history row: how it was asked for.
    pub async fn first_history_of_snapshot(&self, id: i64) -> AppResult<Vec<HistoryEntry>> {
        self.history_pages(history::Scope::Snapshot, &[Page::oldest(id, None, 1)])
            .await
    }

    pub async fn projects(&self, caller: &Caller) -> AppResult<Vec<Project>> {
        caller.require_admin()?;
        Ok(projects::list(&mut self.core.db.reader().await?.conn(), None).await?)
    }

    /// The caller's own project (a token belongs to one, an ADMIN's too).
    pub async fn own_project(&self, caller: &Caller) -> AppResult<Option<Project>> {
        let mut conn = self.core.db.reader().await?;
        Ok(projects::by_id(&mut conn.conn(), caller.project_id).await?)
    }

    // Batch reads for the GraphQL loaders.

    pub async fn vms_by_ids(&self, ids: &[i64]) -> AppResult<Vec<Vm>> {
        Ok(vms::by_ids(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    /// The caller's VMs on `hosts`.
    pub async fn vms_on_hosts(&self, caller: &Caller, hosts: &[i64]) -> AppResult<Vec<Vm>> {
        Ok(vms::on_hosts(
            &mut self.core.db.reader().await?.conn(),
            hosts,
            caller.scope(),
        )
        .await?)
    }

    pub async fn hosts_by_ids(&self, ids: &[i64]) -> AppResult<Vec<Host>> {
        Ok(hosts::by_ids(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    pub async fn health_of_hosts(&self, ids: &[i64]) -> AppResult<Vec<HostHealth>> {
        Ok(hosts::health_of(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    pub async fn snapshots_by_ids(&self, ids: &[i64]) -> AppResult<Vec<Snapshot>> {
        Ok(snapshots::by_ids(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    pub async fn tasks_by_ids(&self, ids: &[i64]) -> AppResult<Vec<Task>> {
        Ok(tasks::by_ids(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    pub async fn snapshots_of_vms(
        &self,
        vms: &[i64],
        include_closed: bool,
    ) -> AppResult<Vec<Snapshot>> {
        Ok(snapshots::of_vms(
            &mut self.core.db.reader().await?.conn(),
            vms,
            include_closed,
        )
        .await?)
    }

    /// Pages of history, each of a VM or of a snapshot as `scope` says.
    pub async fn history_pages(
        &self,
        scope: history::Scope,
        pages: &[Page],
    ) -> AppResult<Vec<HistoryEntry>> {
        Ok(history::pages(&mut self.core.db.reader().await?.conn(), scope, pages).await?)
    }

    /// Pages of the tasks that acted on snapshots.
    pub async fn task_pages_of_snapshots(&self, pages: &[Page]) -> AppResult<Vec<Task>> {
        Ok(tasks::pages_of_snapshots(&mut self.core.db.reader().await?.conn(), pages).await?)
    }

    /// Pages of VMs' snapshots, closed ones too.
    pub async fn snapshot_pages_of_vms(&self, pages: &[Page]) -> AppResult<Vec<Snapshot>> {
        Ok(snapshots::pages_of_vms(&mut self.core.db.reader().await?.conn(), pages).await?)
    }

    pub async fn open_tasks_of_vms(&self, vms: &[i64]) -> AppResult<Vec<Task>> {
        Ok(tasks::open_of_vms(&mut self.core.db.reader().await?.conn(), vms).await?)
    }

    /// Pages of tasks' events.
    pub async fn event_pages(&self, pages: &[Page]) -> AppResult<Vec<TaskEvent>> {
        Ok(events::pages_of_tasks(&mut self.core.db.reader().await?.conn(), pages).await?)
    }

    /// The tokens of `ids` (policies run as theirs).
    pub async fn tokens_by_ids(&self, ids: &[i64]) -> AppResult<Vec<Token>> {
        Ok(tokens::by_ids(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    pub async fn projects_by_ids(&self, ids: &[i64]) -> AppResult<Vec<Project>> {
        Ok(projects::by_ids(&mut self.core.db.reader().await?.conn(), ids).await?)
    }

    /// How many non-closed snapshots each of `projects` has across its VMs.
    pub async fn snapshot_counts_of_projects(
        &self,
        projects: &[i64],
    ) -> AppResult<std::collections::HashMap<i64, i64>> {
        let mut conn = self.core.db.reader().await?;
        Ok(snapshots::open_counts_of_projects(&mut conn.conn(), projects).await?)
    }
}

impl Reads {
    /// Where snaptree and the VM's host disagree about its snapshots, asking the host now.
    /// While a task runs the two legitimately differ for a moment.
    pub async fn drift(&self, caller: &Caller, vm_id: i64) -> AppResult<Vec<Drift>> {
        let vm = self
            .vm(caller, vm_id)
            .await?
            .ok_or_else(|| AppError::not_found("VM", vm_id))?;
        let (host, rows) = {
            let mut pooled = self.core.db.reader().await?;
            let mut conn = pooled.conn();
            let host = hosts::by_id(&mut conn, vm.host_id)
                .await?
                .ok_or_else(|| AppError::internal(format!("VM {vm_id} has no host")))?;
            (host, snapshots::of_vms(&mut conn, &[vm.id], false).await?)
        };
        // A tenant's read: shared, fair, after the robot's waiting work, and finished
        // even if the request is not (`hypervisor::registry::reads`).
        let host = super::host_ref(&host).map_err(host_failed_for_tenants)?;
        let deadline = self.core.limits.request_timeout;
        let listed = self
            .core
            .drivers
            .read_listing(&host, &vm.identifier, vm.project_id, deadline)
            .await
            .map_err(|failed| match failed {
                ReadFailed::Host(err) => host_failed_for_tenants(err),
                ReadFailed::Crowded(most) => AppError::RateLimited {
                    message: format!(
                        "Your project already has {most} reads of this host under way; try again in a moment."
                    ),
                    retry_after_seconds: 1,
                },
            })?;
        let names: std::collections::HashMap<i64, &str> =
            rows.iter().map(|s| (s.id, s.host_name.as_str())).collect();
        let recorded: Vec<Recorded<'_>> = rows
            .iter()
            .map(|s| Recorded {
                host_name: &s.host_name,
                parent_host_name: s.parent_id.and_then(|p| names.get(&p).copied()),
                state: s.state(),
                active: s.active,
            })
            .collect();
        let on_host: Vec<Listed<'_>> = listed
            .iter()
            .map(|l| Listed {
                name: &l.name,
                parent: l.parent.as_deref(),
                current: l.current,
            })
            .collect();
        Ok(drift::compare(&recorded, &on_host))
    }
}
