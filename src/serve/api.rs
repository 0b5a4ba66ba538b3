//! The control API under `/api/v1` (channels, reconnect requests to their
//! publishers, playback keys, viewer revocations), guarded by the admin
//! bearer token.

use crate::config::Config;
use crate::hub::{Hub, ReconnectError, ReconnectOutcome, ReconnectRequest};
use crate::ingest::rtmp::reconnect::check_tc_url;
use crate::registry::{
    Channel, Multitrack, PlaybackKey, Policy, RecordingState, RegistryError, Revocation, TrackUse,
};
use crate::serve::access::{self, Access};
use crate::serve::rules::{self, PolicyPatch};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
    /// Players need a signed playback token (`?token=`).
    pub private: bool,
    pub ingest: IngestUrls,
    pub playback_url: String,
    /// Origins whose pages may play the channel (empty: any).
    pub allowed_origins: Vec<String>,
    /// Countries (ISO 3166-1 alpha-2) that alone may watch (empty: any).
    pub allow_countries: Vec<String>,
    /// Countries that may not watch.
    pub deny_countries: Vec<String>,
    /// Networks that alone may watch (empty: any).
    pub allow_cidrs: Vec<String>,
    /// Networks that may not watch.
    pub deny_cidrs: Vec<String>,
    /// This channel's publish hook, in place of the node's.
    pub publish_hook: Option<String>,
    /// This channel's play hook, in place of the node's.
    pub play_hook: Option<String>,
    /// Whether publishers may (`allow`), may not (`deny`) or must (`require`) send
    /// several video tracks.
    pub multitrack: Multitrack,
    /// What a multitrack publish's further tracks become: `fill`, `passthrough-only`,
    /// `transcode`.
    pub tracks: TrackUse,
    /// The tallest video track accepted, in lines.
    pub max_height: Option<u32>,
    /// Whether its streams are recorded (its own setting, else the node's).
    pub record: bool,
}

#[derive(Debug, Serialize)]
pub struct IngestUrls {
    pub rtmp: String,
    /// WHIP endpoint (RFC 9725); the stream key is its bearer token.
    pub whip: String,
}

impl ChannelView {
    pub fn new(ch: &Channel, policy: &Policy, cfg: &Config) -> Self {
        let policy = policy.clone();
        ChannelView {
            id: ch.id.clone(),
            name: ch.name.clone(),
            stream_key: ch.stream_key.clone(),
            ladder: ch.ladder.clone(),
            private: ch.private,
            ingest: IngestUrls {
                rtmp: cfg.rtmp_ingest_url(),
                whip: cfg.whip_ingest_url(&ch.id),
            },
            playback_url: format!("{}/hls/{}/master.m3u8", cfg.http_base_url(), ch.id),
            allowed_origins: policy.allowed_origins,
            allow_countries: policy.allow_countries,
            deny_countries: policy.deny_countries,
            allow_cidrs: policy.allow_cidrs,
            deny_cidrs: policy.deny_cidrs,
            publish_hook: policy.publish_hook,
            play_hook: policy.play_hook,
            multitrack: policy.multitrack,
            tracks: policy.tracks,
            max_height: policy.max_height,
            record: policy.record.unwrap_or(cfg.recording.enabled),
        }
    }
}

#[derive(Clone)]
struct Api {
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    token: Arc<str>,
    access: Arc<Access>,
    node: Arc<crate::fleet::Fleet>,
}

/// The body of `POST /api/v1/channels` (`name` required) and of `PATCH
/// /api/v1/channels/{id}` (`name` and `ladder` refused): a field left out
/// stays as it was (or the default, on create).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRequest {
    name: Option<String>,
    /// Ladder preset; the node's default when absent.
    ladder: Option<String>,
    /// Playback tokens required; false when absent on create.
    private: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    allow_countries: Option<Vec<String>>,
    deny_countries: Option<Vec<String>>,
    allow_cidrs: Option<Vec<String>>,
    deny_cidrs: Option<Vec<String>>,
    /// `null` (or `""`) clears it, which absent does not.
    #[serde(default, deserialize_with = "given")]
    publish_hook: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    play_hook: Option<Option<String>>,
    /// `allow`, `deny` or `require` several video tracks (Enhanced RTMP multitrack).
    multitrack: Option<Multitrack>,
    /// `fill`, `passthrough-only` or `transcode`: what further tracks become.
    tracks: Option<TrackUse>,
    /// The tallest video track accepted, in lines; `null` clears it.
    #[serde(default, deserialize_with = "given")]
    max_height: Option<Option<u32>>,
    /// Whether the channel's streams are recorded; `null`: as the node says.
    #[serde(default, deserialize_with = "given")]
    record: Option<Option<bool>>,
}

