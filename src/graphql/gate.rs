//! The gate every operation passes before it runs, whatever the transport (HTTP or a
//! WebSocket): the caller's budget of requests, the size and bracket nesting of the text,
//! then, parsed once, its depth, node count and cost ([`super::cost`]) and the caller's
//! budget of cost. Only then does async-graphql see the document, already parsed; its own
//! validation walks fragments expanded, which the cost bound keeps small. Queries and
//! mutations then run within the deadline ([`Gate::run`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Request, Response};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, stream};

use super::AppSchema;
use super::cost::Catalog;
use crate::config::Limits;
use crate::error::{AppError, AppResult};
use crate::service::{Caller, Service};

/// Admits operations; cheap to clone.
#[derive(Clone)]
pub struct Gate {
    /// The schema's cost model, built once (its snapshot levels bound by `snapshots_per_vm`).
    catalog: Arc<Catalog>,
    /// The caps admission checks (size, depth, nodes, cost) and the execution deadline.
    limits: Arc<Limits>,
}

/// What the gate learnt of an admitted operation.
#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    /// The kind of the operation that will run (`None` when the document names none
    /// clearly: execution reports why).
    pub kind: Option<OperationType>,
    /// Its computed cost.
    pub cost: u64,
}

impl Gate {
    pub fn new(limits: Arc<Limits>) -> Self {
        let catalog = Catalog::new(&super::sdl(), u64::from(limits.snapshots_per_vm));
        Self {
            catalog: Arc::new(catalog),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks `request` for `caller` and charges the caller's budget; the request keeps
    /// its parsed document for execution. A token whose operations keep being refused as
    /// too complex is refused before its next ones are parsed (`service::throttle`).
    pub fn admit(
        &self,
        service: &Service,
        caller: &Caller,
        request: &mut Request,
    ) -> AppResult<Admitted> {
        let throttle = service.throttle();
        throttle.may_send(caller)?;
        throttle.request(caller)?;
        if let Some(trusted) = &self.limits.trusted_documents
            && !trusted.contains_key(&crate::service::persisted::hash_of(&request.query))
        {
            throttle.refused(caller);
            return Err(AppError::Forbidden(
                "This server runs only its trusted documents (--trusted-documents), and this operation is not one of them.".into(),
            ));
        }
        let admitted = self.check(service, caller, request);
        if let Err(AppError::QueryTooComplex { .. }) = &admitted {
            throttle.refused(caller);
        }
        admitted
    }

    /// [`Self::admit`]'s checks of the document.
    /// Long because it is a list: the checks in order, cheapest first (size, bracket nesting),
    /// then the measured depth, nodes and cost, each with its refusal.
    fn check(
        &self,
        service: &Service,
        caller: &Caller,
        request: &mut Request,
    ) -> AppResult<Admitted> {
        let limits = &self.limits;
        let bytes = request.query.len();
        if bytes > limits.max_query_bytes {
            return Err(AppError::too_complex(format!(
                "The query is {bytes} bytes long; at most {} are accepted.",
                limits.max_query_bytes
            )));
        }
        // The parser recurses once per bracket; refuse what no admissible query needs
        // before it does.
        let nesting = bracket_nesting(&request.query);
        if nesting > 2 * limits.max_depth {
            return Err(AppError::too_complex(format!(
                "The query nests brackets {nesting} deep; fields may nest at most {} deep.",
                limits.max_depth
            )));
        }
        let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
            // Execution reports the syntax error, with its position.
            return Ok(Admitted {
                kind: None,
                cost: 0,
            });
        };
        let operation = request.operation_name.as_deref();
        let measured = self.catalog.measure(&doc, operation, &request.variables)?;
        if measured.depth > limits.max_depth {
            return Err(AppError::too_complex(format!(
                "The query nests fields {} deep; at most {} are allowed.",
                measured.depth, limits.max_depth
            )));
        }
        if measured.nodes > limits.max_nodes {
            let nodes = measured.nodes;
            return Err(AppError::too_costly(
                "return objects",
                nodes,
                limits.max_nodes,
            ));
        }
        if measured.cost > limits.max_cost {
            let cost = measured.cost;
            return Err(AppError::too_costly(
                "resolve fields",
                cost,
                limits.max_cost,
            ));
        }
        service.throttle().spend(caller, measured.cost)?;
        let kind = kind_of(&doc, operation);
        request.set_parsed_query(doc);
        Ok(Admitted {
            kind,
            cost: measured.cost,
        })
    }

    /// Runs an admitted operation: a query or mutation as one response within the
    /// deadline (cancelled past it, its memory released), a subscription as its stream.
    pub fn run(
        &self,
        schema: &AppSchema,
        request: Request,
        admitted: Admitted,
    ) -> BoxStream<'static, Response> {
        // A panic anywhere in a resolver is answered INTERNAL and logged, on every
        // transport, instead of taking the connection down with it.
        let stream = AssertUnwindSafe(schema.execute_stream(request))
            .catch_unwind()
            .map(|answer| {
                answer.unwrap_or_else(|panic| {
                    let err = AppError::panicked(panic.as_ref());
                    Response::from_errors(vec![err.into_server_error()])
                })
            })
            .boxed();
        if admitted.kind == Some(OperationType::Subscription) {
            return stream;
        }
        let deadline = self.limits.request_timeout;
        stream::once(async move {
            let mut stream = stream;
            match tokio::time::timeout(deadline, stream.next()).await {
                Ok(Some(response)) => response,
                Ok(None) => Response::default(),
                Err(_) => {
                    Response::from_errors(vec![AppError::timeout(deadline).into_server_error()])
                }
            }
        })
        .boxed()
    }
}

/// The kind of the operation `name` selects.
fn kind_of(doc: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The deepest nesting of `{`, `(` and `[` in a GraphQL document, outside strings and
/// comments.
fn bracket_nesting(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // \""" is an escaped triple quote inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_skips_strings_and_comments() {
        assert_eq!(bracket_nesting("{ a { b(x: [1]) } }"), 4);
        assert_eq!(bracket_nesting(r#"{ a(s: "{{{{") }"#), 2);
        assert_eq!(bracket_nesting("{ a # {{{{\n }"), 1);
        assert_eq!(bracket_nesting(r#"{ a(s: """ {{{ \""" {{ """) }"#), 2);
        assert_eq!(bracket_nesting(&"{".repeat(10_000)), 10_000);
    }

    #[test]
    fn the_kind_is_the_named_operations() {
        let doc = async_graphql::parser::parse_query("query A { hosts { id } } mutation B { x }")
            .unwrap();
        assert_eq!(kind_of(&doc, Some("B")), Some(OperationType::Mutation));
        assert_eq!(kind_of(&doc, None), None);
    }
}
