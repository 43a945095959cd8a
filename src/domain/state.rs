//! States and kinds, with their stored forms.
//!
//! Snapshot and VM states are CloudCIX's state-table integers, so CloudCIX tooling reads
//! them unchanged; the other enums are stored as their upper-case names.

use std::fmt;
use std::str::FromStr;

/// Declares an enum stored as its upper-case name, with `as_str` and `FromStr`.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stored name (and GraphQL's, see `graphql::enums`).
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// The kind of a host.
    pub enum Hypervisor {
        /// libvirt/QEMU, internal snapshots.
        Kvm = "KVM",
        /// Hyper-V standard checkpoints.
        Hyperv = "HYPERV",
        /// The in-process simulated hypervisor.
        Simulated = "SIMULATED",
    }
}

text_enum! {
    /// What a token may do.
    pub enum Role {
        /// Everything, in every project.
        Admin = "ADMIN",
        /// Read and act on its project's VMs.
        Operator = "OPERATOR",
        /// Read its project's VMs.
        Viewer = "VIEWER",
    }
}

text_enum! {
    /// Why a snapshot's state changed, as its history says (`SnapshotHistoryEntry.reason`).
    pub enum Reason {
        /// A person's (or a script's) action through a token.
        User = "user",
        /// A snapshot policy's run or its retention.
        Policy = "policy",
        /// The snapshot's `expiresAt` passed: the expiry sweep deleted it.
        Expired = "expired",
        /// The robot carrying out a task (its start, end, failure or cancel).
        Robot = "robot",
    }
}

impl Role {
    /// Whether the role may act on snapshots (ADMIN, OPERATOR), not only read them.
    pub fn may_act(self) -> bool {
        self != Role::Viewer
    }
}

text_enum! {
    /// One unit of robot work.
    pub enum TaskKind {
        /// Create a snapshot.
        Build = "BUILD",
        /// Apply (or revert to) a snapshot.
        Update = "UPDATE",
        /// Delete a snapshot, or a subtree.
        Scrub = "SCRUB",
    }
}

text_enum! {
    /// Where a task is in its life.
    pub enum TaskState {
        Queued = "QUEUED",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
    }
}

impl TaskState {
    /// Queued or running: the VM is busy.
    pub fn is_open(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running)
    }
}

/// A snapshot's state: a CloudCIX state-table integer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
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

impl SnapshotState {
    /// The CloudCIX state-table integer.
    pub fn code(self) -> i32 {
        match self {
            Self::Requested => 1,
            Self::Building => 2,
            Self::Unresourced => 3,
            Self::Running => 4,
            Self::Scrub => 8,
            Self::RunningUpdate => 10,
            Self::RunningUpdating => 11,
            Self::Scrubbing => 17,
            Self::Closed => 99,
        }
    }

    /// The states a user may ask a snapshot to move to (CloudCIX's update): RUNNING_UPDATE
    /// applies it (or reverts to it), SCRUB deletes it.
    pub const REQUESTABLE: [Self; 2] = [Self::RunningUpdate, Self::Scrub];

    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Requested,
            2 => Self::Building,
            3 => Self::Unresourced,
            4 => Self::Running,
            8 => Self::Scrub,
            10 => Self::RunningUpdate,
            11 => Self::RunningUpdating,
            17 => Self::Scrubbing,
            99 => Self::Closed,
            _ => return None,
        })
    }

    /// Stable states need no robot work; any other state makes the VM busy.
    pub fn is_stable(self) -> bool {
        matches!(self, Self::Unresourced | Self::Running | Self::Closed)
    }
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(state_name(self.code()))
    }
}

/// VM states (same state table).
pub mod vm_state {
    pub const RUNNING: i32 = 4;
    pub const QUIESCED: i32 = 6;
}

/// CloudCIX's state table in words: the codes [`in_state_table`] accepts.
pub const STATE_TABLE: &str = "0 to 17, or 99";

/// Whether `code` is a state of CloudCIX's state table (as a filter or an update names
/// it; -1, IN_API, is the API's own and never asked for).
pub fn in_state_table(code: i32) -> bool {
    (0..=17).contains(&code) || code == 99
}

/// The CloudCIX name of a state-table integer ("UNKNOWN" outside the table).
pub fn state_name(code: i32) -> &'static str {
    match code {
        -1 => "IN_API",
        0 => "IGNORE",
        1 => "REQUESTED",
        2 => "BUILDING",
        3 => "UNRESOURCED",
        4 => "RUNNING",
        5 => "QUIESCE",
        6 => "QUIESCED",
        7 => "RESTART",
        8 => "SCRUB",
        9 => "SCRUB_QUEUE",
        10 => "RUNNING_UPDATE",
        11 => "RUNNING_UPDATING",
        12 => "QUIESCING",
        13 => "RESTARTING",
        14 => "SCRUB_PREP",
        15 => "QUIESCED_UPDATE",
        16 => "QUIESCED_UPDATING",
        17 => "SCRUBBING",
        99 => "CLOSED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_codes_round_trip_and_match_the_state_table() {
        for code in [1, 2, 3, 4, 8, 10, 11, 17, 99] {
            let state = SnapshotState::from_code(code).unwrap();
            assert_eq!(state.code(), code);
            assert_eq!(state.to_string(), state_name(code));
        }
        assert_eq!(SnapshotState::from_code(5), None);
    }

    #[test]
    fn only_unresourced_running_and_closed_are_stable() {
        let stable: Vec<_> = [1, 2, 3, 4, 8, 10, 11, 17, 99]
            .into_iter()
            .filter_map(SnapshotState::from_code)
            .filter(|s| s.is_stable())
            .collect();
        assert_eq!(
            stable,
            [
                SnapshotState::Unresourced,
                SnapshotState::Running,
                SnapshotState::Closed
            ]
        );
    }

    #[test]
    fn text_enums_round_trip() {
        for kind in TaskKind::ALL {
            assert_eq!(kind.as_str().parse::<TaskKind>().unwrap(), *kind);
        }
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), *state);
        }
        assert_eq!("HYPERV".parse::<Hypervisor>().unwrap(), Hypervisor::Hyperv);
        assert!("hyperv".parse::<Hypervisor>().is_err());
    }
}
