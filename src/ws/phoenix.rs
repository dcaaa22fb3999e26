//! The Phoenix Channels socket on `/socket/websocket` (seed 001), so apps written for the
//! Elixir backend with the `phoenix` npm client work unchanged: heartbeats on topic
//! `phoenix`, and one channel, `location:{session_id}`, on the same hub as `/ws`. The
//! serializers (V1, V2) and the framing of hub messages are in `protocol/phoenix.rs`.
//!
//! Channel events: the client pushes `location_update {lat, lng, accuracy, timestamp}` and
//! `ping`; the server pushes `location_update {user_id, lat, lng, accuracy, timestamp}`,
//! `participant_joined`, `participant_left`, `session_ended`, `presence_state`,
//! `presence_diff` (Phoenix Presence's shape) and every other session event under its
//! native name.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::connection::{self, Protocol};
use super::socket::WebSocket;
use crate::admission::ConnectionSlot;
use crate::domain::{Location, LocationInput, MeetingPointInput, Participant, Session};
use crate::error::ApiError;
use crate::http::ClientIp;
use crate::hub::Outbox;
use crate::message::{Channel, CloseReason, Frame, Wire, close_code};
use crate::presence::PresenceMeta;
use crate::protocol::native::ServerMessage;
use crate::protocol::phoenix::{Incoming, channel_closed, decode, encode, fastlane, topic_of};
use crate::snapshot::{self, Loaded};
use crate::state::{AppState, EndReason, Setter};

#[derive(Deserialize)]
pub(super) struct PhoenixQuery {
    token: Option<String>,
    vsn: Option<String>,
    /// The session the socket is for (a routing hint, checked against the token).
    session: Option<crate::domain::SessionId>,
}

pub(super) async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: Result<Query<PhoenixQuery>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
    ws: Result<super::upgrade::WebSocketUpgrade, ApiError>,
) -> Result<Response, ApiError> {
    let ws = super::upgrade_requested(&state, &headers, ws)?;
    let Query(query) = query?;
    let wire = match query.vsn.as_deref() {
        None | Some("1.0.0") => Wire::PhoenixV1,
        Some("2.0.0") => Wire::PhoenixV2,
        Some(other) => {
            let message = format!("unsupported serializer vsn {other:?}: use 2.0.0 or 1.0.0");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message));
        }
    };
    let token = query.token.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::unauthorized("missing token: connect to /socket/websocket?token=<websocket_token>")
    })?;
    let (admitted, slot) = super::admit(&state, &token, query.session, ip).await?;
    let (response, upgrading) = ws.accept();
    state.sockets.clone().spawn(run(upgrading, state, admitted, wire, slot));
    Ok(response)
}

/// A Phoenix socket. It is on its session's hub channel from the start, muted (only closes
/// reach it) until its channel is joined, so a session's end or a participant's removal
/// reaches it joined or not.
struct PhoenixSocket<'a> {
    state: &'a AppState,
    session: &'a Session,
    me: &'a Participant,
    outbox: &'a Arc<Outbox>,
    wire: Wire,
    topic: String,
    presence: PresenceMeta,
    /// The join_ref of the joined channel; None when not joined.
    joined: Option<Option<String>>,
    /// Whether `presence` is announced.
    present: bool,
    /// The token's expiry (Unix seconds): the socket closes then.
    token_expires_at: i64,
}

/// A Phoenix socket from its upgrade to its close; `slot` is its place under the socket caps.
/// Values are owned here once and lent below, and the body is an async block (see
/// `native::run`).
#[allow(clippy::manual_async_fn)] // not an `async fn`: see `native::run`
fn run(
    upgrading: super::upgrade::Upgrading,
    state: AppState,
    admitted: super::Admitted,
    wire: Wire,
    slot: ConnectionSlot,
) -> impl Future<Output = ()> + Send {
    async move {
        let Some(mut socket) = upgrading.socket().await else { return };
        serve(&mut socket, &state, &admitted, wire).await;
        drop(slot);
    }
}

