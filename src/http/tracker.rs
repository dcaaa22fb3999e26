//! The tracker endpoint: `/t/{token}` (or `/t` with the token as HTTP Basic password), one
//! private URL per participant that tracker apps report to in the background, each in its
//! own protocol (`protocol::tracker` tells them apart):
//!
//! - OwnTracks (HTTP mode): `POST` of its JSON messages; answered `200` with a JSON array of
//!   the other participants' `card`s and latest `location`s, so the app's Friends view shows
//!   the convoy. Every authenticated request is answered 2xx, as OwnTracks expects (a
//!   refusal would jam its queue): what is refused is logged and counted.
//! - Traccar Client, OsmAnd, GPSLogger: `GET` or `POST` with the OsmAnd protocol's
//!   parameters (query or form), or Traccar Client 9's JSON; answered `200` with an empty
//!   body, or `400` naming the problem.
//!
//! Positions go the way of the HTTP push (`AppState::share_newest`): validated, ordered by
//! the fix's own time, rate-limited per request (an offline queue in one request counts
//! once), broadcast and cached like a socket's. They follow the participant's latest
//! `share_settings`, from whichever socket, kept after it closes: coarsened to about 1 km
//! while approximate, dropped while paused (the page's "Stop sharing").

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::Value;

use crate::auth::TrackerClaims;
use crate::domain::Participant;
use crate::error::ApiError;
use crate::protocol::tracker::{self, App, Setup, TRACKER_PATH};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{token}", get(with_token).post(with_token))
        .route("/t", get(with_basic).post(with_basic))
        .route("/t/{token}/setup", get(setup))
        .route("/t/{token}/qr.svg", get(qr))
}

/// A request's path as logs may show it: a tracker URL's token replaced by `{token}`.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/t/") {
        Some(rest) => {
            let after = rest.find('/').map_or("", |i| &rest[i..]);
            format!("{TRACKER_PATH}/{{token}}{after}").into()
        }
        None => path.into(),
    }
}

#[utoipa::path(
    method(get, post),
    path = "/t/{token}",
    tag = "trackers",
    params(("token" = String, Path, description = "the participant's tracker token (the end of its `tracker_url`)")),
    request_body(content = String, description = "OwnTracks' JSON (a message or an array), Traccar Client's JSON, or the OsmAnd protocol's form parameters", content_type = "application/json"),
    responses(
        (status = 200, description = "accepted; for OwnTracks a JSON array of the other participants' cards and locations, else empty"),
        (status = 400, description = "OsmAnd or Traccar request without a valid position", body = crate::error::ErrorBody),
        (status = 401, description = "not a tracker token, or its participant left", body = crate::error::ErrorBody),
        (status = 410, description = "the session ended", body = crate::error::ErrorBody),
        (status = 413, description = "a body over 64 KiB", body = crate::error::ErrorBody),
        (status = 429, description = "over the rate limit (OsmAnd and Traccar; OwnTracks gets 200)", body = crate::error::ErrorBody),
    )
)]
async fn with_token(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(async { report(&state, &token, &headers, query.as_deref(), &body?).await }.await)
}

/// `/t` with `Authorization: Basic` (any user name, the token as password), for apps
/// configured with a URL and credentials, as OwnTracks can be.
#[utoipa::path(
    method(get, post),
    path = "/t",
    tag = "trackers",
    params(("Authorization" = String, Header, description = "HTTP Basic: any user name, the tracker token as password")),
    request_body(content = String, description = "as for /t/{token}", content_type = "application/json"),
    responses(
        (status = 200, description = "as for /t/{token}"),
        (status = 400, description = "OsmAnd or Traccar request without a valid position", body = crate::error::ErrorBody),
        (status = 401, description = "no credentials (with a `WWW-Authenticate` challenge), not a tracker token, or its participant left", body = crate::error::ErrorBody),
        (status = 410, description = "the session ended", body = crate::error::ErrorBody),
        (status = 413, description = "a body over 64 KiB", body = crate::error::ErrorBody),
        (status = 429, description = "over the rate limit (OsmAnd and Traccar; OwnTracks gets 200)", body = crate::error::ErrorBody),
    )
)]
async fn with_basic(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(token) = basic_password(&headers) else {
        let mut response =
            ApiError::unauthorized("give the tracker token: /t/<token>, or as the Basic password")
                .into_response();
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"convoy\""));
        return response;
    };
    respond(async { report(&state, &token, &headers, query.as_deref(), &body?).await }.await)
}

