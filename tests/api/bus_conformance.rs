//! The bus conformance suite: what every `Bus` must do for the instance it serves, checked
//! through the trait against the in-process bus and Redis alike. (Delivery between
//! instances needs two of them: `cluster::*`, `faults::*` and `bus_bounds::*` cover Redis's.)

use std::sync::Arc;
use std::time::Duration;

use convoy::bus::{self, Bus, RedisTarget};
use convoy::domain::{Location, RoomId, SessionId, UserId, now};
use convoy::message::Channel;
use convoy::presence::PresenceMeta;
use tokio_util::sync::CancellationToken;

use super::helpers::*;

/// How long a check waits for a bus to send what it queued.
const FLUSH: Duration = Duration::from_secs(5);

async fn local() -> (Arc<dyn Bus>, CancellationToken) {
    bus_on(None).await
}

async fn redis() -> (Arc<dyn Bus>, CancellationToken) {
    bus_on(Some(RedisTarget::Single(scaled_urls().1))).await
}

async fn redis_cluster() -> (Arc<dyn Bus>, CancellationToken) {
    bus_on(Some(RedisTarget::Cluster(cluster_urls()))).await
}

async fn bus_on(redis: Option<RedisTarget>) -> (Arc<dyn Bus>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let (bus, _inbound) = bus::connect(bus_settings(redis), shutdown.clone()).await.unwrap();
    (bus, shutdown)
}

/// Runs each `async fn check(bus: &dyn Bus)` on every bus: `local::check` always,
/// `redis::check` when TEST_REDIS_URL was set at build time, `redis_cluster::check` when
/// TEST_REDIS_CLUSTER_URLS was.
macro_rules! on_every_bus {
    ($($check:ident),+ $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $check() {
                    let (bus, shutdown) = super::local().await;
                    // One instance: it is its own other.
                    super::$check(bus.as_ref(), bus.as_ref()).await;
                    shutdown.cancel();
                }
            )+
        }
        mod redis {
            $(
                #[cfg_attr(not(convoy_scaled_tests), ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL")]
                #[tokio::test]
                async fn $check() {
                    let ((bus, shutdown), (other, other_shutdown)) = (super::redis().await, super::redis().await);
                    super::$check(bus.as_ref(), other.as_ref()).await;
                    shutdown.cancel();
                    other_shutdown.cancel();
                }
            )+
        }
        mod redis_cluster {
            $(
                #[cfg_attr(not(convoy_cluster_tests), ignore = "needs PostgreSQL and a Redis Cluster: set TEST_POSTGRES_URL and TEST_REDIS_CLUSTER_URLS (.ci/redis-cluster start)")]
                #[tokio::test]
                async fn $check() {
                    let ((bus, shutdown), (other, other_shutdown)) =
                        (super::redis_cluster().await, super::redis_cluster().await);
                    super::$check(bus.as_ref(), other.as_ref()).await;
                    shutdown.cancel();
                    other_shutdown.cancel();
                }
            )+
        }
    };
}

fn at(lat: f64) -> Location {
    Location::at(lat, 16.4, 5.0, now())
}

async fn the_location_cache_keeps_the_latest_per_participant(bus: &dyn Bus, _other: &dyn Bus) {
    let (session, other) = (SessionId::new_random(), SessionId::new_random());
    let (ann, bob) = (UserId::new_random(), UserId::new_random());
    let ttl = Duration::from_secs(60);
    bus.put_location(session, ann, &at(1.0), ttl).await.unwrap();
    bus.put_location(session, ann, &at(2.0), ttl).await.unwrap();
    bus.put_location(session, bob, &at(3.0), ttl).await.unwrap();
    bus.put_location(other, ann, &at(9.0), ttl).await.unwrap();
    bus.flush(FLUSH).await;
    let mut cached = bus.locations(session).await.unwrap();
    cached.sort_by(|a, b| a.1.lat.total_cmp(&b.1.lat));
    assert_eq!(cached.iter().map(|(u, l)| (*u, l.lat)).collect::<Vec<_>>(), [(ann, 2.0), (bob, 3.0)]);

    bus.remove_location(session, ann).await.unwrap();
    bus.flush(FLUSH).await;
    assert_eq!(bus.locations(session).await.unwrap().iter().map(|(u, _)| *u).collect::<Vec<_>>(), [bob]);
    bus.clear_session(session).await.unwrap();
    bus.flush(FLUSH).await;
    assert!(bus.locations(session).await.unwrap().is_empty());
    assert_eq!(bus.locations(other).await.unwrap().len(), 1, "other sessions keep theirs");
    assert!(bus.ping().await.is_ok());
}

