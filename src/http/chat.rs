//! Chat over REST: a session's history, and seed 004's local rooms (find, join, read, post).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, ApiQuery, Bearer, ClientIp, active};
use crate::auth::{Claims, Role};
use crate::chat::HISTORY;
use crate::domain::{self, ChatContent, ChatMessage, ChatRoom, RoomId, SessionId};
use crate::error::ApiError;
use crate::limits::{MessageKind, RestAction};
use crate::message::Channel;
use crate::state::AppState;

/// Most messages one history page returns.
pub const MAX_PAGE: u32 = 100;

pub fn router() -> Router<AppState> {
    let (small, chat) =
        (super::body_limit(super::SMALL_BODY_BYTES), super::body_limit(super::CHAT_BODY_BYTES));
    Router::new()
        .route("/sessions/{session_id}/messages", get(session_history))
        .route("/rooms", get(rooms_near))
        .route("/rooms/join", post(room_for_position).layer(small))
        .route("/rooms/{room_id}/messages", get(room_history).post(post_to_room).layer(chat))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Only messages with a smaller id: the oldest id of the page already held.
    before: Option<String>,
    limit: Option<u32>,
}

impl PageQuery {
    fn parse(&self) -> Result<(Option<i64>, u32), ApiError> {
        let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
        let before = match &self.before {
            None => None,
            Some(raw) => match raw.parse::<i64>() {
                Ok(id) if id > 0 => Some(id),
                _ => return Err(invalid(format!("before must be a message id, got {raw:?}"))),
            },
        };
        let limit = self.limit.unwrap_or(HISTORY);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        Ok((before, limit))
    }
}

/// A page of history, oldest first; `has_more` says whether older messages exist.
#[derive(Serialize, utoipa::ToSchema)]
struct Page {
    messages: Vec<ChatMessage>,
    has_more: bool,
}

async fn page(state: &AppState, room: ChatRoom, query: &PageQuery) -> Result<Json<Page>, ApiError> {
    let (before, limit) = query.parse()?;
    // One more than asked tells whether there are older ones.
    let mut messages = state.store.messages(room, before, limit + 1).await?;
    let has_more = messages.len() > limit as usize;
    if has_more {
        messages.remove(0);
    }
    Ok(Json(Page { messages, has_more }))
}

/// `GET /api/sessions/{id}/messages`: the session's chat, for its participants and creator.
#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/messages",
    tag = "chat",
    params(("session_id" = String, Path, description = "the session (UUID)"), PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of the session chat, oldest first", body = Page), crate::error::ApiErrors)
)]
async fn session_history(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page>, ApiError> {
    token_of_session(&state, &claims, session_id).await?;
    if claims.role == Role::Participant {
        active(&state, &claims).await?; // still in the session
    }
    page(&state, ChatRoom::Session(session_id), &query).await
}

/// An existing session (404) and a token of it (403), for routes under
/// `/api/sessions/{session_id}/` that take a bearer token.
pub(super) async fn token_of_session(
    state: &AppState,
    claims: &Claims,
    session_id: SessionId,
) -> Result<(), ApiError> {
    if state.store.session(session_id).await?.is_none() {
        return Err(ApiError::not_found("session"));
    }
    if claims.session_id() != session_id {
        return Err(ApiError::forbidden("needs a token of this session"));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Position {
    #[serde(alias = "latitude")]
    lat: f64,
    #[serde(alias = "longitude")]
    lng: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Room {
    /// The cell's geohash (6 characters).
    #[schema(value_type = String)]
    room_id: RoomId,
    name: String,
    user_count: usize,
    /// The cell's centre.
    lat: f64,
    lng: f64,
}

async fn describe(state: &AppState, room: RoomId) -> Room {
    let (lat, lng) = room.centre();
    Room { room_id: room, name: room.name(), user_count: state.room_user_count(room).await, lat, lng }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Rooms {
    rooms: Vec<Room>,
}

/// `GET /api/rooms?lat=&lng=`: the room for that point first, then its neighbours: nine
/// at most, whatever the area (the cells are a fixed grid), rate-limited per client IP.
#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "chat",
    params(Position),
    responses((status = 200, description = "the point's room, then its neighbours", body = Rooms), crate::error::ApiErrors)
)]
async fn rooms_near(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiQuery(position): ApiQuery<Position>,
) -> Result<Json<Rooms>, ApiError> {
    state.limits.allow_rest(RestAction::RoomLookup, ip).map_err(ApiError::rate_limited)?;
    let here = RoomId::at(position.lat, position.lng)?;
    let rooms =
        futures_util::future::join_all(here.with_neighbours().into_iter().map(|r| describe(&state, r))).await;
    Ok(Json(Rooms { rooms }))
}

/// `POST /api/rooms/join {lat, lng}`: which room a position belongs to (entering it is
/// `join_local_chat` on the socket).
#[utoipa::path(
    post,
    path = "/api/rooms/join",
    tag = "chat",
    request_body = Position,
    responses((status = 200, description = "the room of that position", body = Room), crate::error::ApiErrors)
)]
async fn room_for_position(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(position): ApiJson<Position>,
) -> Result<Json<Room>, ApiError> {
    state.limits.allow_rest(RestAction::RoomLookup, ip).map_err(ApiError::rate_limited)?;
    let room = RoomId::at(position.lat, position.lng)?;
    Ok(Json(describe(&state, room).await))
}

fn room_id(raw: &str) -> Result<RoomId, ApiError> {
    raw.parse()
        .map_err(|e: domain::ValidationError| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", e.message))
}

/// `GET /api/rooms/{room_id}/messages`: a local room's history, for any participant.
#[utoipa::path(
    get,
    path = "/api/rooms/{room_id}/messages",
    tag = "chat",
    params(("room_id" = String, Path, description = "the room: a geohash of 6 characters"), PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of the room's chat, oldest first", body = Page), crate::error::ApiErrors)
)]
async fn room_history(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    Bearer(claims): Bearer,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page>, ApiError> {
    let room = room_id(&raw)?;
    active(&state, &claims).await?;
    page(&state, ChatRoom::Local(room), &query).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    content: String,
}

/// `POST /api/rooms/{room_id}/messages {content}`: posts as the token's participant;
/// everyone in the room gets `new_message`.
#[utoipa::path(
    post,
    path = "/api/rooms/{room_id}/messages",
    tag = "chat",
    params(("room_id" = String, Path, description = "the room: a geohash of 6 characters")),
    request_body = PostMessage,
    security(("bearer" = [])),
    responses((status = 201, description = "stored and sent to the room", body = ChatMessage), crate::error::ApiErrors)
)]
async fn post_to_room(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    Bearer(claims): Bearer,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<(StatusCode, Json<ChatMessage>), ApiError> {
    let room = room_id(&raw)?;
    let (_, author) = active(&state, &claims).await?;
    state.limits.allow_user_message(author.user_id).map_err(ApiError::rate_limited)?;
    let content = ChatContent::parse(&body.content)?;
    let bytes = content.as_str().len();
    state.allow_to_others(Channel::Room(room), author.user_id, MessageKind::Chat, bytes)?;
    let message = state.post_message(ChatRoom::Local(room), &author, &content).await?;
    Ok((StatusCode::CREATED, Json(message)))
}
