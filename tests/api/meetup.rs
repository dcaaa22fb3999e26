//! Meeting up: the session's meeting point, set, moved and cleared through REST (the
//! creator token, or a participant's where the session allows it), the native socket and
//! the Phoenix channel (tests/api/phoenix.rs), announced to everyone on every instance and
//! part of every snapshot.

use serde_json::{Value, json};

use super::helpers::*;

on_both_redis!(
    a_point_set_on_one_instance_reaches_the_other,
    an_arrival_on_one_instance_is_seen_on_the_other,
);

const GATE: (f64, f64) = (48.8584, 2.2945);

async fn put_point(app: &TestApp, session_id: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request =
        app.client.put(app.url(&format!("/api/sessions/{session_id}/meeting_point"))).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn delete_point(app: &TestApp, session_id: &str, token: &str) -> reqwest::Response {
    app.delete(&format!("/api/sessions/{session_id}/meeting_point"), Some(token)).await
}

async fn the_creator_sets_moves_and_clears_the_point(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let sid = session.session_id.as_str();
    let (mut ann_ws, snapshot) = app.connect(&ann.token).await;
    assert_eq!(snapshot["data"]["meeting_point"], Value::Null, "none set yet: {snapshot}");
    assert_eq!(snapshot["data"]["meeting_point_by"], "creator");

    let body = json!({ "lat": GATE.0, "lng": GATE.1, "name": "  North gate ", "radius_m": 80 });
    let response = put_point(&app, sid, Some(&session.creator_token), body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let point = &answer["meeting_point"];
    assert_eq!((point["name"].as_str(), point["radius_m"].as_f64()), (Some("North gate"), Some(80.0)));
    let set = ann_ws.next_of_type("meeting_point_set").await;
    assert_eq!(&set["data"], point);

    // A late joiner's snapshot has it; moving it replaces it (default radius 50).
    let (_, snapshot) = app.connect(&ann.token).await;
    assert_eq!(&snapshot["data"]["meeting_point"], point);
    let moved =
        put_point(&app, sid, Some(&session.creator_token), json!({ "lat": 48.86, "lng": 2.35 })).await;
    assert_eq!(moved.status(), 200);
    let set = ann_ws.next_of_type("meeting_point_set").await;
    assert_eq!(
        (set["data"]["lat"].as_f64(), set["data"]["radius_m"].as_f64(), &set["data"]["name"]),
        (Some(48.86), Some(50.0), &Value::Null)
    );

    assert_eq!(delete_point(&app, sid, &session.creator_token).await.status(), 204);
    let cleared = ann_ws.next_of_type("meeting_point_cleared").await;
    // The creator's id is nobody's business: null.
    assert!(cleared["data"]["cleared_by"].is_null() && cleared["data"]["at"].is_string(), "{cleared}");
    assert!(point["set_by"].is_null(), "{point}");
    let (_, snapshot) = app.connect(&ann.token).await;
    assert_eq!(snapshot["data"]["meeting_point"], Value::Null);
}

/// By default only the creator may: a participant is refused over REST and on the socket,
/// and nothing is announced. Bad points are refused naming the field, on both.
#[tokio::test]
async fn only_the_creator_unless_the_session_lets_anyone() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let sid = session.session_id.as_str();
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let point = json!({ "lat": GATE.0, "lng": GATE.1 });

    let refused = put_point(&app, sid, Some(&ann.token), point.clone()).await;
    assert_eq!((refused.status().as_u16(), error_code(refused).await.as_str()), (403, "forbidden"));
    assert_eq!(put_point(&app, sid, None, point.clone()).await.status(), 401);
    let (other, [stranger]) = app.session_with(["Eve"]).await;
    assert_eq!(put_point(&app, sid, Some(&stranger.token), point.clone()).await.status(), 403);
    assert_eq!(put_point(&app, sid, Some(&other.creator_token), point.clone()).await.status(), 403);
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_json(json!({ "type": "set_meeting_point", "data": point })).await;
    assert_eq!(ann_ws.next_of_type("error").await["data"]["code"], "forbidden");
    ann_ws.send_json(json!({ "type": "clear_meeting_point" })).await;
    assert_eq!(ann_ws.next_of_type("error").await["data"]["code"], "forbidden");
    let seen = bob_ws.until_pong().await;
    assert!(seen.iter().all(|m| m["type"] != "meeting_point_set"), "{seen:?}");

    for (bad, field) in [
        (json!({ "lat": 91, "lng": 2 }), "lat"),
        (json!({ "lat": 48, "lng": 2, "radius_m": 5 }), "radius_m"),
        (json!({ "lat": 48, "lng": 2, "name": "x".repeat(101) }), "name"),
    ] {
        let response = put_point(&app, sid, Some(&session.creator_token), bad).await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().starts_with(field), "{body}");
    }
    let unknown =
        put_point(&app, sid, Some(&session.creator_token), json!({ "lat": 1, "lng": 2, "colour": "red" }))
            .await;
    assert_eq!(unknown.status(), 422);

    // A session created with meeting_point_by: anyone.
    let open = app.create_session(json!({ "meeting_point_by": "anyone" })).await;
    let carl = app.join(&open.session_id, "Carl").await;
    let dan = app.join(&open.session_id, "Dan").await;
    let (mut carl_ws, snapshot) = app.connect(&carl.token).await;
    assert_eq!(snapshot["data"]["meeting_point_by"], "anyone", "the page knows it may");
    let (mut dan_ws, _) = app.connect(&dan.token).await;
    carl_ws
        .send_json(
            json!({ "type": "set_meeting_point", "data": { "lat": GATE.0, "lng": GATE.1, "radius_m": 0 } }),
        )
        .await;
    let error = carl_ws.next_of_type("error").await;
    assert_eq!(error["data"]["code"], "invalid_input", "{error}");
    carl_ws
        .send_json(
            json!({ "type": "set_meeting_point", "data": { "lat": GATE.0, "lng": GATE.1, "name": "Café" } }),
        )
        .await;
    let seen = dan_ws.next_of_type("meeting_point_set").await;
    assert_eq!(
        (seen["data"]["set_by"].as_str(), seen["data"]["name"].as_str()),
        (Some(carl.user_id.as_str()), Some("Café"))
    );
    assert_eq!(carl_ws.next_of_type("meeting_point_set").await, seen, "the setter hears it too");
    assert_eq!(
        put_point(&app, &open.session_id, Some(&dan.token), json!({ "lat": 1, "lng": 2 })).await.status(),
        200
    );
    assert_eq!(delete_point(&app, &open.session_id, &dan.token).await.status(), 204);
    assert_eq!(carl_ws.next_of_type("meeting_point_cleared").await["data"]["cleared_by"], dan.user_id);

    let bad = app.post("/api/sessions", json!({ "meeting_point_by": "everyone" })).await;
    assert_eq!(bad.status(), 422);
}