async fn a_flush_with_nothing_queued_changes_nothing(bus: &dyn Bus, _other: &dyn Bus) {
    let (session, ann) = (SessionId::new_random(), UserId::new_random());
    bus.flush(FLUSH).await;
    bus.flush(FLUSH).await; // nothing queued: the Redis writer once sent an empty pipeline, an error
    assert!(bus.ping().await.is_ok());
    bus.put_location(session, ann, &at(4.0), Duration::from_secs(60)).await.unwrap();
    bus.flush(FLUSH).await;
    assert_eq!(bus.locations(session).await.unwrap().len(), 1, "still writing after a bare flush");
}

async fn a_location_held_back_is_written_by_itself(bus: &dyn Bus, other: &dyn Bus) {
    let (session, ann) = (SessionId::new_random(), UserId::new_random());
    let ttl = Duration::from_secs(60);
    bus.put_location(session, ann, &at(1.0), ttl).await.unwrap();
    // Redis writes a session's cache at most once a second: this one is held, and must be
    // written when its second is up, with no flush and no later update to carry it. The
    // writing instance sees it at once (it remembers its own writes): ask another one.
    bus.put_location(session, ann, &at(2.0), ttl).await.unwrap();
    let own: Vec<f64> = bus.locations(session).await.unwrap().iter().map(|(_, l)| l.lat).collect();
    assert_eq!(own, [2.0], "the writer reads its own write");
    let deadline = tokio::time::Instant::now() + FLUSH;
    loop {
        let cached: Vec<f64> = other.locations(session).await.unwrap().iter().map(|(_, l)| l.lat).collect();
        if cached == [2.0] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the held position was never written: {cached:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn meta(user_id: UserId) -> PresenceMeta {
    PresenceMeta {
        paused: false,
        phx_ref: uuid::Uuid::new_v4().simple().to_string(),
        user_id,
        display_name: "Ann".into(),
        avatar_color: "#FF5733".into(),
        online_at: now(),
    }
}

async fn presence_lists_this_instances_connections(bus: &dyn Bus, _other: &dyn Bus) {
    let channel = Channel::Session(SessionId::new_random());
    let ann = UserId::new_random();
    let (phone, tablet) = (meta(ann), meta(ann));
    bus.presence_join(channel, &phone);
    bus.presence_join(channel, &tablet);
    bus.flush(FLUSH).await;
    let mut refs: Vec<String> = bus.presence(channel).await.into_iter().map(|m| m.phx_ref).collect();
    refs.sort();
    let mut expected = vec![phone.phx_ref.clone(), tablet.phx_ref.clone()];
    expected.sort();
    assert_eq!(refs, expected);
    bus.presence_leave(channel, &phone);
    bus.flush(FLUSH).await;
    assert_eq!(bus.presence(channel).await, vec![tablet]);
}

async fn room_membership_counts_each_users_sockets(bus: &dyn Bus, _other: &dyn Bus) {
    let room: RoomId = "u2edk8".parse().unwrap();
    let user = UserId::new_random();
    assert_eq!(bus.room_member(room, user, 1).await.unwrap(), 1, "arrives");
    assert_eq!(bus.room_member(room, user, 1).await.unwrap(), 2);
    assert_eq!(bus.room_member(room, user, -1).await.unwrap(), 1);
    assert_eq!(bus.room_member(room, user, -1).await.unwrap(), 0, "leaves");
    assert_eq!(bus.room_member(room, UserId::new_random(), 1).await.unwrap(), 1, "counted per user");
}

on_every_bus!(
    the_location_cache_keeps_the_latest_per_participant,
    a_flush_with_nothing_queued_changes_nothing,
    a_location_held_back_is_written_by_itself,
    presence_lists_this_instances_connections,
    room_membership_counts_each_users_sockets,
);
