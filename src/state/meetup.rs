//! Meeting up: a session's meeting point, set, moved or cleared through REST or a socket,
//! kept with the session and announced to everyone in it, on every instance; and, from the
//! positions each instance receives, arrivals and ETAs.
//!
//! Arrivals and ETAs are decided by the instance that receives a participant's positions:
//! the hot path only notes the newest fix in memory (`Meetups::observe`), and once a second
//! `AppState::meetup_tick` reads the meeting points of the sessions that moved (one query),
//! decides, and announces. An arrival is kept with the participant and changed with a
//! compare-and-set, so a change is announced once even if two instances decide it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::AppState;
use crate::domain::{
    Estimate, Location, MAX_TRAIL_POINTS, MeetingPoint, MeetingPointBy, MeetingPointInput, Pace, Placement,
    Session, SessionId, TRAIL_HARD_LIMIT, TRAIL_KEEP_DETAIL, Trail, TrailPoint, UserId,
};
use crate::error::ApiError;
use crate::message::HubMessage;
use crate::protocol::native::ServerMessage;

/// How often the positions noted are looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// An ETA is recomputed at most this often per participant.
const ESTIMATE_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// What is known of a participant not heard from for this long is forgotten.
const FORGET_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// An arrival this instance believes is written again (a no-op unless another instance
/// changed it) at most this often: another instance may have seen the participant leave.
const RECHECK_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// A session found without a meeting point is not asked about again for this long (a
/// point set on this instance is seen at once, one set on another within this).
const NO_POINT_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// The newest fixes noted since the last tick, and what the ticks know of each participant.
#[derive(Default)]
pub struct Meetups {
    noted: Mutex<HashMap<(SessionId, UserId), Location>>,
    known: tokio::sync::Mutex<HashMap<(SessionId, UserId), Progress>>,
    /// Sessions found without a meeting point, until when that is trusted.
    no_point: Mutex<HashMap<SessionId, DateTime<Utc>>>,
    /// The end of each trail this instance is recording.
    trails: tokio::sync::Mutex<HashMap<(SessionId, UserId), TrailEnd>>,
}

/// The last point kept of a participant's trail, and how many the trail holds (None: not
/// counted yet on this instance).
struct TrailEnd {
    last: TrailPoint,
    len: Option<u32>,
    /// The length at which thinning is tried next (it may find nothing old to drop).
    thin_at: u32,
    seen: DateTime<Utc>,
}

/// A participant's way to their session's meeting point, as this instance saw it.
struct Progress {
    /// The point it is about (its `set_at`): a new point starts afresh.
    point_set_at: DateTime<Utc>,
    arrived: Option<bool>,
    /// When `arrived` was last written (or found) in the store.
    checked_at: Option<DateTime<Utc>>,
    pace: Pace,
    told: Option<Estimate>,
    estimated_at: Option<DateTime<Utc>>,
    seen: DateTime<Utc>,
}

impl Meetups {
    /// The hot path's part: notes a participant's newest fix (by its own time). Memory only.
    pub fn observe(&self, session_id: SessionId, user_id: UserId, location: &Location) {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        noted
            .entry((session_id, user_id))
            .and_modify(|older| {
                if location.timestamp >= older.timestamp {
                    *older = *location;
                }
            })
            .or_insert(*location);
    }
}

/// Who asks to change a meeting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// The creator token's holder (its `sub`).
    Creator(UserId),
    /// A participant of the session.
    Participant(UserId),
}

impl Setter {
    /// Whose budgets it spends: the participant's, or the creator token's `sub`.
    pub fn id(self) -> UserId {
        match self {
            Self::Creator(id) | Self::Participant(id) => id,
        }
    }

    /// What participants are told: the participant, or nobody for the creator (whose id
    /// is not shown to anyone).
    fn participant(self) -> Option<UserId> {
        match self {
            Self::Creator(_) => None,
            Self::Participant(id) => Some(id),
        }
    }
}

/// Whether `setter` may change `session`'s meeting point.
fn allowed(state: &AppState, session: &Session, setter: Setter) -> Result<(), ApiError> {
    state.limits.allow_meeting_point(setter.id()).map_err(ApiError::rate_limited)?;
    match (setter, session.meeting_point_by) {
        (Setter::Creator(_), _) | (Setter::Participant(_), MeetingPointBy::Anyone) => Ok(()),
        (Setter::Participant(_), MeetingPointBy::Creator) => Err(ApiError::forbidden(
            "only the session's creator may set the meeting point here (the session was created with meeting_point_by: creator)",
        )),
    }
}

