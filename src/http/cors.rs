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

/// The CORS layer for the configured origins; none when no origin is listed (then the
/// server adds no CORS headers and leaves OPTIONS to the router: 405).
pub fn layer(config: &Config) -> Option<CorsLayer> {
    let allow_origin = match config.cors_origins() {
        Ok(CorsOrigins::Any) => AllowOrigin::any(),
        Ok(CorsOrigins::List(origins)) if !origins.is_empty() => {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
        _ => return None, // none listed, or refused at start-up (Config::validate)
    };
    let layer = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([CONTENT_TYPE, AUTHORIZATION])
        .expose_headers([RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(PREFLIGHT_MAX_AGE);
    Some(layer)
}

/// `scheme://host[:port]` of a URL (what browsers send as `Origin`).
fn origin_of(url: &str) -> &str {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url };
    url[scheme_end..].find('/').map_or(url, |i| &url[..scheme_end + i])
}

/// When CORS_ALLOWED_ORIGINS is set, refuses a WebSocket handshake from another site's page
/// it does not list. Same-origin pages (convoy's own web page) and clients without `Origin`
/// pass.
pub fn check_socket_origin(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
    if config.cors_origins().is_ok_and(|o| o == CorsOrigins::List(Vec::new())) {
        return Ok(()); // no list set: sockets are not checked
    }
    let origin = origin.to_str().unwrap_or("(unreadable)").to_ascii_lowercase();
    // This server's own origin: PUBLIC_URL's when set (a proxy may rewrite Host), else the
    // Host the handshake was sent to.
    let same_origin = match config.public_url.as_deref() {
        Some(url) => origin_of(url).eq_ignore_ascii_case(&origin),
        None => headers.get(HOST).and_then(|h| h.to_str().ok()).is_some_and(|host| {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))
                == Some(host.to_ascii_lowercase().as_str())
        }),
    };
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
