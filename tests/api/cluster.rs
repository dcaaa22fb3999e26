//! Two instances on one PostgreSQL and one Redis behave as one server.

use std::time::Duration;

use convoy::domain::SessionId;
use convoy::sweeper::sweep_once;
use futures_util::future::join_all;
use serde_json::json;

use super::helpers::*;

on_both_redis!(
    clients_on_two_instances_see_each_other_and_each_message_once,
    capacity_holds_across_instances,
    two_sweepers_announce_each_expired_session_exactly_once,
    activity_on_one_instance_keeps_the_session_alive_for_the_other_sweeper,
    delivery_rules_apply_across_instances,
    a_redis_batch_delay_delays_but_loses_and_reorders_nothing,
    three_instances_are_one_server,
);

async fn three_instances_are_one_server(redis: Redis) {
    let apps = spawn_group(redis, 3, |_| {}).await;
    let session = apps[0].create_session(json!({})).await;
    let mut members = Vec::new();
    for (app, name) in apps.iter().zip(["Ann", "Bob", "Cat"]) {
        let joined = app.join(&session.session_id, name).await;
        let (ws, _) = app.connect(&joined.token).await;
        members.push((joined, ws));
    }
    // Each one's move reaches the two on the other instances, once each.
    for sender in 0..3 {
        let lat = 10.0 + sender as f64;
        members[sender].1.send_location(lat, 0.0).await;
        let from = members[sender].0.user_id.clone();
        for (receiver, (_, ws)) in members.iter_mut().enumerate().filter(|(i, _)| *i != sender) {
            let message = loop {
                let message = ws.next_of_type("location_broadcast").await;
                if message["data"]["user_id"] == from {
                    break message;
                }
            };
            assert_eq!(message["data"]["lat"], lat, "{receiver} heard {sender}");
        }
    }
    // A chat message through the third instance reaches all three sockets, and the
    // session's presence on any instance lists all three.
    members[2].1.send_json(json!({ "type": "chat_message", "data": { "content": "here" } })).await;
    for (_, ws) in &mut members {
        assert_eq!(ws.next_of_type("new_message").await["data"]["content"], "here");
    }
    let presence: serde_json::Value =
        apps[1].get(&format!("/api/sessions/{}/presence", session.session_id)).await.json().await.unwrap();
    assert_eq!(presence["connections"], 3, "{presence}");
    // Nothing arrived twice.
    for (_, ws) in &mut members {
        let rest = ws.until_pong().await;
        assert!(
            rest.iter().all(|m| m["type"] != "location_broadcast" && m["type"] != "new_message"),
            "{rest:?}"
        );
    }
}

async fn clients_on_two_instances_see_each_other_and_each_message_once(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let (session, [ann, bob]) = a.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = a.connect(&ann.token).await;
    let (mut bob_on_a, _) = a.connect(&bob.token).await;

    // A join through B's REST API reaches sockets on A.
    let cat = b.join(&session.session_id, "Cat").await;
    assert_eq!(ann_ws.next_of_type("participant_joined").await["data"]["user_id"], cat.user_id);
    let (mut cat_on_b, _) = b.connect(&cat.token).await;

    // Movement crosses instances both ways, in order, and nobody gets anything twice (a
    // receiver may skip a position a newer one replaced, never repeat one).
    for i in 0..5 {
        ann_ws.send_location(10.0 + f64::from(i), 0.0).await;
    }
    for ws in [&mut bob_on_a, &mut cat_on_b] {
        let mut last = 0.0;
        while last < 14.0 {
            let lat = ws.next_of_type("location_broadcast").await["data"]["lat"].as_f64().unwrap();
            assert!(lat > last, "{lat} after {last}: out of order or twice");
            last = lat;
        }
    }
    cat_on_b.send_location(-1.0, -1.0).await;
    assert_eq!(ann_ws.next_of_type("location_broadcast").await["data"]["user_id"], cat.user_id);
    bob_on_a.next_of_type("location_broadcast").await;
    for ws in [&mut ann_ws, &mut bob_on_a, &mut cat_on_b] {
        ws.assert_silent(Duration::from_millis(300)).await;
    }

    // A direct message from A reaches its target on B, and only there.
    ann_ws
        .send_json(
            json!({ "type": "direct_message", "data": { "target_user": cat.user_id, "payload": "psst" } }),
        )
        .await;
    assert_eq!(cat_on_b.next_of_type("direct_message").await["data"]["from_user"], ann.user_id);
    bob_on_a.assert_silent(Duration::from_millis(200)).await;

    // A late joiner on B gets A's participants' locations in its snapshot.
    let dan = b.join(&session.session_id, "Dan").await;
    let (_, snapshot) = b.connect(&dan.token).await;
    let located: Vec<&str> = snapshot["data"]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["user_id"].as_str().unwrap())
        .collect();
    assert!(located.contains(&ann.user_id.as_str()) && located.contains(&cat.user_id.as_str()), "{snapshot}");

    // Removing a participant through B closes their socket on A.
    assert_eq!(b.remove(&session.session_id, &bob.user_id, &session.creator_token).await, 204);
    assert_eq!(bob_on_a.closed().await.map(|f| u16::from(f.code)), Some(1000));
    assert_eq!(cat_on_b.next_of_type("participant_left").await["data"]["user_id"], bob.user_id);

    // Ending the session through B closes the sockets on A.
    let ended =
        b.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token)).await;
    assert_eq!(ended.status(), 204);
    assert_eq!(ann_ws.next_of_type("session_ended").await["data"]["reason"], "ended_by_creator");
    assert_eq!(ann_ws.closed().await.map(|f| u16::from(f.code)), Some(1000));
    assert_eq!(cat_on_b.next_of_type("session_ended").await["data"]["reason"], "ended_by_creator");
}

