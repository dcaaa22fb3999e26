//! A Redis Cluster losing a shard while sessions stream: that shard's sessions keep local
//! delivery, and get cross-instance delivery, presence and their cache back by themselves
//! when it returns (empty: nothing stale is served); the other shards' sessions do not
//! notice. The test runs a three-master cluster of its own (`.ci/redis-cluster`), since it
//! kills one of its nodes.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::helpers::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/redis-cluster");

/// Three masters on free ports, stopped (and their folder removed) when dropped.
struct OwnCluster {
    first: u16,
    dir: tempfile::TempDir,
}

impl OwnCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Three ports and their cluster-bus ports (+10000), all free.
        let first = (0..200)
            .map(|i| 30_000 + (std::process::id() as u16 % 97) * 100 + i * 3)
            .find(|first| {
                (0..3).all(|n| {
                    [first + n, first + n + 10_000]
                        .iter()
                        .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
                })
            })
            .expect("free ports for a Redis Cluster");
        let cluster = Self { first, dir };
        cluster.script("start");
        cluster
    }

    fn script(&self, action: &str) {
        let status = Command::new(SCRIPT)
            .args([action, &self.first.to_string(), &self.dir.path().display().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run .ci/redis-cluster");
        assert!(status.success(), ".ci/redis-cluster {action} failed");
    }

    fn seeds(&self) -> Vec<String> {
        (0..3).map(|n| format!("redis://127.0.0.1:{}", self.first + n)).collect()
    }

    /// Kills the node as a crash would (SIGKILL: no goodbye, nothing saved).
    fn kill(&self, port: u16) {
        let info =
            Command::new("redis-cli").args(["-p", &port.to_string(), "info", "server"]).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .expect("the node's pid")
            .trim()
            .to_owned();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        while TcpListener::bind(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the nodes that are down, in their folders: a killed master rejoins with its
    /// slots and no data. Returns once the cluster serves every slot again.
    fn restart(&self) {
        self.script("start");
    }

    /// The port of the master that serves `key`.
    async fn owner(&self, key: &str) -> u16 {
        let client = redis::Client::open(self.seeds()[0].as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await.unwrap();
        let ranges: Vec<Vec<redis::Value>> =
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
        for range in ranges {
            let number = |v: &redis::Value| match v {
                redis::Value::Int(n) => *n,
                other => panic!("not a number: {other:?}"),
            };
            if (number(&range[0])..=number(&range[1])).contains(&slot) {
                let redis::Value::Array(master) = &range[2] else { panic!("no master in {range:?}") };
                return u16::try_from(number(&master[1])).unwrap();
            }
        }
        panic!("slot {slot} is not served")
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .args(["stop", &self.first.to_string(), &self.dir.path().display().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// The next `location_broadcast` from `from`, skipping everything else.
async fn location_from(ws: &mut WsClient, from: &str) -> Value {
    loop {
        let message = ws.next_of_type("location_broadcast").await;
        if message["data"]["user_id"] == from {
            return message;
        }
    }
}

/// The next `location_broadcast` from `from`, for a socket that must not be told to
/// resynchronise (its session lost nothing).
async fn undisturbed_location_from(ws: &mut WsClient, from: &str) -> Value {
    loop {
        let message = ws.next_json().await;
        assert_ne!(message["type"], "session_state", "a session on a healthy shard was resynchronised");
        if message["type"] == "location_broadcast" && message["data"]["user_id"] == from {
            return message;
        }
    }
}

#[cfg_attr(
    not(convoy_cluster_tests),
    ignore = "needs PostgreSQL and a Redis Cluster: set TEST_POSTGRES_URL and TEST_REDIS_CLUSTER_URLS (.ci/redis-cluster start)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shard_pauses_only_its_own_sessions_between_instances_and_they_resume_by_themselves() {
    let cluster = OwnCluster::start();
    let seeds = cluster.seeds();
    let apps = spawn_group(Redis::Cluster, 2, |c| c.redis_cluster_urls = seeds.clone()).await;
    let (a, b) = (&apps[0], &apps[1]);

    // One session on the shard that will be lost (the first master's) and one elsewhere.
    let lost = cluster.first;
    let (mut doomed, mut spared) = (None, None);
    while doomed.is_none() || spared.is_none() {
        let session = a.create_session(serde_json::json!({})).await;
        let port = cluster.owner(&format!("channel:session:{{{}}}", session.session_id)).await;
        if port == lost {
            doomed.get_or_insert(session)
        } else {
            spared.get_or_insert(session)
        };
    }
    let (doomed, spared) = (doomed.unwrap(), spared.unwrap());
    let (ann, eve, bob) = (
        a.join(&doomed.session_id, "Ann").await,
        a.join(&doomed.session_id, "Eve").await,
        a.join(&doomed.session_id, "Bob").await,
    );
    let (cat, dan) = (a.join(&spared.session_id, "Cat").await, a.join(&spared.session_id, "Dan").await);
    let (mut ann_ws, _) = a.connect(&ann.token).await;
    let (mut eve_ws, _) = a.connect(&eve.token).await;
    let (mut bob_ws, _) = b.connect(&bob.token).await;
    let (mut cat_ws, _) = a.connect(&cat.token).await;
    let (mut dan_ws, _) = b.connect(&dan.token).await;

    // Both sessions cross instances before the loss.
    ann_ws.send_location(1.0, 1.0).await;
    assert_eq!(location_from(&mut bob_ws, &ann.user_id).await["data"]["lat"], 1.0);
    assert_eq!(location_from(&mut eve_ws, &ann.user_id).await["data"]["lat"], 1.0);
    cat_ws.send_location(1.0, 1.0).await;
    assert_eq!(undisturbed_location_from(&mut dan_ws, &cat.user_id).await["data"]["lat"], 1.0);

    cluster.kill(lost);

    // The lost shard's session: local delivery goes on.
    ann_ws.send_location(2.0, 2.0).await;
    assert_eq!(location_from(&mut eve_ws, &ann.user_id).await["data"]["lat"], 2.0);
    // The other shard's session crosses instances as before (each move within the wait:
    // the writer may hold a batch while the lost shard's pipeline times out).
    for lat in [3.0, 4.0, 5.0] {
        cat_ws.send_location(lat, 3.0).await;
        assert_eq!(undisturbed_location_from(&mut dan_ws, &cat.user_id).await["data"]["lat"], lat);
    }
    // A socket that joins the lost shard's session meanwhile cannot subscribe yet; it is
    // retried, and hears the session once the shard is back.
    let fay = a.join(&doomed.session_id, "Fay").await;
    let (mut fay_ws, _) = b.connect(&fay.token).await;
    // And the instances stay ready: the cluster answers, only one shard does not.
    assert_eq!(a.get("/health/ready").await.status(), 200);
    assert_eq!(b.get("/health/ready").await.status(), 200);

    cluster.restart();

    // Bob's subscription came back by itself (the cluster client resubscribed) and, since
    // messages may have been lost meanwhile, his socket resynchronises.
    let state = bob_ws.next_of_type("session_state").await;
    assert_eq!(state["data"]["user_id"], bob.user_id);
    // Cross-instance delivery resumes, both ways.
    let mut lat = 10.0;
    loop {
        lat += 0.01;
        ann_ws.send_location(lat, 10.0).await;
        if let Ok(message) =
            tokio::time::timeout(Duration::from_millis(200), location_from(&mut bob_ws, &ann.user_id)).await
        {
            assert!(
                message["data"]["lat"].as_f64().unwrap() >= 10.0,
                "nothing from before the loss: {message}"
            );
            break;
        }
        assert!(lat < 10.5, "B never heard A's socket again");
    }
    // Each instance's writer skips the returned shard until its backoff (up to 5 s) is
    // over, dropping positions meanwhile (the next one replaces them): B's may come later.
    let mut lat = -4.0;
    loop {
        lat -= 0.01;
        bob_ws.send_location(lat, -4.0).await;
        if let Ok(message) =
            tokio::time::timeout(Duration::from_millis(200), location_from(&mut ann_ws, &bob.user_id)).await
        {
            assert!(message["data"]["lat"].as_f64().unwrap() <= -4.0, "{message}");
            break;
        }
        assert!(lat > -4.5, "A never heard B's socket again");
    }
    ann_ws.send_location(11.0, 11.0).await;
    while location_from(&mut fay_ws, &ann.user_id).await["data"]["lat"] != 11.0 {}

    // The shard came back empty; what it holds again is current. Presence is rewritten by
    // the instances that hold the sockets (the REST view lists all four connections, Fay's
    // made while the shard was down), and
    // a new socket's snapshot has Ann where she is now, not where she was.
    let mut presence = Value::Null;
    for _ in 0..100 {
        presence =
            b.get(&format!("/api/sessions/{}/presence", doomed.session_id)).await.json().await.unwrap();
        if presence["connections"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(presence["connections"], 4, "presence was restored on the returned shard: {presence}");
    let snapshot = loop {
        let (_fresh, state) = b.connect(&eve.token).await;
        let ann_at = state["data"]["locations"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["user_id"] == ann.user_id))
            .cloned();
        if let Some(ann_at) = ann_at {
            break ann_at;
        }
        // The cache is written at most once a second per session: ask again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(snapshot["lat"].as_f64().unwrap() >= 10.0, "a stale position was served: {snapshot}");

    // The healthy shard's session was never told to resynchronise, on either instance.
    for ws in [&mut cat_ws, &mut dan_ws] {
        let heard = ws.until_pong().await;
        assert!(heard.iter().all(|m| m["type"] != "session_state"), "{heard:?}");
    }
}
