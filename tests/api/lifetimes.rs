//! Lifetimes: location TTL, idle expiry, activity written behind that must still keep a
//! session alive, and the sweeper's exactly-once end. Time passes by moving the server's
//! clock (`TestApp::advance`) and stepping the sweeper, not by waiting (the Redis location
//! cache expires on the server's clock too).

use std::time::Duration;

use convoy::domain::{self, SessionId};
use convoy::sweeper::sweep_once;
use serde_json::{Value, json};

use super::helpers::*;

async fn locations_vanish_from_snapshots_after_their_ttl(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.location_ttl_seconds = 1).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    ann_ws.send_location(48.85, 2.35).await;
    bob_ws.next_of_type("location_broadcast").await;

    let (_, fresh) = app.connect(&bob.token).await;
    assert_eq!(fresh["data"]["locations"].as_array().unwrap().len(), 1);

    app.advance(Duration::from_millis(1001));
    let (_, stale) = app.connect(&bob.token).await;
    assert_eq!(stale["data"]["locations"], json!([]));
    // The in-process cache is purged by the sweeper; Redis's hash skips expired fields
    // when read and goes with the session.
    let purged = sweep_once(&app.state).await.unwrap().purged_locations;
    assert_eq!(purged, if app.backend.uses_redis() { 0 } else { 1 });
}

/// Idle expiry for these tests: ten minutes, far from the sessions' end a day away.
const IDLE: Duration = Duration::from_secs(600);

fn idle_after(c: &mut convoy::Config) {
    c.session_idle_timeout_seconds = IDLE.as_secs();
    c.sweep_interval_seconds = 3600; // the tests step the sweeper themselves
}

async fn an_idle_session_is_ended_by_the_sweeper_and_its_sockets_told(backend: Backend) {
    let app = spawn_app_on(backend, idle_after).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;

    app.advance(IDLE - Duration::from_secs(5));
    assert!(sweep_once(&app.state).await.unwrap().ended.is_empty(), "not idle long enough yet");
    app.advance(Duration::from_secs(10));
    let ended_ids = sweep_once(&app.state).await.unwrap().ended;
    assert_eq!(ended_ids, vec![session.session_id.parse::<SessionId>().unwrap()]);
    let ended = ann_ws.next_of_type("session_ended").await;
    assert_eq!(ended["data"]["reason"], "expired");
    assert_eq!(ann_ws.closed().await.map(|f| u16::from(f.code)), Some(1000));

    let details: Value =
        app.get(&format!("/api/sessions/{}", session.session_id)).await.json().await.unwrap();
    assert_eq!(details["is_active"], false);
    let participants: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    assert_eq!(participants["participants"][0]["is_active"], false);
    // Joining or connecting afterwards is refused with 410.
    let late = app
        .post(&format!("/api/sessions/{}/join", session.session_id), json!({ "display_name": "Late" }))
        .await;
    assert_eq!(late.status(), 410);
    assert_eq!(app.handshake_status(&app.ws_url(&ann.token)).await, 410);
}

async fn location_updates_keep_a_session_alive_even_when_activity_is_written_behind(backend: Backend) {
    // The flush interval is far longer than the idle timeout: only the sweeper's own flush
    // before it looks for idle sessions can keep this session alive.
    let app = spawn_app_on(backend, |c| {
        idle_after(c);
        c.activity_flush_interval_seconds = 3600;
    })
    .await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // Ann moves every two thirds of the idle timeout, for twice the idle timeout.
    for i in 0..3 {
        app.advance(IDLE * 2 / 3);
        ann_ws.send_location(10.0 + f64::from(i) / 1000.0, 10.0).await;
        bob_ws.next_of_type("location_broadcast").await;
        ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
        ann_ws.next_of_type("pong").await; // her update was handled, activity noted
        assert!(sweep_once(&app.state).await.unwrap().ended.is_empty(), "ended while moving");
    }
    let details: Value =
        app.get(&format!("/api/sessions/{}", session.session_id)).await.json().await.unwrap();
    assert_eq!(details["is_active"], true, "{details}");
    let participants: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let ann_row = participants["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == ann.user_id)
        .unwrap();
    let last_seen = chrono::DateTime::parse_from_rfc3339(ann_row["last_seen"].as_str().unwrap()).unwrap();
    assert!(
        app.state.clock.now().signed_duration_since(last_seen) < chrono::Duration::seconds(3),
        "last_seen was written: {last_seen}"
    );

    // Once movement stops, the session idles out.
    app.advance(IDLE + Duration::from_secs(1));
    assert_eq!(sweep_once(&app.state).await.unwrap().ended.len(), 1);
    let ended = bob_ws.next_of_type("session_ended").await;
    assert_eq!(ended["data"]["reason"], "expired");
}

async fn expired_sessions_are_ended_exactly_once_even_by_concurrent_sweeps(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.create_session(json!({ "expires_in_minutes": 1 })).await.session_id);
    }
    let live = app.create_session(json!({ "expires_in_minutes": 10 })).await.session_id;

    // Two minutes from now the 1-minute sessions are past their end; nothing is idle.
    let later = domain::now() + chrono::Duration::minutes(2);
    let long_ago = domain::now() - chrono::Duration::days(1);
    let store = app.state.store.clone();
    let (a, b) = tokio::join!(store.expire_sessions(later, long_ago), store.expire_sessions(later, long_ago));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<SessionId> = a.iter().chain(b.iter()).copied().collect();
    all.sort();
    let mut expected: Vec<SessionId> = ids.iter().map(|id| id.parse().unwrap()).collect();
    expected.sort();
    assert_eq!(all, expected, "each expired session went to exactly one sweep");
    assert!(store.expire_sessions(later, long_ago).await.unwrap().is_empty());

    let details: Value = app.get(&format!("/api/sessions/{live}")).await.json().await.unwrap();
    assert_eq!(details["is_active"], true);
}

async fn sweep_once_reports_what_it_ended(backend: Backend) {
    let app = spawn_app_on(backend, idle_after).await;
    let session = app.create_session(json!({})).await;
    assert!(sweep_once(&app.state).await.unwrap().ended.is_empty());
    app.advance(IDLE + Duration::from_secs(1));
    let report = sweep_once(&app.state).await.unwrap();
    assert_eq!(report.ended, vec![session.session_id.parse::<SessionId>().unwrap()]);
    assert!(sweep_once(&app.state).await.unwrap().ended.is_empty());
}

on_every_backend!(
    locations_vanish_from_snapshots_after_their_ttl,
    an_idle_session_is_ended_by_the_sweeper_and_its_sockets_told,
    location_updates_keep_a_session_alive_even_when_activity_is_written_behind,
    expired_sessions_are_ended_exactly_once_even_by_concurrent_sweeps,
    sweep_once_reports_what_it_ended,
);
