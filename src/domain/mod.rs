//! Pure types and rules: states, names, the snapshot tree. No I/O here, so every rule
//! of `snapshots.md` can be unit-tested on its own.

pub mod drift;
pub mod failure;
pub mod lifecycle;
pub mod lifetime;
pub mod names;
pub mod offer;
pub mod policy;
pub mod rejection;
pub mod state;
pub mod tree;

pub use failure::{Failure, FailureCode};
pub use rejection::Rejection;
pub use state::{Hypervisor, Reason, Role, SnapshotState, TaskKind, TaskState};
