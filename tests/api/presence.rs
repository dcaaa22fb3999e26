//! Presence, Phoenix style: `presence_state` on connect, then `presence_diff {joins,
//! leaves}`; one meta per connection, so closing one of two sockets is not leaving.

use std::time::Duration;

use convoy::sweeper::sweep_once;
use serde_json::{Value, json};

use super::helpers::*;

on_both_redis!(presence_spans_instances);
use super::proxy::{Proxy, through, upstream};

/// Connects with presence messages visible; returns the socket and its `presence_state`.
async fn connect(app: &TestApp, token: &str) -> (WsClient, Value) {
    let (ws, _) = app.connect(token).await;
    let mut ws = ws.with_presence();
    let state = ws.next_json().await;
    assert_eq!(state["type"], "presence_state", "presence_state follows session_state");
    (ws, state["data"].clone())
}

/// The phx_refs of `user` in a presence map.
fn refs(map: &Value, user: &str) -> Vec<String> {
    map[user]["metas"]
        .as_array()
        .map(|metas| metas.iter().map(|m| m["phx_ref"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The next `presence_diff` that has `user` in `joins` or `leaves` (as `side` says).
async fn diff_for(ws: &mut WsClient, side: &str, user: &str) -> Value {
    loop {
        let diff = ws.next_of_type("presence_diff").await;
        if diff["data"][side].get(user).is_some() {
            return diff["data"].clone();
        }
    }
}

async fn rest_presence(app: &TestApp, session_id: &str) -> Value {
    let response = app.get(&format!("/api/sessions/{session_id}/presence")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn presence_follows_connections_not_users(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = app.join(sid, "Ann").await;
    let bob = app.join(sid, "Bob").await;

    let (mut ann_ws, state) = connect(&app, &ann.token).await;
    assert_eq!(refs(&state, &ann.user_id).len(), 1, "Ann sees herself: {state}");
    let meta = &state[&ann.user_id]["metas"][0];
    assert_eq!(
        (meta["display_name"].as_str(), meta["user_id"].as_str()),
        (Some("Ann"), Some(ann.user_id.as_str()))
    );
    assert!(meta["online_at"].is_string());

    // Bob connects: Ann gets his join; his state has both.
    let (mut bob_phone, state) = connect(&app, &bob.token).await;
    assert_eq!(state.as_object().unwrap().len(), 2, "{state}");
    let phone_ref = refs(&state, &bob.user_id)[0].clone();
    let diff = diff_for(&mut ann_ws, "joins", &bob.user_id).await;
    assert_eq!(refs(&diff["joins"], &bob.user_id), vec![phone_ref.clone()]);
    assert_eq!(diff["leaves"], json!({}));

    // A second socket of Bob's is a second meta under the same user.
    let (mut bob_laptop, state) = connect(&app, &bob.token).await;
    assert_eq!(refs(&state, &bob.user_id).len(), 2);
    let diff = diff_for(&mut ann_ws, "joins", &bob.user_id).await;
    let laptop_ref = refs(&diff["joins"], &bob.user_id)[0].clone();
    assert_ne!(laptop_ref, phone_ref);
    let rest = rest_presence(&app, sid).await;
    assert_eq!((rest["users"].as_u64(), rest["connections"].as_u64()), (Some(2), Some(3)), "{rest}");
    assert_eq!(refs(&rest["presences"], &bob.user_id).len(), 2);

    // Closing one socket leaves that meta only: Bob is still present.
    bob_laptop.stream.close(None).await.unwrap();
    let diff = diff_for(&mut ann_ws, "leaves", &bob.user_id).await;
    assert_eq!(refs(&diff["leaves"], &bob.user_id), vec![laptop_ref]);
    assert_eq!(diff["joins"], json!({}));
    let rest = rest_presence(&app, sid).await;
    assert_eq!(refs(&rest["presences"], &bob.user_id), vec![phone_ref.clone()]);

    // The last one gone, Bob is gone.
    bob_phone.stream.close(None).await.unwrap();
    let diff = diff_for(&mut ann_ws, "leaves", &bob.user_id).await;
    assert_eq!(refs(&diff["leaves"], &bob.user_id), vec![phone_ref]);
    let rest = rest_presence(&app, sid).await;
    assert_eq!((rest["users"].as_u64(), rest["connections"].as_u64()), (Some(1), Some(1)));
    assert!(rest["presences"].get(&bob.user_id).is_none());
}

async fn presence_of_an_unknown_session_is_404(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let response = app.get(&format!("/api/sessions/{}/presence", uuid::Uuid::new_v4())).await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
    let response = app.get("/api/sessions/not-an-id/presence").await;
    assert_eq!(response.status(), 400);
}

on_every_backend!(presence_follows_connections_not_users, presence_of_an_unknown_session_is_404);

async fn presence_spans_instances(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let session = a.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = a.join(sid, "Ann").await;
    let bob = a.join(sid, "Bob").await;

    let (mut ann_ws, _) = connect(&a, &ann.token).await;
    let (mut bob_on_b, state) = connect(&b, &bob.token).await;
    assert_eq!(refs(&state, &ann.user_id).len(), 1, "B's snapshot has Ann on A: {state}");
    diff_for(&mut ann_ws, "joins", &bob.user_id).await;
    let (_bob_on_a, state) = connect(&a, &bob.token).await;
    assert_eq!(refs(&state, &bob.user_id).len(), 2, "one meta per socket, whichever instance: {state}");
    for app in [&a, &b] {
        let rest = rest_presence(app, sid).await;
        assert_eq!((rest["users"].as_u64(), rest["connections"].as_u64()), (Some(2), Some(3)), "{rest}");
    }

    // Bob's socket on B closes: Ann on A sees that meta leave, and Bob stays present.
    bob_on_b.stream.close(None).await.unwrap();
    let diff = diff_for(&mut ann_ws, "leaves", &bob.user_id).await;
    assert_eq!(refs(&diff["leaves"], &bob.user_id).len(), 1);
    let rest = rest_presence(&b, sid).await;
    assert_eq!(refs(&rest["presences"], &bob.user_id).len(), 1, "{rest}");
}

/// An instance that stops heartbeating (here: its Redis connection is cut, so to the others
/// it is gone) has its connections reaped and announced as leaves by the others' sweeps,
/// once even when two instances sweep at the same time; when it comes back, it rewrites
/// its presence and the session resynchronises.
#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_instance_is_reaped_once_and_restored() {
    let (_, redis_url) = scaled_urls();
    let proxy = Proxy::start(upstream(&redis_url)).await;
    let database_url = fresh_postgres_schema().await;
    // Taken for gone 5 s after its last heartbeat (15 s by default).
    let timeout = |c: &mut convoy::Config| c.presence_instance_timeout_seconds = 5;
    let a = spawn_with_redis(database_url.clone(), redis_url.clone(), timeout).await;
    let b = spawn_with_redis(database_url.clone(), redis_url.clone(), timeout).await;
    let c = spawn_with_redis(database_url, through(&redis_url, proxy.addr), timeout).await;
    let session = a.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = a.join(sid, "Ann").await;
    let bob = a.join(sid, "Bob").await;
    let cat = a.join(sid, "Cat").await;
    let (mut ann_on_a, _) = connect(&a, &ann.token).await;
    let (mut cat_on_b, _) = connect(&b, &cat.token).await;
    let (_bob_on_c, _) = connect(&c, &bob.token).await;
    for ws in [&mut ann_on_a, &mut cat_on_b] {
        diff_for(ws, "joins", &bob.user_id).await;
    }

    proxy.cut();
    // Readers skip entries of an instance whose heartbeat is older than 5 s; sweeps then
    // remove them and announce the leaves. A and B sweep together, again and again: each
    // socket must still hear Bob leave exactly once.
    let mut leaves = [0, 0];
    for _ in 0..300 {
        let (swept_a, swept_b) = tokio::join!(sweep_once(&a.state), sweep_once(&b.state));
        swept_a.unwrap();
        swept_b.unwrap();
        for (seen, ws) in leaves.iter_mut().zip([&mut ann_on_a, &mut cat_on_b]) {
            *seen += ws
                .drain(Duration::from_millis(50))
                .await
                .iter()
                .filter(|m| m["type"] == "presence_diff" && m["data"]["leaves"].get(&bob.user_id).is_some())
                .count();
        }
        if leaves.iter().all(|n| *n > 0) {
            break;
        }
    }
    let (swept_a, swept_b) = tokio::join!(sweep_once(&a.state), sweep_once(&b.state));
    swept_a.unwrap();
    swept_b.unwrap();
    ann_on_a.assert_silent(Duration::from_millis(300)).await;
    cat_on_b.assert_silent(Duration::from_millis(100)).await;
    assert_eq!(leaves, [1, 1], "each socket heard Bob leave once");
    let rest = rest_presence(&a, sid).await;
    assert!(rest["presences"].get(&bob.user_id).is_none(), "{rest}");

    // C is back: its heartbeat finds it was taken for gone, it rewrites its presence and the
    // session's sockets resynchronise, so Ann sees Bob again.
    proxy.restore();
    loop {
        let state = ann_on_a.next_of_type("presence_state").await;
        if !refs(&state["data"], &bob.user_id).is_empty() {
            break;
        }
    }
    let rest = rest_presence(&b, sid).await;
    assert_eq!(refs(&rest["presences"], &bob.user_id).len(), 1, "{rest}");
}