async fn capacity_holds_across_instances(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |c| c.max_participants_per_session = 3).await;
    let session = a.create_session(json!({})).await;
    let path = format!("/api/sessions/{}/join", session.session_id);
    let joins = (0..12).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.post(&path, json!({ "display_name": format!("P{i}") }))
    });
    let statuses: Vec<u16> = join_all(joins).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 9, "{statuses:?}");
}

async fn two_sweepers_announce_each_expired_session_exactly_once(redis: Redis) {
    // Long sweep interval: the test steps both sweepers itself, at the same moment.
    let (a, b) = spawn_pair_on(redis, |c| c.session_idle_timeout_seconds = 1).await;
    let mut sessions = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..6 {
        let (session, [ann]) = a.session_with(["Ann"]).await;
        let bob = b.join(&session.session_id, "Bob").await;
        sockets.push(a.connect(&ann.token).await.0);
        sockets.push(b.connect(&bob.token).await.0);
        sessions.push(session.session_id.parse::<SessionId>().unwrap());
        let _ = i;
    }
    for app in [&a, &b] {
        app.advance(Duration::from_millis(1200)); // each instance's clock
    }
    let (from_a, from_b) = tokio::join!(sweep_once(&a.state), sweep_once(&b.state));
    let (from_a, from_b) = (from_a.unwrap().ended, from_b.unwrap().ended);
    let mut all: Vec<SessionId> = from_a.iter().chain(&from_b).copied().collect();
    all.sort();
    sessions.sort();
    assert_eq!(all, sessions, "a: {from_a:?} b: {from_b:?}");

    // Every socket, on either instance, was told once and closed.
    for ws in &mut sockets {
        assert_eq!(ws.next_of_type("session_ended").await["data"]["reason"], "expired");
        assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1000));
    }
}

async fn activity_on_one_instance_keeps_the_session_alive_for_the_other_sweeper(redis: Redis) {
    // B never flushes its activity to PostgreSQL during the test; A's sweeper must still
    // see it, through Redis, and leave the session alone.
    let idle = Duration::from_secs(600);
    let (a, b) = spawn_pair_on(redis, |c| {
        c.session_idle_timeout_seconds = idle.as_secs();
        c.activity_flush_interval_seconds = 3600;
    })
    .await;
    let session = a.create_session(json!({})).await;
    let ann = b.join(&session.session_id, "Ann").await;
    let (mut ann_on_b, _) = b.connect(&ann.token).await;
    // Ann moves every two thirds of the idle timeout, for twice the idle timeout.
    for i in 0..3 {
        for app in [&a, &b] {
            app.advance(idle * 2 / 3);
        }
        ann_on_b.send_location(1.0 + f64::from(i), 1.0).await;
        ann_on_b.assert_quiet().await; // B handled it
        b.state.bus.flush(WAIT).await; // and Redis has it
        assert!(sweep_once(&a.state).await.unwrap().ended.is_empty(), "A ended a session active on B");
    }
    for app in [&a, &b] {
        app.advance(idle + Duration::from_secs(1));
    }
    assert_eq!(sweep_once(&a.state).await.unwrap().ended.len(), 1, "idle once Ann stops");
}

