//! A TCP forwarder the tests can cut and restore, to make a real PostgreSQL or Redis "go
//! away" for one server without stopping the service other tests share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    enabled: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    /// Forwards a random local port to `upstream` (host:port).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let enabled = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (enabled2, cut2, stop2) = (enabled.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else { continue };
                // Under the same lock as `cut`: a connection is either refused or carries
                // the token a later cut cancels, never a fresh one that outlives the cut.
                let token = {
                    let token = cut2.lock().unwrap();
                    if !enabled2.load(Ordering::SeqCst) {
                        continue; // dropped: connection reset
                    }
                    token.clone()
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Self { addr, enabled, cut, stop }
    }

    /// Kills every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        let mut token = self.cut.lock().unwrap();
        self.enabled.store(false, Ordering::SeqCst);
        token.cancel();
        *token = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

/// `url` with its host:port replaced by the proxy's, and the upstream host:port.
pub fn through(url: &str, proxy_addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (userinfo, _) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
    let at = if userinfo.is_empty() { "" } else { "@" };
    let slash = if path.is_empty() && !rest.contains('/') { "" } else { "/" };
    format!("{scheme}://{userinfo}{at}{proxy_addr}{slash}{path}")
}

/// The host:port of a URL.
pub fn upstream(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let default_port = if scheme.starts_with("redis") { 6379 } else { 5432 };
    let authority = rest.split('/').next().unwrap();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split('?').next().unwrap();
    if host.contains(':') { host.to_owned() } else { format!("{host}:{default_port}") }
}
