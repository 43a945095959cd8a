//! The one error type for user-facing failures, whatever the transport.
//!
//! Every error a client can see carries one of the codes of `api.md` ([`AppError::code`]);
//! each transport says it in its own form (GraphQL's `extensions`, in
//! `graphql/errors.rs`). Internal errors keep their cause for the log and show the client
//! only a plain sentence, so no SQL, path or secret leaks out.

use std::fmt;

use crate::domain::Rejection;
use crate::domain::offer::Blocked;
use crate::domain::rejection::Kind;

/// Result of anything that can fail in a way a client may see.
pub type AppResult<T> = Result<T, AppError>;

/// A failure with its `api.md` error code.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AppError {
    /// No token, or an unknown or revoked one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such object, or one the caller may not see.
    #[error("{0}")]
    NotFound(String),
    /// A bad argument.
    #[error("{0}")]
    Validation(String),
    /// The object's state does not allow the action.
    #[error("{0}")]
    InvalidState(String),
    /// A task is already queued or running for the VM: `task_id` when known (a race
    /// that the unique index caught, with the transaction aborted, cannot read it).
    #[error("{message}")]
    VmBusy {
        message: String,
        task_id: Option<i64>,
    },
    /// The host's snapshot limit for the VM is reached.
    #[error("{message}")]
    LimitReached { message: String, limit: i32 },
    /// Depth, cost, node or size limits exceeded; `cost` and `limit` when a cost was
    /// computed.
    #[error("{message}")]
    QueryTooComplex {
        message: String,
        cost: Option<u64>,
        limit: Option<u64>,
    },
    /// The token spent its budget of requests or cost; it may try again after
    /// `retry_after_seconds`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_seconds: u64,
    },
    /// The operation passed its deadline and was cancelled.
    #[error("{0}")]
    Timeout(String),
    /// A replay's cursor names an event older than what retention keeps: events after it
    /// may be gone. `oldest_event_id` is where the kept events start (none: none kept).
    #[error(
        "Events after {after} have been retired (retention keeps them for a while only); read the current state afresh, then follow without a cursor."
    )]
    CursorExpired {
        /// The cursor asked for.
        after: i64,
        /// The oldest event still kept.
        oldest_event_id: Option<i64>,
    },
    /// An automatic persisted query's hash that no server has been sent the document of
    /// (Apollo's protocol: the client then sends the document with its hash). The
    /// message is the one Apollo's clients look for.
    #[error("PersistedQueryNotFound")]
    PersistedQueryNotFound {
        /// The hash asked for.
        hash: String,
    },
    /// A persisted query in a form this server does not take (a version other than 1).
    #[error("{0}")]
    PersistedQueryNotSupported(String),
    /// A rule of `snapshots.md` or of the names refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Anything else; the cause goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn unauthenticated() -> Self {
        Self::Unauthenticated(
            "A valid API token is required: send `Authorization: Bearer <token>`.".into(),
        )
    }

    /// A token revoked, or expired, after it was accepted (on an open connection, or
    /// mid-request).
    pub fn revoked() -> Self {
        Self::Unauthenticated("Your token has been revoked, or has expired.".into())
    }

    pub fn forbidden(what: &str) -> Self {
        Self::Forbidden(format!("Your token's role may not {what}."))
    }

    /// `kind` names the object, e.g. "VM" or "snapshot".
    pub fn not_found(kind: &str, id: impl fmt::Display) -> Self {
        Self::NotFound(format!("No {kind} with id {id} exists."))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation(message.into())
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::InvalidState(message.into())
    }

    /// The VM has a task queued or running (`task_id`, in the error's extensions).
    pub fn vm_busy(task_id: Option<i64>) -> Self {
        Blocked::Busy { task: task_id }.into()
    }

    /// A limit on the request's shape (size, depth, aliases) was passed.
    pub fn too_complex(message: impl Into<String>) -> Self {
        Self::QueryTooComplex {
            message: message.into(),
            cost: None,
            limit: None,
        }
    }

    /// The computed cost `cost` (of objects or fields, as `what` says) passes `limit`.
    pub fn too_costly(what: &str, cost: u64, limit: u64) -> Self {
        Self::QueryTooComplex {
            message: format!(
                "This operation could {what} {cost} times; at most {limit} are allowed. \
                 Ask for smaller pages (first) or fewer nested lists."
            ),
            cost: Some(cost),
            limit: Some(limit),
        }
    }

    pub fn rate_limited(retry_after: std::time::Duration, what: &str) -> Self {
        // Whole seconds, rounded up: never tell a client to come back too early.
        let secs = retry_after.as_millis().div_ceil(1000).max(1) as u64;
        Self::RateLimited {
            message: format!("Your token has used its budget of {what}; try again in {secs} s."),
            retry_after_seconds: secs,
        }
    }

    /// A handler or resolver that panicked with `payload`: logged here, INTERNAL to the
    /// client.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "a request's handler panicked");
        Self::internal(format!("a handler panicked: {what}"))
    }

    /// An address that failed to authenticate too often.
    pub fn too_many_failed_logins(retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_millis().div_ceil(1000).max(1) as u64;
        Self::RateLimited {
            message: format!(
                "Too many failed authentications from your address; try again in {secs} s."
            ),
            retry_after_seconds: secs,
        }
    }

    /// A token whose operations keep being refused as too complex, barred for
    /// `retry_after` before its next ones are parsed.
    pub fn too_many_refusals(retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_millis().div_ceil(1000).max(1) as u64;
        Self::RateLimited {
            message: format!(
                "Your token's operations keep being refused (too complex, or an unknown persisted query); ask for less, and try again in {secs} s."
            ),
            retry_after_seconds: secs,
        }
    }

    /// A token opening more WebSockets than `cap`.
    pub fn too_many_connections(cap: usize) -> Self {
        Self::RateLimited {
            message: format!(
                "Your token already holds {cap} open connections, its limit; close one first."
            ),
            retry_after_seconds: 1,
        }
    }

    pub fn timeout(limit: std::time::Duration) -> Self {
        Self::Timeout(format!(
            "The operation did not finish within {} s and was cancelled.",
            limit.as_secs_f64()
        ))
    }

    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// The `extensions.code` of `api.md`.
    /// Every code [`AppError::code`] gives, as the API documents them.
    pub const CODES: &'static [&'static str] = &[
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "VALIDATION",
        "INVALID_STATE",
        "VM_BUSY",
        "LIMIT_REACHED",
        "QUERY_TOO_COMPLEX",
        "RATE_LIMITED",
        "TIMEOUT",
        "CURSOR_EXPIRED",
        "PERSISTED_QUERY_NOT_FOUND",
        "PERSISTED_QUERY_NOT_SUPPORTED",
        "PROTECTED",
        "INTERNAL",
    ];

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Validation(_) => "VALIDATION",
            Self::InvalidState(_) => "INVALID_STATE",
            Self::VmBusy { .. } => "VM_BUSY",
            Self::LimitReached { .. } => "LIMIT_REACHED",
            Self::QueryTooComplex { .. } => "QUERY_TOO_COMPLEX",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Timeout(_) => "TIMEOUT",
            Self::CursorExpired { .. } => "CURSOR_EXPIRED",
            Self::PersistedQueryNotFound { .. } => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotSupported(_) => "PERSISTED_QUERY_NOT_SUPPORTED",
            Self::Rejected(rejection) => match rejection.kind() {
                Kind::Invalid => "VALIDATION",
                Kind::State => "INVALID_STATE",
                Kind::Limit => "LIMIT_REACHED",
                Kind::Protected => "PROTECTED",
            },
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The sentence a client may see.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => {
                "Something went wrong on the server; the details are in its log.".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<Blocked> for AppError {
    fn from(blocked: Blocked) -> Self {
        match blocked {
            Blocked::Role => Self::Forbidden(blocked.to_string()),
            Blocked::Busy { task } => Self::VmBusy {
                message: blocked.to_string(),
                task_id: task,
            },
            Blocked::VmState(rejection) => Self::Rejected(rejection),
            Blocked::Unsupported(why) => Self::InvalidState(why),
        }
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        Self::internal(format!("database: {err}"))
    }
}

impl From<crate::db::Error> for AppError {
    fn from(err: crate::db::Error) -> Self {
        Self::internal(err)
    }
}
