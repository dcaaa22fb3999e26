//! Rate limits: socket messages per connection and per user, REST calls per client IP.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::helpers::*;

async fn a_flooding_socket_is_throttled_told_once_and_kept(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.rate_limit_connection_per_second = 2; // bursts of 4
        c.rate_limit_user_per_second = 1000;
    })
    .await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    for i in 0..30 {
        ann_ws.send_location(f64::from(i), 0.0).await;
    }
    let to_ann = ann_ws.until_pong().await; // a ping over the limit is still answered
    let errors: Vec<&Value> = to_ann.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "told once, not once per dropped message: {to_ann:?}");
    assert_eq!(errors[0]["data"]["code"], "rate_limited");
    assert!(errors[0]["data"]["message"].as_str().unwrap().contains("connection"));
    let seen = bob_ws.until_pong().await; // after Ann's pong: all she sent was handled
    let moves = seen.iter().filter(|m| m["type"] == "location_broadcast").count();
    assert!((1..=6).contains(&moves), "{moves} of 30 updates got through");
    assert_eq!(seen[0]["data"]["lat"], 0.0, "the first ones pass, the excess is dropped");

    // Not a disconnect: once the bucket refills, the same socket works.
    app.advance(Duration::from_millis(1100));
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(ann_ws.next_of_type("pong").await["type"], "pong");
    ann_ws.send_location(50.0, 0.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 50.0);
}

async fn binary_frames_count_against_the_limit_too(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.rate_limit_connection_per_second = 2).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    for _ in 0..20 {
        futures_util::SinkExt::send(&mut ann_ws.stream, Message::binary(vec![0u8; 16])).await.unwrap();
    }
    let replies = ann_ws.until_pong().await;
    let unsupported = replies.iter().filter(|m| m["data"]["code"] == "unsupported_frame").count();
    let limited = replies.iter().filter(|m| m["data"]["code"] == "rate_limited").count();
    assert!((1..=6).contains(&unsupported), "{unsupported} of 20 binary frames were answered");
    assert_eq!(limited, 1, "{replies:?}");
}

async fn the_user_limit_spans_all_of_a_users_sockets(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.rate_limit_connection_per_second = 100;
        c.rate_limit_user_per_second = 2; // bursts of 4, for both phones together
    })
    .await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut phone, _) = app.connect(&ann.token).await;
    let (mut tablet, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    for i in 0..10 {
        phone.send_location(f64::from(i), 0.0).await;
        // Valid too (the tablet once sent latitudes past 90: when the server happened to
        // take its updates first, the burst went on refused positions and none moved).
        tablet.send_location(-1.0 - f64::from(i), 0.0).await;
    }
    let mut told = phone.until_pong().await;
    told.extend(tablet.until_pong().await);
    let seen = bob_ws.until_pong().await;
    let moves = seen.iter().filter(|m| m["type"] == "location_broadcast").count();
    assert!((1..=6).contains(&moves), "{moves} of 20 updates got through");
    assert!(
        told.iter().any(|m| m["data"]["code"] == "rate_limited"
            && m["data"]["message"].as_str().unwrap().contains("user"))
    );
}

async fn rest_calls_are_limited_per_address_with_retry_after(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.rate_limit_sessions_per_minute = 2;
        c.rate_limit_joins_per_minute = 3;
    })
    .await;
    let session = app.create_session(json!({})).await;
    app.create_session(json!({})).await;
    let refused = app.post("/api/sessions", json!({})).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(error_code(refused).await, "rate_limited");

    for name in ["A", "B", "C"] {
        app.join(&session.session_id, name).await;
    }
    let path = format!("/api/sessions/{}/join", session.session_id);
    let refused = app.post(&path, json!({ "display_name": "D" })).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    // Reading is not limited.
    assert_eq!(app.get(&format!("/api/sessions/{}", session.session_id)).await.status(), 200);
}

async fn limits_can_be_switched_off(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.rate_limit_enabled = false;
        c.rate_limit_sessions_per_minute = 1;
        c.rate_limit_connection_per_second = 1;
    })
    .await;
    let session = app.create_session(json!({})).await;
    app.create_session(json!({})).await;
    let ann = app.join(&session.session_id, "Ann").await;
    let bob = app.join(&session.session_id, "Bob").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    for i in 0..20 {
        ann_ws.send_location(f64::from(i), 0.0).await;
    }
    loop {
        if bob_ws.next_of_type("location_broadcast").await["data"]["lat"] == 19.0 {
            break;
        }
    }
    assert!(ann_ws.until_pong().await.iter().all(|m| m["type"] != "error"));
}

on_every_backend!(
    a_flooding_socket_is_throttled_told_once_and_kept,
    binary_frames_count_against_the_limit_too,
    the_user_limit_spans_all_of_a_users_sockets,
    rest_calls_are_limited_per_address_with_retry_after,
    limits_can_be_switched_off,
);

#[tokio::test]
async fn a_ping_over_the_limit_is_still_answered() {
    let app = spawn_app_on(Backend::Embedded, |c| c.rate_limit_connection_per_second = 1).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    // A burst spends the bucket (2 messages); the ping right after it is over the limit.
    for i in 0..10 {
        ann_ws.send_location(f64::from(i), 0.0).await;
    }
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    let mut limited = false;
    loop {
        let message = ann_ws.next_json().await;
        match message["type"].as_str() {
            Some("pong") => break,
            Some("error") => {
                assert_eq!(message["data"]["code"], "rate_limited");
                limited = true;
            }
            _ => panic!("unexpected {message}"),
        }
    }
    assert!(limited, "the burst was over the limit");
}
