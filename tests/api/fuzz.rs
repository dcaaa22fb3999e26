//! Property tests against the real server: any JSON (or any bytes) sent to a REST route
//! that takes a body is answered with success or a 4xx carrying the JSON error shape, never
//! a 5xx or a dropped connection. (`/api/token/refresh` takes no body, and a refresh would
//! replace the token the other routes are tried with.)

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::helpers::*;

/// The field names convoy's request bodies use, so generated bodies reach the validation
/// behind deserialization, not only the first "unknown field" refusal.
const FIELDS: &[&str] = &[
    "name",
    "expires_in_minutes",
    "display_name",
    "avatar_color",
    "lat",
    "lng",
    "latitude",
    "longitude",
    "accuracy",
    "timestamp",
    "heading",
    "speed",
    "altitude",
    "locations",
    "content",
    "token",
    "x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0.0), Just(-90.0), Just(90.000001), Just(180.0), Just(1e308), any::<f64>()]
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        prop_oneof![".{0,30}", Just("2025-01-15T10:30:00Z".to_owned()), Just("#FF5733".to_owned())]
            .prop_map(Value::String),
    ]
}

/// Objects with convoy's field names (and others), values of any shape.
fn body() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

#[test]
fn every_rest_body_gets_an_answer_and_never_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (app, routes, token) = runtime.block_on(async {
        let app = spawn_app_on(Backend::Embedded, |c| c.rate_limit_enabled = false).await;
        let (session, [ann]) = app.session_with(["Ann"]).await;
        let sid = session.session_id.clone();
        let routes = vec![
            "/api/sessions".to_owned(),
            format!("/api/sessions/{sid}/join"),
            format!("/api/sessions/{sid}/locations"),
            "/api/rooms/join".to_owned(),
            "/api/rooms/u2edk8/messages".to_owned(),
        ];
        (app, routes, ann.token)
    });
    let post = |route: &str, body: Vec<u8>| {
        runtime.block_on(async {
            let response = app
                .client
                .post(app.url(route))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("an answer, not a dropped connection");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        })
    };
    let check = |route: &str, status: u16, text: &str| {
        prop_assert!(status < 500, "{route}: {status} {text}");
        if status >= 400 {
            let error: Value = serde_json::from_str(text)
                .map_err(|e| TestCaseError::fail(format!("{route}: {e}: {text}")))?;
            prop_assert!(
                error["error"]["code"].is_string() && error["error"]["message"].is_string(),
                "{route}: {text}"
            );
        }
        Ok(())
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(&(prop::sample::select(routes.clone()), body()), |(route, body)| {
            let (status, text) = post(&route, body.to_string().into_bytes());
            check(&route, status, &text)
        })
        .unwrap();
    runner
        .run(&(prop::sample::select(routes), prop::collection::vec(any::<u8>(), 0..200)), |(route, bytes)| {
            let (status, text) = post(&route, bytes);
            check(&route, status, &text)
        })
        .unwrap();
    drop(app);
}
