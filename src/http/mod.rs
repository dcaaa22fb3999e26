//! The HTTP surface: one file per resource, each exporting `router()`, assembled here with
//! the layers every request shares (tracing without query strings, request ids, body
//! limit, panic guard, JSON 404 and 405).

mod chat;
pub mod cors;
mod extract;
mod health;
mod meetup;
mod meta;
pub mod openapi;
mod participants;
mod sessions;
mod sync;
mod tokens;
mod tracker;
pub mod web;

pub use extract::{ApiJson, ApiPath, ClientIp};

use std::any::Any;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::middleware::{self, Next};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest REST request body accepted: a batch of positions (`POST .../locations`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Bodies of a few fields: creating and joining a session, a room lookup, a refresh.
const SMALL_BODY_BYTES: usize = 4 * 1024;
/// A chat message: its content (at most MAX_CHAT_MESSAGE_BYTES, escaped) and little else.
const CHAT_BODY_BYTES: usize = 32 * 1024;

/// A route's own body limit, below MAX_BODY_BYTES.
fn body_limit(bytes: usize) -> DefaultBodyLimit {
    DefaultBodyLimit::max(bytes)
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface: REST, health, the page, and `sockets` (the WebSocket routes,
/// handed in by the shell so that this edge does not import the other), under the layers
/// every request shares.
pub fn router(state: AppState, sockets: Router<AppState>) -> Router {
    let trust_proxy_headers = state.config.trust_proxy_headers;
    let request_timeout = Duration::from_secs(state.config.http_request_timeout_seconds);
    let api = Router::new()
        .merge(sessions::router())
        .merge(participants::router())
        .merge(chat::router())
        .merge(sync::router())
        .merge(tokens::router())
        .merge(meetup::router());
    let cors = cors::layer(&state.config);
    let admin = state.config.admin_listen.is_none().then(admin_routes);
    let router = Router::new()
        .nest("/api", api)
        .merge(health::router())
        .merge(meta::router())
        .merge(tracker::router())
        .merge(admin.unwrap_or_default())
        .merge(openapi::router())
        .merge(sockets)
        .merge(web::router())
        // Only matched routes: the route label stays bounded whatever paths clients try.
        .route_layer(middleware::from_fn(move |request, next| time_limit(request, next, request_timeout)))
        .route_layer(middleware::from_fn(record_request))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panic_response))
        // The span records the path only (query strings can carry tokens), and a tracker
        // URL's path without its token (the token is the credential).
        .layer(TraceLayer::new_for_http().make_span_with(move |request: &Request<_>| {
            let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            let client = extract::client_ip(request.headers(), request.extensions(), trust_proxy_headers);
            let path = tracker::loggable_path(request.uri().path());
            tracing::info_span!("request", method = %request.method(), path = %path, request_id, %client)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    // Outermost: preflights are answered here, and errors carry the headers too.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// What operators read: `/metrics` and `/health/detailed`.
fn admin_routes() -> Router<AppState> {
    health::admin_router().merge(meta::admin_router())
}

/// The router of ADMIN_LISTEN, when it is set: the operator's routes and nothing else.
pub fn admin_router(state: AppState) -> Router {
    admin_routes()
        .route_layer(middleware::from_fn(record_request))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Answers 408 when a request (its body included) takes longer than HTTP_REQUEST_TIMEOUT_SECONDS.
/// A socket's upgrade answers at once; what follows on the socket is not a request.
async fn time_limit(request: Request<Body>, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Counts requests by method, route template and status, and times them.
async fn record_request(request: Request<Body>, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::histogram!("convoy_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed());
    ::metrics::counter!("convoy_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error").into_response()
}
