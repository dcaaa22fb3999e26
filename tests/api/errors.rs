//! Malformed requests get a 4xx with the JSON error shape, never a 500.

use serde_json::{Value, json};

use super::helpers::*;

#[tokio::test]
async fn malformed_requests_get_json_4xx_errors() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    let join = app.url(&format!("/api/sessions/{}/join", session.session_id));
    let big = json!({ "display_name": "Ann", "pad": "x".repeat(70 * 1024) }).to_string();

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.client
                .post(app.url("/api/sessions"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "malformed_json",
        ),
        (
            app.client
                .post(&join)
                .header("content-type", "application/json")
                .body(r#"{"display_name": "Ann""#),
            400,
            "malformed_json",
        ),
        (app.client.post(app.url("/api/sessions")).body("{}"), 415, "unsupported_media_type"),
        (
            app.client.post(&join).header("content-type", "text/plain").body(r#"{"display_name":"Ann"}"#),
            415,
            "unsupported_media_type",
        ),
        (app.client.post(&join).header("content-type", "application/json").body(big), 413, "invalid_body"),
        (
            app.client.post(&join).json(&json!({ "display_name": "Ann", "role": "admin" })),
            422,
            "invalid_input",
        ),
        (app.client.post(&join).json(&json!(["Ann"])), 422, "invalid_input"),
        (app.client.get(app.url("/api/nothing-here")), 404, "not_found"),
        (app.client.get(app.url("/api/sessions/1234")), 400, "invalid_id"),
        (
            app.client.delete(app.url(&format!("/api/sessions/{}/participants/xyz", session.session_id))),
            400,
            "invalid_id",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_405_with_the_allowed_methods() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    let cases = [
        (reqwest::Method::PUT, "/api/sessions".to_owned(), "POST"),
        (reqwest::Method::GET, format!("/api/sessions/{}/join", session.session_id), "POST"),
        (reqwest::Method::POST, format!("/api/sessions/{}", session.session_id), "DELETE"),
        (reqwest::Method::POST, "/health".to_owned(), "GET"),
        (reqwest::Method::POST, "/ws".to_owned(), "GET"),
    ];
    for (method, path, allowed) in cases {
        let response = app.client.request(method.clone(), app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains(allowed), "{method} {path}: allow {allow}");
        assert_eq!(error_code(response).await, "method_not_allowed", "{method} {path}");
    }
}

#[tokio::test]
async fn hostile_bodies_and_headers_never_get_a_500() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    let join = app.url(&format!("/api/sessions/{}/join", session.session_id));
    let leave =
        app.url(&format!("/api/sessions/{}/participants/{}", session.session_id, uuid::Uuid::new_v4()));
    // Deep but within the join's 4 KiB body limit, so it reaches the JSON parser.
    let deep = format!("{}{}", "[".repeat(2_000), "]".repeat(2_000));

    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        // Deeply nested, not what the endpoint takes: refused, not a stack overflow.
        (app.client.post(&join).header("content-type", "application/json").body(deep), 422),
        // Not UTF-8.
        (
            app.client
                .post(&join)
                .header("content-type", "application/json")
                .body(vec![b'{', 0xff, 0xfe, b'}']),
            400,
        ),
        (app.client.post(&join).header("content-type", "application/json").body(""), 400),
        (app.client.post(&join).header("content-type", "application/json").body("null"), 422),
        (app.client.post(&join).json(&json!({ "display_name": 42 })), 422),
        (app.client.post(&join).json(&json!({ "display_name": "Ann", "avatar_color": null })), 201),
        (app.client.delete(&leave).header("authorization", "Basic dXNlcjpwYXNz"), 401),
        (app.client.delete(&leave).header("authorization", b"Bearer \xff\xfe".as_slice()), 401),
        (app.client.delete(&leave).header("authorization", "Bearer "), 401),
        (app.client.get(app.url("/api/sessions/%00")), 400),
        (app.client.get(app.url(&format!("/api/sessions/{}", "a".repeat(5000)))), 400),
        (app.client.get(app.url(&format!("/ws?token={}", "x".repeat(2000)))), 426),
    ];
    for (request, status) in cases {
        let request = request.build().unwrap();
        let described = format!("{} {}", request.method(), request.url());
        let response = app.client.execute(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{described}");
        if status >= 400 {
            error_code(response).await;
        }
    }
    // And the server is still fine.
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test]
async fn the_socket_endpoint_without_an_upgrade_is_a_4xx() {
    let app = spawn_app().await;
    let response = app.get("/ws").await;
    assert_eq!(response.status(), 426);
    assert_eq!(error_code(response).await, "websocket_required");
}

#[tokio::test]
async fn each_route_takes_bodies_only_as_large_as_it_needs() {
    let app = spawn_app().await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let sid = &session.session_id;
    // 5 KiB of padding: far more than a join needs, well below the 64 KiB a batch may take.
    let padding = "x".repeat(5 * 1024);
    let post =
        |path: String, body: Value| app.client.post(app.url(&path)).bearer_auth(&ann.token).json(&body);
    for (request, status) in [
        (post("/api/sessions".into(), json!({ "name": "Trip", "pad": padding })), 413),
        (post(format!("/api/sessions/{sid}/join"), json!({ "display_name": "Bob", "pad": padding })), 413),
        (post("/api/rooms/join".into(), json!({ "lat": 1.0, "lng": 2.0, "pad": padding })), 413),
        (post("/api/rooms/u2edk8/messages".into(), json!({ "content": "x".repeat(40 * 1024) })), 413),
        // A batch of positions is allowed its size: refused here for the padding field, not the size.
        (post(format!("/api/sessions/{sid}/locations"), json!({ "locations": [], "pad": padding })), 422),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let code = error_code(response).await;
        assert!(status != 413 || code == "invalid_body", "{code}");
    }
}
