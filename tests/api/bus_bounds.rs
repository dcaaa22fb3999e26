//! The Redis writer's queue is bounded in bytes as well as in commands: a Redis slower than
//! the instance drops what does not fit (counted), never grows memory, and the sessions
//! that lost events are told to resynchronise.

use convoy::bus::{BusEvent, BusSettings, Messaging, RedisBus, RedisTarget};
use convoy::domain::SessionId;
use convoy::message::{Channel, Envelope, HubMessage};
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

use super::helpers::*;

async fn bus(max_bytes: usize, shutdown: &CancellationToken) -> (RedisBus, convoy::bus::Inbound) {
    let (_, redis_url) = scaled_urls();
    let target = RedisTarget::Single(redis_url);
    let settings = BusSettings { queue_max_bytes: max_bytes, ..bus_settings(Some(target.clone())) };
    RedisBus::connect(&target, &settings, shutdown.clone()).await.expect("redis")
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
// One thread: the publishes below run back to back while the writer cannot drain.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_larger_than_the_byte_budget_is_dropped_and_resynchronised() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (sender, _) = bus(8 * 1024, &shutdown).await;
    let (receiver, mut inbound) = bus(64 * 1024 * 1024, &shutdown).await;
    let channel = Channel::Session(SessionId::new_random());
    receiver.subscribe(channel).await;

    // Twenty 1 KiB events at once: about seven fit in 8 KiB; 65,536 would fit by count.
    let frame = format!(r#"{{"type":"broadcast","data":{{"payload":"{}"}}}}"#, "x".repeat(1000));
    for _ in 0..20 {
        sender.publish(&Envelope {
            channel,
            message: HubMessage::Event { frame: Utf8Bytes::from(frame.clone()) },
        });
    }
    let mut events = 0;
    loop {
        let event = tokio::time::timeout(WAIT, inbound.recv()).await.expect("in time").expect("open");
        match event {
            BusEvent::Deliver(Envelope { message: HubMessage::Event { .. }, .. }) => events += 1,
            // The loss is not silent: the session's sockets will rebuild their snapshots.
            BusEvent::Deliver(Envelope { message: HubMessage::Resync, channel: resynced }) => {
                assert_eq!(resynced, channel);
                break;
            }
            _ => {}
        }
    }
    assert!((1..20).contains(&events), "{events} of 20 went through an 8 KiB queue");
    // With room again, publishing works as before.
    sender.publish(&Envelope { channel, message: HubMessage::Event { frame: Utf8Bytes::from(frame) } });
    loop {
        let event = tokio::time::timeout(WAIT, inbound.recv()).await.expect("in time").expect("open");
        if matches!(event, BusEvent::Deliver(Envelope { message: HubMessage::Event { .. }, .. })) {
            break;
        }
    }
}
