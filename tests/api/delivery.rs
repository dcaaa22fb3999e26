//! Delivery rules: a sender's `share_settings` (approximate or paused positions) and a
//! viewer's `view_settings` (no updates sooner or smaller than asked).

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::helpers::*;

fn lat_lng(message: &Value) -> (f64, f64) {
    (message["data"]["lat"].as_f64().unwrap(), message["data"]["lng"].as_f64().unwrap())
}

/// Metres between two points (the server's own formula is unit-tested; this is a check).
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    convoy::domain::distance_m(a.0, a.1, b.0, b.1)
}

async fn settle(ws: &mut WsClient, kind: &str, data: Value) -> Value {
    ws.send_json(json!({ "type": kind, "data": data })).await;
    ws.next_of_type(kind).await
}

#[tokio::test]
async fn approximate_positions_are_coarsened_for_everyone_and_in_snapshots() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // An exact position first: switching to approximate must take it out of snapshots too.
    ann_ws.send_location(48.9, 2.4).await;
    bob_ws.next_of_type("location_broadcast").await;
    let answer = settle(&mut ann_ws, "share_settings", json!({ "precision": "approximate" })).await;
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(snapshot["data"]["locations"], json!([]), "the exact position is gone: {snapshot}");
    assert_eq!(
        (answer["data"]["precision"].as_str(), answer["data"]["paused"].as_bool()),
        (Some("approximate"), Some(false))
    );
    let exact = (48.85661, 2.35222);
    ann_ws.send_location(exact.0, exact.1).await;
    let seen = bob_ws.next_of_type("location_broadcast").await;
    let shown = lat_lng(&seen);
    assert_ne!(shown, exact, "the exact position must not reach anyone");
    assert!(metres(shown, exact) < 1_000.0, "about 1 km: {shown:?}");
    assert!(seen["data"]["accuracy"].as_f64().unwrap() >= 700.0, "{seen}");
    // A step of a few metres inside the cell shows as the very same point.
    ann_ws.send_location(exact.0 + 0.00002, exact.1 + 0.00002).await;
    assert_eq!(lat_lng(&bob_ws.next_of_type("location_broadcast").await), shown);

    let (_, snapshot) = app.connect(&bob.token).await;
    let cached = snapshot_location(&snapshot, &ann.user_id).unwrap();
    assert_eq!((cached["lat"].as_f64().unwrap(), cached["lng"].as_f64().unwrap()), shown);

    // Back to exact.
    settle(&mut ann_ws, "share_settings", json!({ "precision": "exact" })).await;
    ann_ws.send_location(exact.0, exact.1).await;
    assert_eq!(lat_lng(&bob_ws.next_of_type("location_broadcast").await), exact);
}

#[tokio::test]
async fn a_paused_participant_vanishes_from_the_map_and_stays_present() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (stream, _) = tokio_tungstenite::connect_async(app.ws_url(&ann.token)).await.unwrap();
    let mut ann_ws = WsClient::new(stream);
    ann_ws.next_of_type("session_state").await;
    let (stream, _) = tokio_tungstenite::connect_async(app.ws_url(&bob.token)).await.unwrap();
    let mut bob_ws = WsClient::new(stream).with_presence();
    bob_ws.next_of_type("session_state").await;
    ann_ws.send_location(10.0, 10.0).await;
    bob_ws.next_of_type("location_broadcast").await;

    let answer = settle(&mut ann_ws, "share_settings", json!({ "paused": true })).await;
    assert_eq!(answer["data"]["paused"], true);
    // Bob is told to forget Ann's position, and presence replaces her meta with one that
    // says paused (in whichever order they come).
    let (mut cleared, mut paused_meta) = (false, None);
    while !cleared || paused_meta.is_none() {
        let message = bob_ws.next_json().await;
        match message["type"].as_str() {
            Some("location_cleared") => {
                assert_eq!(message["data"]["user_id"], ann.user_id);
                cleared = true;
            }
            Some("presence_diff") => {
                if let Some(metas) = message["data"]["joins"][&ann.user_id]["metas"].as_array() {
                    paused_meta = metas.first().cloned();
                    // One diff, as Phoenix Presence updates a meta: the old one leaves in it.
                    let left = &message["data"]["leaves"][&ann.user_id]["metas"][0];
                    assert_eq!(left["paused"], Value::Null, "{message}");
                    assert_ne!(left["phx_ref"], paused_meta.as_ref().unwrap()["phx_ref"]);
                }
            }
            _ => {}
        }
    }
    assert_eq!(paused_meta.unwrap()["paused"], true);
    ann_ws.send_location(11.0, 11.0).await;
    bob_ws.assert_silent(Duration::from_millis(300)).await;
    let presence: Value =
        app.get(&format!("/api/sessions/{}/presence", session.session_id)).await.json().await.unwrap();
    assert_eq!(presence["presences"][&ann.user_id]["metas"][0]["paused"], true, "{presence}");
    assert_eq!(
        presence["presences"][&ann.user_id]["metas"].as_array().unwrap().len(),
        1,
        "no ghost: {presence}"
    );
    let (_, snapshot) = app.connect(&bob.token).await;
    assert!(snapshot_location(&snapshot, &ann.user_id).is_none(), "{snapshot}");

    settle(&mut ann_ws, "share_settings", json!({ "paused": false })).await;
    ann_ws.send_location(12.0, 12.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 12.0);
}

