//! Cross-origin access: real preflight requests against the REST API, and the same origin
//! rule on both WebSocket handshakes (CORS_ALLOWED_ORIGINS).

use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::helpers::*;

const APP: &str = "https://app.example";
const OTHER: &str = "https://evil.example";

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type, authorization")
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// The status of a socket handshake sent with `origin` (none: no Origin header).
async fn socket_status(app: &TestApp, path_and_query: &str, origin: Option<&str>) -> u16 {
    let url = app.url(path_and_query).replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected handshake error {other}"),
    }
}

#[tokio::test]
async fn a_listed_origin_gets_preflights_and_headers_others_get_none() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.cors_allowed_origins = vec![APP.into(), "http://localhost:3000".into()];
    })
    .await;

    let allowed = preflight(&app, "/api/sessions", APP).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(header(&allowed, "access-control-allow-origin").as_deref(), Some(APP));
    let methods = header(&allowed, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST") && methods.contains("DELETE"), "{methods}");
    let headers = header(&allowed, "access-control-allow-headers").unwrap().to_lowercase();
    assert!(headers.contains("content-type") && headers.contains("authorization"), "{headers}");
    assert_eq!(header(&allowed, "access-control-max-age").as_deref(), Some("600"));
    // A route with parameters, and the actual request after the preflight.
    let joined = preflight(&app, "/api/sessions/7c1d3f5e-0000-4000-8000-000000000000/join", APP).await;
    assert_eq!(header(&joined, "access-control-allow-origin").as_deref(), Some(APP));
    let created = reqwest::Client::new()
        .post(app.url("/api/sessions"))
        .header("Origin", APP)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "access-control-allow-origin").as_deref(), Some(APP));
    let exposed = header(&created, "access-control-expose-headers").unwrap().to_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    // Errors carry the headers too, so the page can read them.
    let refused = reqwest::Client::new()
        .post(app.url("/api/sessions"))
        .header("Origin", APP)
        .json(&json!({ "expires_in_minutes": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(header(&refused, "access-control-allow-origin").as_deref(), Some(APP));

    // Another site: no permission in the answer (the browser then blocks the call).
    let other = preflight(&app, "/api/sessions", OTHER).await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    let other = reqwest::Client::new().get(app.url("/health")).header("Origin", OTHER).send().await.unwrap();
    assert_eq!(header(&other, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn without_a_list_no_origin_is_allowed_and_star_allows_any_outside_production() {
    let closed = spawn_app().await;
    let answer = preflight(&closed, "/api/sessions", APP).await;
    assert_eq!(answer.status(), 405, "no CORS layer: OPTIONS is just another method");
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    assert_eq!(header(&answer, "access-control-allow-methods"), None);

    let open = spawn_app_on(Backend::Embedded, |c| c.cors_allowed_origins = vec!["*".into()]).await;
    let answer = preflight(&open, "/api/sessions", OTHER).await;
    assert_eq!(header(&answer, "access-control-allow-origin").as_deref(), Some("*"));
}

#[tokio::test]
async fn sockets_from_unlisted_origins_are_refused_when_a_list_is_set() {
    let app = spawn_app_on(Backend::Embedded, |c| c.cors_allowed_origins = vec![APP.into()]).await;
    let session = app.create_session(json!({})).await;
    let own_origin = app.base.clone();
    for endpoint in ["/ws", "/socket/websocket"] {
        let ann = app.join(&session.session_id, "Ann").await;
        let path = format!("{endpoint}?token={}", ann.token);
        assert_eq!(socket_status(&app, &path, Some(OTHER)).await, 403, "{endpoint}");
        assert_eq!(socket_status(&app, &path, Some(APP)).await, 101, "{endpoint}");
        assert_eq!(socket_status(&app, &path, Some(&own_origin)).await, 101, "{endpoint}: same origin");
        assert_eq!(socket_status(&app, &path, None).await, 101, "{endpoint}: not a browser");
    }
    // The refusal names the problem.
    let ann = app.join(&session.session_id, "Ann").await;
    let url = app.url(&format!("/ws?token={}", ann.token)).replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Origin", HeaderValue::from_static(OTHER));
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
        tokio_tungstenite::connect_async(request).await
    else {
        panic!("the handshake was accepted")
    };
    let body: serde_json::Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "forbidden_origin");

    // Sandboxed pages send Origin "null": not on any list.
    assert_eq!(socket_status(&app, &format!("/ws?token={}", ann.token), Some("null")).await, 403);

    // Behind a proxy that rewrites Host, PUBLIC_URL names this server's own origin.
    let public = spawn_app_on(Backend::Embedded, |c| {
        c.cors_allowed_origins = vec![APP.into()];
        c.public_url = Some("https://convoy.example/base".into());
    })
    .await;
    let (_, [cat]) = public.session_with(["Cat"]).await;
    let path = format!("/ws?token={}", cat.token);
    assert_eq!(socket_status(&public, &path, Some("https://convoy.example")).await, 101);
    assert_eq!(socket_status(&public, &path, Some(&public.base)).await, 403, "Host is not trusted then");

    // Without a list, sockets are not checked (tokens are what protect them).
    let open = spawn_app().await;
    let (_, [bob]) = open.session_with(["Bob"]).await;
    assert_eq!(socket_status(&open, &format!("/ws?token={}", bob.token), Some(OTHER)).await, 101);
}
