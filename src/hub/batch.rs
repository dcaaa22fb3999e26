//! The ticks of batched delivery (`batch_ms`). One task per window length in use ticks at
//! that period and releases what gathered positions since the last tick: sessions whose
//! shared batch is waiting (built once, the same frame for every member), and single
//! connections gathering their own (those with `view_settings`). A connection is woken
//! once per batch it sends, never for nothing, and holds no timer of its own. A position
//! waits at most one window (half of one on average). A task whose tick finds nothing
//! waiting stops, so window lengths no longer in use cost nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{Hub, Outbox};
use crate::message::Channel;

/// What waits for a tick.
pub(super) enum Waiting {
    /// A session's shared batch (`Hub::release_session_batch`).
    Session(Channel),
    /// One connection's own batch.
    Connection(Weak<Outbox>),
}

/// Per window length, what waits for its next tick.
type ByWindow = HashMap<Duration, Vec<Waiting>>;

#[derive(Default)]
pub(super) struct Batches {
    waiting: Arc<Mutex<ByWindow>>,
}

impl Batches {
    /// Something opened a batch of `window`: it is released at that window's next tick.
    pub(super) fn opened(&self, window: Duration, what: Waiting, hub: &Weak<Hub>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let list = waiting.entry(window).or_insert_with(|| {
            tokio::spawn(tick(window, Arc::downgrade(&self.waiting), hub.clone()));
            Vec::new()
        });
        list.push(what);
    }

    /// Window lengths with a ticking task.
    #[cfg(test)]
    pub(super) fn ticking(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Releases what waits on `window` at every tick; stops at a tick with nothing (under the
/// same lock `opened` takes, so nothing ever waits on a stopped task).
async fn tick(window: Duration, waiting: Weak<Mutex<ByWindow>>, hub: Weak<Hub>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(waiting) = waiting.upgrade() else { return };
        let due = {
            let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
            let due = waiting.get_mut(&window).map(std::mem::take).unwrap_or_default();
            if due.is_empty() {
                waiting.remove(&window);
                return;
            }
            due
        };
        let Some(hub) = hub.upgrade() else { return };
        for what in due {
            match what {
                Waiting::Session(channel) => hub.release_session_batch(channel, window),
                Waiting::Connection(outbox) => {
                    if let Some(outbox) = outbox.upgrade() {
                        outbox.release_batch();
                    }
                }
            }
        }
    }
}
