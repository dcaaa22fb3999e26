//! The ticks of batched delivery (`batch_ms`). One task per window length in use ticks at
//! that period and releases the connections that gathered positions since the last tick:
//! a connection is woken once per batch it sends, never for nothing, and holds no timer
//! of its own. A position waits at most one window (half of one on average).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::Outbox;

#[derive(Default)]
pub(super) struct Batches {
    tickers: Mutex<HashMap<Duration, Arc<Ticker>>>,
}

/// The connections of one window length with positions waiting for the next tick.
#[derive(Default)]
struct Ticker {
    waiting: Mutex<Vec<Weak<Outbox>>>,
}

impl Batches {
    /// `outbox` opened a batch: it is released at the next tick of its window.
    pub(super) fn opened(&self, window: Duration, outbox: &Arc<Outbox>) {
        let ticker = {
            let mut tickers = self.tickers.lock().unwrap_or_else(|e| e.into_inner());
            tickers
                .entry(window)
                .or_insert_with(|| {
                    let ticker = Arc::new(Ticker::default());
                    tokio::spawn(tick(window, Arc::downgrade(&ticker)));
                    ticker
                })
                .clone()
        };
        ticker.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(outbox));
    }
}

/// Releases the waiting connections at every tick, until the hub is gone.
async fn tick(window: Duration, ticker: Weak<Ticker>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due = Vec::new();
    loop {
        ticks.tick().await;
        let Some(ticker) = ticker.upgrade() else { return };
        std::mem::swap(&mut due, &mut *ticker.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        drop(ticker);
        for outbox in due.drain(..).filter_map(|o| o.upgrade()) {
            outbox.release_batch();
        }
    }
}
