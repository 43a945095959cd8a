//! The axum router: GraphQL over HTTP, CloudCIX's REST API ([`rest`]), the dashboard,
//! the query explorer ([`explorer`]), metrics and a health check.
//!
//! Every GraphQL request is authenticated here, from its headers, before its body is
//! read: a missing, unknown or revoked token is answered with UNAUTHENTICATED and
//! nothing else happens. Then the body is read (bounded, and within its deadline), the
//! [`Gate`] admits it (size, cost, the token's budget) and runs it within its deadline;
//! the caller and a fresh set of loaders go into the request's data.

use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, Request, Response as GqlResponse};
use async_graphql_axum::GraphQLBatchRequest;
use async_graphql_axum::rejection::GraphQLRejection;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::error::AppError;
use crate::graphql::{self, Admitted, AppSchema, Gate, Loaders};
use crate::service::{Caller, Service};

pub use metrics::MetricsAccess;
pub use origins::Origins;

mod access;
mod body;
mod explorer;
pub mod listener;
pub mod metrics;
mod origins;
mod persisted;
mod rest;
mod subscriptions;

/// The dashboard, built into the binary: no build step, nothing loaded from elsewhere.
const DASHBOARD: &str = include_str!("../../web/index.html");
const DASHBOARD_JS: &str = include_str!("../../web/app.js");
/// The page's ES modules (`web/js/`), which `app.js` imports by relative path: the
/// browser loads them as they are, with no bundling step.
const DASHBOARD_MODULES: &[(&str, &str)] = &[
    ("actions.js", include_str!("../../web/js/actions.js")),
    ("api.js", include_str!("../../web/js/api.js")),
    ("details.js", include_str!("../../web/js/details.js")),
    ("live.js", include_str!("../../web/js/live.js")),
    ("page.js", include_str!("../../web/js/page.js")),
    ("policies.js", include_str!("../../web/js/policies.js")),
    ("queries.js", include_str!("../../web/js/queries.js")),
    ("session.js", include_str!("../../web/js/session.js")),
    ("tree.js", include_str!("../../web/js/tree.js")),
    ("vms.js", include_str!("../../web/js/vms.js")),
];
const DASHBOARD_CSS: &str = include_str!("../../web/style.css");
/// The page may load and connect to this server only.
const DASHBOARD_CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub(crate) use body::MAX_BODY_BYTES;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The service, for authentication.
    pub service: Service,
    /// The GraphQL schema, with the service in its data.
    pub schema: AppSchema,
    /// Admits and runs operations, on every transport.
    pub gate: Gate,
    /// Turns true when the server stops (WebSockets close with 1001).
    pub stop: watch::Receiver<bool>,
    /// Pages of which origins may open a WebSocket (and call, by CORS).
    pub origins: Origins,
}

/// The routes, for a server that stops when `stop` turns true, open to pages of its own
/// origin and of `origins`.
pub fn router(
    service: Service,
    stop: watch::Receiver<bool>,
    origins: Origins,
    metrics: &MetricsAccess,
) -> Router {
    let schema = graphql::schema(Some(service.clone()));
    let gate = Gate::new(service.limits().clone());
    let router = Router::new()
        .route("/", get(dashboard))
        .route(
            "/app.js",
            get(|| {
                asset(
                    "text/javascript; charset=utf-8",
                    DASHBOARD_JS,
                    Cache::Revalidate,
                )
            }),
        )
        .route("/js/{module}", get(dashboard_module))
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", DASHBOARD_CSS, Cache::Revalidate)),
        )
        .route("/healthz", get(healthz))
        .merge(explorer::routes())
        .route("/graphql", get(graphql_get).post(graphql_post))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState {
            service: service.clone(),
            schema,
            gate,
            stop,
            origins: origins.clone(),
        })
        .merge(rest::routes(service.clone()).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)));
    // On an address of its own, `/metrics` is not on the API's.
    let router = match metrics.listen {
        None => router.merge(metrics::routes(service, metrics, false)),
        Some(_) => router,
    };
    let router = match origins.cors() {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(access::log))
}

/// The answer to a request whose handler panicked (outside an operation: the gate
/// answers those itself): INTERNAL, with the panic in the log, and the connection kept.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let err = AppError::panicked(panic.as_ref());
    error_response(Media::Json, StatusCode::INTERNAL_SERVER_ERROR, &err)
}