/// A field present in the body, `null` included.
fn given<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl ChannelRequest {
    fn policy(&mut self) -> PolicyPatch {
        PolicyPatch {
            allowed_origins: self.allowed_origins.take(),
            allow_countries: self.allow_countries.take(),
            deny_countries: self.deny_countries.take(),
            allow_cidrs: self.allow_cidrs.take(),
            deny_cidrs: self.deny_cidrs.take(),
            publish_hook: self.publish_hook.take(),
            play_hook: self.play_hook.take(),
            multitrack: self.multitrack.take(),
            tracks: self.tracks.take(),
            max_height: self.max_height.take(),
            record: self.record.take(),
        }
    }
}

/// A country rule on a node that cannot tell countries would refuse
/// everyone (an allow list) or no one (a deny list): the 400 that refuses
/// it up front.
fn countries_unknown(api: &Api, patch: &PolicyPatch) -> Option<Response> {
    (patch.sets_countries() && !api.access.knows_countries()).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "allow_countries/deny_countries: this node has no GeoIP database (access.geoip_database)",
        )
    })
}

fn policy_error(e: rules::PolicyError) -> RegistryError {
    RegistryError::InvalidPolicy(e.to_string())
}

/// An empty body (or `{}`) generates a key pair; `public_key` imports one.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    /// SPKI PEM of an ECDSA P-384 public key.
    public_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    viewer_id: String,
}

/// The body of `POST /api/v1/channels/{id}/reconnect`: empty, `{}`, or a new
/// server for the publisher.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReconnectBody {
    /// Enhanced RTMP `tcUrl`: an rtmp(s):// URL or a reference starting
    /// with `/`; absent, the publisher reconnects where it is connected.
    tc_url: Option<String>,
}

/// A created key pair: the private half is in this response and nowhere else.
#[derive(Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: PlaybackKey,
    /// PKCS#8 PEM; shown once, never stored.
    pub private_key: String,
}

/// A create request is a name and a ladder preset.
const MAX_BODY: usize = 16 * 1024;

pub fn routes(
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    admin_token: Arc<str>,
    access: Arc<Access>,
    node: Arc<crate::fleet::Fleet>,
) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/node/drain", post(drain))
        .route("/api/v1/channels", get(list).post(create))
        .route(
            "/api/v1/channels/{id}",
            get(show).delete(remove).patch(update),
        )
        .route("/api/v1/channels/{id}/rotate-key", post(rotate))
        .route("/api/v1/channels/{id}/recordings", get(recordings))
        .route("/api/v1/channels/{id}/reconnect", post(reconnect))
        .route("/api/v1/playback-keys", get(list_keys).post(create_key))
        .route("/api/v1/playback-keys/{id}", delete(delete_key))
        .route("/api/v1/revocations", get(list_revocations).post(revoke))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Api {
            hub,
            cfg,
            token: admin_token,
            access,
            node,
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
        RegistryError::KeyNotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        RegistryError::InvalidName(_)
        | RegistryError::InvalidKey(_)
        | RegistryError::InvalidViewer(_)
        | RegistryError::InvalidPolicy(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
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
    let listed = blocking(&api, |hub| {
        let policies: HashMap<String, Policy> = hub.registry().policies()?.into_iter().collect();
        Ok((hub.registry().list()?, policies))
    });
    match listed.await {
        Ok((chs, policies)) => {
            let none = Policy::default();
            let views: Vec<_> = chs
                .iter()
                .map(|c| ChannelView::new(c, policies.get(&c.id).unwrap_or(&none), &api.cfg))
                .collect();
            ok_json(StatusCode::OK, views)
        }
        Err(r) => r,
    }
}

async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<ChannelRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let Json(mut req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(name) = req.name.take() else {
        return error(StatusCode::BAD_REQUEST, "missing field `name`");
    };
    let ladder = req
        .ladder
        .take()
        .unwrap_or_else(|| api.cfg.transcode.default_ladder.clone());
    if let Err(e) = api.hub.ladders().check(&ladder) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let patch = req.policy();
    if let Some(r) = countries_unknown(&api, &patch) {
        return r;
    }
    // Checked before the channel exists, so a bad rule creates nothing.
    let policy = match rules::normalize(patch.apply(Policy::default())) {
        Ok(p) => p,
        Err(e) => return registry_error(policy_error(e)),
    };
    let private = req.private.unwrap_or(false);
    let access = api.access.clone();
    let created = blocking(&api, move |hub| {
        let ch = hub.registry().create_with(&name, &ladder, private)?;
        if policy != Policy::default() {
            hub.registry().set_policy(&ch.id, &policy)?;
        }
        access.reload()?;
        Ok((ch, policy))
    });
    match created.await {
        Ok((ch, policy)) => {
            tracing::info!(channel = %ch.id, "channel created");
            ok_json(
                StatusCode::CREATED,
                ChannelView::new(&ch, &policy, &api.cfg),
            )
        }
        Err(r) => r,
    }
}

async fn show(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let shown = blocking(&api, move |hub| {
        Ok((hub.registry().get(&id)?, hub.registry().policy(&id)?))
    });
    match shown.await {
        Ok((ch, policy)) => ok_json(StatusCode::OK, ChannelView::new(&ch, &policy, &api.cfg)),
        Err(r) => r,
    }
}

/// One recording as the API lists it.
#[derive(Serialize)]
struct RecordingView {
    session: String,
    started_at: String,
    ended_at: Option<String>,
    duration_s: Option<f64>,
    bytes: Option<u64>,
    state: RecordingState,
    /// Completed at a node's start after that node stopped mid-stream.
    recovered: bool,
    /// The VOD multivariant playlist.
    url: String,
}

/// `GET /api/v1/channels/{id}/recordings`: newest first.
async fn recordings(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let listed = blocking(&api, move |hub| {
        hub.registry().get(&id)?;
        hub.registry().recordings(&id)
    });
    let rows = match listed.await {
        Ok(rows) => rows,
        Err(r) => return r,
    };
    let base = api.cfg.http_base_url();
    let views: Vec<RecordingView> = rows
        .into_iter()
        .map(|r| RecordingView {
            url: api
                .hub
                .recordings()
                .map(|rec| rec.playback_url(&base, &r.channel_id, &r.session))
                .unwrap_or_default(),
            session: r.session,
            started_at: r.started_at,
            ended_at: r.ended_at,
            duration_s: r.duration_s,
            bytes: r.bytes,
            state: r.state,
            recovered: r.recovered,
        })
        .collect();
    ok_json(StatusCode::OK, serde_json::json!({ "recordings": views }))
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
        Ok((ch, hub.registry().policy(&id)?))
    });
    match rotated.await {
        Ok((ch, policy)) => {
            tracing::info!(channel = %ch.id, "stream key rotated");
            ok_json(StatusCode::OK, ChannelView::new(&ch, &policy, &api.cfg))
        }
        Err(r) => r,
    }
}

