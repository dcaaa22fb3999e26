//! Write-behind activity: location updates mark their session active and their sender
//! seen in memory; a flusher writes the newest times to the store in batches, so the hot
//! path never waits on SQL. The sweeper flushes before it looks for idle sessions, so
//! batching can never let an active session expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::domain::{SessionId, UserId};
use crate::store::{ActivityBatch, Store, StoreError};

#[derive(Default)]
struct Pending {
    sessions: HashMap<SessionId, DateTime<Utc>>,
    participants: HashMap<(SessionId, UserId), DateTime<Utc>>,
}

impl Pending {
    fn touch(&mut self, session_id: SessionId, user_id: UserId, at: DateTime<Utc>) {
        let newest = |slot: &mut DateTime<Utc>| *slot = (*slot).max(at);
        self.sessions.entry(session_id).and_modify(newest).or_insert(at);
        self.participants.entry((session_id, user_id)).and_modify(newest).or_insert(at);
    }
}

#[derive(Default)]
pub struct Activity {
    pending: Mutex<Pending>,
    /// Held for a whole flush, so a flush that finds nothing pending has also waited for
    /// one that took the batch and is still writing it (the sweeper relies on this).
    flushing: tokio::sync::Mutex<()>,
}

impl Activity {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `user_id` was active in the session at `at`. Memory only.
    pub fn touch(&self, session_id: SessionId, user_id: UserId, at: DateTime<Utc>) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).touch(session_id, user_id, at);
    }

    /// Writes everything pending. On failure the batch is kept for the next attempt.
    /// Returns how many rows were written.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let _flushing = self.flushing.lock().await;
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.sessions.is_empty() {
            return Ok(0);
        }
        let batch = ActivityBatch {
            sessions: taken.sessions.iter().map(|(s, at)| (*s, *at)).collect(),
            participants: taken.participants.iter().map(|((s, u), at)| (*s, *u, *at)).collect(),
        };
        match store.record_activity(&batch).await {
            Ok(()) => Ok(batch.sessions.len() + batch.participants.len()),
            Err(err) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for ((session_id, user_id), at) in taken.participants {
                    pending.touch(session_id, user_id, at);
                }
                Err(err)
            }
        }
    }

    /// Flushes every `interval` until cancelled. The last flush is the shutdown's, after
    /// the sockets have closed.
    pub async fn run_flusher(&self, store: &dyn Store, interval: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if let Err(err) = self.flush(store).await {
                tracing::warn!(error = %err, "activity flush failed; will retry");
            }
        }
    }
}
