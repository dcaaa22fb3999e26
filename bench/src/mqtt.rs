//! The reference run: the same fan-out pattern over MQTT against a broker (Mosquitto on
//! this machine). A topic per session, every participant subscribed to its session's topic
//! and publishing its position there at QoS 0; a broker sends a publisher its own message
//! back, which receivers skip. The payload is `{sender index}|{scheduled RFC 3339 time}`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::Plan;
use crate::measure::{Counters, Recorder, Report, Schedule, Stop, Ticker, Watched, measure};

/// One connected, subscribed MQTT client.
pub struct Phone {
    index: usize,
    topic: String,
    client: AsyncClient,
    events: EventLoop,
}

pub async fn run(plan: &Plan, broker: &str, watched: &Watched, quiet: bool) -> Result<Report> {
    let started_at = Utc::now();
    let (host, port) = broker.rsplit_once(':').context("--mqtt wants host:port")?;
    let port: u16 = port.parse().context("--mqtt port")?;
    let run_id = uuid_ish();
    let phones: Vec<Result<Phone>> = stream::iter(0..plan.connections())
        .map(|index| {
            let topic = format!("convoy-bench/{run_id}/{}", index / plan.participants);
            connect(host.to_owned(), port, format!("bench-{run_id}-{index}"), index, topic)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let phones = phones.into_iter().collect::<Result<Vec<_>>>()?;
    eprintln!("{} MQTT clients subscribed", phones.len());
    measure(plan, watched, quiet, started_at, phones, phone).await
}

/// A run-unique tag for client ids and topics (runs must not see each other).
fn uuid_ish() -> String {
    format!("{:x}", Utc::now().timestamp_nanos_opt().unwrap_or_default())
}

async fn connect(host: String, port: u16, id: String, index: usize, topic: String) -> Result<Phone> {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(60)).set_request_channel_capacity(64);
    let (client, mut events) = AsyncClient::new(options, 64);
    client.subscribe(topic.clone(), QoS::AtMostOnce).await?;
    // Connected and subscribed before the run starts.
    let ready = async {
        loop {
            match events.poll().await? {
                Event::Incoming(Packet::SubAck(_)) => return Ok::<_, anyhow::Error>(()),
                Event::Incoming(Packet::Disconnect) => bail!("the broker disconnected"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready).await.context("MQTT subscribe timed out")??;
    Ok(Phone { index, topic, client, events })
}

async fn phone(phone: Phone, schedule: Schedule, counters: Arc<Counters>, mut stop: Stop) {
    let Phone { index, topic, client, mut events } = phone;
    let sender = async {
        let mut ticker = Ticker::new(schedule);
        loop {
            let scheduled = ticker.next().await;
            let payload =
                format!("{index}|{}", scheduled.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            if client.publish(topic.as_str(), QoS::AtMostOnce, false, payload).await.is_err() {
                return std::future::pending::<()>().await;
            }
            ticker.sent(scheduled, &counters);
        }
    };
    let receiver = async {
        let mut recorder = Recorder::new(counters.clone(), &schedule);
        let me = index.to_string();
        loop {
            let event = tokio::select! {
                _ = stop.changed() => break,
                event = events.poll() => event,
            };
            let Ok(Event::Incoming(Packet::Publish(publish))) = event else {
                if event.is_err() {
                    break;
                }
                continue;
            };
            let now = Utc::now();
            let Ok(text) = std::str::from_utf8(&publish.payload) else { continue };
            let Some((from, sent)) = text.split_once('|') else { continue };
            if from == me {
                continue; // the broker's echo of our own publish
            }
            if let Ok(sent) = DateTime::parse_from_rfc3339(sent) {
                recorder.record(sent.with_timezone(&Utc), now);
            }
        }
        recorder.flush();
    };
    tokio::select! {
        _ = sender => {}
        _ = receiver => {}
    }
    let _ = client.try_disconnect();
}
