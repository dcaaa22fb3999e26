//! `/metrics` and `/info`. The metrics recorder is process-wide and tests run in parallel,
//! so these assert lower bounds, never exact totals.

use serde_json::{Value, json};

use super::helpers::*;

#[tokio::test]
async fn metrics_count_requests_messages_and_broadcasts() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    for i in 0..3 {
        ann_ws.send_location(f64::from(i), 1.0).await;
        assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], f64::from(i));
    }
    ann_ws.send_json(json!({ "type": "nonsense" })).await;
    ann_ws.next_of_type("error").await;

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let at_least = |series: &str, min: f64| {
        let value = metric_sample(&text, series).unwrap_or_else(|| panic!("{series} missing from /metrics"));
        assert!(value >= min, "{series} = {value}, expected >= {min}");
    };
    at_least(r#"convoy_ws_messages_in_total{type="location_update"}"#, 3.0);
    at_least(r#"convoy_ws_messages_in_total{type="invalid"}"#, 1.0);
    at_least("convoy_ws_connections", 2.0);
    at_least("convoy_ws_frames_out_total", 5.0);
    at_least("convoy_broadcast_fanout_seconds_count", 3.0);
    at_least(r#"convoy_http_requests_total{method="POST",route="/api/sessions",status="201"}"#, 1.0);
    at_least(
        r#"convoy_http_requests_total{method="POST",route="/api/sessions/{session_id}/join",status="201"}"#,
        2.0,
    );
    at_least(r#"convoy_http_request_duration_seconds_count{method="POST",route="/api/sessions"}"#, 1.0);
    assert!(text.contains("# HELP convoy_ws_frames_coalesced_total"), "described even before it counts");
}

#[tokio::test]
async fn info_names_the_instance_and_the_limits_in_force() {
    let app = spawn_app_with_limits().await;
    let info: Value = app.get("/info").await.json().await.unwrap();
    assert_eq!(info["name"], "convoy");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["instance_id"], app.state.instance_id.to_string());
    assert_eq!((info["database"].as_str(), info["bus"].as_str()), (Some("sqlite"), Some("in-process")));
    assert_eq!(info["limits"]["max_connections"], 123);
    assert_eq!(info["limits"]["max_participants_per_session"], 7);
    assert_eq!(info["limits"]["location_ttl_seconds"], 30);
    assert_eq!(info["limits"]["ws_max_message_bytes"], 65536);
    // What a client needs to stay within the limits of an open server.
    assert_eq!(info["limits"]["max_publish_bytes"], 4096);
    assert_eq!(info["limits"]["batch_windows_ms"], serde_json::json!([10, 25, 50, 100, 250, 500, 1000]));
    assert_eq!(info["limits"]["max_connections_per_participant"], 10);
    assert_eq!(info["limits"]["rate_limit_user_bytes_per_second"], 262_144);
    assert_eq!(info["limits"]["token_rotation_grace_seconds"], 60);
}

async fn spawn_app_with_limits() -> TestApp {
    spawn_app_on(Backend::Embedded, |c| {
        c.max_connections = 123;
        c.max_participants_per_session = 7;
    })
    .await
}

#[tokio::test]
async fn admin_listen_moves_metrics_and_detailed_health_off_the_public_address() {
    let app =
        spawn_app_on(Backend::Embedded, |c| c.admin_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = format!("http://{}", app.admin.expect("an admin address"));
    for path in ["/metrics", "/health/detailed"] {
        let public = app.get(path).await;
        assert_eq!(public.status(), 404, "{path} is not public");
        assert_eq!(error_code(public).await, "not_found");
        let private = app.client.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(private.status(), 200, "{path} on the admin address");
    }
    let text = app.client.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("convoy_ws_connections"));
    // The rest stays public, and nothing else is on the admin address.
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert_eq!(app.get("/info").await.status(), 200);
    let other = app.client.get(format!("{admin}/api/sessions")).send().await.unwrap();
    assert_eq!(other.status(), 404);
}
