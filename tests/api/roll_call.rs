//! An instance publishes a session's positions only while another instance holds sockets
//! in it (src/bus/redis/listeners.rs): a session whose sockets are all on one instance
//! costs Redis no publish per position, and an instance that arrives later misses none.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use convoy::bus::{self, Bus, BusEvent, Inbound, RedisTarget};
use convoy::domain::SessionId;
use convoy::message::{Channel, Envelope, HubMessage};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::helpers::*;

on_both_redis!(positions_cross_only_while_another_instance_listens);

async fn positions_cross_only_while_another_instance_listens(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |c| c.rate_limit_enabled = false).await;
    let (session, [ann, bob, cat]) = a.session_with(["Ann", "Bob", "Cat"]).await;
    // On one Redis, a plain subscriber shows what reaches Redis at all.
    let mut overheard = match redis {
        Redis::Single => Some(Overhearer::on(&session.session_id).await),
        Redis::Cluster => None,
    };
    let (mut ann_ws, _) = a.connect(&ann.token).await;
    let (mut bob_ws, _) = a.connect(&bob.token).await;

    // Ann and Bob on A: their positions reach each other and are held back from Redis.
    let held_before = held(&a).await;
    ann_ws.send_location(1.0, 0.0).await;
    ann_ws.send_location(2.0, 0.0).await;
    ann_ws.until_pong().await; // A has handled both
    while bob_ws.next_of_type("location_broadcast").await["data"]["lat"] != 2.0 {}
    // The metric is the process's (other tests' instances add to it): at least these two.
    assert!(held(&a).await >= held_before + 2.0);
    if let Some(overheard) = &mut overheard {
        say(&mut ann_ws, "only chat reaches Redis").await;
        let published = overheard.until("only chat reaches Redis").await;
        assert!(published.iter().all(|p| !p.contains("location_broadcast")), "{published:?}");
    }

    // Cat connects on B: she sees Ann at 2.0, the position A held (the location cache
    // written at once had 1.0; 2.0 is written a second later), and what follows goes
    // through Redis.
    let (mut cat_ws, snapshot) = b.connect(&cat.token).await;
    let cached = snapshot_location(&snapshot, &ann.user_id).map(|l| l["lat"].clone());
    if cached != Some(json!(2.0)) {
        let released = cat_ws.next_of_type("location_broadcast").await;
        assert_eq!(
            (&released["data"]["user_id"], &released["data"]["lat"]),
            (&json!(ann.user_id), &json!(2.0))
        );
    }
    ann_ws.send_location(3.0, 0.0).await;
    assert_eq!(cat_ws.next_of_type("location_broadcast").await["data"]["lat"], 3.0);
    cat_ws.send_location(5.0, 5.0).await;
    assert_eq!(ann_ws.next_of_type("location_broadcast").await["data"]["user_id"], cat.user_id);
    // Bob saw Ann's 3.0 first (on A, as always).
    while bob_ws.next_of_type("location_broadcast").await["data"]["user_id"] != cat.user_id {}
    if let Some(overheard) = &mut overheard {
        say(&mut ann_ws, "positions too").await;
        let published = overheard.until("positions too").await;
        assert!(published.iter().any(|p| p.contains("location_broadcast")), "{published:?}");
    }

    // Cat's socket closes: B leaves the session's channel and says so, and A stops
    // publishing Ann's positions (once it has heard B's Bye).
    drop(cat_ws);
    if let Some(overheard) = &mut overheard {
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds <= 200, "A kept publishing positions after B left");
            ann_ws.send_location(10.0 + f64::from(rounds), 0.0).await;
            say(&mut ann_ws, &format!("round {rounds}")).await;
            let published = overheard.until(&format!("round {rounds}")).await;
            if published.iter().all(|p| !p.contains("location_broadcast")) {
                break;
            }
        }
        // And stays quiet; Bob on A still sees Ann move.
        ann_ws.send_location(50.0, 0.0).await;
        say(&mut ann_ws, "quiet again").await;
        let published = overheard.until("quiet again").await;
        assert!(published.iter().all(|p| !p.contains("location_broadcast")), "{published:?}");
        while bob_ws.next_of_type("location_broadcast").await["data"]["lat"] != 50.0 {}
    }
}

/// Positions held back from Redis, on every instance of this test process.
async fn held(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    metric_sample(&text, "convoy_bus_positions_held_total").unwrap_or(0.0)
}

