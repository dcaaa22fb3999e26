//! Tracker apps (OwnTracks, Traccar Client, OsmAnd, GPSLogger) reporting to a participant's
//! tracker URL, with the payloads recorded in `tests/fixtures/tracker` as the apps document
//! them; what they report reaches the other participants' sockets like any position.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::helpers::*;

on_both_redis!(a_tracker_on_one_instance_is_seen_on_the_other);

/// A fixture with its time placeholders filled with `seconds_ago` before now.
fn fixture(name: &str, seconds_ago: i64) -> String {
    let path = format!("{}/tests/fixtures/tracker/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let at = Utc::now() - chrono::Duration::seconds(seconds_ago);
    text.trim()
        .replace("{TST_MS}", &at.timestamp_millis().to_string())
        .replace("{TST}", &at.timestamp().to_string())
        .replace("{ISO}", &at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

async fn post_json(app: &TestApp, url: &str, body: &str) -> reqwest::Response {
    app.client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, url: &str) -> reqwest::Response {
    app.client.get(url).send().await.unwrap()
}

/// The OwnTracks location fixture moved to `lat`, `seconds_ago` old.
fn owntracks_at(lat: f64, seconds_ago: i64) -> Value {
    let mut fix: Value = serde_json::from_str(&fixture("owntracks_location.json", seconds_ago)).unwrap();
    fix["lat"] = json!(lat);
    fix
}

async fn owntracks_fixture_reaches_sockets_and_the_answer_lists_friends(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob]) = app.session_with(["Ann Lee", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    bob_ws.send_location(45.0, 5.0).await;

    let response = post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 5)).await;
    assert_eq!(response.status(), 200);
    let seen = bob_ws.next_of_type("location_broadcast").await;
    let data = &seen["data"];
    assert_eq!(
        (data["user_id"].as_str(), data["lat"].as_f64()),
        (Some(ann.user_id.as_str()), Some(48.85833))
    );
    assert_eq!(
        (data["accuracy"].as_f64(), data["battery"].as_u64(), data["charging"].as_bool()),
        (Some(14.0), Some(62), Some(false))
    );
    assert_eq!((data["heading"].as_f64(), data["altitude"].as_f64()), (Some(270.0), Some(36.0)));
    assert!((data["speed"].as_f64().unwrap() - 5.0).abs() < 1e-3, "18 km/h is 5 m/s: {data}");

    // The answer: Bob's card and position, under a topic of his own, for the Friends view.
    // Bob's position reaches the location cache on its own schedule (Redis: spaced writes),
    // so the app's answer is awaited until it carries it, as the app would see at its next
    // report; reposting the same fix changes nothing.
    let mut friends: Value = response.json().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !friends.as_array().unwrap().iter().any(|f| f["_type"] == "location") {
        assert!(tokio::time::Instant::now() < deadline, "Bob's location never reached the answer: {friends}");
        let again = post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 5)).await;
        friends = again.json().await.unwrap();
    }
    let friends = friends.as_array().unwrap();
    let card = friends.iter().find(|f| f["_type"] == "card").expect("a card");
    assert_eq!((card["name"].as_str(), card["tid"].as_str()), (Some("Bob"), Some("BO")));
    let location = friends.iter().find(|f| f["_type"] == "location").expect("Bob's location");
    assert_eq!((location["lat"].as_f64(), location["lon"].as_f64()), (Some(45.0), Some(5.0)));
    assert_eq!(location["topic"], card["topic"]);
    assert!(location["tst"].is_i64() && location["acc"].is_i64(), "OwnTracks' integers: {location}");
    assert!(friends.iter().all(|f| f["name"] != "Ann Lee" && f["tid"] != "AL"), "Ann is not her own friend");

    // The other messages the app posts are answered 2xx and move nobody.
    let response = post_json(&app, &ann.tracker_url, &fixture("owntracks_other_types.json", 2)).await;
    assert_eq!(response.status(), 200);
    // An empty body (the app's "friend deleted" message) too.
    assert_eq!(app.client.post(&ann.tracker_url).send().await.unwrap().status(), 200);
    bob_ws.assert_quiet().await;
}

