//! Marks whether the tests that need outside things can run: they are compiled as ignored
//! (with the reason shown by `cargo test`) unless TEST_POSTGRES_URL and TEST_REDIS_URL are
//! set (PostgreSQL and Redis), or TEST_NODE is set (Node with `npm ci` done in
//! tests/phoenix, for the Phoenix client tests).

fn main() {
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=TEST_REDIS_URL");
    println!("cargo::rerun-if-env-changed=TEST_NODE");
    println!("cargo::rustc-check-cfg=cfg(convoy_scaled_tests)");
    println!("cargo::rustc-check-cfg=cfg(convoy_node_tests)");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("TEST_POSTGRES_URL") && set("TEST_REDIS_URL") {
        println!("cargo::rustc-cfg=convoy_scaled_tests");
    }
    if set("TEST_NODE") {
        println!("cargo::rustc-cfg=convoy_node_tests");
    }
}
