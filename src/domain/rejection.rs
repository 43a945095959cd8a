//! Why the rules refuse something: one variant per rule of `snapshots.md` and of the name
//! rules, so that each transport says it in its own terms (GraphQL's `extensions.code`,
//! CloudCIX's `error_code` and field) while the rule is written once, here and in
//! [`lifecycle`](super::lifecycle) and [`names`](super::names).

use super::state::state_name;
use super::{SnapshotState, TaskState};

/// The rules' refusal. Its text is the sentence a client sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A name (`what`: "snapshot name", "VM name", ...) is empty after trimming.
    #[error("The {what} must not be empty.")]
    EmptyName { what: &'static str },
    /// A name is longer than `max` characters.
    #[error("The {what} is {chars} characters long; at most {max} are allowed.")]
    LongName {
        what: &'static str,
        chars: usize,
        max: usize,
    },
    /// A name holds a control character (a name is one line of plain text).
    #[error("The {what} must not contain control characters (line breaks, tabs, escapes).")]
    ControlInName { what: &'static str },
    /// A description holds a control character other than a line break or a tab.
    #[error("The description must not contain control characters other than line breaks and tabs.")]
    ControlInDescription,
    /// A description is longer than `max` characters.
    #[error("The description is {chars} characters long; at most {max} are allowed.")]
    LongDescription { chars: usize, max: usize },
    /// Another non-closed snapshot of the VM has the name.
    #[error("This VM already has a snapshot named {name:?}; choose another name.")]
    NameTaken { name: String },
    /// The VM has as many non-closed snapshots as its host allows.
    #[error("This VM already has {limit} snapshots, the limit of its host; delete one first.")]
    LimitReached { limit: i32 },
    /// The VM's project has as many non-closed snapshots as its quota allows.
    #[error(
        "This project already has {limit} snapshots, the most its quota allows; delete one first."
    )]
    QuotaReached {
        /// The project's quota.
        limit: i32,
    },
    /// The VM is in a state (of CloudCIX's state table) that allows no snapshot work.
    #[error("The VM is {}; snapshots need it RUNNING or QUIESCED.", state_name(*state))]
    VmState { state: i32 },
    /// The snapshot is deleted.
    #[error("Snapshot {id} is deleted (CLOSED).")]
    Closed { id: i64 },
    /// Only a RUNNING snapshot can be applied (or reverted to).
    #[error("Snapshot {id} is {state}; only a RUNNING snapshot can be applied.")]
    NotApplicable { id: i64, state: SnapshotState },
    /// A revert needs an active snapshot.
    #[error("This VM has no active snapshot to revert to; create one first.")]
    NoActiveSnapshot,
    /// Only a RUNNING or UNRESOURCED snapshot can be deleted.
    #[error("Snapshot {id} is {state}; only a RUNNING or UNRESOURCED snapshot can be deleted.")]
    NotDeletable { id: i64, state: SnapshotState },
    /// A task that has ended cannot be cancelled.
    #[error("This task has already ended ({state}); there is nothing to cancel.")]
    TaskEnded { state: TaskState },
    /// The robot running the task was asked to stop it already.
    #[error("A cancel was asked for already; the robot stops the task at its next safe point.")]
    CancelAsked,
    /// A delete would remove a protected snapshot: `name` (`id`) is the one asked for,
    /// or, when `below`, one in the subtree under it.
    #[error("{}", protected_words(name, *below))]
    Protected {
        /// The protected snapshot's id.
        id: i64,
        /// Its name.
        name: String,
        /// Whether it is under the snapshot asked for rather than that one.
        below: bool,
    },
    /// An expiry asked for is not in the future.
    #[error("expiresAt is not in the future; give a time to come, or none.")]
    ExpiryPast,
    /// An expiry later than the project's maximum lifetime allows.
    #[error(
        "This project keeps snapshots at most {hours} hours: expiresAt must be no later than {latest} UTC."
    )]
    LifetimeTooLong {
        /// The project's maximum lifetime.
        hours: i32,
        /// The latest expiry it allows for this snapshot.
        latest: chrono::NaiveDateTime,
    },
    /// An expiry removed in a project whose snapshots must all expire.
    #[error(
        "This project keeps snapshots at most {hours} hours; a snapshot's expiry cannot be removed."
    )]
    LifetimeRequired {
        /// The project's maximum lifetime.
        hours: i32,
    },
    /// A project's maximum lifetime out of range.
    #[error(
        "maxLifetimeHours is {hours}; it must be from 1 to {} (null: none).",
        super::lifetime::MAX_LIFETIME_HOURS
    )]
    LifetimeOutOfRange { hours: i32 },
    /// The expiry sweep found a snapshot's expiry moved (or removed) since it read it.
    #[error("Snapshot {id} has not expired; it is kept.")]
    NotExpired { id: i64 },
    /// The expiry sweep keeps an expired snapshot that is the VM's active one.
    #[error(
        "Snapshot {id} has expired but is the VM's active snapshot; it is kept until another is active."
    )]
    ExpiredButActive { id: i64 },
    /// A policy that is not paused has nothing to resume.
    #[error("This policy is not paused; there is nothing to resume.")]
    NotPaused,
    /// A policy runs as its token; once that token has ended (`why`), nothing resumes it.
    #[error(
        "This policy cannot run again: {why}. A policy runs as its token; create it anew with a live one."
    )]
    PolicyStopped {
        /// What ended the token.
        why: &'static str,
    },
}

/// What kind of refusal a [`Rejection`] is, for transports that group them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is wrong (a name, a description).
    Invalid,
    /// The request is fine but the snapshots' or the VM's state forbids it now.
    State,
    /// A limit leaves no room.
    Limit,
    /// A protected snapshot stands in the way.
    Protected,
}

impl Rejection {
    pub fn kind(&self) -> Kind {
        match self {
            Self::EmptyName { .. }
            | Self::LongName { .. }
            | Self::ControlInName { .. }
            | Self::ControlInDescription
            | Self::LongDescription { .. }
            | Self::NameTaken { .. }
            | Self::ExpiryPast
            | Self::LifetimeTooLong { .. }
            | Self::LifetimeRequired { .. }
            | Self::LifetimeOutOfRange { .. } => Kind::Invalid,
            Self::LimitReached { .. } | Self::QuotaReached { .. } => Kind::Limit,
            Self::Protected { .. } => Kind::Protected,
            Self::VmState { .. }
            | Self::Closed { .. }
            | Self::NotApplicable { .. }
            | Self::NoActiveSnapshot
            | Self::NotDeletable { .. }
            | Self::TaskEnded { .. }
            | Self::CancelAsked
            | Self::NotPaused
            | Self::PolicyStopped { .. }
            | Self::NotExpired { .. }
            | Self::ExpiredButActive { .. } => Kind::State,
        }
    }
}

fn protected_words(name: &str, below: bool) -> String {
    if below {
        format!(
            "Snapshot {name:?}, below this one, is protected; unprotect it first, or delete the others one at a time."
        )
    } else {
        format!("Snapshot {name:?} is protected; unprotect it first.")
    }
}
