//! Hypervisor hosts, their health, and the VMs on them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::stamp::Stamp;
use crate::domain::Hypervisor;

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = hosts)]
pub struct Host {
    /// Its id; on PostgreSQL also the first key of its slots' advisory locks.
    pub id: i64,
    /// Unique among hosts; robot placement (`RobotConfig::hosts`) and `/metrics` name
    /// hosts by it.
    pub name: String,
    /// `KVM`, `HYPERV` or `SIMULATED` (see [`Host::hypervisor`]): which driver runs its tasks.
    pub hypervisor: String,
    /// How to reach the host; may name a user, never holds a secret.
    pub uri: String,
    /// The most non-closed snapshots one of its VMs may have, within the server's ceiling
    /// (`None`: the ceiling only); the hypervisor's own limit unless set (Hyper-V: 50).
    pub max_snapshots_per_vm: Option<i32>,
    /// When it was registered.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// Tasks that may run on the host at once, across every robot.
    pub max_concurrent_tasks: i32,
}

/// A host's health, as the processes that call it last found it.
#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = host_health)]
pub struct HostHealth {
    /// The host: one row per host, deleted with it; a host never called has none.
    pub host_id: i64,
    /// Whether it answers. Only a transient failure (the host or its connection, not the
    /// request) makes it false; any answer makes it true. The last writer wins.
    pub reachable: bool,
    /// When it last became reachable, or unreachable.
    #[diesel(deserialize_as = Stamp)]
    pub since: NaiveDateTime,
    /// The last failure to reach it, kept after it recovers.
    pub last_error: Option<String>,
}

impl Host {
    pub fn hypervisor(&self) -> Hypervisor {
        self.hypervisor
            .parse()
            .expect("hosts.hypervisor is checked by the database")
    }
}

#[derive(Insertable)]
#[diesel(table_name = hosts)]
pub struct NewHost<'a> {
    /// Unique among hosts.
    pub name: &'a str,
    /// `KVM`, `HYPERV` or `SIMULATED`.
    pub hypervisor: &'a str,
    /// How to reach the host, in its canonical form; never holds a secret.
    pub uri: &'a str,
    /// The most non-closed snapshots per VM; `None`: the server's ceiling only.
    pub max_snapshots_per_vm: Option<i32>,
    /// When it is registered.
    pub created_at: NaiveDateTime,
    /// Tasks that may run on it at once (1 to 1000; 8 unless given).
    pub max_concurrent_tasks: i32,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = vms)]
pub struct Vm {
    /// Its id; part of its snapshots' names on the host (`{vm_id}_{snapshot_id}`).
    pub id: i64,
    /// The host it runs on, where its tasks run.
    pub host_id: i64,
    /// The project it belongs to: who may see it and act on it, and whose quota its
    /// snapshots count against.
    pub project_id: i64,
    /// Its name in snaptree (an imported VM's is its identifier); not unique. Policies'
    /// `vm_filter` and `{vm}` use it.
    pub name: String,
    /// The VM's name on its host (libvirt domain, Hyper-V VM name).
    pub identifier: String,
    /// A CloudCIX state-table integer, read from the host when the VM was registered (not
    /// refreshed since); snapshot actions need RUNNING (4) or QUIESCED (6).
    pub state: i32,
    /// When it was registered.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// Why its host cannot snapshot it, read when it was registered (a UEFI guest on a
    /// libvirt without internal snapshots of pflash firmware); `None`: it can.
    pub unsupported: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = vms)]
pub struct NewVm<'a> {
    /// The host it runs on.
    pub host_id: i64,
    /// The project it belongs to.
    pub project_id: i64,
    /// Its name in snaptree.
    pub name: &'a str,
    /// Its name on the host; unique per host.
    pub identifier: &'a str,
    /// Its state as the host reports it now (CloudCIX state table).
    pub state: i32,
    /// When it is registered.
    pub created_at: NaiveDateTime,
    /// Why its host cannot snapshot it; `None`: it can.
    pub unsupported: Option<&'a str>,
}
