//! The service layer: the five actions, administration and authorisation, each in one
//! transaction. GraphQL, the CLI and the robot all come through here, so every rule of
//! `snapshots.md` (kept in [`crate::domain`]) is enforced in one place.

mod actions;
mod admin;
pub mod auth;
mod read;
pub mod tasks;

use std::sync::Arc;

use crate::db::Db;
use crate::events::EventBus;
use crate::hypervisor::Drivers;

pub use actions::Accepted;
pub use auth::Caller;
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
}

impl Service {
    pub fn new(db: Db, bus: EventBus, drivers: Arc<Drivers>) -> Self {
        Self { db, bus, drivers }
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
