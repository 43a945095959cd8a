//! The domain's enums as GraphQL sees them. The domain knows no GraphQL; these mirror
//! its enums (async-graphql's remote enums, which convert both ways and fail to build if
//! a variant is missing), and carry the descriptions the schema shows.

use async_graphql::Enum;

use crate::domain;

/// The kind of a host.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::Hypervisor")]
pub enum Hypervisor {
    /// libvirt/QEMU, internal snapshots.
    Kvm,
    /// Hyper-V standard checkpoints.
    Hyperv,
    /// The in-process simulated hypervisor.
    Simulated,
}

/// What a token may do.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::Role")]
pub enum Role {
    /// Everything, in every project.
    Admin,
    /// Read and act on its project's VMs.
    Operator,
    /// Read its project's VMs.
    Viewer,
}

/// One unit of robot work.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::TaskKind")]
pub enum TaskKind {
    /// Create a snapshot.
    Build,
    /// Apply (or revert to) a snapshot.
    Update,
    /// Delete a snapshot, or a subtree.
    Scrub,
}

/// Where a task is in its life.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::TaskState")]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A snapshot's state: a CloudCIX state-table integer.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::SnapshotState")]
pub enum SnapshotState {
    /// Create accepted, build task queued.
    Requested,
    /// The robot is creating it on the host.
    Building,
    /// The robot failed; the error is on the task.
    Unresourced,
    /// Exists on the host and can be applied or deleted.
    Running,
    /// Delete accepted, scrub task queued.
    Scrub,
    /// Apply/revert accepted, update task queued.
    RunningUpdate,
    /// The robot is applying it.
    RunningUpdating,
    /// The robot is deleting it (and its subtree).
    Scrubbing,
    /// Deleted; kept as history.
    Closed,
}

/// How the two sides disagree.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::drift::DriftKind")]
pub enum DriftKind {
    /// snaptree has the snapshot (RUNNING), the host does not.
    MissingOnHost,
    /// The host has a snapshot snaptree does not know.
    UnknownToSnaptree,
    /// Both have it, under different parents.
    DifferentParent,
    /// The host's current snapshot is not snaptree's active one.
    DifferentCurrent,
}

/// Why an action is not offered.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::offer::Refusal")]
pub enum Refusal {
    /// The caller's role may not act (a VIEWER).
    Role,
    /// A task is queued or running for the VM.
    Busy,
    /// The VM's state allows no snapshot work.
    VmState,
    /// The snapshot's state (or the lack of an active one) does not allow it.
    SnapshotState,
    /// The host's limit leaves no room.
    Limit,
    /// The task's state does not allow it (it has ended, or was asked to stop already).
    TaskState,
    /// The policy's state does not allow it (it is not paused, or its token has ended).
    PolicyState,
    /// A protected snapshot would go (`Snapshot.protected`): unprotect it first.
    Protected,
    /// The VM's host cannot snapshot it at all (a UEFI guest on a libvirt older than
    /// 10.10); the reason says what would.
    Unsupported,
}
