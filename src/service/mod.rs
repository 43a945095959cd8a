//! The service layer: the five actions, administration and authorisation, each in one
//! transaction. GraphQL, the CLI and the robot all come through here, so every rule of
//! `snapshots.md` (kept in [`crate::domain`]) is enforced in one place.

mod actions;
mod admin;
pub mod auth;
mod follow;
pub mod handoff;
pub mod ledger;
mod read;
pub mod sessions;
pub mod tasks;
mod throttle;

use std::sync::{Arc, OnceLock};

use crate::config::Limits;
use crate::db::Db;
use crate::events::EventBus;
use crate::hypervisor::Drivers;

pub use crate::events::Published;
pub use actions::Accepted;
pub use admin::IMPORT_BATCH;
pub use auth::Caller;
pub use follow::Follow;
pub use read::{TaskFilter, VmFilter};
pub use sessions::{Session, Sessions};
pub use tasks::Claimed;
pub use throttle::Throttle;

/// The actor recorded for the robot's own changes.
pub const ROBOT: &str = "robot";

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct Service {
    /// The database, for every read and write.
    db: Db,
    /// Committed events for subscribers, and the robot's wake-up.
    bus: EventBus,
    /// The hosts' drivers.
    drivers: Arc<Drivers>,
    /// The robot of this process, once it runs.
    local: Arc<OnceLock<Arc<dyn handoff::Taker>>>,
    /// This process's combiner of actions, started by the first action.
    actions: actions::Actions,
    /// What requests, connections and tokens may cost.
    limits: Arc<Limits>,
    /// The WebSocket connections open in this process, by token.
    sessions: Arc<Sessions>,
    /// Each token's budget of requests and cost.
    throttle: Arc<Throttle>,
}

impl Service {
    pub fn new(db: Db, bus: EventBus, drivers: Arc<Drivers>, limits: Arc<Limits>) -> Self {
        Self {
            db,
            bus,
            drivers,
            local: Arc::new(OnceLock::new()),
            actions: Arc::new(OnceLock::new()),
            throttle: Arc::new(Throttle::new(&limits.rates)),
            sessions: Arc::new(Sessions::default()),
            limits,
        }
    }

    /// Registers this process's robot for eager dispatch (once).
    pub fn attach_robot(&self, robot: Arc<dyn handoff::Taker>) {
        if self.local.set(robot).is_err() {
            tracing::warn!("a second robot in one process gets no hand-offs");
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn drivers(&self) -> &Arc<Drivers> {
        &self.drivers
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The most non-closed snapshots a VM of a host with limit `host_limit` may have:
    /// the host's own limit, within the server's ceiling.
    pub fn snapshot_limit(&self, host_limit: Option<i32>) -> i32 {
        let ceiling = i32::try_from(self.limits.snapshots_per_vm).unwrap_or(i32::MAX);
        host_limit.map_or(ceiling, |limit| limit.min(ceiling))
    }
}