impl AppState {
    /// The session's trails from `since` on, one per participant who has one, each sampled
    /// to `sample` points if given; read by `asker`, whose budget it spends.
    pub async fn trails(
        &self,
        session_id: SessionId,
        asker: UserId,
        since: Option<DateTime<Utc>>,
        sample: Option<usize>,
    ) -> Result<Vec<Trail>, ApiError> {
        self.limits.allow_trails(asker).map_err(ApiError::rate_limited)?;
        // Any date parses; the stores take those from 1970 to tomorrow.
        let latest = self.clock.now() + chrono::TimeDelta::days(1);
        let since = since.map(|t| t.clamp(DateTime::UNIX_EPOCH, latest));
        let (points, participants) =
            tokio::try_join!(self.store.trails(session_id, since), self.reads.participants(session_id))?;
        let mut trails: Vec<Trail> = Vec::new();
        for (user_id, point) in points {
            match trails.last_mut() {
                Some(trail) if trail.user_id == user_id => trail.points.push(point),
                _ => {
                    let name = participants.iter().find(|p| p.user_id == user_id);
                    let display_name =
                        name.map_or_else(|| "someone who left".to_owned(), |p| p.display_name.clone());
                    trails.push(Trail { user_id, display_name, points: vec![point] });
                }
            }
        }
        Ok(match sample {
            Some(limit) => trails.into_iter().map(|t| t.sampled(limit)).collect(),
            None => trails,
        })
    }

    /// Sets or moves `session`'s meeting point and tells everyone (`meeting_point_set`).
    pub async fn set_meeting_point(
        &self,
        session: &Session,
        setter: Setter,
        input: &MeetingPointInput,
    ) -> Result<MeetingPoint, ApiError> {
        allowed(self, session, setter)?;
        let point = MeetingPoint::parse(input, setter.participant(), self.clock.now())?;
        if !self.store.set_meeting_point(session.id, Some(&point)).await? {
            return Err(ApiError::session_ended());
        }
        self.meetups.no_point.lock().unwrap_or_else(|e| e.into_inner()).remove(&session.id);
        let frame = ServerMessage::MeetingPointSet(&point).to_frame();
        self.publish(session.id, HubMessage::Event { frame });
        Ok(point)
    }

    /// Clears `session`'s meeting point and tells everyone (`meeting_point_cleared`).
    pub async fn clear_meeting_point(&self, session: &Session, setter: Setter) -> Result<(), ApiError> {
        allowed(self, session, setter)?;
        if !self.store.set_meeting_point(session.id, None).await? {
            return Err(ApiError::session_ended());
        }
        let frame =
            ServerMessage::MeetingPointCleared { cleared_by: setter.participant(), at: self.clock.now() }
                .to_frame();
        self.publish(session.id, HubMessage::Event { frame });
        Ok(())
    }
}

impl AppState {
    /// Looks at the fixes noted since the last tick: arrivals and departures decided and
    /// announced (`participant_arrived`, `participant_departed`), ETAs recomputed and told
    /// when they moved enough (`eta_update`). Tests call it to step the work.
    pub async fn meetup_tick(&self) {
        // One tick at a time, and the fixes taken under its lock: once a tick returns, every
        // fix noted before it began has been looked at (by it or the one before).
        let mut known = self.meetups.known.lock().await;
        let noted = std::mem::take(&mut *self.meetups.noted.lock().unwrap_or_else(|e| e.into_inner()));
        let now = self.clock.now();
        known.retain(|_, progress| now - progress.seen < FORGET_AFTER);
        if noted.is_empty() {
            return;
        }
        self.record_trails(&noted, now).await;
        let mut sessions: Vec<SessionId> = {
            let mut no_point = self.meetups.no_point.lock().unwrap_or_else(|e| e.into_inner());
            no_point.retain(|_, until| *until > now);
            noted.keys().map(|(session_id, _)| *session_id).filter(|id| !no_point.contains_key(id)).collect()
        };
        sessions.sort_unstable();
        sessions.dedup();
        if sessions.is_empty() {
            return;
        }
        let points: HashMap<SessionId, Arc<MeetingPoint>> = match self.store.meeting_points(&sessions).await {
            Ok(points) => points.into_iter().collect(),
            Err(err) => {
                tracing::warn!(error = %err, "could not read meeting points: arrivals wait for the next fixes");
                return;
            }
        };
        {
            let mut no_point = self.meetups.no_point.lock().unwrap_or_else(|e| e.into_inner());
            for id in sessions.iter().filter(|id| !points.contains_key(id)) {
                no_point.insert(*id, now + NO_POINT_FOR);
            }
        }
        for ((session_id, user_id), fix) in noted {
            let Some(point) = points.get(&session_id) else {
                known.remove(&(session_id, user_id));
                continue;
            };
            let progress = known.entry((session_id, user_id)).or_insert_with(|| Progress::new(point, now));
            if progress.point_set_at != point.set_at {
                *progress = Progress::new(point, now);
            }
            progress.seen = now;
            progress.pace.observe(&fix);
            self.decide_arrival(session_id, user_id, point, &fix, progress, now).await;
            self.estimate(session_id, user_id, point, &fix, progress, now);
        }
    }

