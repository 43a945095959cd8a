//! Snapshot policies: defining them, previewing them, and running them. The runner
//! ([`spawn_runner`]) goes with every robot; each tick it takes the slots that are due
//! (one process per slot, and one run for all the slots missed while down), tries the
//! runs pending (a busy VM, or one at a limit, is tried again, and the miss recorded),
//! and prunes what retention says, one snapshot per VM at a time. Every snapshot it asks
//! for or deletes is an ordinary action of the policy's token, so its task and events
//! are like any other's. Time is the service's clock; claims are the database's time.

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Caller, Create, Service};
use crate::db::models::{NewPolicy, NewPolicyRun, Policy, PolicyRun, Token, Vm};
use crate::db::{self, policies, tasks, tokens, vms};
use crate::domain::names;
use crate::domain::offer::{self, Offer};
use crate::domain::policy::{self, Made, Retention, Schedule};
use crate::error::{AppError, AppResult};

/// How long a process holds a run it tries.
const CLAIM: chrono::Duration = chrono::Duration::seconds(30);
/// When a refused run is first tried again; each refusal doubles it, up to
/// [`RETRY_CAP`], so that a run refused again and again costs less and less.
const RETRY: chrono::Duration = chrono::Duration::seconds(2);
/// The longest wait between two tries of a refused run.
const RETRY_CAP: chrono::Duration = chrono::Duration::seconds(60);
/// Most runs of one project tried in one tick, and in all: a project cannot take every
/// turn from the others.
const RUNS_PER_PROJECT: i64 = 20;
const RUNS_PER_TICK: i64 = 500;

/// When a run refused for the `attempts`th time is tried again.
fn retry_after(attempts: i32) -> chrono::Duration {
    let doublings = attempts.clamp(1, 16) - 1;
    (RETRY * (1 << doublings)).min(RETRY_CAP)
}

/// What a policy is asked to be.
#[derive(Clone, Debug, Default)]
pub struct PolicySpec {
    /// Unique in its project; fills `{policy}` in the name template.
    pub name: String,
    /// One VM; or, when absent, the project's VMs that `vm_filter` covers (all without).
    pub vm_id: Option<i64>,
    /// Which VM names a project-wide policy covers (`*` any run, `?` one character).
    pub vm_filter: Option<String>,
    /// Run every this many seconds from its creation; give this or `cron`, not both.
    pub every_seconds: Option<i64>,
    /// Run on this cron schedule, in `time_zone`; give this or `every_seconds`, not both.
    pub cron: Option<String>,
    /// The zone of `cron` and of the names' dates (cron only; `None`: UTC).
    pub time_zone: Option<String>,
    /// Its snapshots' name (`{policy}`, `{vm}`, `{date}`, `{time}`, `{due}`); `None`:
    /// [`DEFAULT_TEMPLATE`].
    pub name_template: Option<String>,
    /// Retention: the newest this many of its snapshots per VM are kept (1 or more).
    pub keep_last: Option<i32>,
    /// Retention: its snapshots from slots longer ago than this are pruned (at least 60).
    pub max_age_seconds: Option<i64>,
}

/// The most policies one project may have: each costs the runner every tick.
pub const MAX_POLICIES_PER_PROJECT: i32 = 100;

/// The template when none is given.
pub const DEFAULT_TEMPLATE: &str = "{policy}-{due}";

/// What a policy's next slot will do, as things stand.
#[derive(Clone, Debug)]
pub struct Preview {
    /// The slot previewed: the next one, or, once that is due, the latest slot due now.
    pub due: DateTime<Utc>,
    /// Per VM, the name of the snapshot it makes.
    pub creates: Vec<(Vm, String)>,
    /// Per VM, the snapshots retention then prunes (ids), oldest first.
    pub prunes: Vec<(Vm, Vec<i64>)>,
}

/// The policy's schedule.
pub fn schedule_of(p: &Policy) -> Result<Schedule, String> {
    match (&p.cron, p.every_seconds) {
        (Some(cron), _) => Schedule::cron(cron, &p.time_zone),
        (None, Some(every)) => Schedule::every(every, p.anchor_at.and_utc()),
        (None, None) => Err("a policy without a schedule".into()),
    }
}