async fn an_offline_queue_out_of_order_leaves_the_newest_fix(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // 50 fixes a second apart, newest (lat 10.49) in the middle of the array.
    let mut queue: Vec<Value> =
        (0..50).map(|i| owntracks_at(10.0 + f64::from(i) / 100.0, 2 + 49 - i64::from(i))).collect();
    queue.swap(49, 20);
    let response = post_json(&app, &ann.tracker_url, &Value::Array(queue).to_string()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 10.49);
    bob_ws.assert_quiet().await;

    // A fix older than the live one, sent late, is accepted and replaces nothing.
    let response = post_json(&app, &ann.tracker_url, &owntracks_at(20.0, 20).to_string()).await;
    assert_eq!(response.status(), 200);
    bob_ws.assert_quiet().await;
    let (_, snapshot) = app.connect(&bob.token).await;
    let ann_at = snapshot_location(&snapshot, &ann.user_id).expect("Ann's position");
    assert_eq!(ann_at["lat"], 10.49, "session {}", session.session_id);
}

async fn osmand_traccar_and_gpslogger_requests_reach_sockets(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // Traccar Client (classic) and OsmAnd: the query string, GET or POST. Each fix newer
    // than the one before and within LOCATION_TTL_SECONDS (30 s), so each goes live.
    let response = get(&app, &format!("{}?{}", ann.tracker_url, fixture("osmand_query.txt", 25))).await;
    assert_eq!((response.status().as_u16(), response.text().await.unwrap()), (200, String::new()));
    let data = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (data["lat"].as_f64(), data["accuracy"].as_f64(), data["battery"].as_u64()),
        (Some(48.85833), Some(12.0), Some(71))
    );
    assert!((data["speed"].as_f64().unwrap() - 9.7 * 1852.0 / 3600.0).abs() < 1e-3, "knots: {data}");
    let form = app
        .client
        .post(&ann.tracker_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fixture("osmand_query.txt", 15).replace("lat=48.85833", "lat=48.9"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 48.9);

    // Traccar Client 9: its JSON body.
    let response = post_json(&app, &ann.tracker_url, &fixture("traccar_client.json", 8)).await;
    assert_eq!(response.status(), 200);
    let data = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (data["speed"].as_f64(), data["battery"].as_u64(), data["charging"].as_bool()),
        (Some(5.2), Some(48), Some(true))
    );

    // GPSLogger: the documented URL template, placeholders filled (speed in m/s).
    let response = get(&app, &format!("{}{}", ann.tracker_url, fixture("gpslogger_url.txt", 1))).await;
    assert_eq!(response.status(), 200);
    let data = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (data["speed"].as_f64(), data["heading"].as_f64(), data["battery"].as_u64()),
        (Some(1.4), Some(45.0), Some(88))
    );
}

on_every_backend!(
    owntracks_fixture_reaches_sockets_and_the_answer_lists_friends,
    an_offline_queue_out_of_order_leaves_the_newest_fix,
    osmand_traccar_and_gpslogger_requests_reach_sockets,
);

#[tokio::test]
async fn basic_auth_with_the_token_as_password_works_and_bad_tokens_get_401() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let token = ann.tracker_url.rsplit('/').next().unwrap().to_owned();
    let base = ann.tracker_url.trim_end_matches(&token).trim_end_matches('/').to_owned();

    let response = app
        .client
        .post(&base)
        .basic_auth("anything", Some(&token))
        .header("content-type", "application/json")
        .body(fixture("owntracks_location.json", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["user_id"], ann.user_id);

    let no_credentials = app.client.post(&base).send().await.unwrap();
    assert_eq!(no_credentials.status(), 401);
    assert!(no_credentials.headers().contains_key("www-authenticate"));
    // A JWT, a token of the right shape signed by nobody, and a wrong password: 401, JSON.
    let mut forged = token.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for url in [format!("{base}/{}", ann.token), format!("{base}/{forged}")] {
        let response = post_json(&app, &url, &fixture("owntracks_location.json", 1)).await;
        assert_eq!(error_code(response).await, "unauthorized", "{url}");
    }
    let response = app.client.post(&base).basic_auth("ann", Some("wrong")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    bob_ws.assert_quiet().await;
}

#[tokio::test]
async fn a_removed_participants_tracker_url_gets_401_and_stores_nothing() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    assert_eq!(app.remove(&session.session_id, &ann.user_id, &session.creator_token).await, 204);
    bob_ws.next_of_type("participant_left").await;

    for response in [
        post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 1)).await,
        get(&app, &format!("{}?{}", ann.tracker_url, fixture("osmand_query.txt", 1))).await,
    ] {
        assert_eq!(response.status(), 401);
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "token_revoked");
    }
    bob_ws.assert_quiet().await;
    let (_, snapshot) = app.connect(&bob.token).await;
    assert!(snapshot_location(&snapshot, &ann.user_id).is_none(), "nothing stored for Ann: {snapshot}");
}

