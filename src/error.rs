//! `ApiError`: what a REST client sees when something goes wrong. A status, a stable
//! machine-readable code and a message safe to show. Internal details are logged here,
//! inside the request span, and never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::ValidationError;
use crate::store::StoreError;

/// Every error's JSON body, for the OpenAPI description (`ApiError` writes it).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable and machine-readable (README, "REST API").
    code: String,
    /// Safe to show; names the field or parameter at fault.
    message: String,
}

/// Any JSON object (bodies built on the fly: health, info).
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct AnyJson(serde_json::Value);

/// The errors every REST operation may answer, each with an `ErrorBody`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ApiErrors {
    #[response(status = 400, description = "malformed JSON, a bad id in the path or a bad query")]
    BadRequest(ErrorBody),
    #[response(
        status = 401,
        description = "missing, invalid or expired token; a participant who left (token_revoked); a token replaced by a refresh (token_superseded)"
    )]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "a token that may not do this")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "unknown session, participant or route")]
    NotFound(ErrorBody),
    #[response(status = 405, description = "a method this route does not have")]
    MethodNotAllowed(ErrorBody),
    #[response(status = 408, description = "the request took too long")]
    Timeout(ErrorBody),
    #[response(status = 409, description = "the session is full")]
    Conflict(ErrorBody),
    #[response(status = 410, description = "the session ended or expired")]
    Gone(ErrorBody),
    #[response(
        status = 413,
        description = "a body over 64 KiB; a message over its kind's size limit (message_too_large)"
    )]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "a body that is not application/json")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 422, description = "a field breaks a rule; the message names it")]
    Invalid(ErrorBody),
    #[response(
        status = 429,
        description = "rate limited, or a socket cap reached (too_many_connections); see Retry-After"
    )]
    RateLimited(ErrorBody),
    #[response(status = 503, description = "the database does not answer, or the server is draining")]
    Unavailable(ErrorBody),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn session_ended() -> Self {
        Self::new(StatusCode::GONE, "session_ended", "the session has ended or expired")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 429 with `Retry-After`, rounded up to whole seconds.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {seconds} s"),
        );
        error.retry_after = Some(seconds.max(1));
        error
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, code = self.code, "{}", self.message);
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.status == StatusCode::UPGRADE_REQUIRED {
            // The WebSocket version convoy speaks (RFC 6455, 4.4).
            let version = axum::http::HeaderValue::from_static("13");
            response.headers_mut().insert(axum::http::header::SEC_WEBSOCKET_VERSION, version);
        }
        response
    }
}

impl From<crate::limits::Refused> for ApiError {
    fn from(refused: crate::limits::Refused) -> Self {
        match refused {
            crate::limits::Refused::OverBudget(wait) => Self::rate_limited(wait),
            too_large => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "message_too_large", too_large.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                Self::unavailable("the database is unavailable, try again shortly")
            }
            StoreError::Other(detail) => {
                tracing::error!(%detail, "database error");
                Self::internal()
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_input",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ => "invalid_body",
        };
        Self::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    /// A raw body that could not be read: over the body limit (413) or cut short.
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        Self::new(rejection.status(), "invalid_body", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // Only ids appear in paths, so a bad segment means "no such thing".
        let status = match rejection.status() {
            StatusCode::INTERNAL_SERVER_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_id", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}
