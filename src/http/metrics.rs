//! `/metrics`, in the Prometheus text format. Who may scrape is configured: on the API's
//! own address, the scraper's token (`--metrics-token`) or an ADMIN's, since the fleet's
//! queue is not a tenant's to see; or on an address of its own (`--metrics-listen`, an
//! address only the monitoring network reaches), where the address is the access rule
//! and the token, when one is set, is asked for too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;

use crate::error::AppError;
use crate::service::Service;

/// Who may read `/metrics`, and where.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccess {
    /// A scraper's token, besides ADMIN tokens.
    pub token: Option<String>,
    /// Serve `/metrics` only here (not on the API's address).
    pub listen: Option<SocketAddr>,
}

#[derive(Clone)]
struct Scrape {
    /// Authenticates ADMIN tokens and reads the metrics and the queue.
    service: Service,
    /// The scraper's token (`--metrics-token`), accepted besides ADMIN tokens; `None`: none.
    token: Option<Arc<str>>,
    /// No token needed: the address is the rule (and no token is configured).
    open: bool,
}

/// The `/metrics` route; `own_address` when it is served on `--metrics-listen`.
pub fn routes(service: Service, access: &MetricsAccess, own_address: bool) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Scrape {
            service,
            token: access.token.as_deref().map(Into::into),
            open: own_address && access.token.is_none(),
        })
}

async fn metrics(State(app): State<Scrape>, request: Parts) -> Response {
    if !app.open
        && let Err(refused) = admit(&app, &request.headers, super::peer(&request)).await
    {
        return refused;
    }
    match app.service.scrape().await {
        Ok(text) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.public_message()).into_response(),
    }
}

/// The scraper's token or an ADMIN's; 401 without a valid token, 403 for another role.
async fn admit(app: &Scrape, headers: &HeaderMap, peer: IpAddr) -> Result<(), Response> {
    let Some(token) = super::bearer(headers) else {
        let err = AppError::unauthenticated();
        return Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            err.public_message(),
        )
            .into_response());
    };
    // Compared as digests: equal lengths, and no early exit on the secret's own bytes.
    let digest = |t: &str| sha2::Sha256::digest(t.as_bytes());
    let scraper = app
        .token
        .as_deref()
        .is_some_and(|expected| digest(expected) == digest(token));
    if scraper {
        return Ok(());
    }
    match app.service.authenticate(token, peer).await {
        Ok(caller) if caller.is_admin() => Ok(()),
        Ok(_) => {
            let err = AppError::forbidden("Metrics are for the scraper's token or an ADMIN.");
            Err((StatusCode::FORBIDDEN, err.public_message()).into_response())
        }
        Err(err) => Err((super::status_of(&err), err.public_message()).into_response()),
    }
}