fn retention_of(p: &Policy) -> Retention {
    Retention {
        keep_last: p.keep_last,
        max_age: p.max_age_seconds.map(chrono::Duration::seconds),
    }
}

/// A policy's definition, checked: its name, time zone, name template and first slot.
struct Checked {
    /// The policy's name, trimmed.
    name: String,
    /// The time zone its cron is read in (`UTC` unless given).
    zone: String,
    /// How its snapshots are named.
    template: String,
    /// When it is first due.
    next: DateTime<Utc>,
}

/// Checks `spec` at `now`: its schedule, its retention, its VMs, its name template and
/// the names it would give; the refusal says which is wrong.
fn check_spec(spec: &PolicySpec, now: DateTime<Utc>) -> AppResult<Checked> {
    let name = names::name("policy name", &spec.name)?;
    let invalid = |why: String| AppError::validation(why);
    policy::check_definition(
        spec.every_seconds,
        spec.keep_last,
        spec.max_age_seconds,
        spec.vm_id.is_some(),
        spec.vm_filter.as_deref(),
        spec.cron.as_deref(),
    )
    .map_err(invalid)?;
    let zone = spec.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let schedule = match (&spec.cron, spec.every_seconds) {
        (Some(cron), None) => Schedule::cron(cron, &zone),
        (None, Some(every)) if spec.time_zone.is_none() => Schedule::every(every, now),
        (None, Some(_)) => Err("A time zone goes with a cron schedule only.".into()),
        _ => Err("Give a policy one schedule: everySeconds, or cron (with timeZone).".into()),
    }
    .map_err(invalid)?;
    let template = spec
        .name_template
        .clone()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.into());
    policy::check_template(&template, &schedule, now).map_err(invalid)?;
    let sample = policy::snapshot_name(&template, &name, "vm", now, schedule.zone());
    names::name("snapshot name", &sample)?;
    let next = schedule
        .next_after(now)
        .ok_or_else(|| invalid("This schedule never runs.".into()))?;
    Ok(Checked {
        name,
        zone,
        template,
        next,
    })
}

