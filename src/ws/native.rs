//! The native protocol of `/ws` (seeds 000, 003, 004): JSON `{"type", "data"}` frames.
//! A socket is in its session from the start: the snapshot comes first, then events.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::connection::{self, Protocol};
use super::socket::WebSocket;
use super::upgrade::Upgrading;
use crate::admission::ConnectionSlot;
use crate::auth::Claims;
use crate::chat::RoomMembership;
use crate::domain::topic::{MAX_TOPICS_PER_CONNECTION, Scope, Topic, TopicError};
use crate::domain::{ChatContent, ChatRoom, Location, Participant, RoomId, Session, TRAIL_ANSWER_POINTS};
use crate::hub::Outbox;
use crate::limits::{MessageKind, Refused, ReplyThrottle};
use crate::message::{Channel, CloseReason, Wire, close_code};
use crate::presence::PresenceMeta;
use crate::protocol::native::{ClientMessage, ServerMessage, parse_client};
use crate::snapshot::{self, Loaded};
use crate::state::{AppState, EndReason, Setter};

/// The longest frame checked for being a `ping` when over the rate limit.
const MAX_PING_BYTES: usize = 256;

/// A native socket from its upgrade to its close; `slot` is its place under the socket caps.
#[allow(clippy::manual_async_fn)] // not an `async fn`: see `native::run`
pub fn run(
    upgrading: Upgrading,
    state: AppState,
    admitted: super::Admitted,
    batch: Option<Duration>,
    slot: ConnectionSlot,
) -> impl Future<Output = ()> + Send {
    // Everything a socket holds while it waits lives in its task's future: each value is
    // owned once, here, and lent below (a value passed on by move is stored at every level).
    // An async block, not an `async fn`: an async fn's future keeps its arguments twice
    // (as passed, and moved into its body), 350 bytes of every socket's task.
    async move {
        let Some(mut socket) = upgrading.socket().await else { return };
        serve(&mut socket, &state, &admitted, batch).await;
        drop(slot);
    }
}

/// Serves a native socket; `batch` is its `batch_ms` window, if it asked for batched delivery.
pub async fn serve(
    socket: &mut WebSocket,
    state: &AppState,
    admitted: &super::Admitted,
    batch: Option<Duration>,
) {
    let super::Admitted { session, me, claims } = admitted;
    let span = tracing::info_span!("ws", session_id = %session.id, user_id = %me.user_id);
    async {
        tracing::info!("connected");
        let outbox = state.hub.outbox(Wire::Native);
        outbox.set_batch(batch);
        let subscription =
            Box::pin(state.hub.subscribe(Channel::Session(session.id), me.user_id, outbox)).await;
        let outbox = subscription.outbox.clone();
        let presence = PresenceMeta::connect(me, state.clock.now());
        state.presence_join(session.id, &presence);
        // Subscribed first, snapshot second: anything that happens in between is queued
        // behind the snapshot, so the client misses nothing.
        Box::pin(resynchronise(state, session, me, &outbox, true)).await;
        let mut conn = Conn {
            state,
            session,
            me,
            outbox: &outbox,
            presence: &presence,
            changed_meta: None,
            room: None,
            approximate: false,
            paused: false,
            budget_reply: ReplyThrottle::new(state.clock.clone()),
            pong_over_limit: ReplyThrottle::new(state.clock.clone()),
            claims,
            refreshed: None,
        };
        connection::serve(socket, state, me.user_id, &outbox, &mut conn).await;
        if let Some(room) = conn.room.take() {
            Box::pin(state.exit_room(room, &presence)).await;
        }
        state.presence_leave(session.id, conn.session_meta());
        drop(subscription);
        state.activity.touch(session.id, me.user_id, state.clock.now());
        tracing::info!("disconnected");
    }
    .instrument(span)
    .await;
}

