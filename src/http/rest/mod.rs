//! CloudCIX's REST API for snapshots, as CloudCIX's own source defines it
//! (`shared/reference/cloudcix-rest.md`): its routes with their trailing slashes, the
//! `X-Auth-Token` header, its envelopes, error codes and encodings. It runs on the same
//! service as GraphQL, so every rule is the service's and the domain's; this module
//! reads CloudCIX's requests, writes its wire format ([`wire`]) and says refusals in its
//! codes ([`codes`]).
//!
//! The routes are at the root, where CloudCIX's client puts them for the `iaas` service
//! (`https://iaas.<api host>/snapshot/`).
//!
//! Every request goes through [`admit`] first: its token is checked from its headers
//! (an unauthenticated request costs no more than that), then its body is read, bounded
//! and within its deadline, and the handler runs within the request deadline.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use super::body::Refusal;
use crate::error::AppError;
use crate::service::{Caller, Service};

mod codes;
mod list;
mod params;
mod snapshot;
mod wire;

/// The routes, each with its methods; any other method is 405 once authenticated.
pub fn routes(service: Service) -> Router {
    Router::new()
        .route(
            "/snapshot/",
            get(list::snapshots).post(snapshot::create).fallback(
                |caller: RestCaller, method: Method| not_allowed(caller, method, "GET, POST, HEAD"),
            ),
        )
        .route(
            "/snapshot/{pk}/",
            get(snapshot::read)
                .put(snapshot::update)
                .patch(snapshot::update)
                .fallback(|caller: RestCaller, method: Method| {
                    not_allowed(caller, method, "GET, PUT, PATCH, HEAD")
                }),
        )
        .route(
            "/snapshot_tree/{vm_id}/",
            get(snapshot::tree).fallback(|caller: RestCaller, method: Method| {
                not_allowed(caller, method, "GET, HEAD")
            }),
        )
        .route(
            "/snapshot_history/",
            get(list::history).fallback(|caller: RestCaller, method: Method| {
                not_allowed(caller, method, "GET, HEAD")
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(service.clone(), admit))
        // Django's APPEND_SLASH: the same path with its slash, moved permanently (before
        // any authentication, as Django does).
        .route("/snapshot", any(append_slash))
        .route("/snapshot/{pk}", any(append_slash))
        .route("/snapshot_tree/{vm_id}", any(append_slash))
        .route("/snapshot_history", any(append_slash))
        .with_state(service)
}

/// Authenticates a request from its headers (`X-Auth-Token: <token>`, CloudCIX's, or
/// `Authorization: Bearer <token>`) within its token's budget of requests; then reads
/// its body, bounded and within its deadline; then runs it within the request deadline.
///
/// Every body is read, GET's and HEAD's too: CloudCIX's client sends one (`null`) with
/// each, and a body left unread ends the connection after the answer, so that the
/// client's next request on its kept-alive connection fails.
async fn admit(
    axum::extract::State(service): axum::extract::State<Service>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match authenticate(&service, &parts).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let body = match super::body::read(body).await {
        Ok(body) => body,
        Err(Refusal::TooLarge) => {
            return wire::detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            );
        }
        Err(Refusal::Late(limit)) => {
            let detail = format!(
                "The request body was not received within {} s.",
                limit.as_secs()
            );
            return wire::detail(StatusCode::REQUEST_TIMEOUT, &detail);
        }
        Err(Refusal::Broken(why)) => {
            let detail = format!("The request body could not be read: {why}.");
            return wire::detail(StatusCode::BAD_REQUEST, &detail);
        }
    };
    parts.extensions.insert(caller);
    let request = axum::extract::Request::from_parts(parts, Body::from(body));
    let limit = service.limits().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => wire::detail(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "The request did not finish within {} s; try again.",
                limit.as_secs()
            ),
        ),
    }
}

/// The caller of a REST request, from its headers; a refusal in CloudCIX's words
/// otherwise.
async fn authenticate(service: &Service, parts: &Parts) -> Result<Caller, Response> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let token = header(header::HeaderName::from_static("x-auth-token"))
        .map(str::trim)
        .or_else(|| header(header::AUTHORIZATION).and_then(super::bearer_token));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(wire::unauthorized(
            "Authentication credentials were not provided.",
        ));
    };
    let caller = match service.authenticate(token, super::peer(parts)).await {
        Ok(caller) => caller,
        Err(AppError::Unauthenticated(_)) => {
            return Err(wire::unauthorized("Incorrect authentication credentials."));
        }
        Err(err) => return Err(codes::general(err)),
    };
    service
        .throttle()
        .request(&caller)
        .map_err(codes::general)?;
    Ok(caller)
}

/// The caller of a REST request, as [`admit`] found it.
pub struct RestCaller(pub Caller);

impl FromRequestParts<Service> for RestCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &Service) -> Result<Self, Response> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(Self(caller.clone())),
            None => Err(codes::general(AppError::internal(
                "a REST route is served without authentication",
            ))),
        }
    }
}

/// 405, as Django REST framework says it, after authentication (an unauthenticated
/// request is 401 whatever its method).
async fn not_allowed(_caller: RestCaller, method: Method, allow: &'static str) -> Response {
    let mut response = wire::detail(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method \"{method}\" not allowed."),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn append_slash(OriginalUri(uri): OriginalUri) -> Response {
    let mut target = format!("{}/", uri.path());
    if let Some(query) = uri.query() {
        target.push('?');
        target.push_str(query);
    }
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, target)]).into_response()
}

/// A path id, if it is one: in CloudCIX a path id that is not an integer matches no
/// route, answered with [`no_route`].
fn path_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id >= 0)
}

/// Django's plain 404 for a path that matches no route.
fn no_route() -> Response {
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}
