//! The service layer: the five actions, administration and authorisation, each in one
//! transaction. GraphQL, the CLI and the robot all come through here, so every rule of
//! `snapshots.md` (kept in [`crate::domain`]) is enforced in one place.

mod actions;
mod admin;
pub mod auth;
mod follow;
pub mod handoff;
mod read;
pub mod tasks;

use std::sync::{Arc, OnceLock};

use crate::db::Db;
use crate::events::EventBus;
use crate::hypervisor::Drivers;

pub use actions::Accepted;
pub use auth::Caller;
pub use follow::Follow;
pub use read::{TaskFilter, VmFilter};
pub use tasks::Claimed;

/// The actor recorded for the robot's own changes.
pub const ROBOT: &str = "robot";

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct Service {
    db: Db,
    bus: EventBus,
    drivers: Arc<Drivers>,
    /// The robot of this process, once it runs.
    local: Arc<OnceLock<handoff::LocalRobot>>,
}

impl Service {
    pub fn new(db: Db, bus: EventBus, drivers: Arc<Drivers>) -> Self {
        Self {
            db,
            bus,
            drivers,
            local: Arc::new(OnceLock::new()),
        }
    }

    /// Registers this process's robot for eager dispatch (once).
    pub fn attach_robot(&self, robot: handoff::LocalRobot) {
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
}