#[tokio::test]
async fn a_viewer_gets_no_update_sooner_or_smaller_than_it_asked() {
    let app = spawn_app().await;
    let (_, [ann, bob, cat]) = app.session_with(["Ann", "Bob", "Cat"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;

    let answer = settle(&mut bob_ws, "view_settings", json!({ "min_interval_ms": 60_000 })).await;
    assert_eq!(answer["data"]["min_interval_ms"], 60_000);
    for i in 0..5 {
        ann_ws.send_location(1.0 + f64::from(i), 1.0).await;
    }
    // Cat set nothing and sees every update (the last for sure); Bob only the first.
    let mut cat_last = 0.0;
    while cat_last < 5.0 {
        cat_last = cat_ws.next_of_type("location_broadcast").await["data"]["lat"].as_f64().unwrap();
    }
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 1.0);
    bob_ws.assert_quiet().await;

    // Once the interval has passed, the next one goes out.
    settle(&mut bob_ws, "view_settings", json!({ "min_interval_ms": 60_000 })).await;
    ann_ws.send_location(20.0, 1.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 20.0);
    ann_ws.send_location(21.0, 1.0).await;
    ann_ws.assert_quiet().await; // her update was handled: Bob's rules decided on it
    bob_ws.assert_quiet().await;
    app.advance(Duration::from_secs(60));
    ann_ws.send_location(22.0, 1.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 22.0);

    // Distance instead: moves under 100 m are not sent.
    let answer =
        settle(&mut bob_ws, "view_settings", json!({ "min_interval_ms": 0, "min_distance_m": 100 })).await;
    assert_eq!(
        (answer["data"]["min_interval_ms"].as_u64(), answer["data"]["min_distance_m"].as_f64()),
        (Some(0), Some(100.0))
    );
    ann_ws.send_location(40.0, 1.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 40.0);
    ann_ws.send_location(40.0001, 1.0).await; // ~11 m
    ann_ws.assert_quiet().await;
    bob_ws.assert_quiet().await;
    ann_ws.send_location(40.01, 1.0).await; // ~1.1 km
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 40.01);

    // Bad settings are refused by name; the socket stays.
    bob_ws.send_json(json!({ "type": "view_settings", "data": { "min_distance_m": -1 } })).await;
    let error = bob_ws.next_of_type("error").await;
    assert!(error["data"]["message"].as_str().unwrap().contains("min_distance_m"), "{error}");
    bob_ws.send_json(json!({ "type": "share_settings", "data": { "precision": "vague" } })).await;
    assert!(bob_ws.next_of_type("error").await["data"]["message"].as_str().unwrap().contains("precision"));
}

/// The (user_id, lat) pairs of a `location_batch`, sorted by lat.
fn batched(batch: &Value) -> Vec<(String, f64)> {
    assert_eq!(batch["type"], "location_batch", "{batch}");
    let mut pairs: Vec<(String, f64)> = batch["data"]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["accuracy"].is_number() && l["timestamp"].is_string() && l["lng"].is_number(), "{l}");
            (l["user_id"].as_str().unwrap().to_owned(), l["lat"].as_f64().unwrap())
        })
        .collect();
    pairs.sort_by(|a, b| a.1.total_cmp(&b.1));
    pairs
}