impl Service {
    /// Defines a policy (OPERATOR or ADMIN): it runs as the caller's token.
    pub async fn create_policy(&self, caller: &Caller, spec: PolicySpec) -> AppResult<Policy> {
        caller.require_operator()?;
        // Whole seconds: both backends store them alike, and slots fall on them.
        let now = self.clock().now().trunc_subsecs(0);
        let Checked {
            name,
            zone,
            template,
            next,
        } = check_spec(&spec, now)?;
        let invalid = |why: String| AppError::validation(why);
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let conn = &mut tx.conn();
            let project = match spec.vm_id {
                Some(vm) => {
                    let vm = vms::by_id(conn, vm)
                        .await?
                        .filter(|v| caller.can_see(v.project_id))
                        .ok_or_else(|| AppError::not_found("VM", vm))?;
                    vm.project_id
                }
                None => caller.project_id,
            };
            if policies::count_of_project(conn, project).await? >= i64::from(MAX_POLICIES_PER_PROJECT) {
                return Err(AppError::LimitReached {
                    message: format!(
                        "This project already has {MAX_POLICIES_PER_PROJECT} policies, the most it may; delete one first."
                    ),
                    limit: MAX_POLICIES_PER_PROJECT,
                });
            }
            let row = NewPolicy {
                project_id: project,
                token_id: caller.token_id,
                name: &name,
                vm_id: spec.vm_id,
                vm_filter: spec.vm_filter.as_deref(),
                every_seconds: spec.every_seconds,
                cron: spec.cron.as_deref(),
                time_zone: &zone,
                name_template: &template,
                keep_last: spec.keep_last,
                max_age_seconds: spec.max_age_seconds,
                anchor_at: now.naive_utc(),
                next_due_at: next.naive_utc(),
                created_at: db::now(),
            };
            policies::insert(conn, &row).await.map_err(|e| {
                if db::is_unique_violation(&e) {
                    invalid(format!("This project already has a policy named {name:?}."))
                } else {
                    e.into()
                }
            })
        }
        .await;
        tx.finish(result).await
    }

    /// The policies the caller may see.
    pub async fn policies(&self, caller: &Caller) -> AppResult<Vec<Policy>> {
        let mut conn = self.core.db.reader().await?;
        Ok(policies::list(&mut conn.conn(), caller.scope()).await?)
    }

    /// Policy `id`, if the caller may see it.
    pub async fn policy(&self, caller: &Caller, id: i64) -> AppResult<Option<Policy>> {
        let mut conn = self.core.db.reader().await?;
        let found = policies::by_id(&mut conn.conn(), id).await?;
        Ok(found.filter(|p| caller.can_see(p.project_id)))
    }

    /// Deletes policy `id`; the snapshots it made stay, and are no longer pruned.
    pub async fn delete_policy(&self, caller: &Caller, id: i64) -> AppResult<bool> {
        caller.require_operator()?;
        if self.policy(caller, id).await?.is_none() {
            return Err(AppError::not_found("policy", id));
        }
        let mut tx = self.core.begin_for(caller).await?;
        let result = policies::delete(&mut tx.conn(), id)
            .await
            .map_err(Into::into);
        tx.finish(result).await
    }

    /// Policy `p`'s runs, newest first.
    pub async fn policy_runs(&self, p: &Policy, first: i64) -> AppResult<Vec<PolicyRun>> {
        let mut conn = self.core.db.reader().await?;
        Ok(policies::runs_of(&mut conn.conn(), p.id, first).await?)
    }

    /// Why policy `p` makes nothing any more, if it does not: it runs as its token, and
    /// stops when that token is revoked or expires; it pauses when its runs keep being
    /// missed (`None` while it runs).
    /// `token` is `p`'s, read by the caller (`None`: it is gone).
    pub fn policy_stopped(&self, p: &Policy, token: Option<&Token>) -> Option<String> {
        stopped_because(token, self.clock().now_naive())
            .map(str::to_owned)
            .or_else(|| p.paused_because.clone())
    }

    /// Why policy `p`'s token no longer lets it run, if it does not.
    pub async fn policy_token_stopped(&self, p: &Policy) -> AppResult<Option<&'static str>> {
        let mut conn = self.core.db.reader().await?;
        let token = tokens::by_id(&mut conn.conn(), p.token_id).await?;
        Ok(stopped_because(token.as_ref(), self.clock().now_naive()))
    }

    /// Whether `caller` may resume policy `p` now, and why not (`policy::resume`).
    /// With `p`'s token already read (`None`: it is gone).
    pub fn resume_offer(&self, caller: &Caller, p: &Policy, token: Option<&Token>) -> Offer {
        let stopped = stopped_because(token, self.clock().now_naive());
        offer::resume(caller.role, p.paused_because.is_some(), stopped)
    }

    /// Resumes paused policy `id`: its next slot runs as if it had never paused. Refused
    /// when it is not paused, or when its token no longer lets it run.
    pub async fn resume_policy(&self, caller: &Caller, id: i64) -> AppResult<Policy> {
        caller.require_operator()?;
        let Some(p) = self.policy(caller, id).await? else {
            return Err(AppError::not_found("policy", id));
        };
        let stopped = self.policy_token_stopped(&p).await?;
        policy::resume(p.paused_because.is_some(), stopped)?;
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let conn = &mut tx.conn();
            policies::set_paused(conn, id, None).await?;
            policies::by_id(conn, id)
                .await?
                .ok_or_else(|| AppError::not_found("policy", id))
        }
        .await;
        tx.finish(result).await
    }

    /// Counts `n` runs of policy `p` missed in a row, and pauses it past the rule's
    /// count; true when it is paused now.
    async fn missed(&self, conn: &mut db::Conn<'_>, p: &Policy, n: usize) -> AppResult<bool> {
        if n == 0 {
            return Ok(false);
        }
        let misses = policies::missed(conn, p.id, i32::try_from(n).unwrap_or(i32::MAX)).await?;
        let Some(why) = policy::pause_because(misses) else {
            return Ok(false);
        };
        tracing::warn!(
            policy = p.id,
            misses,
            "a policy paused: its runs keep being missed"
        );
        policies::set_paused(conn, p.id, Some(&why)).await?;
        Ok(true)
    }

    /// What policy `p`'s next slot will make and then prune, as things stand now: the
    /// same rules the runner applies then.
    pub async fn preview_policy(&self, p: &Policy) -> AppResult<Preview> {
        let schedule = schedule_of(p).map_err(AppError::internal)?;
        let now = self.clock().now();
        let due = slot_at(&schedule, p, now);
        let mut conn = self.core.db.reader().await?;
        let conn = &mut conn.conn();
        let targets = targets(conn, p).await?;
        let mut creates = Vec::new();
        let mut prunes = Vec::new();
        for vm in targets {
            let name =
                policy::snapshot_name(&p.name_template, &p.name, &vm.name, due, schedule.zone());
            // After the run, the new snapshot is the VM's active one.
            let mut made: Vec<Made> = made_by(conn, p, vm.id)
                .await?
                .into_iter()
                .map(|m| Made { active: false, ..m })
                .collect();
            made.push(Made {
                id: i64::MIN,
                due,
                active: true,
                protected: false,
            });
            let pruned: Vec<i64> = policy::prune(&made, retention_of(p), due)
                .into_iter()
                .filter(|id| *id != i64::MIN)
                .collect();
            creates.push((vm.clone(), name));
            prunes.push((vm, pruned));
        }
        Ok(Preview {
            due,
            creates,
            prunes,
        })
    }
}

