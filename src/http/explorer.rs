//! The query explorer at `/graphiql`: GraphiQL, vendored in `web/vendor/` with its
//! licence and version (see its README), built into the binary, so that it works offline
//! and with no build step. It signs in with an API token, as the dashboard does, and
//! talks to `/graphql` like any client: queries and mutations over HTTP, subscriptions
//! over `graphql-transport-ws`.

use axum::Router;
use axum::response::Response;
use axum::routing::get;

use super::Cache::{Forever, Revalidate};
use super::asset;

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
        .route(
            "/graphiql/explorer.js",
            get(|| asset(JS, SCRIPT, Revalidate)),
        )
        .route(
            "/graphiql/explorer.css",
            get(|| asset(CSS, STYLE, Revalidate)),
        )
        .route(
            "/vendor/graphiql-3.9.0/graphiql.min.js",
            get(|| asset(JS, GRAPHIQL_JS, Forever)),
        )
        .route(
            "/vendor/graphiql-3.9.0/graphiql.min.css",
            get(|| asset(CSS, GRAPHIQL_CSS, Forever)),
        )
        .route(
            "/vendor/react-18.3.1/react.production.min.js",
            get(|| asset(JS, REACT, Forever)),
        )
        .route(
            "/vendor/react-18.3.1/react-dom.production.min.js",
            get(|| asset(JS, REACT_DOM, Forever)),
        )
}

async fn page() -> Response {
    super::page(PAGE, CSP)
}
