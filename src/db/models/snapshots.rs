//! Snapshots and their history.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::stamp::Stamp;
use crate::domain::SnapshotState;

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug, serde::Serialize)]
#[diesel(table_name = snapshots)]
pub struct Snapshot {
    /// Its id; its name on the host is made of it (see `host_name`).
    pub id: i64,
    /// The VM it belongs to; a VM's snapshots form one tree.
    pub vm_id: i64,
    /// Its parent in the VM's tree; `None`: a root. When a parent closes, its surviving
    /// children move up to the nearest surviving ancestor; a closed row keeps its last.
    pub parent_id: Option<i64>,
    /// Its name in the API, 1 to 128 characters, unique among the VM's non-closed
    /// snapshots; never sent to the host.
    pub name: String,
    /// Free text, up to 1024 characters; `None`: none.
    pub description: Option<String>,
    /// The snapshot's name on the host: `{vm_id}_{id}` for one made here, the host's own
    /// for an imported one. Tasks address the host by it, never by `name`.
    pub host_name: String,
    /// The VM runs from it (its live state is a child of it). At most one per VM, never a
    /// CLOSED one; set as a create or apply is accepted, put back if its task fails.
    pub active: bool,
    /// A [`SnapshotState`] code (1 REQUESTED .. 99 CLOSED, see `snapshots.md`); any but 3,
    /// 4 and 99 means a task is under way on it and its VM is busy.
    pub state: i32,
    /// Its delete was asked with `removeSubtree`: its descendants go with it. Set when the
    /// delete is accepted, cleared if it fails or is cancelled, kept once CLOSED.
    pub remove_subtree: bool,
    /// When it was asked for (or imported); its staleness counts from it.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// When its name, description, parent, state or `active` last changed.
    #[diesel(deserialize_as = Stamp)]
    pub updated_at: NaiveDateTime,
    /// Kept from every delete (alone, in a subtree, by a policy's retention) until
    /// unprotected; set and cleared by an OPERATOR or ADMIN.
    pub protected: bool,
    /// When the expiry sweep deletes it (unless protected or active); `None`: kept until
    /// deleted. See `domain::lifetime`.
    pub expires_at: Option<NaiveDateTime>,
}

impl From<&Snapshot> for crate::domain::tree::Node {
    fn from(s: &Snapshot) -> Self {
        Self {
            id: s.id,
            parent_id: s.parent_id,
            name: s.name.clone(),
            state: s.state(),
            active: s.active,
            protected: s.protected,
            expires_at: s.expires_at,
        }
    }
}

impl Snapshot {
    pub fn state(&self) -> SnapshotState {
        SnapshotState::from_code(self.state).expect("snapshots.state is checked by the database")
    }

    /// The node the tree rules work on.
    pub fn node(&self) -> crate::domain::tree::Node {
        crate::domain::tree::Node {
            id: self.id,
            parent_id: self.parent_id,
            name: self.name.clone(),
            state: self.state(),
            active: self.active,
            protected: self.protected,
            expires_at: self.expires_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = snapshots)]
pub struct NewSnapshot<'a> {
    /// The VM it belongs to.
    pub vm_id: i64,
    /// Its parent in the VM's tree; `None`: a root.
    pub parent_id: Option<i64>,
    /// Its name in the API.
    pub name: &'a str,
    /// Free text; `None`: none.
    pub description: Option<&'a str>,
    /// Its name on the host; empty for a new one until its id is known (set in the same
    /// transaction).
    pub host_name: &'a str,
    /// Whether the VM runs from it: on import, the host's current one; false otherwise (a
    /// create's rules make it active next; an apply's save stays inactive).
    pub active: bool,
    /// REQUESTED (1) for a create, RUNNING (4) on import.
    pub state: i32,
    /// When it is asked for.
    pub created_at: NaiveDateTime,
    /// The same as `created_at`.
    pub updated_at: NaiveDateTime,
    /// The policy whose run makes it (retention prunes only such); `None` for a person's.
    pub policy_id: Option<i64>,
    /// That run's slot (`PolicyRun::due_at`), which dates it for retention.
    pub policy_due_at: Option<NaiveDateTime>,
    /// Kept from every delete until unprotected.
    pub protected: bool,
    /// When the expiry sweep deletes it; `None`: never.
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Queryable, QueryableByName, Selectable, Clone, Debug, serde::Serialize)]
#[diesel(table_name = snapshot_history)]
pub struct HistoryEntry {
    /// Its id; a snapshot's history reads in id order.
    pub id: i64,
    /// The snapshot whose state changed.
    pub snapshot_id: i64,
    /// The snapshot's VM, copied for filtering (PostgreSQL does not check it).
    pub vm_id: i64,
    /// The VM's project, copied to scope a tenant's reads (PostgreSQL does not check it).
    pub project_id: i64,
    /// The [`SnapshotState`] code it entered; a delete that fails or is cancelled puts
    /// back the last one here before SCRUB.
    pub state: i32,
    /// Who moved it: the caller's token name (`policy NAME` for a policy's action),
    /// `expiry` for the expiry sweep, or `robot`.
    pub actor: String,
    /// When it changed.
    #[diesel(deserialize_as = Stamp)]
    pub at: NaiveDateTime,
    /// Why: a [`Reason`](crate::domain::Reason)'s text; `None` on rows written before
    /// reasons were kept.
    pub reason: Option<String>,
}

impl HistoryEntry {
    pub fn state(&self) -> SnapshotState {
        SnapshotState::from_code(self.state).expect("history holds snapshot states only")
    }
}

#[derive(Insertable)]
#[diesel(table_name = snapshot_history)]
pub struct NewHistoryEntry<'a> {
    /// The snapshot whose state changed.
    pub snapshot_id: i64,
    /// Its VM (a copy).
    pub vm_id: i64,
    /// Its VM's project (a copy).
    pub project_id: i64,
    /// The state code it entered.
    pub state: i32,
    /// The caller's name, or `robot`.
    pub actor: &'a str,
    /// When it changed.
    pub at: NaiveDateTime,
    /// Why (a [`Reason`](crate::domain::Reason)'s text).
    pub reason: &'static str,
}

/// Who changes snapshots' states, and why: what their history rows record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor<'a> {
    /// The caller's token name, `policy NAME`, `expiry` or `robot`.
    pub name: &'a str,
    /// Why it acts.
    pub reason: crate::domain::Reason,
}