#[tokio::test]
async fn malformed_requests_are_counted_and_never_a_5xx() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // OwnTracks: invalid locations are answered 200 (a refusal would jam the app's queue).
    for body in [
        json!({"_type": "location", "lat": 91.0, "lon": 2.0, "tst": 1}),
        json!({"_type": "location", "lat": "north"}),
        json!([{"_type": "location"}, {"_type": 7}]),
    ] {
        let response = post_json(&app, &ann.tracker_url, &body.to_string()).await;
        assert_eq!(response.status(), 200, "{body}");
        assert!(response.json::<Value>().await.unwrap().is_array());
    }
    // The OsmAnd protocol and Traccar's JSON: 400 naming the problem when nothing in the
    // request reads as a position; a position refused for its values (a time it cannot
    // have) is 200 and counted, as Traccar Client would retry it forever, blocking its queue.
    for (query, problem) in [("lat=abc&lon=2", "lat"), ("id=1&lon=2", "lat and lon")] {
        let response = get(&app, &format!("{}?{query}", ann.tracker_url)).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(problem), "{query}: {body}");
    }
    let long = "9".repeat(5_000);
    for query in ["lat=1&lon=2&timestamp=soon".to_owned(), format!("lat=1&lon=2&timestamp={long}x")] {
        assert_eq!(get(&app, &format!("{}?{query}", ann.tracker_url)).await.status(), 200, "{query}");
    }
    for body in ["{\"location\": {\"coords\": {}}}", "not json", "[1, 2]", "{\"foo\": 1}"] {
        let response = post_json(&app, &ann.tracker_url, body).await;
        assert_eq!(response.status(), 400, "{body}");
    }
    // A body over the limit (64 KiB): 413, in JSON like every other refusal.
    let huge = format!("[{}]", vec![fixture("owntracks_location.json", 1); 400].join(","));
    let response = post_json(&app, &ann.tracker_url, &huge).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "invalid_body");
    bob_ws.assert_quiet().await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let refused = |app_label: &str| {
        metric_sample(
            &metrics,
            &format!("convoy_tracker_messages_total{{app=\"{app_label}\",outcome=\"refused\"}}"),
        )
    };
    // At least this test's (other tests may count into the same process's metrics): three
    // OwnTracks locations, five OsmAnd requests (one of them the body that is not JSON),
    // three Traccar bodies.
    for (app_label, at_least) in [("owntracks", 3.0), ("osmand", 5.0), ("traccar_json", 3.0)] {
        assert!(refused(app_label).unwrap_or(0.0) >= at_least, "{app_label}: {metrics}");
    }
}

#[tokio::test]
async fn over_the_rate_limit_owntracks_gets_200_and_the_others_429() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.rate_limit_enabled = true;
        c.rate_limit_user_per_second = 1; // bursts of 2
    })
    .await;
    let (_, [ann, _bob]) = app.session_with(["Ann", "Bob"]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            get(&app, &format!("{}?{}", ann.tracker_url, fixture("osmand_query.txt", 1)))
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    for _ in 0..4 {
        let response = post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 1)).await;
        assert_eq!(response.status(), 200);
    }
}

/// A replaced URL that keeps reporting (the attacker who had it) spends a bucket of its own,
/// not the participant's: their new URL, and their sockets, keep working.
#[tokio::test]
async fn a_replaced_url_flooding_does_not_spend_the_participants_budget() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.rate_limit_enabled = true;
        c.rate_limit_user_per_second = 1; // bursts of 2
    })
    .await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let response = replace_tracker_url(&app, &session.session_id, Some(&ann.token)).await;
    let new_url = response.json::<Value>().await.unwrap()["tracker_url"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let old = get(&app, &format!("{}?{}", ann.tracker_url, fixture("osmand_query.txt", 2))).await;
        statuses.push(old.status().as_u16());
    }
    // Read and refused while its own bucket (1/s, bursts of 2) lasts, then not even read.
    assert_eq!(statuses[..2], [401, 401], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let response = get(&app, &format!("{new_url}?{}", fixture("osmand_query.txt", 1))).await;
    assert_eq!(response.status(), 200, "Ann's budget is untouched");
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["user_id"], ann.user_id);
}

