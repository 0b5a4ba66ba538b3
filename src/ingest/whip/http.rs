//! The WHIP HTTP resources (RFC 9725): the endpoint `/whip/<channel id>`
//! that takes an SDP offer, and the session URL that ends the session.
//! Owns status codes, headers and CORS; the WebRTC work is the UDP task's.

use super::offer::{self, OfferError};
use super::session::{SetupError, negotiate};
use super::udp::{StartError, Whip};
use crate::hooks::{Decision, Hooks, PublishQuestion, key_id};
use crate::hub::{Hub, PublishError};
use crate::logging::LogBudget;
use crate::metrics::METRICS;
use crate::registry::RegistryError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tower_http::cors::{Any, CorsLayer};

const INGEST: &str = "whip";
/// Browser offers are 4-8 KB; anything near this is not an offer.
const MAX_OFFER: usize = 64 * 1024;
const SDP: &str = "application/sdp";

/// Log budgets of the lines any client can trigger with a request (the metrics count every
/// refusal): refused publishes, refused offers, failures to start a session.
static REFUSED: LogBudget = LogBudget::new(20, Duration::from_secs(10));
static BAD_OFFER: LogBudget = LogBudget::new(20, Duration::from_secs(10));
static FAILED: LogBudget = LogBudget::new(10, Duration::from_secs(10));

#[derive(Clone)]
struct Ctx {
    hub: Arc<Hub>,
    whip: Arc<Whip>,
    hooks: Arc<Hooks>,
    /// The path prefix of `public_url`, which session URLs carry.
    base: Arc<str>,
}

