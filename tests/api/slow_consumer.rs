//! A client that stops reading must not slow anyone else down or make the server hold an
//! unbounded backlog for it: its queue keeps one pending location per sender.

use convoy::domain::{SessionId, UserId};
use serde_json::json;

use super::helpers::*;

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

async fn a_client_that_never_reads_cannot_block_others_or_grow_memory(backend: Backend) {
    // A small kernel send buffer makes the server's writes to the stalled client block after
    // a few kilobytes instead of the megabytes loopback autotuning allows; what is measured
    // is convoy's own queue, which must stay bounded either way.
    let app = spawn_app_on(backend, |c| {
        c.tcp_send_buffer_bytes = Some(8 * 1024);
        c.rate_limit_enabled = false; // the senders stream as fast as they can
    })
    .await;
    let session = app.create_session(json!({})).await;
    let session_id: SessionId = session.session_id.parse().unwrap();
    let ann = app.join(&session.session_id, "Ann").await;
    let cat = app.join(&session.session_id, "Cat").await;
    let bob = app.join(&session.session_id, "Bob").await;
    let stalled = app.join(&session.session_id, "Stalled").await;

    let _stalled_ws = app.connect_stalled(&stalled.token).await;

    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let stalled_id: UserId = stalled.user_id.parse().unwrap();
    let stalled_depth = || {
        app.state
            .hub
            .queue_depths(session_id)
            .iter()
            .find(|(user, _)| *user == stalled_id)
            .map(|(_, depth)| *depth)
    };

    // Phase 1: move until the stalled connection's writer is blocked on its full socket,
    // which shows as updates waiting in its queue that stay there.
    let mut lat = 0.0;
    let mut blocked = false;
    for _ in 0..2_000 {
        for _ in 0..50 {
            lat += 0.0001;
            ann_ws.send_location(lat, 0.0).await;
        }
        if stalled_depth() >= Some(1) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if stalled_depth() >= Some(1) {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "the stalled client's socket never filled up");
    let rss_before = rss_bytes();

    // Phase 2: two senders stream 20,000 updates each; Bob keeps reading throughout.
    const UPDATES: u32 = 20_000;
    let reader = tokio::spawn(async move {
        let (mut ann_last, mut cat_last) = (0.0, 0.0);
        let mut received = 0u64;
        while ann_last != 10.0 + f64::from(UPDATES) / 1000.0 || cat_last != -f64::from(UPDATES) / 1000.0 {
            let message = bob_ws.next_of_type("location_broadcast").await;
            received += 1;
            let lat = message["data"]["lat"].as_f64().unwrap();
            if lat > 0.0 { ann_last = lat } else { cat_last = lat }
        }
        (received, bob_ws)
    });
    let mut deepest = 0;
    for i in 1..=UPDATES {
        ann_ws.send_location(10.0 + f64::from(i) / 1000.0, 0.0).await;
        cat_ws.send_location(-f64::from(i) / 1000.0, 0.0).await;
        if i % 100 == 0 {
            deepest = deepest.max(stalled_depth().expect("the stalled client is still connected"));
        }
    }
    let (received, mut bob_ws) = reader.await.expect("Bob saw both final positions");
    assert!(received >= 2, "Bob received {received} broadcasts");

    // However many updates came, the stalled queue held at most one per sender, plus a
    // fresh snapshot if the bus asked for a resync meanwhile (Redis under this load).
    let bound = if app.backend.uses_redis() { 3 } else { 2 };
    assert!(deepest <= bound, "the stalled queue grew to {deepest}");
    assert!((1..=bound).contains(&stalled_depth().unwrap()), "still stalled, still bounded");
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        let grown = after.saturating_sub(before);
        // 40,000 updates of ~150 bytes would be ~6 MB if queued; test and server share the process.
        assert!(grown < 64 * 1024 * 1024, "memory grew by {grown} bytes");
    }

    // Everyone else still gets new updates at once.
    ann_ws.send_location(1.5, 1.5).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 1.5);
    cat_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(cat_ws.next_of_type("pong").await["type"], "pong");
}

on_every_backend!(a_client_that_never_reads_cannot_block_others_or_grow_memory,);