async fn dashboard() -> Response {
    page(DASHBOARD, DASHBOARD_CSP)
}

/// An HTML page of this server's, under `csp`.
pub(crate) fn page(html: &'static str, csp: &'static str) -> Response {
    let mut page = Html(html).into_response();
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    page
}

/// How long a browser may keep a file.
#[derive(Clone, Copy)]
pub(crate) enum Cache {
    /// Asked again each time (the dashboard's own files change with the binary).
    Revalidate,
    /// For good: the path names the version (vendored files).
    Forever,
}

/// A file of this server's.
pub(crate) async fn asset(
    content_type: &'static str,
    body: &'static str,
    cache: Cache,
) -> Response {
    let cache = match cache {
        Cache::Revalidate => "no-cache",
        Cache::Forever => "public, max-age=31536000, immutable",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// One of the dashboard's modules, by its file name; any other name is not found.
async fn dashboard_module(Path(module): Path<String>) -> Response {
    match DASHBOARD_MODULES.iter().find(|(name, _)| *name == module) {
        Some((_, text)) => asset("text/javascript; charset=utf-8", text, Cache::Revalidate).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// The address a request came from (`listener::serve` puts it in every request).
pub(crate) fn peer(request: &axum::http::request::Parts) -> IpAddr {
    request
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The caller of a GraphQL request over HTTP, from its headers alone; an error answer
/// otherwise, counted as a refused operation.
async fn caller(
    app: &AppState,
    parts: &axum::http::request::Parts,
    media: Media,
) -> Result<Caller, Response> {
    let caller = match bearer(&parts.headers) {
        Some(token) => app.service.authenticate(token, peer(parts)).await,
        None => Err(AppError::unauthenticated()),
    };
    caller.map_err(|err| refused(app, media, status_of(&err), err))
}

/// An operation refused before it ran: counted, and answered with `err`.
fn refused(app: &AppState, media: Media, status: StatusCode, err: AppError) -> Response {
    app.service.metrics().operation("refused", err.code());
    error_response(media, status, &err)
}

async fn graphql_post(State(app): State<AppState>, request: axum::extract::Request) -> Response {
    let headers = request.headers().clone();
    let media = Media::of(&headers);
    // JSON only: a form or plain text is what a page of another origin can send without
    // a preflight, and fetch() labels a bare body text/plain.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        let err = AppError::validation("Send the request as application/json (its Content-Type).");
        return error_response(media, StatusCode::UNSUPPORTED_MEDIA_TYPE, &err);
    }
    answer(&app, media, request, false).await
}

/// Answers a GraphQL request over HTTP: its caller from its headers, then its body, then
/// the operation (only a query when `read_only`).
async fn answer(
    app: &AppState,
    media: Media,
    request: axum::extract::Request,
    read_only: bool,
) -> Response {
    let (parts, body) = request.into_parts();
    let caller = match caller(app, &parts, media).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    match read(media, parts, body).await {
        Ok(BatchRequest::Single(request)) => execute(app, caller, media, request, read_only).await,
        Ok(BatchRequest::Batch(requests)) => execute_batch(app, caller, requests, read_only).await,
        Err(response) => response,
    }
}

/// The media type of an answer: `application/graphql-response+json` (the
/// GraphQL-over-HTTP draft's, whose status says whether the request was run at all)
/// when the client's `Accept` names it, `application/json` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Media {
    /// `application/json`: errors answered 200, as older clients expect.
    Json,
    /// `application/graphql-response+json`: a request not run answers 4xx.
    GraphQLResponse,
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

impl Media {
    fn of(headers: &HeaderMap) -> Self {
        let named = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';').map(str::trim);
                let refused = |p: &str| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                };
                parts
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case(GRAPHQL_RESPONSE))
                    && !parts.any(refused)
            });
        if named {
            Self::GraphQLResponse
        } else {
            Self::Json
        }
    }
}

