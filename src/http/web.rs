//! The web client: the join link's page (`GET /join/{session_id}`), a start page (`GET /`)
//! that creates a session, and their assets. Everything is embedded in the binary: the
//! page's own code always (web/src: browser ES modules, loaded as they are, no build step),
//! the map library (Leaflet, from npm) when it was built into web/dist before compiling.
//! Without it the page draws positions on a plain grid and says how to build the map.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

const PAGE: &str = include_str!("../../web/src/index.html");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// An asset served at `/assets/{name}`: (name, content type, body).
type Asset = (&'static str, &'static str, &'static str);

/// The page's own assets: its style and its modules (main.js, the entry, imports the
/// others). A new module in web/src gets a line here.
const ASSETS: &[Asset] = &[
    ("style.css", CSS, include_str!("../../web/src/style.css")),
    ("main.js", JAVASCRIPT, include_str!("../../web/src/main.js")),
    ("model.js", JAVASCRIPT, include_str!("../../web/src/model.js")),
    ("api.js", JAVASCRIPT, include_str!("../../web/src/api.js")),
    ("storage.js", JAVASCRIPT, include_str!("../../web/src/storage.js")),
    ("socket.js", JAVASCRIPT, include_str!("../../web/src/socket.js")),
    ("position.js", JAVASCRIPT, include_str!("../../web/src/position.js")),
    ("map.js", JAVASCRIPT, include_str!("../../web/src/map.js")),
    ("page.js", JAVASCRIPT, include_str!("../../web/src/page.js")),
];

#[cfg(convoy_web_map)]
const MAP_LIBRARY: &[Asset] = &[
    ("leaflet.js", JAVASCRIPT, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/leaflet.js"))),
    ("leaflet.css", CSS, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/leaflet.css"))),
];
#[cfg(not(convoy_web_map))]
const MAP_LIBRARY: &[Asset] = &[];

/// Where the page's config goes, and where the map library's tags go.
const CONFIG_SLOT: &str = "{{CONFIG}}";
const MAP_SLOT: &str = "<!--MAP_LIBRARY-->";
const MAP_TAGS: &str =
    r#"<link rel="stylesheet" href="/assets/leaflet.css"><script src="/assets/leaflet.js" defer></script>"#;

/// How to get the map, for whoever runs a server built without it.
pub const BUILD_HINT: &str =
    "npm ci --prefix web && npm run build --prefix web, then cargo build (needs Node.js)";

/// Where the build id goes: the page asks for `/assets/{build}/...`, so a browser never
/// mixes modules of two builds (after an upgrade, or behind instances of two versions).
const BUILD_SLOT: &str = "{{BUILD}}";

/// This build's assets, named by their content: a hash of them all.
fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        // Fixed keys: every instance of the same binary names its build alike.
        let mut hasher = std::hash::DefaultHasher::new();
        for (name, _, body) in ASSETS.iter().chain(MAP_LIBRARY) {
            (name, body).hash(&mut hasher);
        }
        format!("{:016x}", hasher.finish())
    })
}

/// Whether this binary carries the map library.
pub fn has_map_library() -> bool {
    !MAP_LIBRARY.is_empty()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/join/{session_id}", get(join_page))
        .route("/assets/{file}", get(asset))
        .route("/assets/{build}/{file}", get(built_asset))
}

async fn page(State(state): State<AppState>) -> Response {
    page_response(&state)
}

/// The page is the same for every session: it reads the id from its own address and asks
/// the API, so an unknown or ended session is explained on the page itself.
async fn join_page(State(state): State<AppState>, Path(_session_id): Path<String>) -> Response {
    page_response(&state)
}

/// The page with its security headers: scripts, styles and sockets from this server only,
/// images from here and the tile server, never framed, and no `Referer` (the address holds
/// the session id) sent to the tile server.
fn page_response(state: &AppState) -> Response {
    let tiles = tile_origin(&state.config.tile_url).map(|o| format!(" {o}")).unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:{tiles}; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    );
    let mut response = Html(render(state)).into_response();
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("permissions-policy", HeaderValue::from_static("geolocation=(self)"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `https://tile.example.org` out of a tile URL template, or just its scheme (`https:`) when
/// the host is templated (`{s}.tile...`); none for an empty or odd one.
fn tile_origin(template: &str) -> Option<&str> {
    let scheme_end = template.find("://")? + 3;
    let host_end = template[scheme_end..].find('/').map_or(template.len(), |i| scheme_end + i);
    let origin = &template[..host_end];
    if host_end == scheme_end || origin.contains([' ', ';', ',', '\'', '"']) {
        return None;
    }
    if origin.contains('{') {
        return Some(&template[..scheme_end - 2]);
    }
    Some(origin)
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
    PAGE.replace(CONFIG_SLOT, &page_config).replace(MAP_SLOT, map_tags).replace(BUILD_SLOT, build_id())
}

/// An asset by its plain name: assets change with the binary, so a short cache.
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    serve_asset(&file, "public, max-age=300")
}

/// An asset of this build (the page's own links): never changes, cached for good. One of
/// another build is not served in its stead.
async fn built_asset(Path((build, file)): Path<(String, String)>) -> Result<Response, ApiError> {
    if build != build_id() {
        return Err(ApiError::not_found("asset of this build (reload the page)"));
    }
    serve_asset(&file, "public, max-age=31536000, immutable")
}

fn serve_asset(file: &str, cache_control: &'static str) -> Result<Response, ApiError> {
    let &(_, content_type, body) = ASSETS
        .iter()
        .chain(MAP_LIBRARY)
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found("asset"))?;
    let headers =
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, cache_control), (X_CONTENT_TYPE_OPTIONS, "nosniff")];
    Ok((headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::tile_origin;

    #[test]
    fn the_tile_servers_origin_is_read_from_its_template() {
        assert_eq!(
            tile_origin("https://tile.openstreetmap.org/{z}/{x}/{y}.png"),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(tile_origin("http://127.0.0.1:9/{z}/{x}/{y}.png"), Some("http://127.0.0.1:9"));
        assert_eq!(tile_origin("https://{s}.tiles.example/{z}/{x}/{y}.png"), Some("https:"));
        assert_eq!(tile_origin("https://a.example;script-src */{z}"), None);
        assert_eq!(tile_origin(""), None);
        assert_eq!(tile_origin("https:///x"), None);
    }
}