fn verify(state: &AppState, token: &str) -> Result<TrackerClaims, ApiError> {
    state.tokens.verify_tracker(token).ok_or_else(|| ApiError::unauthorized("not a tracker token"))
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (_, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(password.to_owned())
}

async fn report(
    state: &AppState,
    token: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let claims = verify(state, token)?;
    let (session_id, user_id) = (claims.session_id, claims.user_id);
    // The URL's own bucket before anything is read (a replaced URL that keeps reporting
    // spends only that), then the participant's, shared with their sockets.
    let admitted = match state.limits.allow_tracker_url(user_id, claims.generation) {
        Err(wait) => Err(wait),
        Ok(()) => {
            let member = state.tracker_member(claims).await?;
            state.limits.allow_user_message(user_id).map(|()| member)
        }
    };
    let (json, mut params) = (parse_json(headers, body), parse_params(query));
    if json.is_none() && is_form(headers) {
        params.extend(parse_params(std::str::from_utf8(body).ok()));
    }
    let (app, report) = if json.is_none() && !body.is_empty() && !is_form(headers) {
        let refused = vec!["the body is neither JSON nor form parameters".to_owned()];
        (App::OsmAnd, tracker::Report { refused, unreadable: true, ..tracker::Report::default() })
    } else if json.is_none() && params.is_empty() {
        // A message OwnTracks posts empty (a friend deleted on the phone): nothing to read.
        (App::OwnTracks, tracker::Report::default())
    } else {
        tracker::read(json.as_ref(), &params, state.clock.now())
    };
    let (me, everyone) = match admitted {
        Ok(member) => member,
        Err(wait) => {
            metrics::counter!("convoy_tracker_requests_total", "app" => app.as_str(), "outcome" => "rate_limited")
                .increment(1);
            // OwnTracks gets 2xx whatever happens (its queue would jam), but nothing costly.
            return if app == App::OwnTracks {
                Ok(axum::Json(Vec::<Value>::new()).into_response())
            } else {
                Err(ApiError::rate_limited(wait))
            };
        }
    };
    count(app, &report);

    if !report.fixes.is_empty() {
        if me.share.paused {
            // Stopped sharing on the page: the app's positions are dropped meanwhile.
            metrics::counter!("convoy_tracker_requests_total", "app" => app.as_str(), "outcome" => "paused")
                .increment(1);
        } else if me.share.approximate {
            let coarse: Vec<_> =
                report.fixes.iter().filter_map(crate::domain::Location::approximate).collect();
            state.share_newest(session_id, user_id, &coarse).await;
        } else {
            state.share_newest(session_id, user_id, &report.fixes).await;
        }
    }
    match app {
        App::OwnTracks => Ok(friends(state, &me, &everyone).await),
        // Only a request with no position in it at all is refused: Traccar Client keeps
        // retrying what gets anything but 2xx, so a fix it cannot fix is counted instead.
        _ if report.fixes.is_empty() && report.unreadable => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            report.refused.first().cloned().unwrap_or_else(|| "no position in the request".into()),
        )),
        _ => Ok(StatusCode::OK.into_response()),
    }
}