#[tokio::test]
async fn batched_delivery_sends_a_windows_positions_as_one_frame() {
    let app = spawn_app().await;
    let (_, [ann, bob, cat]) = app.session_with(["Ann", "Bob", "Cat"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;
    // A second's window: everything below is sent well within it.
    let (mut bob_ws, _) = app.connect_url(&format!("{}&batch_ms=1000", app.ws_url(&bob.token))).await;

    for lat in [1.0, 2.0, 3.0] {
        ann_ws.send_location(lat, 0.0).await;
    }
    cat_ws.send_location(9.0, 0.0).await;
    bob_ws.send_location(5.0, 0.0).await;
    ann_ws.until_pong().await; // handled: in Bob's open batch
    // Connections that did not ask get the seeds' messages, one per position (Cat sees
    // Ann's, the older ones perhaps replaced by the newest while queued).
    let to_cat = cat_ws.until_pong().await; // Cat's own position handled too
    assert!(to_cat.iter().all(|m| m["type"] == "location_broadcast"), "{to_cat:?}");
    assert!(to_cat.iter().any(|m| m["data"]["lat"] == 3.0), "{to_cat:?}");
    // Batches go out on the window's ticks: all of this within one window, so at most one
    // tick fell in it. Each batch is the session's, built once: the latest of each sender,
    // Bob's own included.
    let mut latest = std::collections::BTreeMap::new();
    let mut batches = 0;
    let expected = [(&ann.user_id, 3.0), (&cat.user_id, 9.0), (&bob.user_id, 5.0)];
    while expected.iter().any(|(user, lat)| latest.get(*user) != Some(lat)) {
        let batch = bob_ws.next_json().await;
        let pairs = batched(&batch);
        let senders: std::collections::BTreeSet<_> = pairs.iter().map(|(user, _)| user.clone()).collect();
        assert_eq!(senders.len(), pairs.len(), "one position per sender: {batch}");
        latest.extend(pairs);
        batches += 1;
    }
    // One tick, or two on a machine that stalled for a second.
    assert!(batches <= 3, "{batches} batches for positions sent within one window");
    bob_ws.assert_quiet().await;
}

#[tokio::test]
async fn an_event_between_positions_keeps_its_place_in_batched_delivery() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect_url(&format!("{}&batch_ms=1000", app.ws_url(&bob.token))).await;

    // Ann moves, then pauses: Bob must forget her position, so the batch holding it goes
    // first, at once (the event does not wait for the window), then the clearing.
    ann_ws.send_location(1.0, 0.0).await;
    settle(&mut ann_ws, "share_settings", json!({ "paused": true })).await;
    let first = bob_ws.next_json().await;
    assert_eq!(batched(&first), [(ann.user_id.clone(), 1.0)]);
    assert_eq!(bob_ws.next_of_type("location_cleared").await["data"]["user_id"], ann.user_id);
    // Sharing again: a new batch after the event.
    settle(&mut ann_ws, "share_settings", json!({ "paused": false })).await;
    ann_ws.send_location(2.0, 0.0).await;
    assert_eq!(batched(&bob_ws.next_of_type("location_batch").await), [(ann.user_id.clone(), 2.0)]);
}

#[tokio::test]
async fn a_batch_window_out_of_range_is_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    // Numbers out of range fail validation (422); what is not a number, the query (400).
    for (bad, status) in [("5", 422), ("1001", 422), ("-1", 400), ("soon", 400)] {
        let url = format!("{}&batch_ms={bad}", app.ws_url(&ann.token));
        let request = url.into_client_request().unwrap();
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), status, "batch_ms={bad}");
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert!(body["error"]["message"].as_str().unwrap().contains("batch_ms"), "{body}");
            }
            other => panic!("batch_ms={bad} was not refused: {other:?}"),
        }
    }
    for good in ["0", "10", "1000"] {
        let url = format!("{}&batch_ms={good}", app.ws_url(&ann.token));
        assert_eq!(app.handshake_status(&url).await, 101, "batch_ms={good}");
    }
}
