//! The sweeper: ends sessions that passed their end time or sat idle too long, tells their
//! sockets, drops expired cached locations, announces the leaves of stopped instances'
//! connections, and enforces chat and session retention. `sweep_once` is public so tests can step it.
//! Several instances may sweep at once: the store hands each ended session to one caller.

use std::time::Duration;

use chrono::Duration as ChronoDuration;

use crate::domain::SessionId;
use crate::message::Channel;
use crate::state::{AppState, EndReason};
use crate::store::{ActivityBatch, StoreError};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Activity rows flushed before looking for idle sessions.
    pub flushed: usize,
    /// Sessions this sweep ended (and announced).
    pub ended: Vec<SessionId>,
    /// Cached locations dropped because their TTL passed.
    pub purged_locations: usize,
    /// Connections of stopped instances removed from presence (and announced as leaves).
    pub reaped_presence: usize,
    /// Chat messages older than CHAT_RETENTION_HOURS, deleted.
    pub deleted_messages: u64,
    /// Sessions ended more than SESSION_RETENTION_HOURS ago, deleted with their chat.
    pub deleted_sessions: u64,
}

pub async fn sweep_once(state: &AppState) -> Result<SweepReport, StoreError> {
    state.limits.retain_recent();
    // Pending activity first, so write-behind can never make an active session look idle.
    let flushed = state.activity.flush(state.store.as_ref()).await?;
    let now = state.clock.now();
    let idle = ChronoDuration::from_std(state.config.session_idle_timeout()).unwrap_or(ChronoDuration::MAX);
    let idle_since = now.checked_sub_signed(idle).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    // Another instance may have seen activity it has not written yet; the bus knows.
    let candidates = state.store.idle_sessions(idle_since).await?;
    let idle_since = if candidates.is_empty() {
        idle_since
    } else {
        match state.bus.last_activity(&candidates).await {
            Ok(seen) => {
                if !seen.is_empty() {
                    state
                        .store
                        .record_activity(&ActivityBatch { sessions: seen, participants: Vec::new() })
                        .await?;
                }
                idle_since
            }
            Err(err) => {
                // Unsure whether they are idle: end only what passed its end time this round.
                tracing::warn!(error = %err, "cannot read activity from the bus; skipping idle expiry");
                chrono::DateTime::<chrono::Utc>::MIN_UTC
            }
        }
    };
    let ended = state.store.expire_sessions(now, idle_since).await?;
    for session_id in &ended {
        tracing::info!(%session_id, "session expired");
        state.announce_end(*session_id, EndReason::Expired).await;
    }
    let purged_locations = state.bus.purge_expired().await;
    let reaped_presence = reap_presence(state).await;
    let hours_ago = |hours: u64| {
        let hours = i64::try_from(hours).unwrap_or(i64::MAX);
        ChronoDuration::try_hours(hours)
            .and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(chrono::DateTime::UNIX_EPOCH)
            // Nothing was written before 1970; an earlier cutoff would only be out of the
            // databases' range ("keep for ever" is a very large number of hours).
            .max(chrono::DateTime::UNIX_EPOCH)
    };
    let deleted_messages =
        state.store.delete_messages_before(hours_ago(state.config.chat_retention_hours)).await?;
    let deleted_sessions =
        state.store.delete_sessions_ended_before(hours_ago(state.config.session_retention_hours)).await?;
    ::metrics::counter!("convoy_sessions_expired_total").increment(ended.len() as u64);
    let (sessions, participants) = state.store.live_counts().await?;
    ::metrics::gauge!("convoy_sessions_active").set(sessions as f64);
    ::metrics::gauge!("convoy_participants_active").set(participants as f64);
    Ok(SweepReport { flushed, ended, purged_locations, reaped_presence, deleted_messages, deleted_sessions })
}

/// Announces the leaves of connections whose instance stopped without saying goodbye.
async fn reap_presence(state: &AppState) -> usize {
    let reaped = match state.bus.reap_presence().await {
        Ok(reaped) => reaped,
        Err(err) => {
            tracing::warn!(error = %err, "cannot reap presence; retrying next sweep");
            return 0;
        }
    };
    let mut by_channel: std::collections::HashMap<Channel, Vec<_>> = Default::default();
    for (channel, meta) in reaped {
        by_channel.entry(channel).or_default().push(meta);
    }
    let mut count = 0;
    for (channel, leaves) in by_channel {
        count += leaves.len();
        match channel {
            Channel::Session(session_id) => state.announce_presence(session_id, &[], &leaves),
            Channel::Room(room_id) => state.announce_room_leaves(room_id, &leaves).await,
        }
    }
    count
}

/// Sweeps every SWEEP_INTERVAL_SECONDS until shutdown. A failed sweep is logged and retried
/// at the next tick.
pub async fn run(state: AppState) {
    let mut ticker = tokio::time::interval(Duration::from_secs(state.config.sweep_interval_seconds));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep_once(&state).await {
            Ok(report) if !report.ended.is_empty() => {
                tracing::info!(ended = report.ended.len(), "sweep done");
            }
            Ok(report) => tracing::debug!(?report, "sweep done"),
            Err(err) => tracing::warn!(error = %err, "sweep failed; retrying next interval"),
        }
    }
}
