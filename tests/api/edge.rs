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
