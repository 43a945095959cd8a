//! Queries. Objects the caller may not see come back as null, as if they did not exist.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object, Result, ResultExt};
use chrono::{DateTime, Utc};

use super::enums::{Role, TaskState};
use super::types::{Host, Project, Snapshot, Task, Vm};
use super::{DEFAULT_PAGE, MAX_PAGE, Page, parse_id};
use crate::error::AppError;
use crate::service::{Caller, Reads, Service, TaskFilter, VmFilter};

pub struct Query;

/// Who is asking: what a client shows and offers by.
#[derive(async_graphql::SimpleObject)]
pub struct Me {
    /// The token's name, the actor its actions are recorded under.
    name: String,
    /// The token's role. What it may do is in each object's `actions`, with the reason
    /// when not.
    role: Role,
    /// The project the token belongs to (an ADMIN sees every project).
    project: Option<Project>,
    /// When the token stops being accepted; null: until revoked.
    expires_at: Option<DateTime<Utc>>,
}

fn caller<'a>(ctx: &'a Context<'_>) -> &'a Caller {
    ctx.data_unchecked::<Caller>()
}

fn reads<'a>(ctx: &'a Context<'_>) -> &'a Reads {
    ctx.data_unchecked::<Service>().reads()
}

/// Page size from `first`: the default when absent, an error outside 0..=MAX_PAGE.
fn page_size(first: Option<i32>) -> Result<i64, AppError> {
    match first.unwrap_or(DEFAULT_PAGE) {
        n @ 0..=MAX_PAGE => Ok(i64::from(n)),
        n => Err(AppError::validation(format!(
            "first must be 0 to {MAX_PAGE}, not {n}."
        ))),
    }
}

/// Cursors are ids, as opaque strings.
fn cursor(after: Option<String>) -> Result<Option<i64>, AppError> {
    after
        .map(|a| {
            a.parse::<i64>()
                .map_err(|_| AppError::validation(format!("{a:?} is not a cursor from this API.")))
        })
        .transpose()
}

/// Builds a connection from one more row than asked for (which tells there is a next
/// page).
fn connection<R, N: async_graphql::OutputType>(
    mut rows: Vec<R>,
    size: i64,
    id: impl Fn(&R) -> i64,
    node: impl Fn(R) -> N,
    after: bool,
) -> Connection<String, N> {
    let has_next = rows.len() as i64 > size;
    rows.truncate(size as usize);
    let mut page = Connection::new(after, has_next);
    page.edges.extend(
        rows.into_iter()
            .map(|r| Edge::new(id(&r).to_string(), node(r))),
    );
    page
}

#[Object]
impl Query {
    /// Hosts: all for ADMIN; for others, those their project has VMs on. By id,
    /// `first` of them after `after`.
    async fn hosts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Host>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let hosts = reads(ctx).hosts(caller(ctx)).await.extend()?;
        Ok(page.of(&hosts, |h| h.id, Host))
    }

    /// The caller: its token's name, role and project.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let project = reads(ctx).own_project(caller(ctx)).await.extend()?;
        Ok(Me {
            name: caller(ctx).name.clone(),
            role: caller(ctx).role.into(),
            project: project.map(Project),
            expires_at: caller(ctx).expires_at.map(|at| at.and_utc()),
        })
    }

    async fn host(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Host>> {
        let id = parse_id(&id, "host").extend()?;
        Ok(reads(ctx).host(caller(ctx), id).await.extend()?.map(Host))
    }

    /// VMs by id, a page at a time.
    async fn vms(
        &self,
        ctx: &Context<'_>,
        host_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Vm>> {
        let host = host_id.map(|h| parse_id(&h, "host")).transpose().extend()?;
        let size = page_size(first).extend()?;
        let after_id = cursor(after).extend()?;
        let filter = VmFilter { host };
        let rows = reads(ctx)
            .vms(caller(ctx), filter, after_id, size + 1)
            .await
            .extend()?;
        Ok(connection(rows, size, |v| v.id, Vm, after_id.is_some()))
    }

    async fn vm(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Vm>> {
        let id = parse_id(&id, "VM").extend()?;
        Ok(reads(ctx).vm(caller(ctx), id).await.extend()?.map(Vm))
    }

    async fn snapshot(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Snapshot>> {
        let id = parse_id(&id, "snapshot").extend()?;
        Ok(reads(ctx)
            .snapshot(caller(ctx), id)
            .await
            .extend()?
            .map(Snapshot))
    }

    async fn task(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Task>> {
        let id = parse_id(&id, "task").extend()?;
        Ok(reads(ctx).task(caller(ctx), id).await.extend()?.map(Task))
    }

    /// Tasks, newest first, a page at a time.
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        vm_id: Option<ID>,
        state: Option<TaskState>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Task>> {
        let vm = vm_id.map(|v| parse_id(&v, "VM")).transpose().extend()?;
        let size = page_size(first).extend()?;
        let before = cursor(after).extend()?;
        let filter = TaskFilter {
            vm,
            state: state.map(Into::into),
        };
        let rows = reads(ctx)
            .tasks(caller(ctx), filter, before, size + 1)
            .await
            .extend()?;
        Ok(connection(rows, size, |t| t.id, Task, before.is_some()))
    }

    /// Projects (ADMIN only), by id: `first` of them after `after`.
    async fn projects(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Project>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let projects = reads(ctx).projects(caller(ctx)).await.extend()?;
        Ok(page.of(&projects, |p| p.id, Project))
    }

    /// Snapshot policies the caller may see, by id.
    async fn policies(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<super::policies::Policy>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let all = ctx
            .data_unchecked::<crate::service::Service>()
            .policies(caller(ctx))
            .await
            .extend()?;
        Ok(page.of(&all, |p| p.id, super::policies::Policy))
    }

    async fn policy(&self, ctx: &Context<'_>, id: ID) -> Result<Option<super::policies::Policy>> {
        let id = parse_id(&id, "policy").extend()?;
        Ok(ctx
            .data_unchecked::<crate::service::Service>()
            .policy(caller(ctx), id)
            .await
            .extend()?
            .map(super::policies::Policy))
    }
}
