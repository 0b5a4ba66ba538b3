//! The channel control API under `/api/v1/channels`, guarded by the admin bearer token.

use crate::config::Config;
use crate::hub::Hub;
use crate::registry::{Channel, RegistryError};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A channel as the CLI and the API show it to its owner: the one place a
/// stream key is serialized, and never formatted for a log (no `Debug`).
#[derive(Serialize)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    pub stream_key: String,
    pub ladder: String,
    pub ingest: IngestUrls,
    pub playback_url: String,
}

#[derive(Debug, Serialize)]
pub struct IngestUrls {
    pub rtmp: String,
    /// WHIP endpoint (RFC 9725); the stream key is its bearer token.
    pub whip: String,
}

impl ChannelView {
    pub fn new(ch: &Channel, cfg: &Config) -> Self {
        ChannelView {
            id: ch.id.clone(),
            name: ch.name.clone(),
            stream_key: ch.stream_key.clone(),
            ladder: ch.ladder.clone(),
            ingest: IngestUrls {
                rtmp: cfg.rtmp_ingest_url(),
                whip: cfg.whip_ingest_url(&ch.id),
            },
            playback_url: format!("{}/hls/{}/master.m3u8", cfg.http_base_url(), ch.id),
        }
    }
}

#[derive(Clone)]
struct Api {
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    token: Arc<str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    /// Ladder preset; the node's default when absent.
    ladder: Option<String>,
}

/// A create request is a name and a ladder preset.
const MAX_BODY: usize = 16 * 1024;

pub fn routes(hub: Arc<Hub>, cfg: Arc<Config>, admin_token: Arc<str>) -> Router {
    Router::new()
        .route("/api/v1/channels", get(list).post(create))
        .route("/api/v1/channels/{id}", get(show).delete(remove))
        .route("/api/v1/channels/{id}/rotate-key", post(rotate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Api {
            hub,
            cfg,
            token: admin_token,
        })
}

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), Box<Response>> {
    authorize_admin(&api.token, headers)
}

/// Every operator route's guard: the admin bearer token, compared in
/// constant time; a 401 that asks for a bearer token otherwise.
pub(super) fn authorize_admin(token: &str, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let presented = crate::ingest::bearer(headers).unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(Box::new(r))
    }
}

fn registry_error(e: RegistryError) -> Response {
    match e {
        RegistryError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        RegistryError::InvalidName(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        RegistryError::Db { .. } | RegistryError::Private { .. } => {
            tracing::error!(error = %e, "channel registry");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "channel registry unavailable",
            )
        }
    }
}

/// Runs registry work on tokio's blocking pool: SQLite may wait seconds on
/// a lock another process holds, and the async workers serve HLS.
async fn blocking<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&Hub) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, Response> {
    let hub = api.hub.clone();
    match tokio::task::spawn_blocking(move || f(&hub)).await {
        Ok(r) => r.map_err(registry_error),
        Err(e) => {
            tracing::error!(error = %e, "registry task failed");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "channel registry unavailable",
            ))
        }
    }
}

fn ok_json(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn list(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    match blocking(&api, |hub| hub.registry().list()).await {
        Ok(chs) => {
            let views: Vec<_> = chs.iter().map(|c| ChannelView::new(c, &api.cfg)).collect();
            ok_json(StatusCode::OK, views)
        }
        Err(r) => r,
    }
}

async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let ladder = req
        .ladder
        .unwrap_or_else(|| api.cfg.transcode.default_ladder.clone());
    if let Err(e) = api.hub.ladders().check(&ladder) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    match blocking(&api, move |hub| hub.registry().create(&req.name, &ladder)).await {
        Ok(ch) => {
            tracing::info!(channel = %ch.id, "channel created");
            ok_json(StatusCode::CREATED, ChannelView::new(&ch, &api.cfg))
        }
        Err(r) => r,
    }
}

async fn show(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    match blocking(&api, move |hub| hub.registry().get(&id)).await {
        Ok(ch) => ok_json(StatusCode::OK, ChannelView::new(&ch, &api.cfg)),
        Err(r) => r,
    }
}

async fn remove(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let deleted = blocking(&api, move |hub| {
        hub.registry().delete(&id)?;
        // Its publisher is cut and its stream ends now.
        hub.terminate(&id);
        tracing::info!(channel = %id, "channel deleted");
        Ok(())
    });
    match deleted.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn rotate(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let rotated = blocking(&api, move |hub| {
        let ch = hub.registry().rotate_key(&id)?;
        // The publisher that authenticated with the old key is cut now.
        hub.revoke(&id);
        Ok(ch)
    });
    match rotated.await {
        Ok(ch) => {
            tracing::info!(channel = %ch.id, "stream key rotated");
            ok_json(StatusCode::OK, ChannelView::new(&ch, &api.cfg))
        }
        Err(r) => r,
    }
}