async fn serve(socket: &mut WebSocket, state: &AppState, admitted: &super::Admitted, wire: Wire) {
    let super::Admitted { session, me, claims } = admitted;
    let span = tracing::info_span!("phoenix", session_id = %session.id, user_id = %me.user_id);
    async {
        tracing::info!("connected");
        let outbox = state.hub.outbox(wire);
        outbox.set_muted(true);
        let subscription =
            Box::pin(state.hub.subscribe(Channel::Session(session.id), me.user_id, outbox.clone())).await;
        let mut phoenix = PhoenixSocket {
            state,
            session,
            me,
            outbox: &outbox,
            wire,
            topic: topic_of(session.id),
            presence: PresenceMeta::connect(me, state.clock.now()),
            joined: None,
            present: false,
            token_expires_at: claims.exp,
        };
        connection::serve(socket, state, me.user_id, &outbox, &mut phoenix).await;
        phoenix.leave();
        drop(subscription);
        state.activity.touch(session.id, me.user_id, state.clock.now());
        tracing::info!("disconnected");
    }
    .instrument(span)
    .await;
}

impl PhoenixSocket<'_> {
    fn reply(&self, incoming: &Incoming<'_>, status: &str, response: serde_json::Value) {
        self.outbox.push_event(self.reply_frame(incoming, status, &response));
    }

    fn reply_frame(&self, incoming: &Incoming<'_>, status: &str, response: &impl Serialize) -> Frame {
        let payload = json!({ "status": status, "response": response });
        encode(
            self.wire,
            incoming.join_ref.as_deref(),
            incoming.msg_ref.as_deref(),
            &incoming.topic,
            "phx_reply",
            &payload,
        )
    }

    fn refuse(&self, incoming: &Incoming<'_>, reason: &str) {
        self.reply(incoming, "error", json!({ "reason": reason }));
        self.outbox.release();
    }

    /// Whether the channel is joined (the server closes it when the session ends).
    fn is_joined(&self) -> bool {
        self.joined.is_some() && !self.outbox.is_muted()
    }

    /// A message on this socket's channel, from the server.
    fn push(&self, event: &str, payload: &impl Serialize) -> Frame {
        let join_ref = self.joined.as_ref().and_then(|j| j.as_deref());
        encode(self.wire, join_ref, None, &self.topic, event, payload)
    }

    async fn join(&mut self, incoming: &Incoming<'_>) {
        if incoming.topic != self.topic {
            let reason =
                if incoming.topic.starts_with("location:") { "unauthorized" } else { "unmatched topic" };
            return self.refuse(incoming, reason);
        }
        // Events from here on queue behind the reply and the snapshot. A second join of
        // the same topic replaces the first (new join_ref) and keeps its presence.
        self.outbox.hold_until_snapshot();
        self.outbox.set_muted(false);
        match snapshot::load(self.state, self.session.id, self.me).await {
            Loaded::Ready(mut snapshot) => {
                if !self.present {
                    self.state.presence_join(self.session.id, &self.presence);
                    self.present = true;
                }
                snapshot.include_presence(&self.presence);
                self.joined = Some(incoming.join_ref.clone());
                // The reply carries what `/ws` sends as `session_state`; Presence follows.
                self.outbox.push_first(self.reply_frame(incoming, "ok", &snapshot.session_state()));
                self.outbox.push_snapshot(vec![self.push("presence_state", &snapshot.presence())]);
            }
            Loaded::Ended => {
                self.leave();
                self.refuse(incoming, "session_ended");
            }
            Loaded::Left => {
                self.leave();
                self.refuse(incoming, "left the session");
            }
            Loaded::Failed(err) => {
                tracing::warn!(error = %err, "could not load the snapshot for a join");
                self.leave();
                self.refuse(incoming, "unavailable: try again");
            }
        }
    }

    /// Leaves the channel: muted on the hub, out of presence.
    fn leave(&mut self) {
        self.outbox.set_muted(true);
        self.joined = None;
        if std::mem::take(&mut self.present) {
            self.state.presence_leave(self.session.id, &self.presence);
        }
    }

    async fn handle(&mut self, incoming: Incoming<'_>) {
        let metrics = &self.state.metrics;
        match (incoming.topic.as_str(), incoming.event.as_str()) {
            ("phoenix", "heartbeat") => {
                metrics.pings_in.increment(1);
                self.reply(&incoming, "ok", json!({}));
            }
            (_, "phx_join") => {
                metrics.channel_joins_in.increment(1);
                self.join(&incoming).await;
            }
            (topic, _) if topic != self.topic || !self.is_joined() => {
                self.refuse(&incoming, "unmatched topic");
            }
            (_, "phx_leave") => {
                self.leave();
                self.reply(&incoming, "ok", json!({}));
            }
            (_, "location_update") => match serde_json::from_str::<LocationInput>(incoming.payload.get())
                .map_err(|e| e.to_string())
                .and_then(|input| Location::parse(&input, self.state.clock.now()).map_err(|e| e.to_string()))
            {
                Ok(location) => {
                    metrics.location_updates_in.increment(1);
                    self.state.share_location(self.session.id, self.me.user_id, location).await;
                    self.reply(&incoming, "ok", json!({}));
                }
                Err(err) => {
                    metrics.invalid_in.increment(1);
                    self.refuse(&incoming, &format!("invalid_location: {err}"));
                }
            },
            (_, "ping") => {
                metrics.pings_in.increment(1);
                self.reply(&incoming, "ok", json!({ "pong": true }));
            }
            (_, "set_meeting_point") => {
                let setter = Setter::Participant(self.me.user_id);
                let set = match serde_json::from_str::<MeetingPointInput>(incoming.payload.get()) {
                    Ok(input) => self.state.set_meeting_point(self.session, setter, &input).await,
                    Err(err) => {
                        Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", err.to_string()))
                    }
                };
                match set {
                    Ok(point) => self.reply(&incoming, "ok", json!({ "meeting_point": point })),
                    Err(err) => self.refuse(&incoming, &format!("{}: {}", err.code, err.message)),
                }
            }
            (_, "clear_meeting_point") => {
                match self.state.clear_meeting_point(self.session, Setter::Participant(self.me.user_id)).await
                {
                    Ok(()) => self.reply(&incoming, "ok", json!({})),
                    Err(err) => self.refuse(&incoming, &format!("{}: {}", err.code, err.message)),
                }
            }
            (_, event) => {
                metrics.invalid_in.increment(1);
                let reason = format!(
                    "unknown event {event:?}: expected location_update, ping, set_meeting_point or clear_meeting_point"
                );
                self.refuse(&incoming, &reason);
            }
        }
    }
}