/// Once the session ended, nothing can be set (410).
#[tokio::test]
async fn an_ended_session_takes_no_point() {
    let app = spawn_app().await;
    let (session, _) = app.session_with(["Ann"]).await;
    let sid = session.session_id.as_str();
    assert_eq!(app.delete(&format!("/api/sessions/{sid}"), Some(&session.creator_token)).await.status(), 204);
    let response = put_point(&app, sid, Some(&session.creator_token), json!({ "lat": 1, "lng": 2 })).await;
    assert_eq!(response.status(), 410);
}

/// Set on one instance, heard on the other, and in its snapshots.
async fn a_point_set_on_one_instance_reaches_the_other(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let (session, [ann]) = a.session_with(["Ann"]).await;
    let (mut ann_on_b, _) = b.connect(&ann.token).await;
    let response = put_point(
        &a,
        &session.session_id,
        Some(&session.creator_token),
        json!({ "lat": GATE.0, "lng": GATE.1 }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(ann_on_b.next_of_type("meeting_point_set").await["data"]["lat"], GATE.0);
    let (_, snapshot) = b.connect(&ann.token).await;
    assert_eq!(snapshot["data"]["meeting_point"]["lng"], GATE.1);
}

/// A loop moving the point (each move a write, an event for everyone and a fresh start of
/// everyone's arrival) is refused past a budget of its own: RATE_LIMIT_CHAT_PER_MINUTE.
#[tokio::test]
async fn moving_the_point_in_a_loop_is_rate_limited() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.rate_limit_enabled = true;
        c.rate_limit_chat_per_minute = 2; // meeting point changes have a budget of their own
    })
    .await;
    let (session, _) = app.session_with(["Ann"]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let body = json!({ "lat": 48.0 + f64::from(i) / 100.0, "lng": 2.0 });
        statuses.push(
            put_point(&app, &session.session_id, Some(&session.creator_token), body).await.status().as_u16(),
        );
    }
    assert_eq!(statuses[..2], [200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");

    // Reading every trail of the session is a whole-session read: a budget of its own too.
    let (_, [dan]) = app.session_with(["Dan"]).await;
    let (mut dan_ws, _) = app.connect(&dan.token).await;
    for _ in 0..3 {
        dan_ws.send_json(json!({ "type": "get_trails" })).await;
    }
    let seen = dan_ws.until_pong().await;
    assert_eq!(seen.iter().filter(|m| m["type"] == "trails").count(), 2, "{seen:?}");
    assert!(seen.iter().any(|m| m["data"]["code"] == "rate_limited"), "{seen:?}");

    // On a socket too, in a session that lets anyone: each participant has a budget.
    let open = app.create_session(json!({ "meeting_point_by": "anyone" })).await;
    let carl = app.join(&open.session_id, "Carl").await;
    let (mut carl_ws, _) = app.connect(&carl.token).await;
    for i in 0..3 {
        let data = json!({ "lat": 48.0 + f64::from(i) / 100.0, "lng": 2.0 });
        carl_ws.send_json(json!({ "type": "set_meeting_point", "data": data })).await;
    }
    let seen = carl_ws.until_pong().await;
    let kinds: Vec<_> = seen.iter().map(|m| m["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "meeting_point_set").count(), 2, "{seen:?}");
    assert!(seen.iter().any(|m| m["data"]["code"] == "rate_limited"), "{seen:?}");
}

/// `location_update` carries the device's battery, charging, speed and heading when the
/// client knows them: broadcast and in snapshots; out of range, refused naming the field.
#[tokio::test]
async fn a_location_update_carries_battery_and_speed() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let fix = json!({ "lat": GATE.0, "lng": GATE.1, "accuracy": 8, "battery": 15, "charging": false, "speed": 1.4, "heading": 90 });
    ann_ws.send_json(json!({ "type": "location_update", "data": fix })).await;
    let seen = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (
            seen["battery"].as_u64(),
            seen["charging"].as_bool(),
            seen["speed"].as_f64(),
            seen["heading"].as_f64()
        ),
        (Some(15), Some(false), Some(1.4), Some(90.0))
    );
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(snapshot_location(&snapshot, &ann.user_id).unwrap()["battery"], 15);

    for (field, value) in [("battery", json!(150)), ("speed", json!(-2)), ("heading", json!(400))] {
        let mut bad = json!({ "lat": GATE.0, "lng": GATE.1, "accuracy": 8 });
        bad[field] = value;
        ann_ws.send_json(json!({ "type": "location_update", "data": bad })).await;
        let error = ann_ws.next_of_type("error").await;
        assert_eq!(error["data"]["code"], "invalid_location");
        assert!(error["data"]["message"].as_str().unwrap().contains(field), "{error}");
    }
    bob_ws.assert_quiet().await;
}

/// A fix `north_m` metres north of GATE (0.001 degree of latitude is 111.2 m), `accuracy`
/// metres, taken `seconds_ago`.
fn near_gate(north_m: f64, accuracy: f64, seconds_ago: i64) -> Value {
    let at = chrono::Utc::now() - chrono::Duration::seconds(seconds_ago);
    json!({
        "type": "location_update",
        "data": { "lat": GATE.0 + north_m / 111_195.0, "lng": GATE.1, "accuracy": accuracy, "timestamp": at.to_rfc3339() },
    })
}

/// Sends a fix and steps the meet-up work once it is noted (the pong says the socket's
/// reader got past it).
async fn move_to(app: &TestApp, ws: &mut WsClient, fix: Value) {
    ws.send_json(fix).await;
    ws.until_pong().await;
    app.state.meetup_tick().await;
}

/// Arrived within the radius; the ring up to 1.5 x the radius changes nothing, in either
/// direction; beyond it, departed. Each change once, to everyone, and in snapshots.
async fn arrivals_have_hysteresis_at_the_edge(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let body = json!({ "lat": GATE.0, "lng": GATE.1, "radius_m": 50 });
    assert_eq!(put_point(&app, &session.session_id, Some(&session.creator_token), body).await.status(), 200);
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let changes = |seen: &[Value]| -> Vec<String> {
        seen.iter()
            .filter(|m| m["type"] == "participant_arrived" || m["type"] == "participant_departed")
            .map(|m| m["type"].as_str().unwrap().to_owned())
            .collect()
    };

    move_to(&app, &mut ann_ws, near_gate(300.0, 10.0, 9)).await;
    move_to(&app, &mut ann_ws, near_gate(67.0, 5.0, 8)).await; // the ring, coming in
    assert_eq!(changes(&bob_ws.until_pong().await), Vec::<String>::new());
    move_to(&app, &mut ann_ws, near_gate(40.0, 90.0, 7)).await; // inside, but too vague
    assert_eq!(changes(&bob_ws.until_pong().await), Vec::<String>::new());

    move_to(&app, &mut ann_ws, near_gate(40.0, 8.0, 6)).await;
    let arrived = bob_ws.next_of_type("participant_arrived").await;
    assert_eq!(arrived["data"]["user_id"], ann.user_id);
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(snapshot["data"]["arrived"], json!([ann.user_id]));

    // Wandering at the edge: no flapping. Inside again: no second arrival.
    for (north, seconds_ago) in [(60.0, 5), (72.0, 4), (30.0, 3)] {
        move_to(&app, &mut ann_ws, near_gate(north, 4.0, seconds_ago)).await;
    }
    assert_eq!(changes(&bob_ws.until_pong().await), Vec::<String>::new());
    move_to(&app, &mut ann_ws, near_gate(120.0, 10.0, 2)).await;
    assert_eq!(bob_ws.next_of_type("participant_departed").await["data"]["user_id"], ann.user_id);
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(snapshot["data"]["arrived"], json!([]));

    // Arrived again, then the point moves: everyone starts afresh.
    move_to(&app, &mut ann_ws, near_gate(0.0, 5.0, 1)).await;
    bob_ws.next_of_type("participant_arrived").await;
    let moved = json!({ "lat": GATE.0 + 0.01, "lng": GATE.1 });
    assert_eq!(put_point(&app, &session.session_id, Some(&session.creator_token), moved).await.status(), 200);
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(snapshot["data"]["arrived"], json!([]), "a new point, nobody there yet");
}

/// The ETA: none while the pace is unknown, then the distance left over the smoothed speed,
/// recomputed at most every 10 s and told only when it moved by a minute or a tenth.
#[tokio::test]
async fn etas_follow_the_pace_and_are_told_when_they_move_enough() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let body = json!({ "lat": GATE.0, "lng": GATE.1, "radius_m": 50 });
    assert_eq!(put_point(&app, &session.session_id, Some(&session.creator_token), body).await.status(), 200);
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // 1,050 m to the edge, pace unknown.
    move_to(&app, &mut ann_ws, near_gate(1100.0, 5.0, 200)).await;
    let first = bob_ws.next_of_type("eta_update").await["data"].clone();
    assert_eq!(
        (first["user_id"].as_str(), first["distance_m"].as_f64()),
        (Some(ann.user_id.as_str()), Some(1050.0))
    );
    assert_eq!(first["eta_s"], Value::Null, "no pace yet: {first}");

    // 100 m in 100 s: 1 m/s. Within 10 s of the last estimate nothing is recomputed; 11 s
    // later it is, with the next fix (at the same pace, 940 m left).
    move_to(&app, &mut ann_ws, near_gate(1000.0, 5.0, 100)).await;
    assert!(bob_ws.until_pong().await.iter().all(|m| m["type"] != "eta_update"));
    app.advance(std::time::Duration::from_secs(11));
    move_to(&app, &mut ann_ws, near_gate(990.0, 5.0, 90)).await;
    let moving = bob_ws.next_of_type("eta_update").await["data"].clone();
    let eta = moving["eta_s"].as_u64().expect("an ETA");
    assert!((900..=980).contains(&eta), "940 m at 1 m/s: {moving}");

    // At the same pace a little later: less than a minute and a tenth off, not told.
    app.advance(std::time::Duration::from_secs(11));
    move_to(&app, &mut ann_ws, near_gate(970.0, 5.0, 69)).await;
    assert!(bob_ws.until_pong().await.iter().all(|m| m["type"] != "eta_update"));
}