/// Puts a fresh snapshot (`session_state`, `presence_state`) at the front of the queue: on
/// connect, and again whenever the bus may have lost messages.
async fn resynchronise(state: &AppState, session: &Session, me: &Participant, outbox: &Outbox, first: bool) {
    match snapshot::load(state, session.id, me).await {
        Loaded::Ready(snapshot) => {
            let session_state = ServerMessage::SessionState(snapshot.session_state()).to_frame();
            let presence = ServerMessage::PresenceState(&snapshot.presence()).to_frame();
            outbox.push_snapshot(vec![session_state, presence]);
        }
        Loaded::Ended => {
            let ended = ServerMessage::SessionEnded { reason: EndReason::Expired.as_str() }.to_frame();
            outbox.close([ended], CloseReason::new(close_code::NORMAL, "session ended"));
        }
        Loaded::Left => outbox.close([], CloseReason::new(close_code::NORMAL, "left the session")),
        Loaded::Failed(err) if first => {
            tracing::error!(error = %err, "could not load the snapshot");
            outbox.close([], CloseReason::new(close_code::INTERNAL_ERROR, "try again"));
        }
        Loaded::Failed(err) => {
            // The client keeps its state and live updates; its next reconnect recovers.
            tracing::warn!(error = %err, "could not resynchronise; keeping the connection");
        }
    }
}

/// What the reader acts for: one participant's socket in one session, and the local room
/// it is in, if any.
struct Conn<'a> {
    state: &'a AppState,
    session: &'a Session,
    me: &'a Participant,
    outbox: &'a Arc<Outbox>,
    /// This socket's presence entry in its room (fixed for the connection's life).
    presence: &'a PresenceMeta,
    /// Its entry in the session's presence once it differs from `presence` (paused, or
    /// resumed under a new ref); boxed, as most connections never change it and every one
    /// keeps this room for its life (`session_meta`).
    changed_meta: Option<Box<PresenceMeta>>,
    room: Option<RoomMembership>,
    /// `share_settings`: positions coarsened to about 1 km, or not shared at all.
    approximate: bool,
    paused: bool,
    /// When the client was last told it is over its byte budget.
    budget_reply: ReplyThrottle,
    /// When a ping over the rate limit was last answered.
    pong_over_limit: ReplyThrottle,
    /// The token's claims: its generation and its expiry, when the socket closes.
    claims: &'a Claims,
    /// The latest refresh's claims once there was one (boxed for the same reason as
    /// `changed_meta`; see `claims`).
    refreshed: Option<Box<Claims>>,
}

impl Conn<'_> {
    /// Its entry in the session's presence: the same as in its room, or its paused variant.
    fn session_meta(&self) -> &PresenceMeta {
        self.changed_meta.as_deref().unwrap_or(self.presence)
    }

    /// The claims this socket stands for: the latest refresh's, else its token's.
    fn claims(&self) -> &Claims {
        self.refreshed.as_deref().unwrap_or(self.claims)
    }
}

impl Protocol for Conn<'_> {
    async fn text(&mut self, text: &str) {
        handle_text(text, self).await;
    }

    fn binary(&mut self) {
        reply_error(self.outbox, "unsupported_frame", "send JSON text frames");
    }

    /// A `ping` is answered whatever the limits say (once a second over them): a client
    /// that was briefly chatty must not conclude its connection is dead. Only short frames
    /// are looked at.
    async fn rate_limited(&mut self, text: Option<&str>, message: &str, tell: bool) {
        if let Some(text) = text.filter(|t| t.len() <= MAX_PING_BYTES)
            && matches!(parse_client(text), Ok(ClientMessage::Ping))
        {
            // One a second at most: enough for a liveness check, no free echo service.
            if self.pong_over_limit.due() {
                self.state.metrics.pings_in.increment(1);
                self.outbox.push_event(ServerMessage::Pong {}.to_frame());
            }
            return;
        }
        if tell {
            reply_error(self.outbox, "rate_limited", message);
        }
    }

    fn token_expires_at(&self) -> i64 {
        self.claims().exp
    }

    async fn resync(&mut self) {
        resynchronise(self.state, self.session, self.me, self.outbox, false).await;
        if let Some(room) = &self.room {
            self.state.describe_room(room.room, self.outbox).await;
        }
    }
}