/// The body as JSON, if it is JSON (whatever the content type says: apps differ).
fn parse_json(headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    if body.is_empty() || is_form(headers) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn parse_params(raw: Option<&str>) -> Vec<(String, String)> {
    raw.and_then(|raw| serde_urlencoded::from_str(raw).ok()).unwrap_or_default()
}

/// Counts what a request carried, and logs what was refused (apps never see it: OwnTracks
/// must get 2xx, and the others' users look at the server's log or metrics).
fn count(app: App, report: &tracker::Report) {
    let app_label = app.as_str();
    metrics::counter!("convoy_tracker_requests_total", "app" => app_label, "outcome" => "received")
        .increment(1);
    for (outcome, n) in
        [("accepted", report.fixes.len()), ("refused", report.refused.len()), ("ignored", report.ignored)]
    {
        if n > 0 {
            metrics::counter!("convoy_tracker_messages_total", "app" => app_label, "outcome" => outcome)
                .increment(n as u64);
        }
    }
    if let Some(first) = report.refused.first() {
        // Debug, not info: a client holding a URL must not fill the log at the default level.
        tracing::debug!(app = app_label, refused = report.refused.len(), first = %first, "tracker positions refused");
    }
}

/// OwnTracks' answer: a `card` and the latest `location` of every other active participant.
async fn friends(state: &AppState, me: &Participant, everyone: &[Participant]) -> Response {
    let locations = state.bus.locations(me.session_id).await.unwrap_or_default();
    let friends: Vec<_> = with_tids(everyone)
        .filter(|(p, _)| p.user_id != me.user_id)
        .map(|(p, tid)| (p, tid, locations.iter().find(|(user, _)| *user == p.user_id).map(|(_, at)| at)))
        .collect();
    let answer = tracker::owntracks_answer(friends.iter().map(|(p, tid, location)| tracker::Friend {
        user_id: p.user_id,
        name: &p.display_name,
        tid,
        location: *location,
    }));
    axum::Json(answer).into_response()
}

/// The session's active participants with their OwnTracks `tid`s, given over everyone
/// listed (those who left too, in joining order), so a `tid` stays when someone leaves.
fn with_tids(participants: &[Participant]) -> impl Iterator<Item = (&Participant, String)> {
    let ids = tracker::tracker_ids(participants.iter().map(|p| p.display_name.as_str()));
    participants.iter().zip(ids).filter(|(p, _)| p.is_active)
}

#[utoipa::path(
    get,
    path = "/t/{token}/setup",
    tag = "trackers",
    params(("token" = String, Path, description = "the participant's tracker token")),
    responses(
        (status = 200, description = "the set-up links for tracker apps", body = Setup),
        (status = 401, description = "not a tracker token, or its participant left", body = crate::error::ErrorBody),
        (status = 410, description = "the session ended", body = crate::error::ErrorBody),
    )
)]
async fn setup(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<axum::Json<Setup>, ApiError> {
    Ok(axum::Json(setup_of(&state, &token).await?))
}

async fn setup_of(state: &AppState, token: &str) -> Result<Setup, ApiError> {
    let (me, everyone) = state.tracker_member(verify(state, token)?).await?;
    let tid =
        with_tids(&everyone).find(|(p, _)| p.user_id == me.user_id).map(|(_, id)| id).unwrap_or_default();
    let tracker_url = state.tracker_url(me.session_id, me.user_id, me.tracker_generation);
    let every = tracker::report_every(state.config.location_ttl());
    Ok(Setup::new(tracker_url, tid, &me.display_name, every))
}

#[derive(serde::Deserialize)]
struct QrQuery {
    /// `owntracks` (the one-tap link), `traccar` (Traccar Client's set-up) or `url` (the
    /// tracker URL).
    #[serde(rename = "for")]
    target: String,
}

#[utoipa::path(
    get,
    path = "/t/{token}/qr.svg",
    tag = "trackers",
    params(
        ("token" = String, Path, description = "the participant's tracker token"),
        ("for" = String, Query, description = "`owntracks` (its one-tap set-up link), `traccar` (what Traccar Client's QR scanner reads: `traccar_url`) or `url` (the tracker URL)"),
    ),
    responses(
        (status = 200, description = "a QR code (SVG) to scan with the phone", content_type = "image/svg+xml", body = String),
        (status = 400, description = "`for` is not `owntracks`, `traccar` or `url`", body = crate::error::ErrorBody),
        (status = 401, description = "not a tracker token, or its participant left", body = crate::error::ErrorBody),
        (status = 410, description = "the session ended", body = crate::error::ErrorBody),
    )
)]
async fn qr(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<axum::extract::Query<QrQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(query) = query?;
    let setup = setup_of(&state, &token).await?;
    let data = match query.target.as_str() {
        "owntracks" => setup.owntracks_url,
        "traccar" => setup.traccar_url,
        "url" => setup.tracker_url,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "for: must be owntracks, traccar or url",
            ));
        }
    };
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|_| ApiError::internal())?;
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(240, 240).build();
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("image/svg+xml")),
            (axum::http::header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600")),
        ],
        svg,
    )
        .into_response())
}