async fn update(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ChannelRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let Json(mut req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if req.name.is_some() || req.ladder.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "name and ladder are set when a channel is created",
        );
    }
    let patch = req.policy();
    if let Some(r) = countries_unknown(&api, &patch) {
        return r;
    }
    let access = api.access.clone();
    let updated = blocking(&api, move |hub| {
        let reg = hub.registry();
        let stored = reg.policy(&id)?;
        // Checked before anything is written: a bad rule changes nothing.
        let policy = if patch.is_empty() {
            None
        } else {
            Some(rules::normalize(patch.apply(stored.clone())).map_err(policy_error)?)
        };
        let ch = match req.private {
            Some(p) => reg.set_private(&id, p)?,
            None => reg.get(&id)?,
        };
        if let Some(p) = &policy {
            reg.set_policy(&id, p)?;
        }
        let policy = policy.unwrap_or(stored);
        // Players see the change on their next request, not a second later.
        access.reload()?;
        Ok((ch, policy))
    });
    match updated.await {
        Ok((ch, policy)) => {
            tracing::info!(channel = %ch.id, private = ch.private, "channel updated");
            ok_json(StatusCode::OK, ChannelView::new(&ch, &policy, &api.cfg))
        }
        Err(r) => r,
    }
}

async fn list_keys(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    match blocking(&api, |hub| hub.registry().playback_keys()).await {
        Ok(keys) => ok_json(StatusCode::OK, keys),
        Err(r) => r,
    }
}

