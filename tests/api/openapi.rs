//! `/openapi.json` describes every REST route: a route registered in src/http without its
//! `#[utoipa::path]` being listed in the spec fails here, and so does a spec entry with no
//! route behind it. (The sockets and the web page are not REST: src/ws and web.rs are left
//! out, on purpose.) The spec's answers are fuzzed by schemathesis in .ci/run.

use std::collections::BTreeSet;

use serde_json::Value;

use super::helpers::*;

/// REST route files, and the prefix their router is nested under.
const ROUTE_FILES: [(&str, &str); 9] = [
    ("src/http/sessions.rs", "/api"),
    ("src/http/participants.rs", "/api"),
    ("src/http/chat.rs", "/api"),
    ("src/http/sync.rs", "/api"),
    ("src/http/tokens.rs", "/api"),
    ("src/http/health.rs", ""),
    ("src/http/meta.rs", ""),
    ("src/http/meetup.rs", "/api"),
    ("src/http/tracker.rs", ""),
];

/// (METHOD, path) of every `.route("path", get(..).post(..))` in a file's source.
fn routes_in(source: &str, prefix: &str) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for call in source.split(".route(\"").skip(1) {
        let (path, rest) = call.split_once('"').expect("a path literal");
        // The method router runs to the end of the call: up to the next `.route(` or the
        // end of the builder chain.
        let methods = rest.split(".route(").next().unwrap_or_default();
        for method in ["get", "post", "delete", "put", "patch"] {
            if methods.contains(&format!(" {method}(")) || methods.contains(&format!(".{method}(")) {
                routes.push((method.to_uppercase(), format!("{prefix}{path}")));
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_rest_route_is_in_the_spec_and_nothing_else_is() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));

    let mut documented = BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            // Each answer is described, errors with the shared error body.
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success answer");
            for (status, answer) in responses {
                if status.starts_with('4') {
                    let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let mut registered = BTreeSet::new();
    for (file, prefix) in ROUTE_FILES {
        let source = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let routes = routes_in(&source, prefix);
        assert!(!routes.is_empty(), "no routes read from {file}");
        registered.extend(routes);
    }
    // Every file under src/http that registers routes is one of the above (or the web page).
    for entry in std::fs::read_dir(format!("{root}/src/http")).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("src/http/{}", path.file_name().unwrap().to_string_lossy());
        let source = std::fs::read_to_string(&path).unwrap();
        let known = ROUTE_FILES.iter().any(|(f, _)| *f == name)
            || name.ends_with("/web.rs")
            || name.ends_with("/openapi.rs");
        assert!(known || !source.contains(".route(\""), "{name} registers routes this test does not read");
    }
    let missing: Vec<_> = registered.difference(&documented).collect();
    assert!(missing.is_empty(), "routes missing from /openapi.json: {missing:?}");
    let phantom: Vec<_> = documented.difference(&registered).collect();
    assert!(phantom.is_empty(), "documented but not registered: {phantom:?}");
    assert!(documented.len() >= 21, "{documented:?}");
}

#[test]
fn the_route_reader_reads_chained_methods() {
    let source = r#"Router::new()
        .route("/sessions", post(create))
        .route("/sessions/{session_id}", get(show).delete(end))"#;
    assert_eq!(
        routes_in(source, "/api"),
        vec![
            ("POST".to_owned(), "/api/sessions".to_owned()),
            ("GET".to_owned(), "/api/sessions/{session_id}".to_owned()),
            ("DELETE".to_owned(), "/api/sessions/{session_id}".to_owned()),
        ]
    );
}