/// A chat message: an event, always published, so it marks a place in what Redis sees.
async fn say(ws: &mut WsClient, content: &str) {
    ws.send_json(json!({ "type": "chat_message", "data": { "content": content } })).await;
}

/// A plain subscriber to a session's channel on the single test Redis: it takes no part in
/// the roll call, so it sees only what an instance publishes anyway.
struct Overhearer {
    messages: Pin<Box<dyn Stream<Item = redis::Msg> + Send>>,
}

impl Overhearer {
    async fn on(session_id: &str) -> Self {
        let client = redis::Client::open(scaled_urls().1).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(format!("channel:session:{session_id}")).await.unwrap();
        Self { messages: Box::pin(pubsub.into_on_message()) }
    }

    /// What was published (lossy text: the bus's records are binary around their JSON) up
    /// to and including the first publish that contains `marker`.
    async fn until(&mut self, marker: &str) -> Vec<String> {
        let mut published = Vec::new();
        loop {
            let message = tokio::time::timeout(WAIT, self.messages.next())
                .await
                .expect("a publish in time")
                .expect("subscribed");
            let text = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            let found = text.contains(marker);
            published.push(text);
            if found {
                return published;
            }
        }
    }
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_says_hello_still_counts_through_its_presence() {
    let app = spawn_app_on(Backend::Scaled, |c| c.rate_limit_enabled = false).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let mut overheard = Overhearer::on(&session.session_id).await;
    // An instance of a version without the roll call, with a socket in the session: its
    // heartbeat (on Redis's clock) and its presence entry, and not a word on the channel.
    let older = uuid::Uuid::new_v4();
    let client = redis::Client::open(scaled_urls().1).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("presence_instances")
        .arg(secs * 1000 + micros / 1000)
        .arg(older.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    let entry = format!("{older}:older-socket");
    let key = format!("presence:session:{}", session.session_id);
    let _: () = redis::cmd("HSET").arg(&key).arg(entry).arg("{}").query_async(&mut redis).await.unwrap();

    // Ann's snapshot reads the session's presence: the older instance listens, so her
    // positions are published.
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_location(1.0, 0.0).await;
    say(&mut ann_ws, "heard by the older one").await;
    let published = overheard.until("heard by the older one").await;
    assert!(published.iter().any(|p| p.contains("location_broadcast")), "{published:?}");
}

/// Two buses on the Redis Cluster, as two instances hold them.
async fn cluster_bus(shutdown: &CancellationToken) -> (Arc<dyn Bus>, Inbound) {
    let settings = bus_settings(Some(RedisTarget::Cluster(cluster_urls())));
    let (bus, inbound) = bus::connect(settings, shutdown.clone()).await.unwrap();
    (bus, inbound.unwrap())
}

// On a cluster each SSUBSCRIBE and SUNSUBSCRIBE is sent by a task of its own, so a shard
// may take a channel's unsubscription after the subscription that followed it: the
// instance, with a socket there again, would hear nothing more of the session.
#[cfg_attr(
    not(convoy_cluster_tests),
    ignore = "needs PostgreSQL and a Redis Cluster: set TEST_POSTGRES_URL and TEST_REDIS_CLUSTER_URLS (.ci/redis-cluster start)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_left_and_joined_again_at_once_is_still_heard_on_a_cluster() {
    let shutdown = CancellationToken::new();
    let ((a, mut heard), (b, _)) = (cluster_bus(&shutdown).await, cluster_bus(&shutdown).await);
    let channel = Channel::Session(SessionId::new_random());
    a.subscribe(channel).await;
    for round in 0..30 {
        // The last socket leaves and another arrives at once.
        a.unsubscribe(channel);
        a.subscribe(channel).await;
        // What B publishes now reaches A, or (if A had to subscribe again) A resynchronises.
        let said = format!("round {round}");
        b.publish(&Envelope { channel, message: HubMessage::Event { frame: said.as_str().into() } });
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), heard.recv())
                .await
                .unwrap_or_else(|_| panic!("A heard nothing of {said}: left unsubscribed"))
                .expect("bus open");
            match event {
                BusEvent::Deliver(Envelope { message: HubMessage::Event { frame }, .. })
                    if *frame == *said =>
                {
                    break;
                }
                BusEvent::Deliver(Envelope { message: HubMessage::Resync, .. }) | BusEvent::ResyncAll => {
                    break;
                }
                _ => {} // an earlier round's, after a resync
            }
        }
    }
    shutdown.cancel();
}
