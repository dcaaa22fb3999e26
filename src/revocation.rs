//! Removals that hold without the bus: every REVOCATION_CHECK_SECONDS an instance on a
//! shared bus reads from the store the sessions that ended and the participants who left
//! since its last look, and closes their sockets here. Normally the bus told this instance
//! already (then nobody is found still connected); while Redis is down, this is how it
//! learns, within seconds. `check_once` is public so tests can step it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tungstenite::Utf8Bytes;

use crate::domain::{SessionId, UserId};
use crate::message::{Channel, Envelope, HubMessage, close_code};
use crate::protocol::native::ServerMessage;
use crate::state::{AppState, EndReason};
use crate::store::StoreError;

/// Each look reaches this far before the previous one: writes from instances whose clocks
/// run a little behind are still seen. Repeats are harmless (nobody is left to close).
const OVERLAP: chrono::Duration = chrono::Duration::seconds(30);
/// How long departures already acted on are remembered (so a Phoenix socket, which stays
/// open after its channel closed, is not told again on every look).
const REMEMBER: Duration = Duration::from_secs(600);

/// Departures this instance already acted on.
#[derive(Debug, Default)]
pub struct Seen {
    ended: HashSet<SessionId>,
    left: HashSet<(SessionId, UserId)>,
    since: Option<Instant>,
}

impl Seen {
    /// Forgets everything now and then: the set stays as small as REMEMBER's departures.
    fn expire(&mut self) {
        if self.since.is_none_or(|at| at.elapsed() > REMEMBER) {
            *self = Self { since: Some(Instant::now()), ..Self::default() };
        }
    }
}

/// Checks until shutdown; does nothing on the in-process bus, which tells every socket at once.
pub async fn run(state: AppState) {
    if state.bus.kind() == "in-process" {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(state.config.revocation_check_seconds));
    let mut since = state.clock.now() - OVERLAP;
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = state.clock.now();
        match check_once(&state, since, &mut seen).await {
            Ok(closed) if closed > 0 => {
                tracing::info!(closed, "closed sockets of departures the bus did not deliver");
            }
            Ok(_) => {}
            Err(err) => {
                // The next look reaches back to the last good one.
                tracing::warn!(error = %err, "could not check for departures");
                continue;
            }
        }
        since = now - OVERLAP;
    }
}

/// Closes this instance's sockets of sessions that ended, and of participants who left,
/// after `since`, unless `seen` says that was done. Returns how many sessions and
/// participants it found still connected.
pub async fn check_once(
    state: &AppState,
    since: DateTime<Utc>,
    seen: &mut Seen,
) -> Result<usize, StoreError> {
    let departures = state.store.departures_since(since).await?;
    seen.expire();
    let mut closed = 0;
    for session_id in departures.ended {
        let channel = Channel::Session(session_id);
        if state.hub.subscriber_count(channel) == 0 || !seen.ended.insert(session_id) {
            continue;
        }
        // The reason is not stored; a missed end reads as `expired`, as a snapshot says it.
        let frame = ServerMessage::SessionEnded { reason: EndReason::Expired.as_str() }.to_frame();
        state.hub.deliver_local(&Envelope { channel, message: HubMessage::End { frame } });
        closed += 1;
    }
    for (session_id, user_id) in departures.left {
        let channel = Channel::Session(session_id);
        if !state.hub.is_subscribed(channel, user_id) || !seen.left.insert((session_id, user_id)) {
            continue;
        }
        let reason = Utf8Bytes::from_static("left the session");
        let message = HubMessage::Disconnect { user_id, code: close_code::NORMAL, reason };
        state.hub.deliver_local(&Envelope { channel, message });
        closed += 1;
    }
    Ok(closed)
}
