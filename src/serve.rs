//! The accept loop: HTTP/1.1 served by hyper with a header read timeout, so a client that
//! opens a connection and says nothing, or dribbles its headers a byte at a time, is
//! closed after HTTP_HEADER_TIMEOUT_SECONDS (idle keep-alive connections too); and a cap on
//! connections not yet upgraded to a socket, overall (MAX_HTTP_CONNECTIONS) and per TCP
//! peer address (MAX_HTTP_CONNECTIONS_PER_IP), so slow clients cannot exhaust the process's
//! file descriptors. An upgraded socket leaves this count; `admission` caps sockets.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::admission::Counts;
use crate::limits::client_key;

/// The most a connection's read buffer grows to (request headers must fit).
const MAX_BUFFER_BYTES: usize = 64 * 1024;

/// What a refused connection reads before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\nretry-after: 5\r\ncontent-length: 87\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections; retry later\"}}";

#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub max_pending: usize,
    pub max_pending_per_ip: u32,
    /// Behind a proxy every connection comes from the proxy: no per-address cap here.
    pub per_ip: bool,
}

/// Serves `router` until `shutdown` resolves, then lets the open requests finish (idle
/// connections close at once) and returns. `tap` sets socket options on each connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tap: impl Fn(&TcpStream),
    shutdown: impl Future<Output = ()>,
) {
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    let per_ip = Arc::new(Counts::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // What one connection may make the server buffer (hyper's default is ~400 KiB):
        // headers past it are refused with 431.
        .max_buf_size(MAX_BUFFER_BYTES);
    let builder = Arc::new(builder);
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection that went away before it was accepted: nothing to do.
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    // Out of file descriptors (or the like): new connections wait in the
                    // backlog until some close, instead of the loop spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let key = client_key(peer.ip());
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            refuse(stream, "total");
            continue;
        };
        let address = if limits.per_ip {
            if !per_ip.try_add(key, limits.max_pending_per_ip) {
                refuse(stream, "per_ip");
                continue;
            }
            Some(AddressHold { counts: per_ip.clone(), key })
        } else {
            None
        };
        tap(&stream);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let held = (permit, address);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                if err.is_timeout() {
                    counter!("convoy_http_header_timeouts_total").increment(1);
                }
                tracing::debug!(error = %err, "connection ended with an error");
            }
            // The places go back before the socket closes (when `connection` drops), so a
            // client that saw the close can connect again at once.
            drop(held);
        });
    }
    // Refuse new connections at once (a load balancer moves on) while the open ones finish.
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
}

/// Errors of one connection, not of the listener (as axum's own loop tells them apart).
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(err.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// A connection's place among its address's connections.
struct AddressHold {
    counts: Arc<Counts<IpAddr>>,
    key: IpAddr,
}

impl Drop for AddressHold {
    fn drop(&mut self) {
        self.counts.remove(self.key);
    }
}

/// Tells a connection over a cap why (best effort: never waits on it) and closes it.
fn refuse(stream: TcpStream, reason: &'static str) {
    counter!("convoy_http_connections_refused_total", "reason" => reason).increment(1);
    let _ = stream.try_write(REFUSED);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let text = std::str::from_utf8(super::REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