/// Generates a key pair (empty body) or imports a public key
/// (`{"public_key": PEM}`). Only the public half is stored.
async fn create_key(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let req: KeyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KeyRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
        }
    };
    let (private, public) = match req.public_key {
        Some(pem) => match access::normalize_public_pem(&pem) {
            Ok(p) => (None, p),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        None => match access::generate_key_pair() {
            Ok((private, public)) => (Some(private), public),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
    };
    let access = api.access.clone();
    let stored = blocking(&api, move |hub| {
        let key = hub.registry().add_playback_key(&public)?;
        access.reload()?;
        Ok(key)
    });
    match stored.await {
        Ok(key) => {
            tracing::info!(key = %key.id, "playback key registered");
            match private {
                Some(private_key) => ok_json(StatusCode::CREATED, CreatedKey { key, private_key }),
                None => ok_json(StatusCode::CREATED, key),
            }
        }
        Err(r) => r,
    }
}

async fn delete_key(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let access = api.access.clone();
    let deleted = blocking(&api, move |hub| {
        hub.registry().delete_playback_key(&id)?;
        access.reload()?;
        tracing::info!(key = %id, "playback key deleted");
        Ok(())
    });
    match deleted.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn list_revocations(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    match blocking(&api, |hub| hub.registry().revocations()).await {
        Ok(revs) => ok_json(StatusCode::OK, revs),
        Err(r) => r,
    }
}

/// `GET /api/v1/nodes`: the live map, every node whose lease holds.
async fn list_nodes(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    match blocking(&api, |hub| hub.registry().nodes()).await {
        Ok(nodes) => {
            let nodes: Vec<serde_json::Value> = nodes
                .into_iter()
                .map(|n| {
                    serde_json::json!({
                        "id": n.info.id,
                        "public_url": n.info.public_url,
                        "region": n.info.region,
                        "capacity": n.info.capacity,
                        "draining": n.info.draining,
                        "live_channels": n.live_channels,
                        "lease_expires_in_s": n.expires_in_ms as f64 / 1000.0,
                    })
                })
                .collect();
            ok_json(StatusCode::OK, nodes)
        }
        Err(r) => r,
    }
}

/// `POST /api/v1/node/drain`: what SIGTERM does. The node stops taking
/// publishers, serves its live streams until they end or `drain.deadline_s`
/// passes, then exits.
async fn drain(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let started = api.node.drain();
    ok_json(
        StatusCode::ACCEPTED,
        serde_json::json!({
            "node": api.node.node_id(),
            "draining": true,
            "already_draining": !started,
            "deadline_s": api.cfg.drain.deadline_s,
        }),
    )
}

/// Revokes a viewer id: its tokens issued until now are refused.
async fn revoke(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<RevokeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let access = api.access.clone();
    let revoked = blocking(&api, move |hub| {
        let rev: Revocation = hub.registry().revoke_viewer(&req.viewer_id)?;
        access.reload()?;
        Ok(rev)
    });
    match revoked.await {
        Ok(rev) => ok_json(StatusCode::CREATED, rev),
        Err(r) => r,
    }
}

/// Asks the channel's publisher to reconnect and publish again (Enhanced
/// RTMP v2 `NetConnection.Connect.ReconnectRequest`), e.g. before the node
/// is drained. 202 once the request is handed to the publisher's
/// connection; 409 when the channel is not live, or when its publisher did
/// not announce that it reconnects on request (capsEx Reconnect; never a
/// WHIP publisher): such a publisher is left alone rather than cut.
async fn reconnect(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return *r;
    }
    let req: ReconnectBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReconnectBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
        }
    };
    if let Some(url) = &req.tc_url
        && let Err(e) = check_tc_url(url)
    {
        return error(StatusCode::BAD_REQUEST, format!("tc_url: {e}"));
    }
    let hub = api.hub.clone();
    let ch = id.clone();
    let request = ReconnectRequest {
        tc_url: req.tc_url.clone(),
    };
    let asked = tokio::task::spawn_blocking(move || hub.request_reconnect(&ch, request)).await;
    let outcome = match asked {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(ReconnectError::UnknownChannel(_))) => {
            return error(StatusCode::NOT_FOUND, format!("no channel {id}"));
        }
        Ok(Err(ReconnectError::Registry(e))) => return registry_error(e),
        Err(e) => {
            tracing::error!(channel = %id, error = %e, "reconnect request failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let conflict = |msg: String| {
        (
            StatusCode::CONFLICT,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "error": msg, "result": outcome.label() })),
        )
            .into_response()
    };
    match outcome {
        ReconnectOutcome::Sent => {
            tracing::info!(channel = %id, new_server = req.tc_url.is_some(), "publisher asked to reconnect");
            ok_json(
                StatusCode::ACCEPTED,
                serde_json::json!({
                    "channel": id,
                    "result": outcome.label(),
                    "tc_url": req.tc_url,
                }),
            )
        }
        ReconnectOutcome::NotSupported { ingest: "whip" } => conflict(format!(
            "channel {id} is published over WHIP, which has no reconnect request: its publisher was not asked"
        )),
        ReconnectOutcome::NotSupported { .. } => conflict(format!(
            "the publisher of channel {id} did not announce Enhanced RTMP reconnect support \
             (capsEx Reconnect in its connect): it was not asked, and publishes on"
        )),
        ReconnectOutcome::NotLive => conflict(format!(
            "channel {id} is not live (no publisher, in its reconnect grace period, or ended): there is no publisher to ask"
        )),
    }
}