/// Reads a GraphQL request: its body whole (bounded, within its deadline), then the
/// operation in it, or the operations of a batch (a JSON array); for GET, the operation
/// in the query string.
async fn read(
    media: Media,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<BatchRequest, Response> {
    let body = match body::read(body).await {
        Ok(body) => body,
        Err(refusal) => {
            let (status, err) = match refusal {
                body::Refusal::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    AppError::too_complex(format!(
                        "The request is larger than {MAX_BODY_BYTES} bytes."
                    )),
                ),
                body::Refusal::Late(limit) => (
                    StatusCode::REQUEST_TIMEOUT,
                    AppError::Timeout(format!(
                        "The request was not received within {} s.",
                        limit.as_secs()
                    )),
                ),
                body::Refusal::Broken(why) => (
                    StatusCode::BAD_REQUEST,
                    AppError::validation(format!("The request's body could not be read: {why}.")),
                ),
            };
            return Err(error_response(media, status, &err));
        }
    };
    let request = axum::extract::Request::from_parts(parts, body.into());
    match GraphQLBatchRequest::<GraphQLRejection>::from_request(request, &()).await {
        Ok(request) => Ok(request.into_inner()),
        Err(rejection) => Err(rejected(media, rejection)),
    }
}

/// GET is a WebSocket for subscriptions, or a query (only: a mutation must not be one
/// click on a link away).
async fn graphql_get(State(app): State<AppState>, request: axum::extract::Request) -> Response {
    let headers = request.headers().clone();
    if headers.contains_key(header::UPGRADE) {
        let (mut parts, _) = request.into_parts();
        let from = peer(&parts);
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => subscriptions::upgrade(app, upgrade, &headers, from),
            Err(rejection) => rejection.into_response(),
        };
    }
    answer(&app, Media::of(&headers), request, true).await
}

/// Admits and runs an authenticated request. Every operation is counted once: refused
/// before it ran, or by how it ended.
async fn execute(
    app: &AppState,
    caller: Caller,
    media: Media,
    request: Request,
    read_only: bool,
) -> Response {
    match admit(app, &caller, request, read_only).await {
        Ok(ready) => json(media, StatusCode::OK, &run(app, caller, ready).await),
        Err((status, err)) => refused(app, media, status, err),
    }
}

/// The most operations one batch may hold (Apollo's `BatchHttpLink` sends 10 at most
/// by default).
pub const MAX_BATCH: usize = 20;

/// Runs a batch of operations (a JSON array, as Apollo's `BatchHttpLink` posts it) and
/// answers an array of their answers, in order. Each operation is admitted as a lone
/// one would be (and spends the token's budget); those refused are answered their
/// refusal in their place. Together they may cost what one request may: a batch over
/// that, or holding more than [`MAX_BATCH`] operations, is refused whole.
async fn execute_batch(
    app: &AppState,
    caller: Caller,
    requests: Vec<Request>,
    read_only: bool,
) -> Response {
    let media = Media::Json;
    if requests.len() > MAX_BATCH || requests.is_empty() {
        let err = AppError::too_complex(format!(
            "A batch holds from 1 to {MAX_BATCH} operations; this one holds {}.",
            requests.len()
        ));
        return refused(app, media, StatusCode::PAYLOAD_TOO_LARGE, err);
    }
    let mut admitted = Vec::with_capacity(requests.len());
    for request in requests {
        admitted.push(admit(app, &caller, request, read_only).await);
    }
    let cost: u64 = admitted
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|ready| ready.admitted.cost)
        .sum();
    let limit = app.service.limits().max_cost;
    if cost > limit {
        let err = AppError::QueryTooComplex {
            message: format!(
                "The batch's operations would cost {cost} together; a request may cost at most {limit}. Send fewer at once."
            ),
            cost: Some(cost),
            limit: Some(limit),
        };
        return refused(app, media, StatusCode::OK, err);
    }
    let mut answers = Vec::with_capacity(admitted.len());
    for ready in admitted {
        answers.push(match ready {
            Ok(ready) => run(app, caller.clone(), ready).await,
            Err((_, err)) => {
                app.service.metrics().operation("refused", err.code());
                GqlResponse::from_errors(vec![err.into_server_error()])
            }
        });
    }
    let body = serde_json::to_vec(&answers).expect("GraphQL responses serialise");
    let mut out = (StatusCode::OK, body).into_response();
    let headers = out.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out
}

/// An operation admitted to run.
struct Ready {
    /// The request, its document resolved.
    request: Request,
    /// What the gate found: its kind and cost.
    admitted: Admitted,
    /// The persisted query's hash to keep its document under, if it came with one.
    to_persist: Option<String>,
}