/// The slot policy `p` runs next, seen at `now`: its next slot, or, once that is due,
/// the latest slot at or before `now` (slots missed while no process ran make one run).
fn slot_at(schedule: &Schedule, p: &Policy, now: DateTime<Utc>) -> DateTime<Utc> {
    let next = p.next_due_at.and_utc();
    if next > now {
        return next;
    }
    schedule.latest_at_or_before(now).unwrap_or(next).max(next)
}

/// The VMs policy `p` covers now.
async fn targets(conn: &mut db::Conn<'_>, p: &Policy) -> AppResult<Vec<Vm>> {
    Ok(match p.vm_id {
        Some(vm) => vms::by_id(conn, vm)
            .await?
            .filter(|v| v.project_id == p.project_id)
            .into_iter()
            .collect(),
        None => vms::of_project(conn, p.project_id)
            .await?
            .into_iter()
            .filter(|v| policy::covers(p.vm_filter.as_deref(), &v.name))
            .collect(),
    })
}

/// The snapshots policy `p` made on `vm` that retention may consider: RUNNING ones (a
/// snapshot on its way is left alone).
async fn made_by(conn: &mut db::Conn<'_>, p: &Policy, vm: i64) -> AppResult<Vec<Made>> {
    let running = crate::domain::SnapshotState::Running.code();
    Ok(policies::made_by(conn, p.id, vm)
        .await?
        .into_iter()
        .filter(|(.., state, _)| *state == running)
        .map(|(id, due, active, _, _, protected)| Made {
            id,
            due: due.unwrap_or_default().and_utc(),
            active,
            protected,
        })
        .collect())
}

/// Why a policy running as `token` makes nothing at `now`: its token was revoked, has
/// expired, or is gone; `None` while the token is live.
fn stopped_because(token: Option<&Token>, now: chrono::NaiveDateTime) -> Option<&'static str> {
    match token {
        None => Some("its token is gone"),
        Some(t) if t.revoked_at.is_some() => Some("its token was revoked"),
        Some(t) if !t.is_live_at(now) => Some("its token has expired"),
        Some(_) => None,
    }
}

mod runner;

pub use runner::spawn_runner;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_refused_again_and_again_waits_longer_each_time_up_to_a_minute() {
        let waits: Vec<i64> = (1..=8).map(|n| retry_after(n).num_seconds()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_after(i32::MAX).num_seconds(), 60);
    }
}
