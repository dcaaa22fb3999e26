//! Graceful shutdown: sockets are closed with 1001 and the server stops, in-process and as
//! the real binary receiving SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::helpers::*;

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_returns() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    let ann = app.join(&session.session_id, "Ann").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let addr = app.addr;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(ann_ws.closed().await.map(|f| u16::from(f.code)), Some(1001));
    stopping.await.unwrap().expect("clean stop");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_exits_0_on_sigterm_after_closing_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_convoy"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("c.db").display()))
        .env("JWT_SECRET", TEST_SECRET)
        .env("LOG_LEVEL", "warn")
        .env_remove("APP_ENV")
        .env_remove("PUBLIC_URL")
        .stdout(Stdio::null())
        .spawn()
        .expect("binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the binary answered /health/ready");

    let created: serde_json::Value = client
        .post(format!("{base}/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["session_id"].as_str().unwrap();
    assert_eq!(created["join_link"], format!("http://localhost:{port}/join/{sid}"));
    let joined: serde_json::Value = client
        .post(format!("{base}/api/sessions/{sid}/join"))
        .json(&json!({ "display_name": "Ann" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws?token={}", joined["websocket_token"].as_str().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut ws = WsClient::new(stream);
    assert_eq!(ws.next_json().await["type"], "session_state");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1001));
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}
