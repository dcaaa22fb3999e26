//! Socket caps: one address or one participant cannot take the instance's sockets.
//! Refusals are a 429 with a JSON body before the upgrade, or 1013 after an `auth` message.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::helpers::*;

/// A handshake's refusal: status and JSON error code (101 and "" when accepted).
async fn refusal(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> (u16, String) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                .expect("a JSON error body");
            assert!(body["error"]["message"].is_string(), "{body}");
            if status == 429 {
                assert!(response.headers().contains_key("retry-after"), "429 says when to retry");
            }
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
        Err(other) => panic!("unexpected handshake error {other}"),
    }
}

fn from(url: &str, forwarded_for: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("x-forwarded-for", HeaderValue::from_str(forwarded_for).unwrap());
    request
}

/// Waits until the server has released a closed socket's place (a handshake is accepted
/// again), bounded by WAIT.
async fn until_accepted(url: &str) -> WsClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((stream, _)) = tokio_tungstenite::connect_async(url).await {
            return WsClient::new(stream);
        }
        assert!(tokio::time::Instant::now() < deadline, "the place was never released");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_sockets() {
    let app = spawn_app_on(Backend::Embedded, |c| c.max_connections_per_ip = 3).await;
    let session = app.create_session(json!({})).await;
    let mut people = Vec::new();
    for name in ["Ann", "Bob", "Cat", "Dan"] {
        people.push(app.join(&session.session_id, name).await);
    }
    let (ann_ws, _) = app.connect(&people[0].token).await;
    let (_bob_ws, _) = app.connect(&people[1].token).await;
    // A socket still waiting for its `auth` message counts against its address too.
    let (_anonymous, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await.unwrap();

    for url in [
        app.ws_url(&people[2].token),
        format!("ws://{}/ws", app.addr),
        format!("ws://{}/socket/websocket?token={}&vsn=2.0.0", app.addr, people[3].token),
    ] {
        let request = url.as_str().into_client_request().unwrap();
        assert_eq!(refusal(request).await, (429, "too_many_connections".into()), "{url}");
    }
    // REST is not affected, and a closed socket gives its place back.
    assert_eq!(app.get(&format!("/api/sessions/{}", session.session_id)).await.status(), 200);
    drop(ann_ws);
    let mut cat_ws = until_accepted(&app.ws_url(&people[2].token)).await;
    assert_eq!(cat_ws.next_json().await["type"], "session_state");

    let text = app.get("/metrics").await.text().await.unwrap();
    let refused = metric_sample(&text, r#"convoy_ws_connections_refused_total{reason="per_ip"}"#);
    assert!(refused.is_some_and(|n| n >= 3.0), "refusals are counted: {refused:?}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.max_connections_per_ip = 2;
        c.trust_proxy_headers = true;
    })
    .await;
    let session = app.create_session(json!({})).await;
    let mut people = Vec::new();
    for name in ["Ann", "Bob", "Cat", "Dan"] {
        people.push(app.join(&session.session_id, name).await);
    }
    let mut open = Vec::new();
    for person in &people[..2] {
        let (stream, _) =
            tokio_tungstenite::connect_async(from(&app.ws_url(&person.token), "203.0.113.7")).await.unwrap();
        open.push(stream);
    }
    let third = from(&app.ws_url(&people[2].token), "203.0.113.7");
    assert_eq!(refusal(third).await, (429, "too_many_connections".into()));
    // Another client behind the same proxy (same TCP peer) is not affected, and a client
    // cannot escape its cap by prepending addresses of its own.
    assert_eq!(refusal(from(&app.ws_url(&people[2].token), "203.0.113.8")).await.0, 101);
    let spoofed = from(&app.ws_url(&people[3].token), "198.51.100.1, 203.0.113.7");
    assert_eq!(refusal(spoofed).await, (429, "too_many_connections".into()));
}

#[tokio::test]
async fn one_participant_holds_at_most_its_share_of_sockets() {
    let app = spawn_app_on(Backend::Embedded, |c| c.max_connections_per_participant = 2).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (_first, _) = app.connect(&ann.token).await;
    let (_second, _) = app.connect(&ann.token).await;

    let native = app.ws_url(&ann.token);
    let phoenix = format!("ws://{}/socket/websocket?token={}&vsn=2.0.0", app.addr, ann.token);
    for url in [native, phoenix] {
        let request = url.as_str().into_client_request().unwrap();
        assert_eq!(refusal(request).await, (429, "too_many_connections".into()), "{url}");
    }
    // The token as the first message: refused after the upgrade, with 1013 and a reason.
    let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await.unwrap();
    let mut anonymous = WsClient::new(stream);
    anonymous.send_json(json!({ "type": "auth", "data": { "token": ann.token } })).await;
    let frame = anonymous.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1013);
    assert!(frame.reason.contains("maximum of 2 sockets"), "{}", frame.reason);

    // Others in the session are not affected.
    let (_bob_ws, _) = app.connect(&bob.token).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let refused = metric_sample(&text, r#"convoy_ws_connections_refused_total{reason="per_participant"}"#);
    assert!(refused.is_some_and(|n| n >= 3.0), "refusals are counted: {refused:?}");
}
