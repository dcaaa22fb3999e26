//! One socket, two halves run side by side: the reader parses and acts on client frames
//! (and rebuilds the snapshot when asked to resynchronise); the writer drains the
//! connection's outbox, snapshot first, flushing once per batch. Everything that ends a connection goes through `Outbox::close`, so both halves
//! stop together and the client always gets a close code.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::protocol::{ClientMessage, LocationBroadcast, ServerMessage, SessionState, parse_client};
use super::topics::{MAX_TOPICS_PER_CONNECTION, Scope, Topic, TopicError};
use crate::auth::Role;
use crate::chat::{self, RoomMembership};
use crate::domain::{self, ChatContent, ChatRoom, Location, Participant, RoomId, Session};
use crate::hub::{Channel, CloseReason, Outbox, close_code};
use crate::limits::ConnectionLimiter;
use crate::metrics::RealtimeMetrics;
use crate::presence::{PresenceMeta, presence_map};
use crate::state::AppState;
use crate::state::EndReason;

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(socket: WebSocket, state: AppState, session: Session, me: Participant) {
    let span = tracing::info_span!("ws", session_id = %session.id, user_id = %me.user_id);
    async move {
        tracing::info!("connected");
        let subscription =
            state.hub.subscribe(Channel::Session(session.id), me.user_id, state.hub.outbox()).await;
        let outbox = subscription.outbox.clone();
        let presence = PresenceMeta::connect(&me, domain::now());
        state.presence_join(session.id, &presence);
        // Subscribed first, snapshot second: anything that happens in between is queued
        // behind the snapshot, so the client misses nothing.
        resynchronise(&state, &session, &me, &outbox, true).await;
        let (sink, stream) = socket.split();
        let writer_done = CancellationToken::new();
        let heartbeat = Duration::from_secs(state.config.heartbeat_interval_seconds);
        let mut conn = Conn {
            state: &state,
            session: &session,
            me: &me,
            outbox: &outbox,
            presence: &presence,
            room: None,
        };
        tokio::join!(
            write_loop(sink, &outbox, &state.shutdown, heartbeat, &state.metrics, writer_done.clone()),
            read_loop(stream, &mut conn, &writer_done),
        );
        if let Some(room) = conn.room.take() {
            state.exit_room(room, &presence).await;
        }
        state.presence_leave(session.id, &presence);
        drop(subscription);
        state.activity.touch(session.id, me.user_id, domain::now());
        tracing::info!("disconnected");
    }
    .instrument(span)
    .await
}

/// Puts a fresh snapshot at the front of the queue: on connect, and again whenever the bus
/// may have lost messages. Re-checks the session and the participant from the store, so a
/// removal or an end that was missed closes the socket instead.
async fn resynchronise(state: &AppState, session: &Session, me: &Participant, outbox: &Outbox, first: bool) {
    let (current, participants, messages) = match tokio::try_join!(
        state.store.session(session.id),
        state.store.participants(session.id),
        state.store.messages(ChatRoom::Session(session.id), None, chat::HISTORY),
    ) {
        Ok(found) => found,
        Err(err) if first => {
            tracing::error!(error = %err, "could not load the snapshot");
            outbox.close(None, CloseReason::new(close_code::INTERNAL_ERROR, "try again"));
            return;
        }
        Err(err) => {
            // The client keeps its state and live updates; its next reconnect recovers.
            tracing::warn!(error = %err, "could not resynchronise; keeping the connection");
            return;
        }
    };
    match current {
        Some(current) if current.is_live(domain::now()) => {}
        _ => {
            let ended = ServerMessage::SessionEnded { reason: EndReason::Expired.as_str() }.to_frame();
            outbox.close(Some(ended), CloseReason::new(close_code::NORMAL, "session ended"));
            return;
        }
    }
    let active: Vec<Participant> = participants.into_iter().filter(|p| p.is_active).collect();
    if !active.iter().any(|p| p.user_id == me.user_id) {
        outbox.close(None, CloseReason::new(close_code::NORMAL, "left the session"));
        return;
    }
    // Without the location cache the snapshot still has everyone; positions follow live.
    let locations = state.bus.locations(session.id).await.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "snapshot without locations: the bus is unavailable");
        Vec::new()
    });
    let present = state.bus.presence(Channel::Session(session.id)).await;
    let message = ServerMessage::SessionState(SessionState {
        session_id: session.id,
        name: session.name.as_deref(),
        expires_at: session.expires_at,
        user_id: me.user_id,
        participants: &active,
        locations: locations
            .into_iter()
            .filter(|(user_id, _)| active.iter().any(|p| p.user_id == *user_id))
            .map(|(user_id, location)| LocationBroadcast { user_id, location })
            .collect(),
        messages: &messages,
    });
    let presence = ServerMessage::PresenceState(&presence_map(&present)).to_frame();
    outbox.push_snapshot(vec![message.to_frame(), presence]);
}

