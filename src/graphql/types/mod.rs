//! The GraphQL object types. Each wraps its row; related objects come from the request's
//! loaders, so nesting costs no extra statements per level. One file per object and its
//! close kin.

use std::hash::Hash;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ErrorExtensions, ID, Object, Result, ResultExt};
use chrono::{DateTime, NaiveDateTime, Utc};

use super::enums::{DriftKind, Hypervisor, SnapshotState, TaskKind, TaskState};
use super::{DEFAULT_PAGE, MAX_PAGE, Page};
use crate::db::models;
use crate::domain::state::state_name;
use crate::error::AppError;
use crate::graphql::loaders::*;
use crate::service::{Caller, Published};

mod host;
mod snapshot;
mod task;
mod vm;

pub use host::Host;
pub use snapshot::{Snapshot, SnapshotHistoryEntry};
pub use task::{Task, TaskEvent};
pub use vm::Vm;

/// A stored time (UTC, without its zone) as the API gives it.
fn at(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// Loads one value by key; `None` when there is none.
pub(super) async fn maybe<K, V>(ctx: &Context<'_>, key: K) -> Result<Option<V>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    V: Send + Sync + Clone + 'static,
    Batch: Loader<K, Value = V, Error = AppError>,
{
    ctx.data_unchecked::<Loaders>().load(key).await.extend()
}

/// Loads one value that must exist (a foreign key).
pub(super) async fn one<K, V>(ctx: &Context<'_>, key: K) -> Result<V>
where
    K: Send + Sync + Hash + Eq + Clone + std::fmt::Debug + 'static,
    V: Send + Sync + Clone + 'static,
    Batch: Loader<K, Value = V, Error = AppError>,
{
    let found = maybe(ctx, key.clone()).await?;
    found.ok_or_else(|| AppError::internal(format!("{key:?} is missing")).extend())
}

/// Loads a list by key (every key has one).
async fn list<K, V>(ctx: &Context<'_>, key: K) -> Result<Arc<Vec<V>>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    V: Send + Sync + 'static,
    Batch: Loader<K, Value = Arc<Vec<V>>, Error = AppError>,
{
    Ok(maybe(ctx, key).await?.unwrap_or_default())
}

pub struct Project(pub models::Project);

#[Object]
impl Project {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The most non-closed snapshots its VMs may have together; null: no quota (each
    /// host's limit per VM still holds).
    async fn max_snapshots(&self) -> Option<i32> {
        self.0.max_snapshots
    }

    /// The longest a new snapshot lives, in hours: its expiry when none is asked for,
    /// and the latest one allowed; null: no maximum.
    async fn max_lifetime_hours(&self) -> Option<i32> {
        self.0.max_lifetime_hours
    }

    /// Its VMs' non-closed snapshots, together.
    async fn snapshot_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let n = one::<_, i64>(ctx, crate::graphql::loaders::SnapshotCountOf(self.0.id)).await?;
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }
}

/// A new token; the secret is shown once, here, and stored only hashed.
#[derive(async_graphql::SimpleObject)]
pub struct CreatedToken {
    /// The token's id (for `revokeToken`).
    pub id: ID,
    /// The secret, as `Authorization: Bearer` takes it.
    pub token: String,
}

pub struct SnapshotPayload(pub crate::service::Accepted);

/// An accepted action: its snapshot and the task that carries it out.
#[Object]
impl SnapshotPayload {
    async fn snapshot(&self) -> Snapshot {
        Snapshot(self.0.snapshot.clone())
    }

    async fn task(&self) -> Task {
        Task(self.0.task.clone())
    }
}
