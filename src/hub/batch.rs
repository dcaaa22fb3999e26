//! The ticks of batched delivery (`batch_ms`). One task per window length in use ticks at
//! that period and releases the connections that gathered positions since the last tick:
//! a connection is woken once per batch it sends, never for nothing, and holds no timer
//! of its own. A position waits at most one window (half of one on average). A task whose
//! tick finds nobody waiting stops, so window lengths no longer in use cost nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::Outbox;

/// Per window length, the connections waiting for its next tick.
type Waiting = HashMap<Duration, Vec<Weak<Outbox>>>;

#[derive(Default)]
pub(super) struct Batches {
    waiting: Arc<Mutex<Waiting>>,
}

impl Batches {
    /// `outbox` opened a batch: it is released at the next tick of its window.
    pub(super) fn opened(&self, window: Duration, outbox: &Arc<Outbox>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let list = waiting.entry(window).or_insert_with(|| {
            tokio::spawn(tick(window, Arc::downgrade(&self.waiting)));
            Vec::new()
        });
        list.push(Arc::downgrade(outbox));
    }

    /// Window lengths with a ticking task.
    #[cfg(test)]
    pub(super) fn ticking(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Releases the connections waiting on `window` at every tick; stops at a tick with none
/// (under the same lock `opened` takes, so a connection never waits on a stopped task).
async fn tick(window: Duration, waiting: Weak<Mutex<Waiting>>) {
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
        for outbox in due.iter().filter_map(Weak::upgrade) {
            outbox.release_batch();
        }
    }
}