impl Protocol for PhoenixSocket<'_> {
    async fn text(&mut self, text: &str) {
        match decode(self.wire, text) {
            Ok(incoming) => self.handle(incoming).await,
            Err(err) => {
                self.state.metrics.invalid_in.increment(1);
                let reason = format!("not a Phoenix message: {err}");
                let frame =
                    encode(self.wire, None, None, "phoenix", "phx_error", &json!({ "reason": reason }));
                self.outbox.push_event(frame);
            }
        }
    }

    fn binary(&mut self) {
        let reason = "binary frames are not supported: use the JSON serializer";
        let frame = encode(self.wire, None, None, "phoenix", "phx_error", &json!({ "reason": reason }));
        self.outbox.push_event(frame);
    }

    /// Every refused push gets its error reply (a client waits for one per ref); a
    /// heartbeat is never refused: missing one would make the client reconnect.
    async fn rate_limited(&mut self, text: Option<&str>, message: &str, _tell: bool) {
        let Some(incoming) = text.and_then(|t| decode(self.wire, t).ok()) else { return };
        if (incoming.topic.as_str(), incoming.event.as_str()) == ("phoenix", "heartbeat") {
            return self.handle(incoming).await;
        }
        if incoming.msg_ref.is_some() {
            self.reply(&incoming, "error", json!({ "reason": format!("rate_limited: {message}") }));
        }
    }

    fn token_expires_at(&self) -> i64 {
        self.token_expires_at
    }

    async fn resync(&mut self) {
        if !self.is_joined() {
            return;
        }
        match snapshot::load(self.state, self.session.id, self.me).await {
            Loaded::Ready(snapshot) => {
                let session_state = self.push("session_state", &snapshot.session_state());
                let presence = self.push("presence_state", &snapshot.presence());
                self.outbox.push_snapshot(vec![session_state, presence]);
            }
            Loaded::Ended => {
                // As when the end is announced: the channel closes, the socket stays.
                let ended = ServerMessage::SessionEnded { reason: EndReason::Expired.as_str() }.to_frame();
                let channel = Channel::Session(self.session.id);
                for frame in
                    fastlane(self.wire, channel, &ended).into_iter().chain(channel_closed(self.wire, channel))
                {
                    self.outbox.push_event(frame);
                }
                self.leave();
            }
            Loaded::Left => {
                let last = channel_closed(self.wire, Channel::Session(self.session.id));
                self.outbox.close(last, CloseReason::new(close_code::NORMAL, "left the session"));
            }
            Loaded::Failed(err) => {
                tracing::warn!(error = %err, "could not resynchronise; keeping the connection");
            }
        }
    }
}
