//! Marks whether the tests that need outside things can run: they are compiled as ignored
//! (with the reason shown by `cargo test`) unless TEST_POSTGRES_URL and TEST_REDIS_URL are
//! set (PostgreSQL and Redis), TEST_POSTGRES_URL and TEST_REDIS_CLUSTER_URLS (a Redis
//! Cluster's seed nodes, from `.ci/redis-cluster start`), TEST_NODE (Node with `npm ci`
//! done in tests/phoenix, for the Phoenix client tests), TEST_BROWSER (Chromium and
//! `npm ci` done in tests/browser, for the web page's end-to-end tests) or TEST_NGINX
//! (nginx on the PATH, for deploy/nginx.conf's routing, with PostgreSQL and Redis).
//!
//! Also marks whether the web page's map library was built (`web/dist`, by `npm ci
//! --prefix web && npm run build --prefix web`): then it is embedded in the binary;
//! without it the page draws its plain grid. When it was not built and npm is there, this
//! script builds it (so `cargo run --release` on a machine with Node gives the map); when
//! npm is not there, or CONVOY_SKIP_WEB_BUILD is set, it says so in one line and goes on.

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
    println!("cargo::rerun-if-env-changed=CONVOY_SKIP_WEB_BUILD");
    println!("cargo::rerun-if-env-changed=CARGO_NET_OFFLINE");
    let built = || WEB_MAP_FILES.iter().all(|f| std::path::Path::new("web/dist").join(f).is_file());
    if !built() {
        build_web_map();
    }
    if built() {
        println!("cargo::rustc-cfg=convoy_web_map");
    }
    println!("cargo::rustc-check-cfg=cfg(convoy_scaled_tests)");
    println!("cargo::rustc-check-cfg=cfg(convoy_node_tests)");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("TEST_POSTGRES_URL") && set("TEST_REDIS_URL") {
        println!("cargo::rustc-cfg=convoy_scaled_tests");
    }
    println!("cargo::rerun-if-env-changed=TEST_REDIS_CLUSTER_URLS");
    println!("cargo::rustc-check-cfg=cfg(convoy_cluster_tests)");
    if set("TEST_POSTGRES_URL") && set("TEST_REDIS_CLUSTER_URLS") {
        println!("cargo::rustc-cfg=convoy_cluster_tests");
    }
    if set("TEST_NODE") {
        println!("cargo::rustc-cfg=convoy_node_tests");
    }
    println!("cargo::rerun-if-env-changed=TEST_NGINX");
    println!("cargo::rustc-check-cfg=cfg(convoy_nginx_tests)");
    if set("TEST_NGINX") && set("TEST_POSTGRES_URL") && set("TEST_REDIS_URL") {
        println!("cargo::rustc-cfg=convoy_nginx_tests");
    }
    if set("TEST_BROWSER") {
        println!("cargo::rustc-cfg=convoy_browser_tests");
    }
}

/// `npm ci --prefix web && npm run build --prefix web`, if npm is there; a one-line
/// warning otherwise (the page then draws its grid).
fn build_web_map() {
    // Offline builds and an explicit skip do not touch the network.
    if std::env::var_os("CONVOY_SKIP_WEB_BUILD").is_some() || std::env::var_os("CARGO_NET_OFFLINE").is_some()
    {
        println!(
            "cargo::warning=the web page's map was not built (offline or CONVOY_SKIP_WEB_BUILD): it will show a plain grid"
        );
        return;
    }
    let npm = |args: &[&str]| {
        std::process::Command::new("npm")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .map(|status| status.success())
    };
    match npm(&["--version"]) {
        Ok(true) => {}
        _ => {
            println!(
                "cargo::warning=npm not found: the web page will show a plain grid; install Node.js and rebuild for the map"
            );
            return;
        }
    }
    let ok = npm(&["ci", "--prefix", "web", "--no-audit", "--no-fund", "--ignore-scripts"]).unwrap_or(false)
        && npm(&["run", "build", "--prefix", "web"]).unwrap_or(false);
    if !ok {
        println!(
            "cargo::warning=building the web page's map with npm failed: the page will show a plain grid"
        );
    }
}

/// What `npm run build --prefix web` puts in web/dist (see web/build.mjs).
const WEB_MAP_FILES: [&str; 2] = ["leaflet.js", "leaflet.css"];
