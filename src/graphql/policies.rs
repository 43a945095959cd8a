//! Snapshot policies in GraphQL: the `Policy` type with its runs and its preview, and the
//! input that defines one. The rules are `domain::policy`'s; the runner is the service's.

use async_graphql::{Context, ID, InputObject, Object, Result, ResultExt};
use chrono::{DateTime, Utc};

use super::loaders::{Loaders, SnapshotId, TokenId, VmId};
use super::types::{Snapshot, Vm, maybe};
use super::{MAX_PAGE, parse_id};
use crate::db::models;
use crate::service::Service;
use crate::service::policies::{PolicySpec, Preview};

/// What a new policy is: one schedule (`everySeconds`, or `cron` read in `timeZone`), the
/// VMs it covers (`vmId`, or the project's VMs whose names `vmFilter` matches, `*` and
/// `?` as wildcards; all of them without), the name template, and retention.
#[derive(InputObject)]
pub struct PolicyInput {
    /// Unique within the project; it names the policy's snapshots (`{policy}`) and is
    /// the actor of its actions (`policy NAME`).
    pub name: String,
    /// The one VM it covers (instead of `vmFilter`).
    pub vm_id: Option<ID>,
    /// The project's VMs whose names match (`*` and `?` as wildcards); all of them when
    /// neither this nor `vmId` is given.
    pub vm_filter: Option<String>,
    /// Every so many seconds (60 or more), counted from the policy's creation.
    pub every_seconds: Option<i64>,
    /// Five cron fields (`0 3 * * *`), or `@daily`, `@hourly`, ...
    pub cron: Option<String>,
    /// The IANA zone the cron expression and the names are read in (UTC by default).
    pub time_zone: Option<String>,
    /// The snapshots' names: `{policy}`, `{vm}`, `{date}`, `{time}` and `{due}` are
    /// replaced (default `{policy}-{due}`). Two runs in a row must be named apart.
    pub name_template: Option<String>,
    /// Keep at most the newest this many of the policy's snapshots (per VM).
    pub keep_last: Option<i32>,
    /// Keep none of the policy's snapshots made longer ago than this.
    pub max_age_seconds: Option<i64>,
}

impl PolicyInput {
    pub fn spec(self) -> Result<PolicySpec, crate::AppError> {
        Ok(PolicySpec {
            name: self.name,
            vm_id: self.vm_id.map(|v| parse_id(&v, "VM")).transpose()?,
            vm_filter: self.vm_filter,
            every_seconds: self.every_seconds,
            cron: self.cron,
            time_zone: self.time_zone,
            name_template: self.name_template,
            keep_last: self.keep_last,
            max_age_seconds: self.max_age_seconds,
        })
    }
}

fn bounded(first: i32) -> Result<usize> {
    if (0..=MAX_PAGE).contains(&first) {
        Ok(first as usize)
    } else {
        Err(crate::AppError::validation(format!(
            "first must be 0 to {MAX_PAGE}, not {first}."
        )))
        .extend()
    }
}

pub struct Policy(pub models::Policy);

/// A snapshot policy: it snapshots its VMs on a schedule and prunes what it made.
#[Object]
impl Policy {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Its one VM (null: the project's VMs that `vmFilter` covers).
    async fn vm(&self, ctx: &Context<'_>) -> Result<Option<Vm>> {
        match self.0.vm_id {
            Some(id) => Ok(maybe::<_, models::Vm>(ctx, VmId(id)).await?.map(Vm)),
            None => Ok(None),
        }
    }

    async fn vm_filter(&self) -> Option<&str> {
        self.0.vm_filter.as_deref()
    }

    async fn every_seconds(&self) -> Option<i64> {
        self.0.every_seconds
    }

    async fn cron(&self) -> Option<&str> {
        self.0.cron.as_deref()
    }

    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }

    async fn name_template(&self) -> &str {
        &self.0.name_template
    }

    async fn keep_last(&self) -> Option<i32> {
        self.0.keep_last
    }

    async fn max_age_seconds(&self) -> Option<i64> {
        self.0.max_age_seconds
    }

    /// Why it makes nothing any more: it runs as its token, and stops when that token
    /// is revoked or expires ("its token has expired"); it pauses when its runs keep
    /// being missed, until `resumePolicy`; null while it runs.
    async fn stopped_because(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let token = token_of(ctx, &self.0).await?;
        Ok(ctx
            .data_unchecked::<Service>()
            .policy_stopped(&self.0, token.as_ref()))
    }