/// Whether a message to others may go; if not, the client is told why (a size refusal
/// each time, a budget refusal at most once a second).
fn allowed(conn: &mut Conn<'_>, channel: Channel, kind: MessageKind, bytes: usize) -> bool {
    let (state, outbox) = (conn.state, conn.outbox);
    match state.allow_to_others(channel, conn.me.user_id, kind, bytes) {
        Ok(()) => true,
        Err(refused @ Refused::OverBudget(_)) => {
            state.metrics.refused_over_budget.increment(1);
            if conn.budget_reply.due() {
                reply_error(outbox, "rate_limited", &refused.to_string());
            }
            false
        }
        Err(too_large) => {
            state.metrics.refused_too_large.increment(1);
            reply_error(outbox, "message_too_large", &too_large.to_string());
            false
        }
    }
}

/// Validates and stores a chat message; everyone in the room (the sender too) gets it.
async fn post(conn: &mut Conn<'_>, room: ChatRoom, content: &str) {
    let (state, me, outbox) = (conn.state, conn.me, conn.outbox);
    let content = match ChatContent::parse(content) {
        Ok(content) => content,
        Err(err) => return reply_error(outbox, "invalid_message", &err.to_string()),
    };
    let channel = match room {
        ChatRoom::Session(id) => Channel::Session(id),
        ChatRoom::Local(id) => Channel::Room(id),
    };
    if !allowed(conn, channel, MessageKind::Chat, content.as_str().len()) {
        return;
    }
    if let Err(err) = state.post_message(room, me, &content).await {
        tracing::warn!(error = %err, "chat message not stored");
        reply_error(outbox, "unavailable", "the message could not be stored; send it again");
    }
}

fn reply_error(outbox: &Outbox, code: &str, message: &str) {
    outbox.push_event(ServerMessage::Error { code, message, topic: None }.to_frame());
}

fn refuse_topic(outbox: &Outbox, err: &TopicError) {
    let message = ServerMessage::Error { code: err.code, message: &err.message, topic: Some(&err.topic) };
    outbox.push_event(message.to_frame());
}

/// The topics of a `subscribe` or `unsubscribe` this connection may use; an `error` naming
/// each one it may not.
fn authorized(scope: &Scope, outbox: &Outbox, raw: &[&String]) -> Vec<Topic> {
    let mut topics = Vec::with_capacity(raw.len());
    for name in raw {
        match scope.authorize(name) {
            Ok(topic) => topics.push(topic),
            Err(err) => refuse_topic(outbox, &err),
        }
    }
    topics
}

