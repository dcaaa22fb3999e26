//! The edge of the HTTP server: which address rate limits see (TRUST_PROXY_HEADERS) and
//! requests that take too long (HTTP_REQUEST_TIMEOUT_SECONDS).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::helpers::*;

/// Creates sessions claiming to come from `forwarded` until refused; returns how many passed.
async fn sessions_until_refused(app: &TestApp, forwarded: &str) -> usize {
    for created in 0..100 {
        if create_from(app, forwarded).await == 429 {
            return created;
        }
    }
    panic!("never rate limited");
}

async fn create_from(app: &TestApp, forwarded: &str) -> u16 {
    app.client
        .post(app.url("/api/sessions"))
        .header("X-Forwarded-For", forwarded)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let direct = spawn_app_on(Backend::Embedded, |c| c.rate_limit_sessions_per_minute = 3).await;
    let passed = sessions_until_refused(&direct, "203.0.113.1").await;
    assert!(passed >= 3, "{passed}");
    // Claiming another address changes nothing: the limit is the TCP peer's.
    assert_eq!(create_from(&direct, "203.0.113.2").await, 429);

    let proxied = spawn_app_on(Backend::Embedded, |c| {
        c.rate_limit_sessions_per_minute = 3;
        c.trust_proxy_headers = true;
    })
    .await;
    sessions_until_refused(&proxied, "203.0.113.1").await;
    // Another client behind the same proxy has its own allowance...
    assert_eq!(create_from(&proxied, "203.0.113.2").await, 201);
    // ... and the address used is the one the proxy appended, not what the client wrote.
    assert_eq!(create_from(&proxied, "198.51.100.7, 203.0.113.1").await, 429);
    assert_eq!(create_from(&proxied, "203.0.113.1, 198.51.100.7").await, 201);
    // An unreadable last entry means the proxy's own address, never an earlier entry.
    sessions_until_refused(&proxied, "198.51.100.9, unknown").await;
    assert_eq!(create_from(&proxied, "192.0.2.44, garbage").await, 429);
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_408() {
    let app = spawn_app_on(Backend::Embedded, |c| c.http_request_timeout_seconds = 1).await;
    // A body announced and never sent.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/sessions HTTP/1.1\r\nHost: convoy\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            answer.extend_from_slice(&buffer[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer: {}", String::from_utf8_lossy(&answer));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    // Quick requests are unaffected.
    assert_eq!(app.get("/health").await.status(), 200);
}

/// A TCP connection from `source`, any 127/8 address: another client, on loopback.
async fn connect_from(app: &TestApp, source: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .expect("the server closes the connection");
    received
}

/// A slow-loris client: a request head sent one byte every 100 ms, for as long as the
/// server keeps the connection. Resolves when the server closes it.
fn dribble(stream: tokio::net::TcpStream) -> tokio::task::JoinHandle<Vec<u8>> {
    let (mut read, mut write) = stream.into_split();
    tokio::spawn(async move {
        let writer = tokio::spawn(async move {
            let head = b"GET /health HTTP/1.1\r\nHost: convoy\r\nX-Slow: ";
            let _ = write.write_all(head).await;
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                if write.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
        let received = read_until_closed(&mut read).await;
        writer.abort();
        received
    })
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_do_not_lock_others_out() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.http_header_timeout_seconds = 1;
        c.max_http_connections_per_ip = 4;
    })
    .await;
    let mut dribblers = Vec::new();
    for _ in 0..4 {
        dribblers.push(dribble(connect_from(&app, "127.0.0.1").await));
    }
    // The address's fifth connection is refused at once, with a JSON answer.
    let mut fifth = connect_from(&app, "127.0.0.1").await;
    let refused = String::from_utf8(read_until_closed(&mut fifth).await).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains(r#""code":"too_many_connections""#), "{refused}");

    // Another client is served meanwhile.
    let other = reqwest::Client::builder().local_address("127.0.0.2".parse().ok()).build().unwrap();
    let response = other.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // However slowly they keep sending, the dribblers are closed by the header timeout,
    // without a response.
    for dribbler in dribblers {
        let received = dribbler.await.unwrap();
        assert!(!String::from_utf8_lossy(&received).contains(" 200 "), "never served");
    }
    // Their places are free again.
    assert_eq!(app.get("/health").await.status(), 200);
    let text = app.get("/metrics").await.text().await.unwrap();
    let timeouts = metric_sample(&text, "convoy_http_header_timeouts_total");
    assert!(timeouts.is_some_and(|n| n >= 4.0), "{timeouts:?}");
    let refusals = metric_sample(&text, r#"convoy_http_connections_refused_total{reason="per_ip"}"#);
    assert!(refusals.is_some_and(|n| n >= 1.0), "{refusals:?}");
}

#[tokio::test]
async fn silent_connections_are_closed_and_capped_overall() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.http_header_timeout_seconds = 1;
        c.max_http_connections = 2;
    })
    .await;
    // Two connections that never say a word fill the instance's pre-upgrade places...
    let mut silent = [connect_from(&app, "127.0.0.2").await, connect_from(&app, "127.0.0.3").await];
    let mut third = connect_from(&app, "127.0.0.4").await;
    let refused = String::from_utf8(read_until_closed(&mut third).await).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    // ... and are closed after the header timeout.
    for stream in &mut silent {
        assert!(read_until_closed(stream).await.is_empty());
    }
    assert_eq!(app.get("/health").await.status(), 200);
}
