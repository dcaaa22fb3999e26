//! The WebSocket handshake (RFC 6455, 4.2): checks the request, answers 101 and hands the
//! upgraded TCP stream to a lean `WebSocket`. axum's own upgrade would wrap the stream in
//! tungstenite, whose per-socket buffers are what this replaces.

use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::socket::WebSocket;
use crate::error::ApiError;

/// The largest client message unless a route sets its own (WS_MAX_MESSAGE_BYTES's default).
const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// A request to open a socket, checked; `accept` accepts it.
pub struct WebSocketUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    protocol: Option<HeaderValue>,
    max_message: usize,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let refuse =
            |message: &str| ApiError::new(StatusCode::UPGRADE_REQUIRED, "websocket_required", message);
        if parts.method != Method::GET {
            return Err(refuse("a socket is opened with GET"));
        }
        if !has_token(&parts.headers, &CONNECTION, "upgrade") {
            return Err(refuse("Connection header did not include 'upgrade'"));
        }
        if !has_token(&parts.headers, &UPGRADE, "websocket") {
            return Err(refuse("`Upgrade` header did not include 'websocket'"));
        }
        if parts.headers.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            return Err(refuse("`Sec-WebSocket-Version` header did not include '13'"));
        }
        let key = parts
            .headers
            .get(SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| refuse("`Sec-WebSocket-Key` header missing"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| refuse("this connection cannot be upgraded"))?;
        Ok(WebSocketUpgrade { key, on_upgrade, protocol: None, max_message: DEFAULT_MAX_MESSAGE })
    }
}

/// Whether the comma-separated header `name` holds `token` (in any case).
fn has_token(headers: &HeaderMap, name: &axum::http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl WebSocketUpgrade {
    /// The subprotocol to accept (echoed in the handshake).
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.protocol = HeaderValue::from_str(protocol).ok();
        self
    }

    /// The largest message (and frame) a client may send; larger ones close the socket
    /// with 1009.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Accepts: the 101 Switching Protocols response, and the socket to come once it is
    /// sent.
    pub fn accept(self) -> (Response, Upgrading) {
        let WebSocketUpgrade { key, on_upgrade, protocol, max_message } = self;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_ACCEPT, accept);
        if let Some(protocol) = protocol {
            response = response.header(SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        let response = response.body(axum::body::Body::empty()).expect("a valid handshake response");
        (response, Upgrading { on_upgrade, max_message })
    }
}

/// An accepted upgrade, until the connection is handed over.
pub struct Upgrading {
    on_upgrade: OnUpgrade,
    max_message: usize,
}

impl Upgrading {
    /// The socket, once the HTTP layer handed the connection over (None if it went away).
    pub async fn socket(self) -> Option<WebSocket> {
        let upgraded = match self.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "the upgrade failed");
                return None;
            }
        };
        let socket = socket_of(upgraded, self.max_message);
        if socket.is_none() {
            tracing::error!("an upgraded connection that is not a TCP stream");
        }
        socket
    }
}

/// The socket over an upgraded connection: convoy's own accept loop (serve.rs) serves
/// every connection over a TcpStream. What HTTP read past the handshake is copied, and
/// the buffer it was read into goes.
fn socket_of(upgraded: hyper::upgrade::Upgraded, max_message: usize) -> Option<WebSocket> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some(WebSocket::new(parts.io.into_inner(), &parts.read_buf, max_message))
}
