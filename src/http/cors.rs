//! Cross-origin access (CORS_ALLOWED_ORIGINS): the preflight and response headers for the
//! REST API (tower-http's CorsLayer), and the same rule for the WebSocket handshakes,
//! which browsers do not preflight: an `Origin` that is neither listed nor this server's own
//! is refused before the upgrade. Clients that send no `Origin` (apps, servers) are not
//! browsers and are not affected.

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, CorsOrigins};
use crate::error::ApiError;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for the configured origins (none listed: no CORS headers at all).
pub fn layer(config: &Config) -> CorsLayer {
    let allow_origin = match config.cors_origins() {
        Ok(CorsOrigins::Any) => AllowOrigin::any(),
        Ok(CorsOrigins::List(origins)) => {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
        Err(_) => AllowOrigin::list([]), // refused at start-up (Config::validate)
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([CONTENT_TYPE, AUTHORIZATION])
        .expose_headers([RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// When CORS_ALLOWED_ORIGINS is set, refuses a WebSocket handshake from another site's page
/// it does not list. Same-origin pages (convoy's own web page) and clients without `Origin`
/// pass.
pub fn check_socket_origin(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else { return Ok(()) };
    if config.cors_origins().is_ok_and(|o| o == CorsOrigins::List(Vec::new())) {
        return Ok(()); // no list set: sockets are not checked
    }
    let origin = origin.to_ascii_lowercase();
    let own =
        |host: &str| origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host);
    let same_origin =
        headers.get(HOST).and_then(|h| h.to_str().ok()).is_some_and(|h| own(&h.to_ascii_lowercase()))
            || config
                .public_url
                .as_deref()
                .is_some_and(|url| url.trim_end_matches('/').eq_ignore_ascii_case(&origin));
    let allowed = match config.cors_origins() {
        Ok(CorsOrigins::Any) => true,
        Ok(CorsOrigins::List(origins)) => origins.contains(&origin),
        Err(_) => false,
    };
    if same_origin || allowed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        format!("origin {origin:?} may not open sockets here (CORS_ALLOWED_ORIGINS)"),
    ))
}
