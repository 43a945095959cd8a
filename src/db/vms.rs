//! Virtual machines.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;

use super::models::{NewVm, Vm};
use super::schema::vms::dsl::*;
use super::{Conn, run};

pub async fn insert(conn: &mut Conn<'_>, new: NewVm<'_>) -> QueryResult<Vm> {
    run!(conn, |c| diesel::insert_into(vms)
        .values(&new)
        .returning(Vm::as_returning())
        .get_result(c)
        .await)
}

pub async fn by_id(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<Option<Vm>> {
    run!(conn, |c| vms
        .find(wanted)
        .select(Vm::as_select())
        .first(c)
        .await
        .optional())
}

/// Reads VM `wanted` and, on PostgreSQL, locks its row until the transaction ends, so
/// actions on one VM run one after the other. (SQLite has one writer anyway.)
pub async fn lock(conn: &mut Conn<'_>, wanted: i64) -> QueryResult<Option<Vm>> {
    match conn {
        Conn::Sqlite(c) => vms
            .find(wanted)
            .select(Vm::as_select())
            .first(&mut **c)
            .await
            .optional(),
        Conn::Pg(c) => vms
            .find(wanted)
            .select(Vm::as_select())
            .for_update()
            .first(&mut **c)
            .await
            .optional(),
    }
}

/// [`lock`] for each of `wanted`, in id order (so that two batches never wait for each
/// other in a circle); the ones that exist.
pub async fn lock_all(conn: &mut Conn<'_>, wanted: &[i64]) -> QueryResult<Vec<Vm>> {
    match conn {
        // One at a time: a statement SQLite keeps prepared.
        Conn::Sqlite(_) => {
            let mut found = Vec::with_capacity(wanted.len());
            for &vm in wanted {
                found.extend(lock(conn, vm).await?);
            }
            Ok(found)
        }
        Conn::Pg(c) => {
            vms.filter(id.eq_any(wanted))
                .select(Vm::as_select())
                .order(id)
                .for_update()
                .load(&mut **c)
                .await
        }
    }
}

pub async fn by_ids(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<Vm>> {
    run!(conn, |c| vms
        .filter(id.eq_any(ids))
        .select(Vm::as_select())
        .load(c)
        .await)
}

/// Which VMs a listing shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Only this project's VMs (none: every project's).
    pub project: Option<i64>,
    /// Only VMs on this host.
    pub host: Option<i64>,
}

/// Up to `limit` VMs after id `after`, by id.
pub async fn page(
    conn: &mut Conn<'_>,
    filter: Filter,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Vm>> {
    run!(conn, |c| {
        let mut query = vms
            .select(Vm::as_select())
            .order(id)
            .limit(limit)
            .into_boxed();
        if let Some(project) = filter.project {
            query = query.filter(project_id.eq(project));
        }
        if let Some(host) = filter.host {
            query = query.filter(host_id.eq(host));
        }
        if let Some(after) = after {
            query = query.filter(id.gt(after));
        }
        query.load(c).await
    })
}

/// The VMs on `hosts`, optionally of one project only; by id.
pub async fn on_hosts(
    conn: &mut Conn<'_>,
    hosts: &[i64],
    project: Option<i64>,
) -> QueryResult<Vec<Vm>> {
    run!(conn, |c| {
        let mut query = vms
            .filter(host_id.eq_any(hosts))
            .select(Vm::as_select())
            .order(id)
            .into_boxed();
        if let Some(project) = project {
            query = query.filter(project_id.eq(project));
        }
        query.load(c).await
    })
}

/// Project `project`'s VMs, by id.
pub async fn of_project(conn: &mut Conn<'_>, project: i64) -> QueryResult<Vec<Vm>> {
    run!(conn, |c| vms
        .filter(project_id.eq(project))
        .select(Vm::as_select())
        .order(id)
        .load(c)
        .await)
}
