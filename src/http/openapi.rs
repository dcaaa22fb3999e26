//! `GET /openapi.json`: the REST API described from the code (utoipa): every operation
//! below carries its `#[utoipa::path]` next to its handler, with its request, its answers
//! and the errors every operation shares (`ApiErrors`). tests/api/openapi.rs fails when a
//! REST route is registered without being listed here. The sockets (`/ws`,
//! `/socket/websocket`) and the web page are not REST and are described in the README.

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "convoy",
        description = "Real-time location sharing: sessions, participants, chat, local rooms. The live part is the WebSocket API (README)."
    ),
    paths(
        super::sessions::create,
        super::sessions::show,
        super::sessions::end,
        super::sessions::join,
        super::participants::list,
        super::participants::presence,
        super::participants::remove,
        super::participants::replace_tracker_url,
        super::chat::session_history,
        super::chat::rooms_near,
        super::chat::room_for_position,
        super::chat::room_history,
        super::chat::post_to_room,
        super::sync::push,
        super::sync::pull,
        super::tokens::refresh,
        super::meetup::set,
        super::meetup::clear,
        super::meetup::trails,
        super::meetup::trails_gpx,
        super::tracker::with_token,
        super::tracker::with_basic,
        super::tracker::setup,
        super::tracker::qr,
        super::health::health,
        super::health::live,
        super::health::ready,
        super::health::detailed,
        super::meta::metrics,
        super::meta::info,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `Authorization: Bearer <token>`: a participant's `websocket_token` or a `creator_token`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
