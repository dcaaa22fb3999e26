//! The prober and the circuit breaker it drives: Redis pinged every second; while the
//! breaker is open, publishing and caching are skipped and reads fail at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::conn::Conn;
use super::keys::{HEARTBEAT, eval};
use super::listeners::Listeners;
use super::writer::{Command, Queue};
use super::{INSTANCES_KEY, MAX_BACKOFF, PRESENCE_REFRESH, PROBE_INTERVAL, RESYNC_SPACING, call};
use crate::bus::wire::{self, Roll};
use crate::bus::{BusError, BusEvent};
use crate::message::{Channel, HubMessage};
use crate::presence::LocalPresence;

/// The circuit breaker and what health checks report.
#[derive(Default)]
pub(super) struct Breaker {
    pub(super) open: AtomicBool,
    pub(super) subscriber_down: AtomicBool,
    pub(super) dropped: AtomicU64,
    /// Channels whose messages were dropped; they get a `Resync` once publishing works.
    pub(super) dropped_channels: Mutex<HashSet<Channel>>,
    /// A cluster slot that was failing answers again: the Resyncs its sessions are owed go
    /// now, not when RESYNC_SPACING allows.
    pub(super) slot_recovered: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
}

impl Breaker {
    pub(super) fn trip(&self, error: impl ToString) {
        let error = error.to_string();
        if !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "redis unreachable: circuit open, cross-instance delivery paused");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub(super) fn reset(&self) {
        if self.open.swap(false, Ordering::Relaxed) {
            tracing::info!("redis reachable again: circuit closed");
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    pub(super) fn error(&self) -> BusError {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        BusError(format!("redis unreachable (circuit open): {}", last.unwrap_or_else(|| "unknown".into())))
    }
}

/// This instance, as the prober speaks for it.
pub(super) struct Instance {
    pub(super) instance_id: Uuid,
    pub(super) presence: Arc<LocalPresence>,
    pub(super) listeners: Arc<Listeners>,
}

pub(super) async fn run_prober(
    mut conn: Conn,
    breaker: Arc<Breaker>,
    queue: Queue,
    instance: Instance,
    inbound: mpsc::UnboundedSender<BusEvent>,
    shutdown: CancellationToken,
) {
    let Instance { instance_id, presence, listeners } = instance;
    let mut backoff = PROBE_INTERVAL;
    let mut last_resync: HashMap<Channel, Instant> = HashMap::new();
    let mut last_refresh = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        match call(conn.ping()).await {
            Ok(_) => {
                breaker.reset();
                backoff = PROBE_INTERVAL;
                // The heartbeat that keeps this instance's presence alive. Added anew (1)
                // means the others took this instance for gone, removed its entries and
                // announced its sockets as leaves: rewrite them, have those channels'
                // sockets everywhere resynchronise, and this instance's own too.
                let mut beat = eval(&HEARTBEAT, INSTANCES_KEY);
                beat.arg(instance_id.to_string());
                // The others may have forgotten it as a listener too: the Resync of every
                // session it listens to is followed by a Hello.
                match call(beat.query_async(&mut conn)).await {
                    Ok(1) if !presence.channels().is_empty() || !listeners.sessions().is_empty() => {
                        tracing::warn!("this instance was taken for gone: restoring its presence");
                        let listened = listeners.sessions().into_iter().map(Channel::Session);
                        let mut dropped = breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner());
                        dropped.extend(presence.channels());
                        dropped.extend(listened);
                        drop(dropped);
                        let _ = inbound.send(BusEvent::ResyncAll);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "presence heartbeat failed"),
                }
                if last_refresh.elapsed() >= PRESENCE_REFRESH
                    && queue.try_send(Command::PresenceRefresh).is_ok()
                {
                    last_refresh = Instant::now();
                }
                // Tell the other instances' sockets in sessions we dropped messages for, at
                // most once per RESYNC_SPACING per session (a Redis that keeps failing some
                // commands must not make every socket resnapshot every second).
                let now = Instant::now();
                if breaker.slot_recovered.swap(false, Ordering::Relaxed) {
                    last_resync.clear();
                }
                last_resync.retain(|_, at| now.duration_since(*at) < RESYNC_SPACING);
                let due: Vec<Channel> = {
                    let dropped = breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner());
                    dropped.iter().filter(|s| !last_resync.contains_key(s)).copied().collect()
                };
                for channel in due {
                    // Presence changes may be among what was lost: rewrite ours first. A
                    // roll call may be too: say Hello again where this instance listens.
                    let hello = match channel {
                        Channel::Session(session_id) if listeners.is_listening(session_id) => {
                            Some(wire::encode_roll(instance_id, Roll::Hello))
                        }
                        _ => None,
                    };
                    if queue.capacity() < 3 {
                        break; // the queue is full: the rest stay for the next round
                    }
                    let payload = wire::encode(instance_id, &HubMessage::Resync);
                    let replace = Command::PresenceReplace { channel };
                    let resync = Command::Publish { channel, payload, must_arrive: true };
                    if queue.try_send(replace).is_err() || queue.try_send(resync).is_err() {
                        break;
                    }
                    if let Some(payload) = hello
                        && queue.try_send(Command::Publish { channel, payload, must_arrive: true }).is_err()
                    {
                        break;
                    }
                    breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).remove(&channel);
                    last_resync.insert(channel, now);
                }
            }
            Err(err) => {
                breaker.trip(err);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