/// `/whip/{id}` and `/whip/{id}/{session}`, with CORS for publishing pages
/// on any origin. `base` is the path prefix the node is reached under.
pub fn routes(hub: Arc<Hub>, whip: Arc<Whip>, hooks: Arc<Hooks>, base: &str) -> Router {
    // RFC 9725 4.2: browser clients need CORS; the Location of the session
    // must be readable by the page for its DELETE.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG]);
    Router::new()
        .route("/whip/{id}", post(publish).options(endpoint_options))
        .route(
            "/whip/{id}/{session}",
            axum::routing::delete(end_session)
                .patch(patch_session)
                .options(session_options),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        .layer(cors)
        .with_state(Ctx {
            hub,
            whip,
            hooks,
            base: base.into(),
        })
}

fn reject(reason: &'static str) {
    METRICS
        .ingest_rejected
        .with_label_values(&[INGEST, reason])
        .inc();
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn unauthorized(msg: &str) -> Response {
    reject("unknown_key");
    let mut r = text(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn endpoint_options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(HeaderName::from_static("accept-post"), SDP)],
    )
        .into_response()
}

async fn session_options() -> Response {
    (StatusCode::NO_CONTENT, [(header::ALLOW, "DELETE, OPTIONS")]).into_response()
}

async fn publish(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // Before any work on the offer: a draining node sends everyone on.
    if ctx.hub.fleet().is_some_and(|f| f.draining()) {
        reject(PublishError::Draining.reason());
        return unavailable("this node is shutting down", "10");
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SDP));
    if !is_sdp {
        reject("bad_sdp");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            reject("bad_sdp");
            return text(e.status(), e.body_text());
        }
    };
    let Some(key) = crate::ingest::bearer(&headers) else {
        return unauthorized("Authorization: Bearer <stream key> is required");
    };
    let found = {
        let id = id.clone();
        crate::ingest::off_async(&ctx.hub, move |hub| hub.registry().get(&id)).await
    };
    let Some(found) = found else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "channel registry unavailable",
        );
    };
    let channel = match found {
        Ok(c) => c,
        Err(RegistryError::NotFound(_)) => {
            reject("unknown_channel");
            return text(StatusCode::NOT_FOUND, "no such channel");
        }
        Err(e) => {
            if let Some(held) = FAILED.admit_now() {
                tracing::error!(channel = %id, error = %e, held_back = held, "whip: channel registry");
            }
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "channel registry unavailable",
            );
        }
    };
    if !bool::from(key.as_bytes().ct_eq(channel.stream_key.as_bytes())) {
        if let Some(held) = REFUSED.admit_now() {
            tracing::warn!(channel = %id, held_back = held, "whip: publish refused: wrong stream key");
        }
        return unauthorized("wrong stream key for this channel");
    }
    if ctx.hooks.has_publish_hook() {
        let client = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let q = PublishQuestion {
            channel: &channel.id,
            protocol: INGEST,
            client,
            key_id: key_id(key),
        };
        if ctx.hooks.publish(&q).await == Decision::Deny {
            reject("hook_denied");
            if let Some(held) = REFUSED.admit_now() {
                tracing::warn!(channel = %id, held_back = held, "whip: publish refused by the authorization hook");
            }
            return text(StatusCode::FORBIDDEN, "publish not authorized");
        }
    }
    let Ok(sdp) = std::str::from_utf8(&body) else {
        reject("bad_sdp");
        return text(StatusCode::BAD_REQUEST, "malformed SDP offer: not UTF-8");
    };
    let offered = match offer::check(sdp) {
        Ok(o) => o,
        Err(e) => {
            if let Some(held) = BAD_OFFER.admit_now() {
                tracing::info!(channel = %id, error = %e, held_back = held, "whip: offer refused");
            }
            reject(e.reason());
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let Some(reservation) = ctx.whip.reserve(&id) else {
        reject("too_many_sessions");
        if let Some(held) = REFUSED.admit_now() {
            tracing::warn!(channel = %id, limit = ctx.whip.settings.max_sessions, held_back = held, "whip: session refused: too many sessions");
        }
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WHIP sessions on this node",
        );
    };
    let (rtc, answer) = match negotiate(sdp, &ctx.whip.candidates, Instant::now()) {
        Ok(x) => x,
        Err(e) => {
            if let Some(held) = BAD_OFFER.admit_now() {
                tracing::info!(channel = %id, error = %e, held_back = held, "whip: offer refused");
            }
            let reason = match e {
                SetupError::Sdp(_) => "bad_sdp",
                _ => OfferError::NoH264.reason(),
            };
            reject(reason);
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let started = {
        let key = key.to_string();
        crate::ingest::off_async(&ctx.hub, move |hub| hub.start_publish(&key, INGEST)).await
    };
    let publisher = match started.unwrap_or(Err(PublishError::Interrupted)) {
        Ok(p) => p,
        Err(e) => {
            reject(e.reason());
            if let Some(held) = REFUSED.admit_now() {
                tracing::warn!(channel = %id, reason = e.reason(), error = %e, held_back = held, "whip: publish refused");
            }
            return match e {
                PublishError::AlreadyLive(_) => {
                    text(StatusCode::CONFLICT, "this channel already has a publisher")
                }
                PublishError::UnknownKey => unauthorized("wrong stream key for this channel"),
                // RFC 9725 4.6: a WHIP endpoint that cannot take a session
                // "MAY redirect" or answer 503 with Retry-After; a load
                // balancer in front sends the retry to another node.
                PublishError::Draining => unavailable("this node is shutting down", "10"),
                PublishError::AtCapacity => unavailable("this node is full", "10"),
                PublishError::Registry(_)
                | PublishError::Channel { .. }
                | PublishError::Spawn { .. }
                | PublishError::Interrupted => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error, try again later",
                ),
            };
        }
    };
    let session = match ctx
        .whip
        .start_session(reservation, &id, rtc, publisher, offered.audio)
    {
        Ok(s) => s,
        Err(StartError::Busy) => {
            if let Some(held) = FAILED.admit_now() {
                tracing::warn!(channel = %id, held_back = held, "whip: the UDP task is not taking sessions now");
            }
            return busy();
        }
        Err(e) => {
            if let Some(held) = FAILED.admit_now() {
                tracing::error!(channel = %id, error = %e, held_back = held, "whip: starting the session");
            }
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error, try again later",
            );
        }
    };
    tracing::info!(channel = %id, audio = offered.audio, "whip: publishing");
    // RFC 9725 4.2: "the WHIP endpoint [...] MUST return a "201 Created"
    // response with the SDP answer [...] and a Location header field
    // pointing to the newly created WHIP session".
    let location = format!("{}/whip/{id}/{session}", ctx.base);
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_string()),
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        answer,
    )
        .into_response()
}

/// 503 with a Retry-After: the node is overloaded, not broken.
fn busy() -> Response {
    unavailable("busy, try again shortly", "1")
}

fn unavailable(why: &'static str, retry_after_s: &'static str) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, why);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after_s));
    r
}

async fn end_session(
    State(ctx): State<Ctx>,
    Path((id, session)): Path<(String, String)>,
) -> Response {
    match ctx.whip.session_channel(&session) {
        Some(ch) if ch == id => {
            if !ctx.whip.stop_session(&session) {
                if let Some(held) = FAILED.admit_now() {
                    tracing::warn!(channel = %id, held_back = held, "whip: DELETE not taken now; the session ends when idle");
                }
                return busy();
            }
            tracing::info!(channel = %id, "whip: DELETE, ending the session");
            text(StatusCode::OK, "session ended")
        }
        _ => text(StatusCode::NOT_FOUND, "no such WHIP session"),
    }
}

/// RFC 9725 4.3.1: a session that supports neither trickle ICE nor ICE
/// restarts answers every PATCH with 405. Publishers here gather all
/// host candidates before the offer, which an ICE-lite answerer needs.
async fn patch_session() -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE and ICE restarts are not supported; send all candidates in the offer",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    r
}