    /// Trails: a fix goes on its participant's trail if it moved TRAIL_MIN_MOVE_M or came
    /// TRAIL_MIN_GAP after the last point kept (all of a tick's in one write); a trail past
    /// MAX_TRAIL_POINTS loses every other point older than TRAIL_KEEP_DETAIL. Paused
    /// positions are never shared, so never noted; approximate ones are noted coarse.
    async fn record_trails(&self, noted: &HashMap<(SessionId, UserId), Location>, now: DateTime<Utc>) {
        let mut trails = self.meetups.trails.lock().await;
        trails.retain(|_, end| now - end.seen < FORGET_AFTER);
        let mut kept = Vec::new();
        for (&(session_id, user_id), fix) in noted {
            let point = TrailPoint::of(fix);
            match trails.get_mut(&(session_id, user_id)) {
                Some(end)
                    if !end.last.is_followed_by(fix) || end.len.is_some_and(|n| n >= TRAIL_HARD_LIMIT) =>
                {
                    end.seen = now;
                }
                Some(end) => {
                    *end = TrailEnd { last: point, len: end.len.map(|n| n + 1), seen: now, ..*end };
                    kept.push((session_id, user_id, point));
                }
                None => {
                    let end = TrailEnd { last: point, len: None, thin_at: MAX_TRAIL_POINTS, seen: now };
                    trails.insert((session_id, user_id), end);
                    kept.push((session_id, user_id, point));
                }
            }
        }
        if let Err(err) = self.store.add_trail_points(&kept).await {
            tracing::warn!(error = %err, points = kept.len(), "trail points not stored");
            // Started afresh with the next fixes (recounted from the store).
            for (session_id, user_id, _) in &kept {
                trails.remove(&(*session_id, *user_id));
            }
            return;
        }
        for (session_id, user_id, _) in kept {
            let Some(end) = trails.get_mut(&(session_id, user_id)) else { continue };
            let len = match end.len {
                Some(len) => len,
                None => match self.store.trail_len(session_id, user_id).await {
                    Ok(len) => len,
                    Err(_) => continue,
                },
            };
            end.len = Some(len);
            if len > end.thin_at.max(MAX_TRAIL_POINTS)
                && let Ok(gone) = self.store.thin_trail(session_id, user_id, now - TRAIL_KEEP_DETAIL).await
            {
                let left = len.saturating_sub(gone);
                end.len = Some(left);
                // Nothing old enough to drop: tried again 100 points on, not every second.
                end.thin_at = left + 100;
            }
        }
    }

    async fn decide_arrival(
        &self,
        session_id: SessionId,
        user_id: UserId,
        point: &MeetingPoint,
        fix: &Location,
        progress: &mut Progress,
        now: DateTime<Utc>,
    ) {
        let arrived = match point.placement(fix) {
            Placement::Inside => true,
            Placement::Outside => false,
            Placement::Between => return,
        };
        if progress.arrived == Some(arrived) && progress.checked_at.is_some_and(|at| now - at < RECHECK_EVERY)
        {
            return;
        }
        match self.store.set_arrived(session_id, user_id, arrived, point.set_at).await {
            Ok(changed) => {
                progress.arrived = Some(arrived);
                progress.checked_at = Some(now);
                if changed {
                    let at = fix.timestamp;
                    let frame = if arrived {
                        ServerMessage::ParticipantArrived { user_id, at }
                    } else {
                        ServerMessage::ParticipantDeparted { user_id, at }
                    }
                    .to_frame();
                    self.publish(session_id, HubMessage::Event { frame });
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not keep an arrival: decided again with the next fix");
            }
        }
    }

    /// At most every ESTIMATE_EVERY per participant; told when it moved enough. None for
    /// those who arrived.
    fn estimate(
        &self,
        session_id: SessionId,
        user_id: UserId,
        point: &MeetingPoint,
        fix: &Location,
        progress: &mut Progress,
        now: DateTime<Utc>,
    ) {
        if progress.arrived == Some(true) || progress.estimated_at.is_some_and(|at| now - at < ESTIMATE_EVERY)
        {
            return;
        }
        progress.estimated_at = Some(now);
        let distance_m = (point.distance_m(fix) - point.radius_m).max(0.0).round();
        let estimate = Estimate { distance_m, eta_s: progress.pace.eta_s(distance_m) };
        if estimate.worth_telling(progress.told.as_ref()) {
            progress.told = Some(estimate);
            let frame = ServerMessage::EtaUpdate { user_id, estimate: &estimate, at: now }.to_frame();
            self.publish(session_id, HubMessage::Event { frame });
        }
    }
}

impl Progress {
    fn new(point: &MeetingPoint, now: DateTime<Utc>) -> Self {
        Self {
            point_set_at: point.set_at,
            arrived: None,
            checked_at: None,
            pace: Pace::default(),
            told: None,
            estimated_at: None,
            seen: now,
        }
    }
}

/// Ticks every TICK until the server shuts down.
pub async fn run(state: AppState) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = ticker.tick() => state.meetup_tick().await,
        }
    }
}