type Sink = SplitSink<WebSocket, Message>;

async fn write_loop(
    mut sink: Sink,
    outbox: &Outbox,
    shutdown: &CancellationToken,
    heartbeat: Duration,
    metrics: &RealtimeMetrics,
    done: CancellationToken,
) {
    let _done = done.drop_guard();
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut batch = Vec::new();
    loop {
        // Pings before frames: a steady stream of frames must not starve the heartbeat.
        let ping = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                send_close(&mut sink, CloseReason::new(close_code::GOING_AWAY, "server shutting down")).await;
                return;
            }
            _ = pings.tick() => true,
            _ = outbox.ready() => false,
        };
        let close = outbox.drain(&mut batch);
        metrics.frames_out.increment(batch.len() as u64);
        let write_all = async {
            if ping {
                sink.feed(Message::Ping(Default::default())).await?;
            }
            for frame in batch.drain(..) {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await
        };
        // A client that stopped reading must not keep a close or a shutdown waiting.
        tokio::select! {
            result = write_all => if result.is_err() { return },
            _ = outbox.closing(), if close.is_none() => {}
            _ = tokio::time::sleep(CLOSE_TIMEOUT), if close.is_some() => return,
            _ = shutdown.cancelled() => {}
        }
        batch.clear();
        if let Some(reason) = close {
            send_close(&mut sink, reason).await;
            return;
        }
    }
}

async fn send_close(sink: &mut Sink, reason: CloseReason) {
    let frame = CloseFrame { code: reason.code, reason: reason.reason };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// What the reader acts for: one participant's socket in one session, and the local room
/// it is in, if any.
struct Conn<'a> {
    state: &'a AppState,
    session: &'a Session,
    me: &'a Participant,
    outbox: &'a Arc<Outbox>,
    /// This socket's presence entry, in its session and in its room.
    presence: &'a PresenceMeta,
    room: Option<RoomMembership>,
}