async fn a_tracker_on_one_instance_is_seen_on_the_other(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let (session, [ann, bob]) = a.session_with(["Ann", "Bob"]).await;
    let (mut bob_on_b, _) = b.connect(&bob.token).await;
    // Ann shares only through apps, each reporting to instance A (her tracker URL names A),
    // at a latitude of its own: Bob, on B, sees each.
    let kinds = [
        ("OwnTracks", "application/json", fixture("owntracks_location.json", 20)),
        ("OsmAnd", "application/x-www-form-urlencoded", fixture("osmand_query.txt", 15)),
        ("Traccar Client 9", "application/json", fixture("traccar_client.json", 10)),
        ("GPSLogger", "application/x-www-form-urlencoded", fixture("gpslogger_url.txt", 5)[1..].to_owned()),
    ];
    for (step, (app, content_type, body)) in kinds.into_iter().enumerate() {
        let lat = 47.0 + step as f64 / 10.0;
        let body = body.replace("48.85833", &lat.to_string());
        let response = a
            .client
            .post(&ann.tracker_url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{app}");
        let seen = bob_on_b.next_of_type("location_broadcast").await["data"].clone();
        assert_eq!(
            (seen["user_id"].as_str(), seen["lat"].as_f64()),
            (Some(ann.user_id.as_str()), Some(lat)),
            "{app}"
        );
    }
    // B serves the same token (a URL rewritten to it): the token is all that matters.
    let on_b =
        format!("{}/t/{}", b.url("").trim_end_matches('/'), ann.tracker_url.rsplit('/').next().unwrap());
    let response =
        get(&b, &format!("{on_b}?{}", fixture("osmand_query.txt", 1).replace("48.85833", "46.0"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(bob_on_b.next_of_type("location_broadcast").await["data"]["lat"], 46.0);

    // Replaced on A: the old URL is refused on B at once (each request reads the participant).
    let replaced = a
        .client
        .post(a.url(&format!("/api/sessions/{}/tracker_url", session.session_id)))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    assert_eq!(post_json(&b, &on_b, &fixture("owntracks_location.json", 0)).await.status(), 401);
}

/// The app follows the participant's latest `share_settings`, kept after the socket that
/// sent them closed (the page is gone once the phone is locked: that is why the app shares).
#[tokio::test]
async fn the_apps_positions_follow_the_share_settings_after_the_page_closed() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_json(json!({ "type": "share_settings", "data": { "paused": true } })).await;
    ann_ws.next_of_type("share_settings").await;
    drop(ann_ws);

    let response = post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 4)).await;
    assert_eq!(response.status(), 200);
    let seen = bob_ws.until_pong().await;
    assert!(seen.iter().all(|m| m["type"] != "location_broadcast"), "paused, yet: {seen:?}");

    // Back on the page, sharing again but approximately; then the phone is locked again.
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws
        .send_json(
            json!({ "type": "share_settings", "data": { "paused": false, "precision": "approximate" } }),
        )
        .await;
    ann_ws.next_of_type("share_settings").await;
    drop(ann_ws);
    let response = post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 3)).await;
    assert_eq!(response.status(), 200);
    let coarse = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    let (lat, lng) = (coarse["lat"].as_f64().unwrap(), coarse["lng"].as_f64().unwrap());
    assert_eq!(coarse["user_id"], ann.user_id);
    assert!(lat != 48.85833 && lng != 2.29513, "the exact fix went out: {coarse}");
    assert!((lat - 48.85833).abs() < 0.01 && (lng - 2.29513).abs() < 0.01, "not the fix's cell: {coarse}");
    assert!(coarse["accuracy"].as_f64().unwrap() >= 700.0, "{coarse}");
    assert!(coarse.get("speed").is_none() && coarse.get("heading").is_none(), "{coarse}");
    // The snapshot a late joiner reads holds only the coarse position too.
    let (_, snapshot) = app.connect(&bob.token).await;
    let at = snapshot_location(&snapshot, &ann.user_id).expect("a position");
    assert_eq!((at["lat"].as_f64(), at["accuracy"].as_f64()), (Some(lat), coarse["accuracy"].as_f64()));

    // A page coming back says only `paused: false` (as the web page does): the app stays
    // approximate, since a field left out keeps its value.
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_json(json!({ "type": "share_settings", "data": { "paused": false } })).await;
    ann_ws.next_of_type("share_settings").await;
    drop(ann_ws);
    let response = post_json(
        &app,
        &ann.tracker_url,
        &fixture("owntracks_location.json", 2).replace("48.85833", "48.85834"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let still = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (still["lat"].as_f64(), still["accuracy"].as_f64()),
        (Some(lat), coarse["accuracy"].as_f64()),
        "{still}"
    );

    // Exact again, from another socket: the app's next fix is exact.
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_json(json!({ "type": "share_settings", "data": { "precision": "exact" } })).await;
    ann_ws.next_of_type("share_settings").await;
    let response = post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 1)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 48.85833);
}