fn named(topics: &[Topic]) -> Vec<std::sync::Arc<str>> {
    topics
        .iter()
        .filter_map(|t| match t {
            Topic::Named(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// A request's topics, each once; none if it names more than a connection may hold.
fn requested<'a>(outbox: &Outbox, raw: &'a [String]) -> Option<Vec<&'a String>> {
    if raw.len() > MAX_TOPICS_PER_CONNECTION {
        let message = format!("a request names at most {MAX_TOPICS_PER_CONNECTION} topics");
        reply_error(outbox, "invalid_message", &message);
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    Some(raw.iter().filter(|name| seen.insert(name.as_str())).collect())
}

fn subscribe(scope: &Scope, outbox: &Outbox, raw: &[String]) {
    let Some(raw) = requested(outbox, raw) else { return };
    let topics = authorized(scope, outbox, &raw);
    // The session and user topics are always held; only named ones count.
    if !outbox.subscribe_topics(&named(&topics), MAX_TOPICS_PER_CONNECTION) {
        let message =
            format!("at most {MAX_TOPICS_PER_CONNECTION} topics per connection: nothing was subscribed");
        return reply_error(outbox, "too_many_topics", &message);
    }
    let names: Vec<String> = topics.iter().map(|t| scope.canonical(t)).collect();
    outbox.push_event(ServerMessage::Subscribed { topics: &names }.to_frame());
}

fn unsubscribe(scope: &Scope, outbox: &Outbox, raw: &[String]) {
    let Some(raw) = requested(outbox, raw) else { return };
    let mut topics = authorized(scope, outbox, &raw);
    topics.retain(|topic| {
        let implicit = !matches!(topic, Topic::Named(_));
        if implicit {
            let name = scope.canonical(topic);
            let message = format!("{name} is held by every connection of the session and cannot be left");
            refuse_topic(outbox, &TopicError { code: "implicit_topic", message, topic: name });
        }
        !implicit
    });
    outbox.unsubscribe_topics(&named(&topics));
    let names: Vec<String> = topics.iter().map(|t| scope.canonical(t)).collect();
    outbox.push_event(ServerMessage::Unsubscribed { topics: &names }.to_frame());
}

async fn handle_text(text: &str, conn: &mut Conn<'_>) {
    let Conn { state, session, me, outbox, presence, .. } = *conn;
    let metrics = &state.metrics;
    let scope = Scope { session_id: session.id, user_id: me.user_id };
    match parse_client(text) {
        Ok(ClientMessage::Subscribe { topics }) => {
            metrics.subscribes_in.increment(1);
            subscribe(&scope, outbox, &topics);
        }
        Ok(ClientMessage::Unsubscribe { topics }) => {
            metrics.unsubscribes_in.increment(1);
            unsubscribe(&scope, outbox, &topics);
        }
        Ok(ClientMessage::Publish { topic, payload }) => {
            metrics.publishes_in.increment(1);
            match scope.authorize(&topic) {
                Ok(target) => {
                    let bytes = payload.get().len();
                    if allowed(conn, Channel::Session(session.id), MessageKind::Publish, bytes) {
                        let name = scope.canonical(&target);
                        state.publish_topic(session.id, me.user_id, &target, &name, &payload);
                    }
                }
                Err(err) => refuse_topic(outbox, &err),
            }
        }
        Ok(ClientMessage::LocationUpdate(input)) => match Location::parse(&input, state.clock.now()) {
            Ok(_) if conn.paused => metrics.location_updates_in.increment(1), // shared with no one
            Ok(location) => {
                metrics.location_updates_in.increment(1);
                // Approximate: coarsened here, before anyone (or the cache) sees it.
                let location = if conn.approximate { location.approximate() } else { Some(location) };
                if let Some(location) = location {
                    state.share_location(session.id, me.user_id, location).await;
                }
            }
            Err(err) => {
                metrics.invalid_in.increment(1);
                reply_error(outbox, "invalid_location", &err.to_string());
            }
        },
        Ok(ClientMessage::DirectMessage { target_user, payload }) => {
            metrics.direct_messages_in.increment(1);
            let bytes = payload.get().len();
            if !allowed(conn, Channel::Session(session.id), MessageKind::Direct, bytes) {
                return;
            }
            match state.send_direct(session.id, me.user_id, target_user, &payload).await {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!("{target_user} is not a participant of this session");
                    reply_error(outbox, "unknown_target", &message);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "direct message not sent");
                    reply_error(outbox, "unavailable", "could not send the message; try again");
                }
            }
        }
        Ok(ClientMessage::RefreshToken) => {
            metrics.token_refreshes_in.increment(1);
            match state.refresh_token(conn.claims()).await {
                Ok((token, expires_at)) => {
                    // This socket now stands for the new token: its generation, its expiry.
                    if let Ok(claims) = state.tokens.verify(&token) {
                        conn.refreshed = Some(Box::new(claims));
                    }
                    outbox.push_event(ServerMessage::TokenRefreshed { token: &token, expires_at }.to_frame());
                }
                Err(err) => reply_error(outbox, err.code, &err.message),
            }
        }
        Ok(ClientMessage::ChatMessage { content }) => {
            metrics.chat_in.increment(1);
            post(conn, ChatRoom::Session(session.id), &content).await;
        }
        Ok(ClientMessage::JoinLocalChat { lat, lng }) => {
            metrics.room_joins_in.increment(1);
            match RoomId::at(lat, lng) {
                Ok(room) if conn.room.as_ref().is_some_and(|current| current.room == room) => {
                    // Still in the same cell: nothing changes for the others.
                    state.describe_room(room, outbox).await;
                }
                Ok(room) => {
                    if let Some(current) = conn.room.take() {
                        state.exit_room(current, presence).await;
                    }
                    conn.room = Some(state.enter_room(room, me, presence, outbox).await);
                }
                Err(err) => reply_error(outbox, "invalid_location", &err.to_string()),
            }
        }
        Ok(ClientMessage::LeaveLocalChat) => {
            metrics.room_leaves_in.increment(1);
            match conn.room.take() {
                Some(current) => state.exit_room(current, presence).await,
                None => reply_error(outbox, "not_in_room", "this socket is not in a local room"),
            }
        }
        Ok(ClientMessage::RoomMessage { content }) => {
            metrics.room_messages_in.increment(1);
            match conn.room.as_ref().map(|current| current.room) {
                Some(room) => post(conn, ChatRoom::Local(room), &content).await,
                None => reply_error(outbox, "not_in_room", "send join_local_chat {lat, lng} before message"),
            }
        }
        Ok(ClientMessage::Ping) => {
            metrics.pings_in.increment(1);
            outbox.push_event(ServerMessage::Pong {}.to_frame());
        }
        Ok(ClientMessage::ShareSettings { approximate, paused }) => {
            // Kept for the participant's tracker apps (the fields sent, whichever socket sent
            // them, also once it has closed), before any position is forgotten below, so
            // that an app's report in between cannot put back what is being forgotten.
            if let Err(err) = state.keep_share_settings(session.id, me.user_id, approximate, paused).await {
                tracing::warn!(error = %err, "could not keep the share settings for tracker apps");
                reply_error(
                    outbox,
                    "unavailable",
                    "these settings apply to this connection but not yet to your tracker apps: send them again",
                );
            }
            if approximate == Some(true) && !conn.approximate {
                // The exact position cached so far must not reach later snapshots.
                if let Err(err) = state.bus.remove_location(session.id, me.user_id).await {
                    tracing::warn!(error = %err, "could not forget an exact position");
                }
            }
            conn.approximate = approximate.unwrap_or(conn.approximate);
            if let Some(paused) = paused
                && paused != conn.paused
            {
                conn.paused = paused;
                // Presence says so (Phoenix-style: the old meta leaves, the new one joins).
                let updated = conn.session_meta().with_paused(paused);
                state.presence_update(session.id, conn.session_meta(), &updated);
                conn.changed_meta = Some(Box::new(updated));
                if paused {
                    state.clear_location(session.id, me.user_id).await;
                }
            }
            let precision = if conn.approximate { "approximate" } else { "exact" };
            outbox.push_event(ServerMessage::ShareSettings { precision, paused: conn.paused }.to_frame());
        }
        Ok(ClientMessage::ViewSettings { min_interval_ms, min_distance_m }) => {
            let (interval, distance) = outbox.view();
            let interval = min_interval_ms.map_or(interval, std::time::Duration::from_millis);
            let distance = min_distance_m.unwrap_or(distance);
            outbox.set_view(interval, distance, state.config.location_ttl() / 2);
            let min_interval_ms = interval.as_millis() as u64;
            outbox.push_event(
                ServerMessage::ViewSettings { min_interval_ms, min_distance_m: distance }.to_frame(),
            );
        }
        Ok(ClientMessage::SetMeetingPoint(input)) => {
            // Everyone in the session, this socket included, gets `meeting_point_set`.
            if let Err(err) = state.set_meeting_point(session, Setter::Participant(me.user_id), &input).await
            {
                reply_error(outbox, err.code, &err.message);
            }
        }
        Ok(ClientMessage::ClearMeetingPoint) => {
            if let Err(err) = state.clear_meeting_point(session, Setter::Participant(me.user_id)).await {
                reply_error(outbox, err.code, &err.message);
            }
        }
        Ok(ClientMessage::GetTrails { since }) => {
            match state.trails(session.id, me.user_id, since, Some(TRAIL_ANSWER_POINTS)).await {
                Ok(trails) => outbox.push_event(ServerMessage::Trails { trails: &trails }.to_frame()),
                Err(err) => reply_error(outbox, err.code, &err.message),
            }
        }
        Ok(ClientMessage::Auth { .. }) => {
            reply_error(outbox, "already_authenticated", "this socket is already authenticated");
        }
        Err(err) => {
            metrics.invalid_in.increment(1);
            reply_error(outbox, err.code, &err.message);
        }
    }
}