/// Resolves a request's persisted query, admits it through the gate (charging the
/// token's budget), and checks its kind against the transport (only a query when
/// `read_only`; never a subscription over HTTP); the status and error of a refusal.
async fn admit(
    app: &AppState,
    caller: &Caller,
    mut request: Request,
    read_only: bool,
) -> Result<Ready, (StatusCode, AppError)> {
    let with_status = |err: AppError| (status_of(&err), err);
    let to_persist = persisted::resolve(&app.service, caller, &mut request)
        .await
        .map_err(with_status)?;
    let admitted = app
        .gate
        .admit(&app.service, caller, &mut request)
        .map_err(with_status)?;
    match admitted.kind {
        Some(OperationType::Subscription) => Err((
            StatusCode::BAD_REQUEST,
            AppError::validation(
                "Subscriptions run over a WebSocket (GET /graphql with graphql-transport-ws).",
            ),
        )),
        Some(OperationType::Mutation) if read_only => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            AppError::validation("Only queries may be sent with GET; send mutations with POST."),
        )),
        _ => Ok(Ready {
            request,
            admitted,
            to_persist,
        }),
    }
}

/// Runs an admitted operation, keeping its persisted query's document first; counts it
/// by how it ended.
async fn run(app: &AppState, caller: Caller, ready: Ready) -> GqlResponse {
    let Ready {
        request,
        admitted,
        to_persist,
    } = ready;
    if let Some(hash) = to_persist
        && let Err(err) = app.service.persist_query(&hash, &request.query).await
    {
        // The answer does not depend on it: the client sends the document again.
        tracing::warn!(error = %err, "could not keep a persisted query");
    }
    let loaders = Loaders::new(app.service.clone(), caller.clone());
    let request = request.data(caller).data(loaders);
    let mut answers = app.gate.run(&app.schema, request, admitted);
    let mut response = answers.next().await.unwrap_or_default();
    graphql::add_codes(&mut response.errors);
    let code = response.errors.first().map(|e| {
        let code = e.extensions.as_ref().and_then(|x| x.get("code"));
        match code {
            Some(async_graphql::Value::String(code)) => crate::metrics::known_code(code),
            _ => "INTERNAL",
        }
    });
    let metrics = app.service.metrics();
    match code {
        None => metrics.operation("ok", ""),
        Some(code) => metrics.operation("error", code),
    }
    response
}

/// The HTTP status of an error answered before execution.
fn status_of(err: &AppError) -> StatusCode {
    match err {
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        AppError::QueryTooComplex { message, .. } if message.contains("bytes long") => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of a `Bearer <token>` value.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn rejected(media: Media, rejection: GraphQLRejection) -> Response {
    let err = AppError::validation(format!(
        "The request is not a GraphQL request: {}.",
        rejection.0
    ));
    error_response(media, StatusCode::BAD_REQUEST, &err)
}

/// A GraphQL-shaped error body, for requests that never reached execution.
fn error_response(media: Media, status: StatusCode, err: &AppError) -> Response {
    if let AppError::Internal(cause) = err {
        tracing::error!(%cause, "internal error answered to a client");
    }
    let mut response = json(
        media,
        status,
        &GqlResponse::from_errors(vec![err.clone().into_server_error()]),
    );
    if let AppError::RateLimited {
        retry_after_seconds,
        ..
    } = err
    {
        let value = HeaderValue::from(*retry_after_seconds);
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A GraphQL answer. It may hold a secret (`createToken`) or a tenant's data: no cache
/// may keep it, and no browser may read it as anything but JSON.
///
/// In `application/graphql-response+json`, a request that was not run (it did not
/// parse, was not valid, its variables did not fit, or it was refused before it ran:
/// no data, and no error with a path) has no `data` and a 4xx status; in
/// `application/json` it is 200 unless the transport itself failed, as clients of that
/// type expect.
fn json(media: Media, status: StatusCode, response: &GqlResponse) -> Response {
    let not_run = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let (status, body, content_type) = match media {
        Media::GraphQLResponse if not_run => {
            let status = if status.is_success() {
                StatusCode::BAD_REQUEST
            } else {
                status
            };
            let mut body = serde_json::json!({ "errors": response.errors });
            if !response.extensions.is_empty() {
                body["extensions"] = serde_json::json!(response.extensions);
            }
            (status, serde_json::to_vec(&body), GRAPHQL_RESPONSE)
        }
        Media::GraphQLResponse => (status, serde_json::to_vec(response), GRAPHQL_RESPONSE),
        Media::Json => (status, serde_json::to_vec(response), "application/json"),
    };
    let body = body.expect("a GraphQL response serialises");
    let mut out = (status, body).into_response();
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out
}
