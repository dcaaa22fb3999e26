//! The web client: the join link's page (`GET /join/{session_id}`), a start page (`GET /`)
//! that creates a session, and their assets. Everything is embedded in the binary: the
//! page's own code always (web/src), the map library (Leaflet, from npm) when it was built
//! into web/dist before compiling. Without it the page draws positions on a plain grid and
//! says how to build the map.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

const PAGE: &str = include_str!("../../web/src/index.html");
const APP_JS: &str = include_str!("../../web/src/app.js");
const STYLE_CSS: &str = include_str!("../../web/src/style.css");

#[cfg(convoy_web_map)]
const MAP_LIBRARY: Option<(&str, &str)> = Some((
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/leaflet.js")),
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/leaflet.css")),
));
#[cfg(not(convoy_web_map))]
const MAP_LIBRARY: Option<(&str, &str)> = None;

/// Where the page's config goes, and where the map library's tags go.
const CONFIG_SLOT: &str = "{{CONFIG}}";
const MAP_SLOT: &str = "<!--MAP_LIBRARY-->";
const MAP_TAGS: &str =
    r#"<link rel="stylesheet" href="/assets/leaflet.css"><script src="/assets/leaflet.js" defer></script>"#;

/// How to get the map, for whoever runs a server built without it.
pub const BUILD_HINT: &str =
    "npm ci --prefix web && npm run build --prefix web, then cargo build (needs Node.js)";

/// Whether this binary carries the map library.
pub fn has_map_library() -> bool {
    MAP_LIBRARY.is_some()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/join/{session_id}", get(join_page))
        .route("/assets/{file}", get(asset))
}

async fn page(State(state): State<AppState>) -> Html<String> {
    Html(render(&state))
}

/// The page is the same for every session: it reads the id from its own address and asks
/// the API, so an unknown or ended session is explained on the page itself.
async fn join_page(State(state): State<AppState>, Path(_session_id): Path<String>) -> Html<String> {
    Html(render(&state))
}

fn render(state: &AppState) -> String {
    let config = &state.config;
    let page_config = json!({
        "tile_url": config.tile_url,
        "tile_attribution": config.tile_attribution,
        "location_ttl_seconds": config.location_ttl_seconds,
        "map_library": has_map_library(),
        "build_hint": BUILD_HINT,
    });
    // Inside <script>: no `<` at all, so nothing in it can end or restart the element
    // (JSON allows `<` only inside strings, where \u003c means the same).
    let page_config = page_config.to_string().replace('<', "\\u003c");
    let map_tags = if has_map_library() { MAP_TAGS } else { "" };
    PAGE.replace(CONFIG_SLOT, &page_config).replace(MAP_SLOT, map_tags)
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (body, content_type) = match (file.as_str(), MAP_LIBRARY) {
        ("app.js", _) => (APP_JS, "text/javascript; charset=utf-8"),
        ("style.css", _) => (STYLE_CSS, "text/css; charset=utf-8"),
        ("leaflet.js", Some((js, _))) => (js, "text/javascript; charset=utf-8"),
        ("leaflet.css", Some((_, css))) => (css, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found("asset")),
    };
    // Assets change with the binary: a short cache keeps upgrades visible.
    Ok(([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=300")], body).into_response())
}
