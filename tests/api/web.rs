//! The web page: served with its assets and config by every build; driven end to end in
//! Chromium by tests/browser (Playwright) when TEST_BROWSER is set.

use std::sync::Arc;

use axum::routing::get;
use serde_json::Value;

use super::helpers::*;
use super::proxy::Proxy;

/// The config the page carries, read back out of its HTML.
fn page_config(html: &str) -> Value {
    let start = html.find(r#"<script id="convoy-config" type="application/json">"#).expect("config script");
    let rest = &html[start..];
    let json = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
    serde_json::from_str(json).expect("config is JSON")
}

#[tokio::test]
async fn the_page_its_assets_and_its_config_are_served() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.tile_url = "https://tiles.example/{z}/{x}/{y}.png".into();
        c.tile_attribution = "</script><script>alert(1)</script>".into();
    })
    .await;
    for path in ["/", "/join/7c1d3f5e-0000-4000-8000-000000000000", "/join/not-a-uuid"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
        let policy = headers["content-security-policy"].to_str().unwrap();
        for rule in
            ["script-src 'self';", "img-src 'self' data: https://tiles.example;", "frame-ancestors 'none'"]
        {
            assert!(policy.contains(rule), "{rule} missing from {policy}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>alert(1)"), "the config cannot close its script tag: {html}");
        let config = page_config(&html);
        assert_eq!(config["tile_url"], "https://tiles.example/{z}/{x}/{y}.png");
        assert_eq!(config["tile_attribution"], "</script><script>alert(1)</script>");
        assert_eq!(config["location_ttl_seconds"], 30);
        assert_eq!(config["map_library"], cfg!(convoy_web_map), "{config}");
        assert!(config["build_hint"].as_str().unwrap().contains("npm run build --prefix web"));
        assert_eq!(html.contains("/assets/leaflet.js"), cfg!(convoy_web_map));
    }
    // Every file of the page's own code is served as it is in web/src, modules as
    // JavaScript (a browser refuses to run a module served as anything else).
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/src");
    let mut served = Vec::new();
    for entry in std::fs::read_dir(&sources).unwrap() {
        let path = entry.unwrap().path();
        let asset = path.file_name().unwrap().to_str().unwrap().to_owned();
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            _ => continue, // index.html is the page itself
        };
        let response = app.get(&format!("/assets/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(response.headers()["content-type"], kind, "{asset}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff", "{asset}");
        assert_eq!(response.text().await.unwrap(), std::fs::read_to_string(&path).unwrap(), "{asset}");
        served.push(asset);
    }
    served.sort();
    for module in ["main.js", "model.js", "style.css"] {
        assert!(served.iter().any(|s| s == module), "{module} is not in web/src: {served:?}");
    }
    // The page links its own assets under this build's id, cached for good: a browser never
    // runs modules of two builds together.
    let html = app.get("/").await.text().await.unwrap();
    let build = html.split("/assets/").nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_owned();
    assert_eq!(build.len(), 16, "{html}");
    assert!(
        html.contains(&format!(r#"<script type="module" src="/assets/{build}/main.js"></script>"#)),
        "{html}"
    );
    assert!(html.contains(&format!(r#"href="/assets/{build}/style.css""#)), "{html}");
    let main = app.get(&format!("/assets/{build}/main.js")).await;
    assert_eq!(main.status(), 200);
    assert_eq!(main.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(main.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(app.get(&format!("/assets/{build}/nothing.js")).await.status(), 404);
    let other_build = app.get("/assets/0123456789abcdef/main.js").await;
    assert_eq!(other_build.status(), 404, "another build's asset is not served in its stead");
    // The map library is there exactly when it was built into this binary.
    let leaflet = app.get("/assets/leaflet.js").await;
    assert_eq!(leaflet.status(), if cfg!(convoy_web_map) { 200 } else { 404 });
    for missing in ["nothing.js", "app.js", "index.html"] {
        let response = app.get(&format!("/assets/{missing}")).await;
        assert_eq!(response.status(), 404, "{missing}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    }
}

/// Where the unreachable tile server is: nothing listens on port 9 (discard) here.
const UNREACHABLE_TILES: &str = "http://127.0.0.1:9/";

#[cfg_attr(
    not(convoy_browser_tests),
    ignore = "needs Chromium (/usr/bin/chromium) and `npm ci` in tests/browser: set TEST_BROWSER=1"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_works_in_chromium() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.tile_url = format!("{UNREACHABLE_TILES}{{z}}/{{x}}/{{y}}.png");
        c.location_ttl_seconds = 3; // so a stopped phone's marker fades within the test
    })
    .await;
    // One page reaches the server through a proxy the browser test can cut and restore.
    let proxy = Arc::new(Proxy::start(app.base.trim_start_matches("http://").to_owned()).await);
    let (cut, restore) = (proxy.clone(), proxy.clone());
    let control = axum::Router::new()
        .route("/cut", get(move || async move { cut.cut() }))
        .route("/restore", get(move || async move { restore.restore() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, control).await });
    let proxy_url = format!("http://{}", proxy.addr);
    let map = if cfg!(convoy_web_map) { "leaflet" } else { "grid" };
    let env = [
        ("CONVOY_URL", app.base.as_str()),
        ("PROXY_URL", &proxy_url),
        ("CONTROL_URL", &control_url),
        ("EXPECT_MAP", map),
    ];
    run_browser_tests("web.test.mjs", &env, 4).await;
}

/// Runs one file of tests/browser with `env` (plus TILE_PREFIX and ARTIFACTS_DIR) and
/// checks that its `passes` tests passed and none failed.
async fn run_browser_tests(file: &str, env: &[(&str, &str)], passes: usize) {
    let root = env!("CARGO_MANIFEST_DIR");
    let artifacts = format!("{root}/target/browser-artifacts");
    let output = tokio::process::Command::new("node")
        .arg("--test")
        .arg(file)
        .current_dir(format!("{root}/tests/browser"))
        .envs(env.iter().copied())
        .env("TILE_PREFIX", UNREACHABLE_TILES)
        .env("ARTIFACTS_DIR", &artifacts)
        .output()
        .await
        .expect("node runs (install Node.js and run `npm ci` in tests/browser)");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser tests failed (screenshots in {artifacts}):\n{report}");
    assert!(report.contains(&format!("# pass {passes}")) && report.contains("# fail 0"), "{report}");
}

/// Done-when of the tracker apps: a participant sharing only through each app, reporting to
/// the page's instance and then to another, is seen moving by a browser
/// (tests/browser/across.test.mjs).
#[cfg_attr(
    not(all(convoy_browser_tests, convoy_scaled_tests)),
    ignore = "needs Chromium, PostgreSQL and Redis: set TEST_BROWSER=1, TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_moves_a_browser_on_its_instance_and_on_another() {
    let (a, b) = spawn_pair(|c| c.tile_url = format!("{UNREACHABLE_TILES}{{z}}/{{x}}/{{y}}.png")).await;
    run_browser_tests("across.test.mjs", &[("CONVOY_URL", &a.base), ("OTHER_URL", &b.base)], 1).await;
}
