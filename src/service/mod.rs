//! The service layer: the five actions, administration, reads and the robot's task
//! ledger, each call one transaction. GraphQL, the CLI and the robot all come through
//! here, so every rule of `snapshots.md` (kept in [`crate::domain`]) is enforced in one
//! place.

mod actions;
mod admin;
pub mod auth;
mod cancel;
mod claiming;
pub mod expiry;
mod follow;
pub mod handoff;
pub mod ledger;
pub mod persisted;
pub mod policies;
mod read;
pub mod retention;
pub mod sessions;
pub mod tasks;
mod throttle;

use std::sync::{Arc, OnceLock};

use crate::clock::Clock;
use crate::config::Limits;
use crate::db::{self, Db};
use crate::domain::Hypervisor;
use crate::error::AppResult;
use crate::events::EventBus;
use crate::hypervisor::{DriverError, Drivers, HostRef};
use crate::metrics::Metrics;

pub use crate::events::Published;
pub use actions::{Accepted, Actions, Change, Create};
pub use admin::{Admin, IMPORT_BATCH};
pub use auth::Caller;
pub use follow::Follow;
pub use ledger::TaskLedger;
pub use read::{Reads, TaskFilter, VmFilter};
pub use sessions::{Session, Sessions};
pub use tasks::Claimed;
pub use throttle::Throttle;

/// The actor recorded for the robot's own changes.
pub const ROBOT: db::models::Actor<'static> = db::models::Actor {
    name: "robot",
    reason: crate::domain::Reason::Robot,
};

/// Host `host` as drivers know it. A kind this build does not know (a row written by a
/// newer one) is refused, not guessed.
pub fn host_ref(host: &db::models::Host) -> Result<HostRef, DriverError> {
    let kind = host.hypervisor.parse::<Hypervisor>().map_err(|_| {
        DriverError::Permanent(format!(
            "host {} has a hypervisor this server does not know: {:?}",
            host.name, host.hypervisor
        ))
    })?;
    Ok(HostRef {
        id: host.id,
        name: host.name.clone(),
        kind,
        uri: host.uri.clone(),
    })
}

/// What every part of the service shares, behind one `Arc`.
pub(crate) struct Core {
    /// The database, for every read and write.
    db: Db,
    /// Committed events for subscribers, and the robot's wake-up.
    bus: EventBus,
    /// The hosts' drivers.
    drivers: Arc<Drivers>,
    /// The robot of this process, once it runs.
    local: OnceLock<Arc<dyn handoff::Taker>>,
    /// This process's combiner of actions, started by the first action.
    combiner: OnceLock<actions::Combiner>,
    /// What requests, connections and tokens may cost.
    limits: Arc<Limits>,
    /// The WebSocket connections open in this process, by token.
    sessions: Arc<Sessions>,
    /// Each token's budget of requests and cost, and each address's of failed logins.
    throttle: Throttle,
    /// Tokens refused a moment ago.
    rejected: auth::Rejected,
    /// What this process counts, for `/metrics`.
    metrics: Arc<Metrics>,
    /// The time that ages snapshots and makes policies due.
    clock: Clock,
    /// Automatic persisted queries' documents this process keeps at hand.
    persisted: persisted::Cache,
}

impl Core {
    /// The most non-closed snapshots a VM of a host with limit `host_limit` may have:
    /// the host's own limit, within the server's ceiling.
    fn snapshot_limit(&self, host_limit: Option<i32>) -> i32 {
        let ceiling = i32::try_from(self.limits.snapshots_per_vm).unwrap_or(i32::MAX);
        host_limit.map_or(ceiling, |limit| limit.min(ceiling))
    }
}

/// The service, split along what its callers see: the API's [`Actions`],
/// [`Admin`]istration and [`Reads`], and the [`TaskLedger`] the robot uses. Authentication
/// and the limits every transport applies stay here. Cheap to clone: everything inside
/// is shared.
#[derive(Clone)]
pub struct Service {
    /// What every part shares: database, bus, drivers, limits, sessions, throttle, clock.
    core: Arc<Core>,
    /// The five snapshot actions and cancelling a task.
    actions: Actions,
    /// Projects, tokens, hosts and VMs (ADMIN).
    admin: Admin,
    /// Everything a caller may read, and following events.
    reads: Reads,
    /// The robot's side: claims, leases and task steps.
    ledger: TaskLedger,
}

impl Service {
    pub fn new(
        db: Db,
        bus: EventBus,
        drivers: Arc<Drivers>,
        limits: Arc<Limits>,
        clock: Clock,
    ) -> Self {
        let core = Arc::new(Core {
            db,
            bus,
            drivers,
            local: OnceLock::new(),
            combiner: OnceLock::new(),
            throttle: Throttle::new(
                &limits.rates,
                limits.failed_logins_per_peer,
                limits.refused_per_token,
            ),
            rejected: auth::Rejected::new(),
            sessions: Arc::new(Sessions::default()),
            metrics: Arc::new(Metrics::default()),
            limits,
            clock,
            persisted: persisted::Cache::default(),
        });
        Self {
            actions: Actions {
                core: Arc::clone(&core),
            },
            admin: Admin {
                core: Arc::clone(&core),
            },
            reads: Reads {
                core: Arc::clone(&core),
            },
            ledger: TaskLedger {
                core: Arc::clone(&core),
            },
            core,
        }
    }

    /// The five snapshot actions, and cancelling a task.
    pub fn actions(&self) -> &Actions {
        &self.actions
    }

    /// Projects, tokens, hosts and VMs (ADMIN).
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Everything a caller may read, and following events.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The robot's side: claiming tasks and recording their steps.
    pub fn ledger(&self) -> &TaskLedger {
        &self.ledger
    }

    pub fn db(&self) -> &Db {
        &self.core.db
    }

    pub fn bus(&self) -> &EventBus {
        &self.core.bus
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.core.limits
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.core.sessions
    }

    pub fn throttle(&self) -> &Throttle {
        &self.core.throttle
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// The metrics' text, with the queue and the tables as the database holds them now.
    pub async fn scrape(&self) -> AppResult<String> {
        let mut conn = self.core.db.reader().await?;
        let conn = &mut conn.conn();
        let queue = db::tasks::queue(conn, db::now()).await?;
        let growth = db::retention::growth(conn).await?;
        let snapshots = match self.core.metrics.snapshots_due() {
            true => Some(db::snapshots::per_project(conn).await?),
            false => None,
        };
        let hosts = db::hosts::reachability(conn).await?;
        let connections = self.core.drivers.connections();
        Ok(self.core.metrics.render(&crate::metrics::Reading {
            queue: &queue,
            growth: &growth,
            snapshots: snapshots.as_deref(),
            hosts: &hosts,
            connections: &connections,
            now: self.clock().now_naive(),
        }))
    }

    /// The most non-closed snapshots a VM of a host with limit `host_limit` may have.
    pub fn snapshot_limit(&self, host_limit: Option<i32>) -> i32 {
        self.core.snapshot_limit(host_limit)
    }

    /// The service's time.
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// When snapshot `s` is (or becomes) stale, and whether it is now; `None` for a
    /// deleted one.
    pub fn staleness(
        &self,
        s: &crate::db::models::Snapshot,
    ) -> Option<(chrono::NaiveDateTime, bool)> {
        crate::domain::lifecycle::staleness(
            s.state(),
            s.created_at,
            self.core.clock.now_naive(),
            self.core.limits.stale_after,
        )
    }
}
