//! Session affinity: a socket URL names its session (the join response's `websocket_url`
//! ends in `/ws/{session_id}`, or `?session=` on either socket), so a load balancer can keep
//! a session's sockets on one instance. The server checks the name against the token: a
//! URL naming another session is refused, so a client cannot be routed by one session and
//! served as another.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use super::helpers::*;

/// The status and JSON body of a refused handshake.
async fn refusal(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url} was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        Err(other) => panic!("unexpected handshake error {other}"),
    }
}

async fn the_join_responses_socket_url_takes_a_token_appended_as_seed_000_says(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let joined: Value = app
        .post(&format!("/api/sessions/{}/join", session.session_id), json!({ "display_name": "Ann" }))
        .await
        .json()
        .await
        .unwrap();
    let url = joined["websocket_url"].as_str().unwrap().replace("localhost", "127.0.0.1");
    assert!(url.ends_with(&format!("/ws/{}", session.session_id)), "{url}");
    let token = joined["websocket_token"].as_str().unwrap();
    let (mut ws, state) = app.connect_url(&format!("{url}?token={token}")).await;
    assert_eq!(state["data"]["session_id"], session.session_id);
    ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(ws.next_json().await["type"], "pong");
    // The same as a query parameter, on the native socket and on the Phoenix one.
    let base = format!("ws://{}", app.addr);
    let sid = &session.session_id;
    app.connect_url(&format!("{base}/ws?session={sid}&token={token}")).await;
    let phoenix = format!("{base}/socket/websocket?session={sid}&token={token}&vsn=2.0.0");
    tokio_tungstenite::connect_async(phoenix).await.expect("the Phoenix socket takes ?session= too");
}

async fn a_socket_url_naming_another_session_is_refused(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (mine, [ann]) = app.session_with(["Ann"]).await;
    let other = app.create_session(json!({})).await.session_id;
    let base = format!("ws://{}", app.addr);
    let token = &ann.token;
    for url in [
        format!("{base}/ws/{other}?token={token}"),
        format!("{base}/ws?session={other}&token={token}"),
        format!("{base}/socket/websocket?session={other}&token={token}&vsn=2.0.0"),
    ] {
        let (status, body) = refusal(&url).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("session_mismatch")),
            "{url}: {body}"
        );
    }
    let (status, body) = refusal(&format!("{base}/ws/not-a-session?token={token}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let mine = &mine.session_id;
    let (status, body) = refusal(&format!("{base}/ws/{mine}?session={other}&token={token}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");

    // A token sent as the first message is checked against the path's session too.
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("{base}/ws/{other}")).await.expect("handshake");
    let mut ws = WsClient::new(stream);
    ws.send_json(json!({ "type": "auth", "data": { "token": token } })).await;
    let close = ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("another session"), "{}", close.reason);
}

on_every_backend!(
    the_join_responses_socket_url_takes_a_token_appended_as_seed_000_says,
    a_socket_url_naming_another_session_is_refused,
);

/// nginx running deploy/nginx.conf in front of the given instances, on a free port; stopped
/// when dropped.
struct Nginx {
    port: u16,
    process: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[std::net::SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
        // The shipped file as it is, but for where it listens, logs and finds convoy.
        let servers: String =
            upstreams.iter().map(|a| format!("    server {a} max_fails=3 fail_timeout=10s;\n")).collect();
        let mut site = String::new();
        let mut servers_written = false;
        for line in shipped.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server convoy-") {
                if !std::mem::replace(&mut servers_written, true) {
                    site.push_str(&servers);
                }
            } else if trimmed == "listen 80;" {
                site.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            } else if trimmed.starts_with("access_log ") {
                site.push_str(&format!("    access_log {}/access.log convoy;\n", dir.path().display()));
            } else {
                site.push_str(line);
                site.push('\n');
            }
        }
        assert!(servers_written, "deploy/nginx.conf names its upstream servers convoy-*");
        let d = dir.path().display();
        let main = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{site}}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let mut process = std::process::Command::new("nginx")
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx on the PATH (TEST_NGINX)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { port, process, _dir: dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = process.kill();
        let _ = process.wait();
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[cfg_attr(
    not(convoy_nginx_tests),
    ignore = "needs nginx, PostgreSQL and Redis: set TEST_NGINX=1, TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nginx_config_keeps_a_sessions_sockets_on_one_instance_and_falls_back() {
    use convoy::domain::SessionId;
    use convoy::message::Channel;

    let (a, b) = spawn_pair(|_| {}).await;
    let nginx = Nginx::start(&[a.addr, b.addr]);
    // Joins through A's REST API; the join's socket URL, pointed at nginx.
    let join_through = async |app: &TestApp, session: &str, name: &str| {
        let joined: Value = app
            .post(&format!("/api/sessions/{session}/join"), json!({ "display_name": name }))
            .await
            .json()
            .await
            .unwrap();
        let url = joined["websocket_url"].as_str().unwrap().replace("localhost", "127.0.0.1");
        let url = url.replace(&format!(":{}/", app.addr.port()), &format!(":{}/", nginx.port));
        format!("{url}?token={}", joined["websocket_token"].as_str().unwrap())
    };
    let count = |app: &TestApp, session: &str| {
        app.state.hub.subscriber_count(Channel::Session(session.parse::<SessionId>().unwrap()))
    };

    // Three sockets of each of 20 sessions, through nginx: each session's on one instance,
    // the sessions over both.
    let mut sockets = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..20 {
        let session = a.create_session(json!({})).await;
        for name in ["Ann", "Bob", "Cat"] {
            let url = join_through(&a, &session.session_id, name).await;
            sockets.push(a.connect_url(&url).await.0);
        }
        let placed = (count(&a, &session.session_id), count(&b, &session.session_id));
        assert!(placed == (3, 0) || placed == (0, 3), "a session's sockets on one instance: {placed:?}");
        if placed.1 == 3 {
            on_b.push(session.session_id);
        }
    }
    assert!(
        !on_b.is_empty() && on_b.len() < 20,
        "sessions spread over both instances ({} of 20 on B)",
        on_b.len()
    );

    // B goes away: its sessions' new sockets go to A.
    let moved = on_b[0].clone();
    drop(sockets);
    b.stop().await.unwrap();
    let (_dan, state) = a.connect_url(&join_through(&a, &moved, "Dan").await).await;
    assert_eq!(state["data"]["session_id"], moved.as_str());
    assert_eq!(count(&a, &moved), 1, "the fallback instance serves the session");
}