async fn read_loop(mut stream: SplitStream<WebSocket>, conn: &mut Conn<'_>, writer_done: &CancellationToken) {
    let Conn { state, session, me, outbox, .. } = *conn;
    let timeout = Duration::from_secs(state.config.client_timeout_seconds);
    // Any frame from the client, a pong included, shows it is alive and moves this on.
    let silence = tokio::time::sleep(timeout);
    tokio::pin!(silence);
    let mut timed_out = false;
    let mut limiter = state.limits.connection();
    loop {
        let message = tokio::select! {
            _ = writer_done.cancelled() => {
                // The writer sent a close: finish the closing handshake (read until the
                // client's close), so the client reads ours before the TCP connection goes.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(message)) = stream.next().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
            _ = outbox.resync_requested() => {
                if !outbox.is_closing() {
                    // Bounded: after a bus outage every socket asks at once.
                    let _permit = state.resync_permits.acquire().await;
                    resynchronise(state, session, me, outbox, false).await;
                    if let Some(room) = &conn.room {
                        state.send_room_history(room.room, outbox).await;
                    }
                }
                continue;
            }
            _ = &mut silence, if !timed_out => {
                tracing::info!("closing: the client stopped answering");
                outbox.close(None, CloseReason::new(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                timed_out = true;
                state.metrics.heartbeat_timeouts.increment(1);
                continue; // on to the closing handshake once the writer sent the close
            }
            message = stream.next() => message,
        };
        silence.as_mut().reset(tokio::time::Instant::now() + timeout);
        match message {
            // Every message a client sends counts against the rate limits, whatever it is.
            Some(Ok(Message::Text(_) | Message::Binary(_))) if !admitted(state, me, outbox, &mut limiter) => {
            }
            Some(Ok(Message::Text(text))) => handle_text(text.as_str(), conn).await,
            Some(Ok(Message::Binary(_))) => reply_error(outbox, "unsupported_frame", "send JSON text frames"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                outbox.close(None, CloseReason::new(close_code::NORMAL, "bye"));
                return;
            }
            Some(Err(err)) => {
                let reason = if is_too_big(err) {
                    tracing::info!("closing: message over the size limit");
                    CloseReason::new(close_code::TOO_BIG, "message too big")
                } else {
                    CloseReason::new(close_code::PROTOCOL_ERROR, "protocol error")
                };
                outbox.close(None, reason);
                return;
            }
        }
    }
}

fn is_too_big(err: axum::Error) -> bool {
    err.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Validates and stores a chat message; everyone in the room (the sender too) gets it.
async fn post(state: &AppState, room: ChatRoom, me: &Participant, content: &str, outbox: &Outbox) {
    let content = match ChatContent::parse(content) {
        Ok(content) => content,
        Err(err) => return reply_error(outbox, "invalid_message", &err.to_string()),
    };
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

/// Whether a client message may be handled: not after a close was asked for (removed,
/// ended, timed out), and not past a rate limit (the client is told, at most once a second).
fn admitted(state: &AppState, me: &Participant, outbox: &Outbox, limiter: &mut ConnectionLimiter) -> bool {
    if outbox.is_closing() {
        return false;
    }
    match state.limits.allow_message(limiter, me.user_id) {
        Ok(()) => true,
        Err(scope) => {
            state.metrics.rate_limited(scope).increment(1);
            if limiter.should_reply() {
                let message = format!("too many messages ({} limit): this one was dropped", scope.as_str());
                reply_error(outbox, "rate_limited", &message);
            }
            false
        }
    }
}

async fn handle_text(text: &str, conn: &mut Conn<'_>) {
    let Conn { state, session, me, outbox, presence, .. } = *conn;
    let metrics = &state.metrics;
    let scope = Scope { session_id: session.id, user_id: me.user_id };
    match parse_client(text) {
        Ok(ClientMessage::Subscribe { topics }) => {
            metrics.subscribes_in.increment(1);
            subscribe(&scope, outbox, &topics)
        }
        Ok(ClientMessage::Unsubscribe { topics }) => {
            metrics.unsubscribes_in.increment(1);
            unsubscribe(&scope, outbox, &topics)
        }
        Ok(ClientMessage::Publish { topic, payload }) => {
            metrics.publishes_in.increment(1);
            match scope.authorize(&topic) {
                Ok(target) => {
                    let name = scope.canonical(&target);
                    state.publish_topic(session.id, me.user_id, &target, &name, &payload)
                }
                Err(err) => refuse_topic(outbox, &err),
            }
        }
        Ok(ClientMessage::LocationUpdate(input)) => match Location::parse(&input, domain::now()) {
            Ok(location) => {
                metrics.location_updates_in.increment(1);
                state.share_location(session.id, me.user_id, location).await
            }
            Err(err) => {
                metrics.invalid_in.increment(1);
                reply_error(outbox, "invalid_location", &err.to_string())
            }
        },
        Ok(ClientMessage::DirectMessage { target_user, payload }) => {
            metrics.direct_messages_in.increment(1);
            match state.send_direct(session.id, me.user_id, target_user, &payload).await {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!("{target_user} is not a participant of this session");
                    reply_error(outbox, "unknown_target", &message)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "direct message not sent");
                    reply_error(outbox, "unavailable", "could not send the message; try again")
                }
            }
        }
        Ok(ClientMessage::RefreshToken) => {
            metrics.token_refreshes_in.increment(1);
            match state.refresh_token(session.id, me.user_id.0, Role::Participant).await {
                Ok((token, expires_at)) => {
                    outbox.push_event(ServerMessage::TokenRefreshed { token: &token, expires_at }.to_frame())
                }
                Err(err) => reply_error(outbox, err.code, &err.message),
            }
        }
        Ok(ClientMessage::ChatMessage { content }) => {
            metrics.chat_in.increment(1);
            post(state, ChatRoom::Session(session.id), me, &content, outbox).await
        }
        Ok(ClientMessage::JoinLocalChat { lat, lng }) => {
            metrics.room_joins_in.increment(1);
            match RoomId::at(lat, lng) {
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
            match &conn.room {
                Some(current) => post(state, ChatRoom::Local(current.room), me, &content, outbox).await,
                None => reply_error(outbox, "not_in_room", "send join_local_chat {lat, lng} before message"),
            }
        }
        Ok(ClientMessage::Ping) => {
            metrics.pings_in.increment(1);
            outbox.push_event(ServerMessage::Pong {}.to_frame())
        }
        Err(err) => {
            metrics.invalid_in.increment(1);
            reply_error(outbox, err.code, &err.message)
        }
    }
}
