//! The GraphQL schema of `api.md`: types, resolvers, loaders and limits. Resolvers are
//! thin: they parse arguments and call the service, which holds every rule. Kept apart
//! from the web framework; `http` serves it.

pub mod cost;
mod enums;
mod errors;
mod gate;
mod loaders;
mod mutation;
mod offers;
mod policies;
mod query;
mod subscription;
mod types;

use async_graphql::{ID, Schema, ServerError};

pub use gate::{Admitted, Gate};
pub use loaders::Loaders;
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

use crate::error::AppError;
use crate::service::Service;

/// The schema type served.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Default and largest page size of connections and lists (`first`).
pub const DEFAULT_PAGE: i32 = 50;
pub const MAX_PAGE: i32 = 200;
/// Most entries `Vm.drift` lists.
pub const MAX_DRIFT: usize = 200;

/// Builds the schema; `service` is absent only when printing the SDL.
///
/// The depth, cost and size limits are the [`Gate`]'s, checked before async-graphql
/// sees a document: its own depth and complexity checks expand fragments, which a
/// document can make exponential. The parser's recursion limit here only has to be above
/// what the gate admits.
pub fn schema(service: Option<Service>) -> AppSchema {
    let mut builder = Schema::build(Query, Mutation, Subscription)
        .limit_recursive_depth(usize::MAX)
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

/// Gives every error a code: ours carry one; the library's own are either the
/// directive limit (QUERY_TOO_COMPLEX) or a malformed query (VALIDATION).
pub fn add_codes(errors: &mut [ServerError]) {
    for error in errors {
        let ext = error.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_some() {
            continue;
        }
        let limit = error.message.contains("directives");
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

/// `first` items after the one with id `after`, of a list in id order: the arguments
/// every plain list field takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Page {
    /// Most items on the page (0 to `MAX_PAGE`).
    first: usize,
    /// The cursor: the id the page starts after; `None`: from the first item.
    after: Option<i64>,
}

impl Page {
    /// The page `first` and `after` ask for; `first` must be 0 to [`MAX_PAGE`].
    pub(crate) fn new(first: i32, after: Option<&ID>) -> Result<Self, AppError> {
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(AppError::validation(format!(
                "first must be 0 to {MAX_PAGE}, not {first}."
            )));
        }
        let after = after.map(|a| parse_id(a, "cursor")).transpose()?;
        Ok(Self {
            first: first as usize,
            after,
        })
    }

    /// This page of each of `scopes`, asked for as one (`loaders::Pages`).
    pub(crate) fn of_scopes(&self, scopes: std::sync::Arc<[i64]>) -> loaders::Pages {
        loaders::Pages {
            scopes,
            after: self.after,
            first: i64::try_from(self.first).unwrap_or(i64::MAX),
        }
    }

    /// The page of `items` (in ascending id order), as `wrap` makes them.
    pub(crate) fn of<T: Clone, O>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> i64,
        wrap: impl Fn(T) -> O,
    ) -> Vec<O> {
        items
            .iter()
            .filter(|item| self.after.is_none_or(|after| id(item) > after))
            .take(self.first)
            .cloned()
            .map(wrap)
            .collect()
    }
}
