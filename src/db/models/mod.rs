//! Rows as diesel reads and writes them, by table family. Enum columns are kept in their
//! stored form; the accessors turn them into domain types (the CHECK constraints
//! guarantee they parse).

mod access;
mod hosts;
mod policies;
mod snapshots;
mod tasks;

pub use access::*;
pub use hosts::*;
pub use policies::*;
pub use snapshots::*;
pub use tasks::*;