/// The tracker token is the credential, in the path: no log line may carry it, even at the
/// most verbose level (every request's span, every refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_token_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("convoy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("convoy.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Binary::start_logging(&database_url, port, &[("LOG_LEVEL", "debug")], log.into()).await;
    let created = server.post("/api/sessions", json!({})).await;
    let sid = created["session_id"].as_str().unwrap().to_owned();
    let joined = server.post(&format!("/api/sessions/{sid}/join"), json!({ "display_name": "Ann" })).await;
    let tracker_url = joined["tracker_url"].as_str().unwrap().replace("localhost", "127.0.0.1");
    let token = tracker_url.rsplit('/').next().unwrap().to_owned();
    let url = format!("{}/t/{token}", server.base);
    // A position, a refused one, a refused OsmAnd request, the set-up answer.
    for request in [
        server
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(fixture("owntracks_location.json", 1)),
        server
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"_type":"location","lat":99,"lon":1}"#),
        server.client.get(format!("{url}?lat=x&lon=1")),
        server.client.get(format!("{url}/setup")),
    ] {
        let status = request.send().await.unwrap().status();
        assert!(status.is_success() || status == 400, "{status}");
    }
    server.signal("-TERM");
    assert!(server.wait().await.success());
    let written = std::fs::read_to_string(&log_path).unwrap();
    assert!(written.contains("/t/{token}"), "the requests were logged, token redacted:\n{written}");
    assert!(!written.contains(&token), "the token was logged:\n{written}");
}

/// The set-up answer gives every app its address, and each works as given: OsmAnd's and
/// GPSLogger's templates with their placeholders filled in as the apps fill them, Traccar
/// Client's QR content with its settings. A `tid` stays when an earlier joiner leaves.
#[tokio::test]
async fn every_apps_setup_address_works_and_tids_stay_when_someone_leaves() {
    let app = spawn_app().await;
    let (session, [first, ann, bob]) = app.session_with(["Al Ba", "Al Bo", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let setup: Value = get(&app, &format!("{}/setup", ann.tracker_url)).await.json().await.unwrap();
    assert_eq!((setup["tid"].as_str(), setup["report_every_s"].as_u64()), (Some("AL"), Some(15)));

    let traccar = setup["traccar_url"].as_str().unwrap();
    let (server_url, settings) = traccar.split_once('?').unwrap();
    assert_eq!(server_url, ann.tracker_url, "Traccar Client's server URL is the tracker URL");
    for wanted in ["id=convoy-AL", "interval=15", "accuracy=high", "distance=0"] {
        assert!(settings.split('&').any(|p| p == wanted), "{wanted} in {traccar}");
    }
    let qr = get(&app, &format!("{}/qr.svg?for=traccar", ann.tracker_url)).await;
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");
    assert!(qr.text().await.unwrap().starts_with("<?xml"));

    // OsmAnd fills {0}..{6}: lat, lon, time (ms), accuracy, altitude, speed (m/s), bearing.
    let now_ms = Utc::now().timestamp_millis() - 2000; // before GPSLogger's fix below
    let osmand = setup["osmand_url"].as_str().unwrap();
    let filled = [
        ("{0}", "48.1"),
        ("{1}", "2.1"),
        ("{2}", &now_ms.to_string()),
        ("{3}", "9.5"),
        ("{4}", "35"),
        ("{5}", "1.5"),
        ("{6}", "90"),
    ]
    .iter()
    .fold(osmand.to_owned(), |url, (placeholder, value)| url.replace(placeholder, value));
    assert_eq!(get(&app, &filled).await.status(), 200);
    let seen = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (seen["lat"].as_f64(), seen["speed"].as_f64(), seen["heading"].as_f64()),
        (Some(48.1), Some(1.5), Some(90.0))
    );

    // GPSLogger fills %LAT and the rest (its time in ISO 8601, its battery in percent).
    let gpslogger = setup["gpslogger_url"].as_str().unwrap();
    let iso = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let filled = [
        ("%LAT", "48.2"),
        ("%LON", "2.2"),
        ("%TIMESTAMP", &iso),
        ("%ACC", "5"),
        ("%ALT", "40"),
        ("%SPD", "0"),
        ("%DIR", "0"),
        ("%BATT", "55"),
        ("%ISCHARGING", "true"),
    ]
    .iter()
    .fold(gpslogger.to_owned(), |url, (placeholder, value)| url.replace(placeholder, value));
    assert_eq!(get(&app, &filled).await.status(), 200);
    let seen = bob_ws.next_of_type("location_broadcast").await["data"].clone();
    assert_eq!(
        (seen["lat"].as_f64(), seen["battery"].as_u64(), seen["charging"].as_bool()),
        (Some(48.2), Some(55), Some(true))
    );

    // "Al Ba" took AB before Ann; once gone, Ann keeps AL (her app was set up with it).
    assert_eq!(app.remove(&session.session_id, &first.user_id, &first.token).await, 204);
    let setup: Value = get(&app, &format!("{}/setup", ann.tracker_url)).await.json().await.unwrap();
    assert_eq!(setup["tid"], "AL");
    let friends: Value = post_json(&app, &bob.tracker_url, "[]").await.json().await.unwrap();
    let tids: Vec<_> = friends
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["_type"] == "card")
        .map(|f| f["tid"].clone())
        .collect();
    assert_eq!(tids, [json!("AL")], "{friends}");
}

