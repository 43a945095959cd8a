//! The query explorer at `/graphiql`: GraphiQL, vendored in `web/vendor/` with its
//! licence and version (see its README), built into the binary, so that it works offline
//! and with no build step. It signs in with an API token, as the dashboard does, and
//! talks to `/graphql` like any client: queries and mutations over HTTP, subscriptions
//! over `graphql-transport-ws`.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../../web/explorer.html");
const SCRIPT: &str = include_str!("../../web/explorer.js");
const STYLE: &str = include_str!("../../web/explorer.css");
const GRAPHIQL_JS: &str = include_str!("../../web/vendor/graphiql-3.9.0/graphiql.min.js");
const GRAPHIQL_CSS: &str = include_str!("../../web/vendor/graphiql-3.9.0/graphiql.min.css");
const REACT: &str = include_str!("../../web/vendor/react-18.3.1/react.production.min.js");
const REACT_DOM: &str = include_str!("../../web/vendor/react-18.3.1/react-dom.production.min.js");

/// The page loads and connects to this server only; GraphiQL's fonts are `data:` URIs,
/// and its editor (CodeMirror 5) sets inline styles as it lays text out. Scripts stay
/// this server's files only: what the API answers is shown as text, never as markup.
const CSP: &str = "default-src 'self'; script-src 'self'; connect-src 'self'; \
     img-src 'self' data:; font-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/graphiql", get(page))
        .route("/graphiql/explorer.js", get(|| asset(JS, SCRIPT, false)))
        .route("/graphiql/explorer.css", get(|| asset(CSS, STYLE, false)))
        .route(
            "/vendor/graphiql-3.9.0/graphiql.min.js",
            get(|| asset(JS, GRAPHIQL_JS, true)),
        )
        .route(
            "/vendor/graphiql-3.9.0/graphiql.min.css",
            get(|| asset(CSS, GRAPHIQL_CSS, true)),
        )
        .route(
            "/vendor/react-18.3.1/react.production.min.js",
            get(|| asset(JS, REACT, true)),
        )
        .route(
            "/vendor/react-18.3.1/react-dom.production.min.js",
            get(|| asset(JS, REACT_DOM, true)),
        )
}

async fn page() -> Response {
    let mut page = Html(PAGE).into_response();
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    page
}

/// A file; a vendored one (its path names its version) is cached for good.
async fn asset(content_type: &'static str, body: &'static str, versioned: bool) -> Response {
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
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