/// An arrival decided on one instance is heard on the other.
async fn an_arrival_on_one_instance_is_seen_on_the_other(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let (session, [ann, bob]) = a.session_with(["Ann", "Bob"]).await;
    let body = json!({ "lat": GATE.0, "lng": GATE.1 });
    assert_eq!(put_point(&a, &session.session_id, Some(&session.creator_token), body).await.status(), 200);
    let (mut ann_on_a, _) = a.connect(&ann.token).await;
    let (mut bob_on_b, _) = b.connect(&bob.token).await;
    move_to(&a, &mut ann_on_a, near_gate(10.0, 5.0, 1)).await;
    assert_eq!(bob_on_b.next_of_type("participant_arrived").await["data"]["user_id"], ann.user_id);
}

/// Trails: thinned on arrival (a fix 5 m on is dropped), nothing while paused, given to a
/// late joiner over REST and the socket (`since` too), exported as GPX that reads back with
/// every point, and gone once the session ends.
async fn trails_are_thinned_given_to_late_joiners_and_exported(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let sid = session.session_id.as_str();
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    move_to(&app, &mut ann_ws, near_gate(0.0, 5.0, 60)).await;
    move_to(&app, &mut ann_ws, near_gate(5.0, 5.0, 55)).await; // 5 m, 5 s on: thinned out
    move_to(&app, &mut ann_ws, near_gate(20.0, 5.0, 50)).await;
    ann_ws.send_json(json!({ "type": "share_settings", "data": { "paused": true } })).await;
    ann_ws.next_of_type("share_settings").await;
    move_to(&app, &mut ann_ws, near_gate(100.0, 5.0, 40)).await; // paused: not shared, not kept
    ann_ws.send_json(json!({ "type": "share_settings", "data": { "paused": false } })).await;
    ann_ws.next_of_type("share_settings").await;
    move_to(&app, &mut ann_ws, near_gate(200.0, 5.0, 20)).await;

    let get = |path: String, token: &str| app.client.get(app.url(&path)).bearer_auth(token).send();
    let body: Value =
        get(format!("/api/sessions/{sid}/trails"), &bob.token).await.unwrap().json().await.unwrap();
    let trails = body["trails"].as_array().unwrap();
    assert_eq!(trails.len(), 1, "{body}");
    assert_eq!(
        (trails[0]["user_id"].as_str(), trails[0]["display_name"].as_str()),
        (Some(ann.user_id.as_str()), Some("Ann"))
    );
    let north: Vec<i64> = trails[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ((p["lat"].as_f64().unwrap() - GATE.0) * 111_195.0).round() as i64)
        .collect();
    assert_eq!(north, [0, 20, 200], "{body}");

    // A late joiner on the socket, and `since`.
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    bob_ws.send_json(json!({ "type": "get_trails" })).await;
    let on_socket = bob_ws.next_of_type("trails").await;
    assert_eq!(on_socket["data"]["trails"], body["trails"]);
    let since = (chrono::Utc::now() - chrono::Duration::seconds(45))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    bob_ws.send_json(json!({ "type": "get_trails", "data": { "since": since } })).await;
    let recent = bob_ws.next_of_type("trails").await;
    assert_eq!(recent["data"]["trails"][0]["points"].as_array().unwrap().len(), 1, "{recent}");
    // A date no store holds is taken as the earliest one.
    let ancient =
        get(format!("/api/sessions/{sid}/trails?since=-5000-01-01T00:00:00Z"), &bob.token).await.unwrap();
    assert_eq!(ancient.status(), 200);
    let response = get(format!("/api/sessions/{sid}/trails?since={}", since.replace('+', "%2B")), &bob.token)
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["trails"][0]["points"].as_array().unwrap().len(), 1);

    // GPX, with the creator token: parsed back by the same crate.
    let response = get(format!("/api/sessions/{sid}/trails.gpx"), &session.creator_token).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/gpx+xml");
    let document = gpx::read(response.bytes().await.unwrap().as_ref()).expect("valid GPX");
    assert_eq!(document.version, gpx::GpxVersion::Gpx11);
    assert_eq!(document.tracks.len(), 1);
    assert_eq!(document.tracks[0].name.as_deref(), Some("Ann"));
    assert_eq!(document.tracks[0].segments[0].points.len(), 3);

    // Leaving takes one's trail along.
    let carl = app.join(sid, "Carl").await;
    let (mut carl_ws, _) = app.connect(&carl.token).await;
    move_to(&app, &mut carl_ws, near_gate(5.0, 5.0, 1)).await;
    let names = |body: Value| -> Vec<String> {
        let mut names: Vec<String> = body["trails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["display_name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let body: Value =
        get(format!("/api/sessions/{sid}/trails"), &bob.token).await.unwrap().json().await.unwrap();
    assert_eq!(names(body), ["Ann", "Carl"]);
    assert_eq!(app.remove(sid, &carl.user_id, &carl.token).await, 204);
    let body: Value =
        get(format!("/api/sessions/{sid}/trails"), &bob.token).await.unwrap().json().await.unwrap();
    assert_eq!(names(body), ["Ann"]);

    // Strangers get nothing; after the end, nothing is kept.
    let (_, [eve]) = app.session_with(["Eve"]).await;
    assert_eq!(get(format!("/api/sessions/{sid}/trails"), &eve.token).await.unwrap().status(), 403);
    assert_eq!(
        app.client.get(app.url(&format!("/api/sessions/{sid}/trails.gpx"))).send().await.unwrap().status(),
        401
    );
    assert_eq!(app.delete(&format!("/api/sessions/{sid}"), Some(&session.creator_token)).await.status(), 204);
    assert_eq!(
        get(format!("/api/sessions/{sid}/trails"), &session.creator_token).await.unwrap().status(),
        410
    );
    let session_id: convoy::domain::SessionId = sid.parse().unwrap();
    assert!(app.state.store.trails(session_id, None).await.unwrap().is_empty(), "deleted with the end");
}

on_every_backend!(
    the_creator_sets_moves_and_clears_the_point,
    arrivals_have_hysteresis_at_the_edge,
    trails_are_thinned_given_to_late_joiners_and_exported,
);
