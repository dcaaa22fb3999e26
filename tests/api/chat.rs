//! Chat: session chat (in the snapshot, paged over REST) and location-based local rooms
//! (seed 004), stored durably, with retention.

use std::time::Duration;

use convoy::domain::{ChatRoom, RoomId};
use convoy::store::NewChatMessage;
use convoy::sweeper::sweep_once;
use serde_json::{Value, json};

use super::helpers::*;

on_both_redis!(chat_and_rooms_span_instances);

/// Places for one test. Local rooms are global (any session, any test on the same Redis),
/// so each test meets in its own random cell.
struct Places {
    /// The centre of a cell, and a point about 50 m away in the same cell.
    here: (f64, f64),
    nearby: (f64, f64),
    /// About 1.2 km north: another cell.
    elsewhere: (f64, f64),
    room: String,
}

fn places() -> Places {
    let seed = uuid::Uuid::new_v4().as_u128();
    let lat = (seed % 120_000) as f64 / 1000.0 - 60.0;
    let lng = ((seed >> 32) % 340_000) as f64 / 1000.0 - 170.0;
    let room = RoomId::at(lat, lng).unwrap();
    let here = room.centre();
    Places {
        here,
        nearby: (here.0 + 0.0004, here.1 + 0.0005),
        elsewhere: (here.0 + 0.011, here.1),
        room: room.to_string(),
    }
}

fn chat(content: &str) -> Value {
    json!({ "type": "chat_message", "data": { "content": content } })
}

fn join_local((lat, lng): (f64, f64)) -> Value {
    json!({ "type": "join_local_chat", "data": { "lat": lat, "lng": lng } })
}

