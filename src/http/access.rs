//! One log line per request (target `snaptree::access`), in a span that every line
//! logged while the request runs carries: its id (also sent back as `x-request-id`, for
//! a user to quote), the method and the path. The query string is never logged (a
//! GraphQL GET carries its variables there), nor any header. The id is the server's
//! own: a client's `x-request-id` is not trusted into the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Longest path logged; the rest is cut (a path is the caller's text).
const MAX_PATH: usize = 200;

/// Ids are this process's random prefix and a counter: unique across processes sharing
/// one log, and cheap.
fn next_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| fastrand::u32(..));
    format!(
        "{prefix:08x}-{:06x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The middleware.
pub async fn log(request: Request, next: Next) -> Response {
    let id = next_id();
    let path = request.uri().path();
    let path = match path.char_indices().nth(MAX_PATH) {
        Some((cut, _)) => &path[..cut],
        None => path,
    };
    let span = tracing::info_span!(
        target: "snaptree::access",
        "request",
        id = %id,
        method = %request.method(),
        path = %path,
    );
    let began = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            target: "snaptree::access",
            status = response.status().as_u16(),
            ms = began.elapsed().as_secs_f64() * 1000.0,
            "answered"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