/// `POST /api/sessions/{id}/tracker_url` with Ann's token.
async fn replace_tracker_url(app: &TestApp, session_id: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url(&format!("/api/sessions/{session_id}/tracker_url")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A leaked tracker URL is replaced: the old one stops at once (nothing it sends is stored),
/// the new one works; only the participant's own token of this session can ask.
#[tokio::test]
async fn a_replaced_tracker_url_stops_working_and_the_new_one_works() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (other, [stranger]) = app.session_with(["Eve"]).await;
    let sid = session.session_id.as_str();
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    assert_eq!(replace_tracker_url(&app, sid, None).await.status(), 401);
    assert_eq!(replace_tracker_url(&app, sid, Some(&session.creator_token)).await.status(), 403);
    assert_eq!(replace_tracker_url(&app, sid, Some(&stranger.token)).await.status(), 403);
    assert_eq!(replace_tracker_url(&app, &other.session_id, Some(&ann.token)).await.status(), 403);

    let response = replace_tracker_url(&app, sid, Some(&ann.token)).await;
    assert_eq!(response.status(), 200);
    let new_url = response.json::<Value>().await.unwrap()["tracker_url"].as_str().unwrap().to_owned();
    assert_ne!(new_url, ann.tracker_url);
    assert!(new_url.starts_with(ann.tracker_url.rsplit_once("/t/").unwrap().0));

    for old in [
        post_json(&app, &ann.tracker_url, &fixture("owntracks_location.json", 2)).await,
        get(&app, &format!("{}/setup", ann.tracker_url)).await,
    ] {
        assert_eq!(old.status(), 401);
        assert_eq!(error_code(old).await, "token_revoked");
    }
    let seen = bob_ws.until_pong().await;
    assert!(seen.iter().all(|m| m["type"] != "location_broadcast"), "the old URL moved Ann: {seen:?}");

    assert_eq!(post_json(&app, &new_url, &fixture("owntracks_location.json", 1)).await.status(), 200);
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["user_id"], ann.user_id);
    let setup: Value = get(&app, &format!("{new_url}/setup")).await.json().await.unwrap();
    assert_eq!(setup["tracker_url"], new_url.as_str());
    assert!(setup["traccar_url"].as_str().unwrap().starts_with(&new_url));

    // Replaced again: the second one stops too. Once Ann leaves, she cannot ask.
    let newer = replace_tracker_url(&app, sid, Some(&ann.token)).await.json::<Value>().await.unwrap();
    assert_ne!(newer["tracker_url"], new_url.as_str());
    assert_eq!(get(&app, &format!("{new_url}/setup")).await.status(), 401);
    assert_eq!(app.remove(sid, &ann.user_id, &ann.token).await, 204);
    let response = replace_tracker_url(&app, sid, Some(&ann.token)).await;
    assert_eq!((response.status().as_u16(), error_code(response).await.as_str()), (401, "token_revoked"));
}