async fn get_with(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn post_with(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
}

fn contents(messages: &Value) -> Vec<&str> {
    messages.as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect()
}

async fn session_chat_reaches_everyone_and_is_kept(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = app.join(sid, "Ann").await;
    let bob = app.join(sid, "Bob").await;
    let (mut ann_ws, snapshot) = app.connect(&ann.token).await;
    assert_eq!(snapshot["data"]["messages"], json!([]));
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    ann_ws.send_json(chat("  hello there \n")).await;
    // Everyone gets it, the sender too: that is the acknowledgement that it is stored.
    for ws in [&mut ann_ws, &mut bob_ws] {
        let message = ws.next_of_type("new_message").await["data"].clone();
        assert_eq!(message["content"], "hello there", "trimmed");
        assert_eq!(
            (message["room_id"].as_str(), message["user_id"].as_str()),
            (Some(sid.as_str()), Some(ann.user_id.as_str()))
        );
        assert_eq!(
            (message["display_name"].as_str(), message["avatar_color"].as_str()),
            (Some("Ann"), Some("#FF5733"))
        );
        assert!(message["id"].as_str().unwrap().parse::<i64>().is_ok(), "a string id: {message}");
        chrono::DateTime::parse_from_rfc3339(message["timestamp"].as_str().unwrap()).expect("RFC 3339");
    }
    for text in ["two", "three", "four"] {
        bob_ws.send_json(chat(text)).await;
        ann_ws.next_of_type("new_message").await;
    }

    // A new socket's snapshot carries the history, oldest first.
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(contents(&snapshot["data"]["messages"]), vec!["hello there", "two", "three", "four"]);

    // REST pages back through it, for the session's participants and creator only.
    let path = format!("/api/sessions/{sid}/messages");
    let all: Value = get_with(&app, &path, Some(&bob.token)).await.json().await.unwrap();
    assert_eq!(contents(&all["messages"]), vec!["hello there", "two", "three", "four"]);
    assert_eq!(all["has_more"], false);
    let newest: Value =
        get_with(&app, &format!("{path}?limit=2"), Some(&ann.token)).await.json().await.unwrap();
    assert_eq!((contents(&newest["messages"]), &newest["has_more"]), (vec!["three", "four"], &json!(true)));
    let before = newest["messages"][0]["id"].as_str().unwrap();
    let older: Value =
        get_with(&app, &format!("{path}?before={before}&limit=2"), Some(&session.creator_token))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(
        (contents(&older["messages"]), &older["has_more"]),
        (vec!["hello there", "two"], &json!(false))
    );

    let other = app.create_session(json!({})).await;
    let stranger = app.join(&other.session_id, "Stranger").await;
    assert_eq!(get_with(&app, &path, None).await.status(), 401);
    assert_eq!(get_with(&app, &path, Some(&stranger.token)).await.status(), 403);
    for query in ["limit=0", "limit=101", "before=abc", "before=-3", "colour=red"] {
        let response = get_with(&app, &format!("{path}?{query}"), Some(&ann.token)).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(error_code(response).await, "invalid_query");
    }
    let missing = format!("/api/sessions/{}/messages", uuid::Uuid::new_v4());
    assert_eq!(get_with(&app, &missing, Some(&ann.token)).await.status(), 404);
}

async fn bad_chat_gets_an_error_and_keeps_the_connection(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    for (message, needle) in [
        (chat("   "), "content: must not be empty"),
        (chat(&"x".repeat(2001)), "content: must be at most 2000 characters"),
        (json!({ "type": "chat_message", "data": {} }), "chat_message needs data {content}"),
        (json!({ "type": "message", "data": { "content": "hi" } }), "join_local_chat"),
        (json!({ "type": "leave_local_chat" }), "not in a local room"),
        (join_local((91.0, 0.0)), "lat"),
    ] {
        ann_ws.send_json(message.clone()).await;
        let error = ann_ws.next_of_type("error").await;
        assert!(error["data"]["message"].as_str().unwrap().contains(needle), "{message} -> {error}");
    }
    bob_ws.assert_quiet().await;
    ann_ws.send_json(chat(&"y".repeat(2000))).await;
    assert_eq!(bob_ws.next_of_type("new_message").await["data"]["content"].as_str().unwrap().len(), 2000);
}

async fn local_rooms_group_people_by_cell(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let Places { here, nearby, elsewhere, room } = places();
    // Local rooms are not bound to a session: people from two sessions meet there.
    let trip = app.create_session(json!({})).await;
    let other = app.create_session(json!({})).await;
    let ann = app.join(&trip.session_id, "Ann").await;
    let bob = app.join(&trip.session_id, "Bob").await;
    let cat = app.join(&other.session_id, "Cat").await;
    let dan = app.join(&other.session_id, "Dan").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;

    ann_ws.send_json(join_local(here)).await;
    let joined = ann_ws.next_json().await;
    assert_eq!(joined["type"], "room_joined");
    assert_eq!(joined["data"]["room_id"], room);
    assert_eq!(joined["data"]["user_count"], 1);
    assert!(joined["data"]["name"].as_str().unwrap().starts_with("Near "));
    let history = ann_ws.next_json().await;
    assert_eq!(
        (history["type"].as_str(), &history["data"]["messages"]),
        (Some("message_history"), &json!([]))
    );

    // Seed 004's names, and latitude/longitude, work too.
    cat_ws
        .send_json(
            json!({ "type": "JoinLocalChat", "data": { "latitude": nearby.0, "longitude": nearby.1 } }),
        )
        .await;
    assert_eq!(cat_ws.next_of_type("room_joined").await["data"]["user_count"], 2);
    let user_joined = ann_ws.next_of_type("user_joined").await["data"].clone();
    assert_eq!(
        user_joined,
        json!({ "room_id": room, "user_id": cat.user_id, "display_name": "Cat", "avatar_color": "#FF5733" })
    );
    cat_ws.send_json(json!({ "type": "Message", "data": { "content": "anyone for coffee?" } })).await;
    for ws in [&mut ann_ws, &mut cat_ws] {
        let message = ws.next_of_type("new_message").await["data"].clone();
        assert_eq!(
            (message["room_id"].as_str(), message["content"].as_str()),
            (Some(room.as_str()), Some("anyone for coffee?"))
        );
        assert_eq!(message["user_id"], cat.user_id);
    }
    // Bob, in Ann's session but not in the room, hears nothing of it.
    bob_ws.assert_quiet().await;

    // A late joiner gets the history.
    let (mut dan_ws, _) = app.connect(&dan.token).await;
    dan_ws.send_json(join_local(here)).await;
    assert_eq!(dan_ws.next_of_type("room_joined").await["data"]["user_count"], 3);
    assert_eq!(
        contents(&dan_ws.next_of_type("message_history").await["data"]["messages"]),
        vec!["anyone for coffee?"]
    );

    // Moving to another cell leaves the first room.
    cat_ws.send_json(join_local(elsewhere)).await;
    let moved = cat_ws.next_of_type("room_joined").await;
    assert_ne!(moved["data"]["room_id"], room);
    assert_eq!(moved["data"]["user_count"], 1);
    for ws in [&mut ann_ws, &mut dan_ws] {
        assert_eq!(
            ws.next_of_type("user_left").await["data"],
            json!({ "room_id": room, "user_id": cat.user_id })
        );
    }
    // Leaving explicitly, and disconnecting, are leaves too.
    ann_ws.send_json(json!({ "type": "leave_local_chat" })).await;
    assert_eq!(dan_ws.next_json().await["data"], json!({ "room_id": room, "user_id": ann.user_id }));
    ann_ws.send_json(json!({ "type": "message", "data": { "content": "still here?" } })).await;
    assert_eq!(ann_ws.next_of_type("error").await["data"]["code"], "not_in_room");

    // A user is in the room while any of their sockets is: one join, one leave.
    let (mut ann_phone, _) = app.connect(&ann.token).await;
    let (mut ann_tablet, _) = app.connect(&ann.token).await;
    ann_phone.send_json(join_local(here)).await;
    assert_eq!(dan_ws.next_json().await["type"], "user_joined");
    ann_tablet.send_json(join_local(nearby)).await;
    assert_eq!(ann_tablet.next_of_type("room_joined").await["data"]["user_count"], 2, "Ann and Dan");
    // Joining the cell one is already in changes nothing for the others.
    ann_phone.send_json(join_local(nearby)).await;
    assert_eq!(ann_phone.next_of_type("room_joined").await["data"]["room_id"], room);
    ann_phone.next_of_type("message_history").await;
    ann_phone.stream.close(None).await.unwrap();
    dan_ws.assert_silent(Duration::from_millis(300)).await; // the tablet is still there
    ann_tablet.stream.close(None).await.unwrap();
    assert_eq!(dan_ws.next_json().await["data"], json!({ "room_id": room, "user_id": ann.user_id }));
    dan_ws.assert_silent(Duration::from_millis(200)).await;
}

async fn rooms_over_rest(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let Places { here, nearby, room, .. } = places();
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_json(join_local(nearby)).await;
    ann_ws.next_of_type("message_history").await;

    let near: Value =
        app.get(&format!("/api/rooms?lat={}&lng={}", here.0, here.1)).await.json().await.unwrap();
    let rooms = near["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 9, "the cell and its eight neighbours: {near}");
    assert_eq!((rooms[0]["room_id"].as_str(), &rooms[0]["user_count"]), (Some(room.as_str()), &json!(1)));
    assert!(rooms[1..].iter().all(|r| r["user_count"] == 0 && r["room_id"] != room));
    let found: Value =
        app.post("/api/rooms/join", json!({ "lat": here.0, "lng": here.1 })).await.json().await.unwrap();
    assert_eq!((found["room_id"].as_str(), &found["user_count"]), (Some(room.as_str()), &json!(1)));

    // Posting over REST reaches the sockets in the room and lands in its history.
    let path = format!("/api/rooms/{room}/messages");
    let posted = post_with(&app, &path, &bob.token, json!({ "content": " from the web " })).await;
    assert_eq!(posted.status(), 201);
    let posted: Value = posted.json().await.unwrap();
    assert_eq!(
        (posted["content"].as_str(), posted["room_id"].as_str()),
        (Some("from the web"), Some(room.as_str()))
    );
    let live = ann_ws.next_of_type("new_message").await["data"].clone();
    assert_eq!(live, posted);
    let history: Value = get_with(&app, &path, Some(&ann.token)).await.json().await.unwrap();
    assert_eq!(contents(&history["messages"]), vec!["from the web"]);

    // Errors name the problem.
    assert_eq!(get_with(&app, &path, None).await.status(), 401);
    assert_eq!(post_with(&app, &path, &session.creator_token, json!({ "content": "x" })).await.status(), 403);
    let empty = post_with(&app, &path, &bob.token, json!({ "content": "  " })).await;
    assert_eq!(empty.status(), 422);
    assert_eq!(error_code(empty).await, "invalid_input");
    let bad_room = get_with(&app, "/api/rooms/not-a-cell/messages", Some(&ann.token)).await;
    assert_eq!(bad_room.status(), 400);
    assert_eq!(app.get("/api/rooms?lat=95&lng=0").await.status(), 422);
    assert_eq!(app.get("/api/rooms?lat=north&lng=0").await.status(), 400);
    assert_eq!(app.get("/api/rooms").await.status(), 400);
    assert_eq!(app.remove(&session.session_id, &bob.user_id, &bob.token).await, 204);
    assert_eq!(post_with(&app, &path, &bob.token, json!({ "content": "x" })).await.status(), 401);
}

async fn retention_deletes_old_chat_and_ended_sessions(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.chat_retention_hours = 1;
        c.session_retention_hours = 0;
    })
    .await;
    let Places { room, .. } = places();
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = app.join(sid, "Ann").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_json(chat("young")).await;
    ann_ws.next_of_type("new_message").await;
    // Two messages written two hours ago, one per kind of room.
    let author = app
        .state
        .store
        .participant(sid.parse().unwrap(), ann.user_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    for room in [ChatRoom::Session(sid.parse().unwrap()), ChatRoom::Local(room.parse().unwrap())] {
        let old = NewChatMessage {
            room,
            user_id: author.user_id,
            display_name: author.display_name.clone(),
            avatar_color: author.avatar_color.clone(),
            content: "old".into(),
            created_at: two_hours_ago,
        };
        app.state.store.add_message(&old, 5000).await.unwrap();
    }

    let report = sweep_once(&app.state).await.unwrap();
    assert!(report.deleted_messages >= 2, "{report:?}");
    assert_eq!(report.deleted_sessions, 0, "a live session is never deleted");
    let history: Value = get_with(&app, &format!("/api/sessions/{sid}/messages"), Some(&ann.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(contents(&history["messages"]), vec!["young"], "only the old one went");
    let local: Value =
        get_with(&app, &format!("/api/rooms/{room}/messages"), Some(&ann.token)).await.json().await.unwrap();
    assert_eq!(local["messages"], json!([]));

    // An ended session goes after SESSION_RETENTION_HOURS, with its participants and chat.
    let ended = app.delete(&format!("/api/sessions/{sid}"), Some(&session.creator_token)).await;
    assert_eq!(ended.status(), 204);
    app.advance(Duration::from_millis(5));
    assert_eq!(sweep_once(&app.state).await.unwrap().deleted_sessions, 1);
    assert_eq!(app.get(&format!("/api/sessions/{sid}")).await.status(), 404);
    let session_id = sid.parse().unwrap();
    assert!(app.state.store.participants(session_id).await.unwrap().is_empty());
    assert!(
        app.state.store.messages(ChatRoom::Session(session_id), None, 10).await.unwrap().is_empty(),
        "chat went too"
    );
}

async fn room_posts_over_rest_are_rate_limited(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.rate_limit_user_per_second = 1).await; // bursts of 2
    let Places { room, .. } = places();
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let path = format!("/api/rooms/{room}/messages");
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = post_with(&app, &path, &ann.token, json!({ "content": format!("n{i}") })).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(error_code(response).await, "rate_limited");
        }
    }
    assert_eq!(&statuses[..2], &[201, 201]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}

on_every_backend!(
    session_chat_reaches_everyone_and_is_kept,
    bad_chat_gets_an_error_and_keeps_the_connection,
    local_rooms_group_people_by_cell,
    rooms_over_rest,
    retention_deletes_old_chat_and_ended_sessions,
    room_posts_over_rest_are_rate_limited,
);

async fn chat_and_rooms_span_instances(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let Places { here, nearby, room, .. } = places();
    let (session, [ann, bob]) = a.session_with(["Ann", "Bob"]).await;
    let (mut ann_on_a, _) = a.connect(&ann.token).await;
    let (mut bob_on_b, _) = b.connect(&bob.token).await;

    bob_on_b.send_json(chat("from b")).await;
    assert_eq!(ann_on_a.next_of_type("new_message").await["data"]["content"], "from b");
    let history: Value =
        get_with(&a, &format!("/api/sessions/{}/messages", session.session_id), Some(&ann.token))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(contents(&history["messages"]), vec!["from b"]);

    ann_on_a.send_json(join_local(here)).await;
    ann_on_a.next_of_type("message_history").await;
    bob_on_b.send_json(join_local(nearby)).await;
    assert_eq!(bob_on_b.next_of_type("room_joined").await["data"]["user_count"], 2, "counts span instances");
    assert_eq!(ann_on_a.next_of_type("user_joined").await["data"]["user_id"], bob.user_id);
    bob_on_b.send_json(json!({ "type": "message", "data": { "content": "hi from b" } })).await;
    assert_eq!(ann_on_a.next_of_type("new_message").await["data"]["room_id"], room);
    let rooms: Value =
        a.get(&format!("/api/rooms?lat={}&lng={}", here.0, here.1)).await.json().await.unwrap();
    assert_eq!(rooms["rooms"][0]["user_count"], 2);
    bob_on_b.stream.close(None).await.unwrap();
    assert_eq!(ann_on_a.next_of_type("user_left").await["data"]["user_id"], bob.user_id);
}

/// A message acknowledged to its sender (its own `new_message`) survives kill -9.
async fn acknowledged_messages_survive_kill_9(database_url: &str) {
    let Places { here, room, .. } = places();
    let server = Binary::start(database_url).await;
    let port = server.port;
    let created = server.post("/api/sessions", json!({})).await;
    let sid = created["session_id"].as_str().unwrap().to_owned();
    let joined = server.post(&format!("/api/sessions/{sid}/join"), json!({ "display_name": "Ann" })).await;
    let token = joined["websocket_token"].as_str().unwrap().to_owned();
    let mut ws = server.connect(&token).await;
    ws.send_json(json!({ "type": "join_local_chat", "data": { "lat": here.0, "lng": here.1 } })).await;
    ws.next_of_type("message_history").await;
    ws.send_json(chat("kept in the session")).await;
    ws.send_json(json!({ "type": "message", "data": { "content": "kept in the room" } })).await;
    assert_eq!(ws.next_of_type("new_message").await["data"]["content"], "kept in the session");
    assert_eq!(ws.next_of_type("new_message").await["data"]["content"], "kept in the room");

    server.signal("-KILL");
    assert_eq!(server.wait().await.code(), None, "killed, not exited");
    let server = Binary::start_on(database_url, port).await;
    let ws = server.connect(&token).await;
    drop(ws);
    let auth = |path: String| server.client.get(format!("{}{path}", server.base)).bearer_auth(&token);
    let session: Value =
        auth(format!("/api/sessions/{sid}/messages")).send().await.unwrap().json().await.unwrap();
    assert_eq!(contents(&session["messages"]), vec!["kept in the session"]);
    let history: Value =
        auth(format!("/api/rooms/{room}/messages")).send().await.unwrap().json().await.unwrap();
    assert_eq!(contents(&history["messages"]), vec!["kept in the room"]);
}

#[cfg(unix)]
#[tokio::test]
async fn acknowledged_messages_survive_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    acknowledged_messages_survive_kill_9(&format!("sqlite://{}", dir.path().join("c.db").display())).await;
}

#[cfg(unix)]
#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test]
async fn acknowledged_messages_survive_kill_9_on_postgres() {
    acknowledged_messages_survive_kill_9(&fresh_postgres_schema().await).await;
}
