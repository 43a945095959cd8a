//! Which web pages may use this server from a browser: pages of the server's own origin
//! always, others only when listed (`--cors-origins`, none by default). The list
//! answers CORS preflights (so that the CloudCIX UI on its own origin can send
//! `X-Auth-Token` or `Authorization`) and is checked on a WebSocket's `Origin`, which
//! browsers send but do not hold to CORS: without the check, any page could open a
//! socket to a server its visitor can reach.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins allowed besides the server's own, as `scheme://host[:port]` in lower case.
#[derive(Clone, Debug, Default)]
pub struct Origins(Arc<[String]>);

impl Origins {
    /// Reads `list`; each entry must be an origin (`https://ui.example.com`, a port if
    /// not the scheme's own), with no path, query or wildcard.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut origins = Vec::new();
        for entry in list.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let lower = entry.to_ascii_lowercase();
            let (scheme, rest) = lower
                .split_once("://")
                .filter(|(scheme, _)| matches!(*scheme, "https" | "http"))
                .ok_or_else(|| {
                    format!("{entry:?} is not an origin: it starts with https:// or http://")
                })?;
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            let valid = !authority.is_empty()
                && authority
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
            if !valid {
                return Err(format!(
                    "{entry:?} is not an origin: a scheme and a host (and a port), nothing else"
                ));
            }
            let origin = format!("{scheme}://{authority}");
            origins.push(origin);
        }
        Ok(Self(origins.into()))
    }

    /// True when `origin` is listed.
    fn lists(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.0.contains(&origin)
    }

    /// Whether a WebSocket with these request headers may be opened: no `Origin` (not a
    /// browser), the server's own (the `Origin`'s host and port are the request's
    /// `Host`), or a listed one.
    pub fn allow_socket(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let own = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| {
                let authority = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
            });
        own || self.lists(origin)
    }

    /// The CORS layer for the listed origins; `None` when none is listed (a browser then
    /// lets only the server's own pages read its answers).
    pub fn cors(&self) -> Option<CorsLayer> {
        if self.0.is_empty() {
            return None;
        }
        let origins = self.clone();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                    origin.to_str().is_ok_and(|o| origins.lists(o))
                }))
                .allow_methods([
                    Method::GET,
                    Method::HEAD,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    HeaderName::from_static("x-auth-token"),
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                ])
                .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
                .max_age(Duration::from_secs(600)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn origins_are_read_strictly() {
        let o = Origins::parse(&[
            "https://UI.example.com/".into(),
            "http://127.0.0.1:9000".into(),
        ])
        .unwrap();
        assert!(o.lists("https://ui.example.com"));
        assert!(o.lists("http://127.0.0.1:9000"));
        assert!(!o.lists("http://ui.example.com"));
        for bad in [
            "*",
            "ui.example.com",
            "https://ui.example.com/path",
            "https://",
            "https://a b",
        ] {
            assert!(Origins::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sockets_open_from_the_servers_own_pages_and_listed_ones() {
        let o = Origins::parse(&["https://ui.example.com".into()]).unwrap();
        assert!(o.allow_socket(&headers(None, "127.0.0.1:8080")));
        assert!(o.allow_socket(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")));
        assert!(o.allow_socket(&headers(Some("https://ui.example.com"), "127.0.0.1:8080")));
        assert!(!o.allow_socket(&headers(Some("https://evil.example"), "127.0.0.1:8080")));
        assert!(!o.allow_socket(&headers(Some("null"), "127.0.0.1:8080")));
        assert!(!o.allow_socket(&headers(Some("http://127.0.0.1:8081"), "127.0.0.1:8080")));
        assert!(!Origins::default().allow_socket(&headers(Some("https://ui.example.com"), "x")));
    }
}
