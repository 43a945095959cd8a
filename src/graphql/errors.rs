//! [`AppError`] as GraphQL errors: the message, and `extensions` with the code of
//! `api.md` and the error's details.

use async_graphql::ErrorExtensions;

use crate::domain::Rejection;
use crate::error::AppError;

/// Resolvers turn an `AppError` into a GraphQL error with `.extend()` (from
/// `async_graphql::ResultExt`), which keeps the code; a plain `?` would drop it.
impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        if let AppError::Internal(cause) = self {
            tracing::error!(%cause, "internal error answered to a client");
        }
        async_graphql::Error::new(self.public_message())
            .extend_with(|_, ext| self.fill_extensions(ext))
    }
}

impl AppError {
    /// Puts the code and the error's details into a GraphQL error's `extensions`.
    pub fn fill_extensions(&self, ext: &mut async_graphql::ErrorExtensionValues) {
        ext.set("code", self.code());
        match self {
            AppError::VmBusy {
                task_id: Some(task_id),
                ..
            } => ext.set("taskId", task_id.to_string()),
            AppError::LimitReached { limit, .. }
            | AppError::Rejected(
                Rejection::LimitReached { limit } | Rejection::QuotaReached { limit },
            ) => ext.set("limit", *limit),
            AppError::QueryTooComplex { cost, limit, .. } => {
                if let (Some(cost), Some(limit)) = (cost, limit) {
                    ext.set("cost", *cost);
                    ext.set("limit", *limit);
                }
            }
            AppError::RateLimited {
                retry_after_seconds,
                ..
            } => ext.set("retryAfterSeconds", *retry_after_seconds),
            AppError::Rejected(Rejection::Protected { id, .. }) => {
                ext.set("snapshotId", id.to_string())
            }
            AppError::CursorExpired {
                oldest_event_id: Some(oldest),
                ..
            } => ext.set("oldestEventId", oldest.to_string()),
            AppError::PersistedQueryNotFound { hash } => {
                let mut asked = async_graphql::indexmap::IndexMap::new();
                asked.insert(
                    async_graphql::Name::new("sha256Hash"),
                    async_graphql::Value::String(hash.clone()),
                );
                ext.set("persistedQuery", async_graphql::Value::Object(asked));
            }
            _ => {}
        }
    }

    /// The error as a GraphQL server error (for failures outside a resolver).
    pub fn into_server_error(self) -> async_graphql::ServerError {
        let mut error = async_graphql::ServerError::new(self.public_message(), None);
        self.fill_extensions(error.extensions.get_or_insert_with(Default::default));
        error
    }
}