    /// The actions on it the caller may take now, each with the reason when not.
    async fn actions(&self, ctx: &Context<'_>) -> Result<super::offers::PolicyActions> {
        super::offers::policy_actions(ctx, &self.0).await
    }

    /// Its next slot.
    async fn next_due_at(&self) -> DateTime<Utc> {
        self.0.next_due_at.and_utc()
    }

    /// Its runs, newest first: one per VM and slot.
    async fn runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<PolicyRun>> {
        let first = bounded(first)? as i64;
        let runs = ctx
            .data_unchecked::<Service>()
            .policy_runs(&self.0, first)
            .await
            .extend()?;
        Ok(runs.into_iter().map(PolicyRun).collect())
    }

    /// What its next slot will make and prune, as things stand now.
    async fn preview(&self, ctx: &Context<'_>) -> Result<PolicyPreview> {
        let preview = ctx
            .data_unchecked::<Service>()
            .preview_policy(&self.0)
            .await
            .extend()?;
        Ok(PolicyPreview(preview))
    }
}

pub struct PolicyRun(pub models::PolicyRun);

/// One VM's part of one slot: PENDING until its snapshot is asked for (CREATED), or until
/// the next slot comes first (MISSED). A busy VM, or one at a limit, is tried again
/// meanwhile; `attempts` and `lastError` say so.
#[Object]
impl PolicyRun {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn due_at(&self) -> DateTime<Utc> {
        self.0.due_at.and_utc()
    }

    async fn state(&self) -> &str {
        &self.0.state
    }

    async fn attempts(&self) -> i32 {
        self.0.attempts
    }

    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    async fn vm(&self, ctx: &Context<'_>) -> Result<Option<Vm>> {
        Ok(maybe::<_, models::Vm>(ctx, VmId(self.0.vm_id))
            .await?
            .map(Vm))
    }

    /// The snapshot it asked for.
    async fn snapshot(&self, ctx: &Context<'_>) -> Result<Option<Snapshot>> {
        match self.0.snapshot_id {
            Some(id) => Ok(maybe::<_, models::Snapshot>(ctx, SnapshotId(id))
                .await?
                .map(Snapshot)),
            None => Ok(None),
        }
    }

    /// Its task's id (the task's events are like any other's).
    async fn task_id(&self) -> Option<ID> {
        self.0.task_id.map(Into::into)
    }
}

pub struct PolicyPreview(Preview);

/// A policy's next slot, as things stand.
#[Object]
impl PolicyPreview {
    async fn due_at(&self) -> DateTime<Utc> {
        self.0.due
    }

    /// Per VM: the snapshot it makes, and what retention then prunes.
    async fn vms(&self, #[graphql(default = 100)] first: i32) -> Result<Vec<PreviewVm>> {
        let first = bounded(first)?;
        Ok(self
            .0
            .creates
            .iter()
            .zip(&self.0.prunes)
            .take(first)
            .map(|((vm, name), (_, prunes))| PreviewVm {
                vm: vm.clone(),
                name: name.clone(),
                prunes: prunes.clone(),
            })
            .collect())
    }
}

pub struct PreviewVm {
    /// The VM the slot's run makes a snapshot of.
    vm: models::Vm,
    /// The name of the snapshot the run makes (from the policy's name template).
    name: String,
    /// The ids of the VM's snapshots retention then prunes, oldest first.
    prunes: Vec<i64>,
}

#[Object]
impl PreviewVm {
    async fn vm(&self) -> Vm {
        Vm(self.vm.clone())
    }

    /// The name of the snapshot it makes.
    async fn creates(&self) -> &str {
        &self.name
    }

    /// The snapshots retention prunes after it, oldest first (one at a time).
    async fn prunes(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i32,
    ) -> Result<Vec<Snapshot>> {
        let first = bounded(first)?;
        let mut out = Vec::new();
        for id in self.prunes.iter().take(first) {
            if let Some(s) = maybe::<_, models::Snapshot>(ctx, SnapshotId(*id)).await? {
                out.push(Snapshot(s));
            }
        }
        Ok(out)
    }
}

/// The token policy `p` runs as (`None`: gone), read once for every policy of a request.
pub(super) async fn token_of(
    ctx: &Context<'_>,
    p: &models::Policy,
) -> Result<Option<models::Token>> {
    ctx.data_unchecked::<Loaders>()
        .load(TokenId(p.token_id))
        .await
        .extend()
}
