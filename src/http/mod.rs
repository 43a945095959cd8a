//! The axum router: GraphQL over HTTP, the dashboard, and a health check.
//!
//! Every GraphQL request is authenticated here, before it runs: a missing, unknown or
//! revoked token is answered with UNAUTHENTICATED and nothing else happens. The caller
//! and a fresh set of loaders go into the request's data.

use async_graphql::parser::types::OperationType;
use async_graphql::{ParseRequestError, Request, Response as GqlResponse, ServerError};
use async_graphql_axum::GraphQLRequest;
use async_graphql_axum::rejection::GraphQLRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, State};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{RequestExt, Router};

use crate::error::AppError;
use crate::graphql::{self, AppSchema, Loaders, MAX_QUERY_BYTES};
use crate::service::Service;

mod subscriptions;

/// The dashboard, built into the binary: no build step, nothing loaded from elsewhere.
const DASHBOARD: &str = include_str!("../../web/index.html");
const DASHBOARD_JS: &str = include_str!("../../web/app.js");
const DASHBOARD_CSS: &str = include_str!("../../web/style.css");
/// The page may load and connect to this server only.
const DASHBOARD_CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Largest request body accepted (the query plus its variables).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The service, for authentication.
    pub service: Service,
    pub schema: AppSchema,
}

pub fn router(service: Service) -> Router {
    let schema = graphql::schema(Some(service.clone()));
    Router::new()
        .route("/", get(dashboard))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", DASHBOARD_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", DASHBOARD_CSS)),
        )
        .route("/healthz", get(healthz))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState { service, schema })
}

async fn dashboard() -> Response {
    let mut page = Html(DASHBOARD).into_response();
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    page
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn graphql_post(State(app): State<AppState>, request: axum::extract::Request) -> Response {
    let headers = request.headers().clone();
    // The GraphQL extractor reads the body stream itself, past `DefaultBodyLimit`; the
    // limit has to be put on the body first.
    let request = request.with_limited_body();
    match GraphQLRequest::<GraphQLRejection>::from_request(request, &()).await {
        Ok(request) => execute(&app, &headers, request.into_inner(), false).await,
        Err(rejection) => rejected(rejection),
    }
}

/// GET is a WebSocket for subscriptions, or a query (only: a mutation must not be one
/// click on a link away).
async fn graphql_get(State(app): State<AppState>, request: axum::extract::Request) -> Response {
    let headers = request.headers().clone();
    if headers.contains_key(header::UPGRADE) {
        let (mut parts, _) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => subscriptions::upgrade(app, upgrade, &headers),
            Err(rejection) => rejection.into_response(),
        };
    }
    match GraphQLRequest::<GraphQLRejection>::from_request(request, &()).await {
        Ok(request) => execute(&app, &headers, request.into_inner(), true).await,
        Err(rejection) => rejected(rejection),
    }
}

async fn execute(
    app: &AppState,
    headers: &HeaderMap,
    request: Request,
    read_only: bool,
) -> Response {
    if request.query.len() > MAX_QUERY_BYTES {
        let err = AppError::QueryTooComplex(format!(
            "The query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted.",
            request.query.len()
        ));
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, &err);
    }
    if read_only && !only_queries(&request.query) {
        let err =
            AppError::validation("Only queries may be sent with GET; send mutations with POST.");
        return error_response(StatusCode::METHOD_NOT_ALLOWED, &err);
    }
    let caller = match bearer(headers) {
        Some(token) => app.service.authenticate(token).await,
        None => Err(AppError::unauthenticated()),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(err) => {
            let status = match err {
                AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if let AppError::Internal(cause) = &err {
                tracing::error!(%cause, "authentication failed");
            }
            return error_response(status, &err);
        }
    };
    let loaders = Loaders::new(app.service.clone(), caller.clone());
    let mut response = app.schema.execute(request.data(caller).data(loaders)).await;
    graphql::add_codes(&mut response.errors);
    json(StatusCode::OK, &response)
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of a `Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// True unless the document holds a mutation or subscription (or does not parse, which
/// execution will report).
fn only_queries(query: &str) -> bool {
    match async_graphql::parser::parse_query(query) {
        Ok(doc) => doc
            .operations
            .iter()
            .all(|(_, op)| op.node.ty == OperationType::Query),
        Err(_) => true,
    }
}

fn rejected(rejection: GraphQLRejection) -> Response {
    let too_large = matches!(rejection.0, ParseRequestError::PayloadTooLarge)
        || rejection.0.to_string().contains("length limit");
    if too_large {
        let err = AppError::QueryTooComplex(format!(
            "The request is larger than {MAX_BODY_BYTES} bytes."
        ));
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, &err);
    }
    let err = AppError::validation(format!(
        "The request is not a GraphQL request: {}.",
        rejection.0
    ));
    error_response(StatusCode::BAD_REQUEST, &err)
}

/// A GraphQL-shaped error body, for requests that never reached execution.
fn error_response(status: StatusCode, err: &AppError) -> Response {
    let mut error = ServerError::new(err.public_message(), None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", err.code());
    json(status, &GqlResponse::from_errors(vec![error]))
}

fn json(status: StatusCode, response: &GqlResponse) -> Response {
    let body = serde_json::to_vec(response).expect("a GraphQL response serialises");
    let mut out = (status, body).into_response();
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}
