//! Hypervisor hosts.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{Host, HostHealth, NewHost};
use super::schema::{host_health, hosts, vms};
use super::{Conn, run};

pub async fn insert(conn: &mut Conn<'_>, new: NewHost<'_>) -> QueryResult<Host> {
    run!(conn, |c| diesel::insert_into(hosts::table)
        .values(&new)
        .returning(Host::as_returning())
        .get_result(c)
        .await)
}

pub async fn by_id(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Host>> {
    run!(conn, |c| hosts::table
        .find(id)
        .select(Host::as_select())
        .first(c)
        .await
        .optional())
}

/// Sets host `id`'s limits that are given; the host as it is then.
pub async fn set_limits(
    conn: &mut Conn<'_>,
    id: i64,
    concurrent: Option<i32>,
    snapshots_per_vm: Option<Option<i32>>,
) -> QueryResult<Host> {
    #[derive(AsChangeset)]
    #[diesel(table_name = hosts)]
    struct Limits {
        /// Tasks the host may run at once; `None` leaves the column.
        max_concurrent_tasks: Option<i32>,
        /// Non-closed snapshots per VM: `Some(None)` writes NULL (only the server's ceiling
        /// holds); `None` leaves the column.
        max_snapshots_per_vm: Option<Option<i32>>,
    }
    let limits = Limits {
        max_concurrent_tasks: concurrent,
        max_snapshots_per_vm: snapshots_per_vm,
    };
    if concurrent.is_none() && snapshots_per_vm.is_none() {
        return run!(conn, |c| hosts::table
            .find(id)
            .select(Host::as_select())
            .first(c)
            .await);
    }
    run!(conn, |c| diesel::update(hosts::table.find(id))
        .set(&limits)
        .returning(Host::as_returning())
        .get_result(c)
        .await)
}

pub async fn by_name(conn: &mut Conn<'_>, name: &str) -> QueryResult<Option<Host>> {
    run!(conn, |c| hosts::table
        .filter(hosts::name.eq(name))
        .select(Host::as_select())
        .first(c)
        .await
        .optional())
}

pub async fn by_ids(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<Host>> {
    run!(conn, |c| hosts::table
        .filter(hosts::id.eq_any(ids))
        .select(Host::as_select())
        .load(c)
        .await)
}

pub async fn by_names(conn: &mut Conn<'_>, names: &[String]) -> QueryResult<Vec<Host>> {
    run!(conn, |c| hosts::table
        .filter(hosts::name.eq_any(names))
        .select(Host::as_select())
        .load(c)
        .await)
}

/// Every host, or (with `project`) the hosts on which that project has VMs; by id.
pub async fn list(conn: &mut Conn<'_>, project: Option<i64>) -> QueryResult<Vec<Host>> {
    run!(conn, |c| {
        let mut query = hosts::table
            .select(Host::as_select())
            .order(hosts::id)
            .into_boxed();
        if let Some(project) = project {
            query = query.filter(
                hosts::id.eq_any(
                    vms::table
                        .filter(vms::project_id.eq(project))
                        .select(vms::host_id),
                ),
            );
        }
        query.load(c).await
    })
}

/// Records the hosts' health (of hosts that still exist: one deleted meanwhile is skipped).
pub async fn set_health(conn: &mut Conn<'_>, healths: &[HostHealth]) -> QueryResult<()> {
    let ids: Vec<i64> = healths.iter().map(|h| h.host_id).collect();
    let existing: Vec<i64> = run!(conn, |c| hosts::table
        .filter(hosts::id.eq_any(&ids))
        .select(hosts::id)
        .load(c)
        .await)?;
    for health in healths.iter().filter(|h| existing.contains(&h.host_id)) {
        run!(conn, |c| diesel::insert_into(host_health::table)
            .values(health)
            .on_conflict(host_health::host_id)
            .do_update()
            .set((
                host_health::reachable.eq(health.reachable),
                host_health::since.eq(health.since),
                host_health::last_error.eq(&health.last_error),
            ))
            .execute(c)
            .await)?;
    }
    Ok(())
}

/// The health recorded for hosts `ids` (a host never called has none).
pub async fn health_of(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<HostHealth>> {
    run!(conn, |c| host_health::table
        .filter(host_health::host_id.eq_any(ids))
        .select(HostHealth::as_select())
        .load(c)
        .await)
}

/// Each host that has been called, by name, and whether it answered last.
pub async fn reachability(conn: &mut Conn<'_>) -> QueryResult<Vec<(String, bool)>> {
    run!(conn, |c| hosts::table
        .inner_join(host_health::table)
        .select((hosts::name, host_health::reachable))
        .order(hosts::name)
        .load(c)
        .await)
}