async fn delivery_rules_apply_across_instances(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let (session, [ann]) = a.session_with(["Ann"]).await;
    let bob = b.join(&session.session_id, "Bob").await;
    let (mut ann_on_a, _) = a.connect(&ann.token).await;
    let (mut bob_on_b, _) = b.connect(&bob.token).await;

    ann_on_a.send_json(json!({ "type": "share_settings", "data": { "precision": "approximate" } })).await;
    ann_on_a.next_of_type("share_settings").await;
    ann_on_a.send_location(48.85661, 2.35222).await;
    let seen = bob_on_b.next_of_type("location_broadcast").await;
    assert_ne!(seen["data"]["lat"].as_f64(), Some(48.85661), "coarsened before it left instance A");
    let (_, snapshot) = b.connect(&bob.token).await;
    assert_eq!(snapshot["data"]["locations"][0]["lat"], seen["data"]["lat"], "B's snapshot is coarse too");

    // A viewer's filter on B applies to positions from A.
    bob_on_b.send_json(json!({ "type": "view_settings", "data": { "min_distance_m": 5000 } })).await;
    bob_on_b.next_of_type("view_settings").await;
    ann_on_a.send_json(json!({ "type": "share_settings", "data": { "precision": "exact" } })).await;
    ann_on_a.next_of_type("share_settings").await;
    ann_on_a.send_location(48.8567, 2.3523).await; // the first since the filter: delivered
    assert_eq!(bob_on_b.next_of_type("location_broadcast").await["data"]["lat"], 48.8567);
    ann_on_a.send_location(48.8600, 2.3600).await; // ~700 m on: filtered
    bob_on_b.assert_silent(Duration::from_millis(400)).await;

    ann_on_a.send_json(json!({ "type": "share_settings", "data": { "paused": true } })).await;
    assert_eq!(bob_on_b.next_of_type("location_cleared").await["data"]["user_id"], ann.user_id);
    let (_, snapshot) = b.connect(&bob.token).await;
    assert_eq!(snapshot["data"]["locations"], json!([]), "{snapshot}");
}

async fn a_redis_batch_delay_delays_but_loses_and_reorders_nothing(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |c| c.redis_batch_delay_ms = 50).await;
    let (session, [ann]) = a.session_with(["Ann"]).await;
    let bob = b.join(&session.session_id, "Bob").await;
    let (mut ann_on_a, _) = a.connect(&ann.token).await;
    let (mut bob_on_b, _) = b.connect(&bob.token).await;

    // A quick series lands in few pipelines; B still sees it in order, ending on the last.
    for i in 1..=20 {
        ann_on_a.send_location(f64::from(i), 0.0).await;
    }
    let mut last = 0.0;
    while last < 20.0 {
        let lat = bob_on_b.next_of_type("location_broadcast").await["data"]["lat"].as_f64().unwrap();
        assert!(lat > last, "{lat} after {last}: out of order or twice");
        last = lat;
    }
    bob_on_b.send_location(-5.0, 0.0).await;
    assert_eq!(ann_on_a.next_of_type("location_broadcast").await["data"]["lat"], -5.0);

    // The location cache behind snapshots has both, read from the other instance each
    // (written at most once a second per session: the flush writes what is held).
    for app in [&a, &b] {
        app.state.bus.flush(Duration::from_secs(5)).await;
    }
    let cat = a.join(&session.session_id, "Cat").await;
    for app in [&a, &b] {
        let (_, snapshot) = app.connect(&cat.token).await;
        let mut located: Vec<(String, f64)> = snapshot["data"]["locations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["user_id"].as_str().unwrap().to_owned(), l["lat"].as_f64().unwrap()))
            .collect();
        located.sort_by(|x, y| x.1.total_cmp(&y.1));
        assert_eq!(located, vec![(bob.user_id.clone(), -5.0), (ann.user_id.clone(), 20.0)], "{snapshot}");
    }
}
