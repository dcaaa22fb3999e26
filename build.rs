//! Marks whether the tests that need outside things can run: they are compiled as ignored
//! (with the reason shown by `cargo test`) unless TEST_POSTGRES_URL and TEST_REDIS_URL are
//! set (PostgreSQL and Redis), TEST_NODE is set (Node with `npm ci` done in tests/phoenix,
//! for the Phoenix client tests) or TEST_BROWSER is set (Chromium and `npm ci` done in
//! tests/browser, for the web page's end-to-end tests).
//!
//! Also marks whether the web page's map library was built (`web/dist`, by `npm ci
//! --prefix web && npm run build --prefix web`): then it is embedded in the binary;
//! without it the page draws its plain grid.

fn main() {
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=TEST_REDIS_URL");
    println!("cargo::rerun-if-env-changed=TEST_NODE");
    println!("cargo::rerun-if-env-changed=TEST_BROWSER");
    println!("cargo::rustc-check-cfg=cfg(convoy_browser_tests)");
    println!("cargo::rustc-check-cfg=cfg(convoy_web_map)");
    // web/dist always exists (a .gitkeep is committed): watching a missing path would make
    // cargo rerun this script, and rebuild the crate, on every build.
    println!("cargo::rerun-if-changed=web/dist");
    if WEB_MAP_FILES.iter().all(|f| std::path::Path::new("web/dist").join(f).is_file()) {
        println!("cargo::rustc-cfg=convoy_web_map");
    }
    println!("cargo::rustc-check-cfg=cfg(convoy_scaled_tests)");
    println!("cargo::rustc-check-cfg=cfg(convoy_node_tests)");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("TEST_POSTGRES_URL") && set("TEST_REDIS_URL") {
        println!("cargo::rustc-cfg=convoy_scaled_tests");
    }
    if set("TEST_NODE") {
        println!("cargo::rustc-cfg=convoy_node_tests");
    }
    if set("TEST_BROWSER") {
        println!("cargo::rustc-cfg=convoy_browser_tests");
    }
}

/// What `npm run build --prefix web` puts in web/dist (see web/build.mjs).
const WEB_MAP_FILES: [&str; 2] = ["leaflet.js", "leaflet.css"];
