//! The GraphQL schema of `api.md`: types, resolvers, loaders and limits. Resolvers are
//! thin: they parse arguments and call the service, which holds every rule. Kept apart
//! from the web framework; `http` serves it.

mod loaders;
mod mutation;
mod query;
mod subscription;
mod types;

use async_graphql::{ID, Schema, ServerError};

pub use loaders::Loaders;
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

use crate::error::AppError;
use crate::service::Service;

/// The schema type served.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Deepest query accepted: room for a chain of 50 snapshots walked through `children`
/// with fields around it, and well short of what could exhaust the server.
pub const MAX_DEPTH: usize = 100;
/// Most fields a query may select, lists counting once per `first` item.
pub const MAX_COMPLEXITY: usize = 10_000;
/// Longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Default and largest page size of the connections.
pub const DEFAULT_PAGE: i32 = 50;
pub const MAX_PAGE: i32 = 200;

/// Builds the schema; `service` is absent only when printing the SDL.
pub fn schema(service: Option<Service>) -> AppSchema {
    let mut builder = Schema::build(Query, Mutation, Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_recursive_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(16);
    if let Some(service) = service {
        builder = builder.data(service);
    }
    builder.finish()
}

/// The schema in SDL, as `schema.graphql` holds it.
pub fn sdl() -> String {
    schema(None).sdl()
}

/// Parses an `ID` argument; `what` names it in the error.
pub(crate) fn parse_id(id: &ID, what: &str) -> Result<i64, AppError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AppError::validation(format!("{:?} is not a valid {what} id.", id.as_str())))
}

/// Gives every error a code: ours carry one; the library's own are either the limits
/// (QUERY_TOO_COMPLEX) or a malformed query (VALIDATION).
pub fn add_codes(errors: &mut [ServerError]) {
    for error in errors {
        let ext = error.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_some() {
            continue;
        }
        let limit = ["nested too deep", "too complex", "recursion", "directives"]
            .iter()
            .any(|m| error.message.contains(m));
        ext.set(
            "code",
            if limit {
                "QUERY_TOO_COMPLEX"
            } else {
                "VALIDATION"
            },
        );
    }
}
