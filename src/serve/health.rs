//! Stream health for the operator: `GET /api/v1/channels/{id}/stream` (is
//! the channel live, is its ingest keeping up, what was received, what each
//! rung is doing, about how many players) and `GET
//! /api/v1/channels/{id}/sessions` (its recorded publishes and what
//! happened in them), both behind the admin token; and the layer on the HLS
//! routes that counts players.
//!
//! Owns the JSON views (the CLI prints the same ones) and their text form.
//! The facts come from the hub's status snapshot, the rung metrics and the
//! registry; this module judges nothing but health, at the request's
//! instant. It never shows or logs a client's address: players are a count.

use super::api::{authorize_admin, error};
use crate::hub::Hub;
use crate::hub::status::{Health, IngestInfo, RungInfo, StreamState};
use crate::metrics::METRICS;
use crate::package::playlist::program_date_time;
use crate::registry::{RegistryError, StreamSession};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::core::Collector;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Sessions listed when the request names no `limit`.
pub const DEFAULT_SESSIONS: usize = 20;

#[derive(Clone)]
struct HealthApi {
    hub: Arc<Hub>,
    token: Arc<str>,
}

pub fn routes(hub: Arc<Hub>, admin_token: Arc<str>) -> Router {
    Router::new()
        .route("/api/v1/channels/{id}/stream", get(stream))
        .route("/api/v1/channels/{id}/sessions", get(sessions))
        .with_state(HealthApi {
            hub,
            token: admin_token,
        })
}

/// `GET .../stream`: the channel's stream as of now.
#[derive(Debug, Serialize)]
pub struct StreamView {
    pub channel: String,
    pub state: StreamState,
    pub health: Health,
    /// When the stream's first media arrived.
    pub started_at: Option<String>,
    /// `None` unless live or reconnecting.
    pub ingest: Option<IngestView>,
    pub rungs: Vec<RungView>,
    /// Distinct addresses that were served a playlist of the channel in
    /// the last 10 s (behind a CDN: its edges).
    pub viewers: usize,
    /// The newest recorded session (the current one while live), without
    /// its events.
    pub last_session: Option<SessionView>,
}

#[derive(Debug, Serialize)]
pub struct IngestView {
    #[serde(flatten)]
    pub info: IngestInfo,
    /// Media seconds received per wall second over the last 5 s; below
    /// 0.9 the stream is starving.
    pub speed: Option<f64>,
    /// Seconds since the last media arrived.
    pub last_media_age_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RungView {
    #[serde(flatten)]
    pub rung: RungInfo,
    /// Encode wall time over media time for the rung's last GOP; above 1
    /// the encoder falls behind.
    pub realtime_ratio: Option<f64>,
    /// GOPs the rung lost because its encoder or the decoder fell behind.
    pub dropped_gops: u64,
    /// The latest sampled quality of the encoded rung against its input.
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
}

/// A recorded session; `events` only where a list asks for them.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: i64,
    pub protocol: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub ingest: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
    pub events_dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub detail: String,
}

impl SessionView {
    pub fn new(s: &StreamSession, with_events: bool) -> Self {
        SessionView {
            id: s.id,
            protocol: s.protocol.clone(),
            started_at: date(s.started_at_ms),
            ended_at: s.ended_at_ms.map(date),
            end_reason: s.end_reason.clone(),
            ingest: s.ingest.clone(),
            events: with_events.then(|| {
                s.events
                    .iter()
                    .map(|e| EventView {
                        at: date(e.at_ms),
                        kind: e.kind.clone(),
                        detail: e.detail.clone(),
                    })
                    .collect()
            }),
            events_dropped: s.events_dropped,
        }
    }
}

/// `GET .../sessions`: newest first, with their events.
pub fn sessions_view(channel: &str, sessions: &[StreamSession]) -> Value {
    let list: Vec<SessionView> = sessions.iter().map(|s| SessionView::new(s, true)).collect();
    serde_json::json!({ "channel": channel, "sessions": list })
}

fn date(ms: u64) -> String {
    program_date_time(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The channel's stream at `now`, from what the hub and the registry know.
fn stream_view(hub: &Hub, id: &str, now: Instant) -> Result<StreamView, RegistryError> {
    hub.registry().get(id)?;
    let last_session = hub
        .registry()
        .last_session(id)?
        .map(|s| SessionView::new(&s, false));
    let mut view = StreamView {
        channel: id.to_string(),
        state: StreamState::Offline,
        health: Health::Unknown,
        started_at: None,
        ingest: None,
        rungs: Vec::new(),
        viewers: 0,
        last_session,
    };
    let Some((status, viewers)) = hub.stream_status(id, now) else {
        return Ok(view);
    };
    view.state = status.state;
    view.viewers = viewers;
    if status.state == StreamState::Offline {
        return Ok(view);
    }
    view.health = status.health(now);
    view.started_at = status.started.map(program_date_time);
    view.ingest = Some(IngestView {
        info: status.ingest,
        speed: status.clock.realtime.map(|r| (r * 1000.0).round() / 1000.0),
        last_media_age_s: status
            .clock
            .last_arrival
            .map(|t| now.saturating_duration_since(t).as_secs_f64()),
    });
    let readings = RungReadings::of(id);
    view.rungs = status
        .rungs
        .into_iter()
        .map(|rung| readings.view(rung))
        .collect();
    Ok(view)
}

/// The rung metrics of one channel, read without creating a series.
struct RungReadings {
    realtime: HashMap<String, f64>,
    dropped: HashMap<String, f64>,
    psnr: HashMap<String, f64>,
    ssim: HashMap<String, f64>,
}

/// The decoder's drops, counted once for every rung.
const EVERY_RUNG: &str = "*";

impl RungReadings {
    fn of(channel: &str) -> Self {
        let gauge = |m: &prometheus::proto::Metric| m.get_gauge().get_value();
        let counter = |m: &prometheus::proto::Metric| m.get_counter().get_value();
        RungReadings {
            realtime: by_rung(METRICS.rung_realtime_ratio.collect(), channel, gauge),
            dropped: by_rung(METRICS.rung_dropped_gops.collect(), channel, counter),
            psnr: by_rung(METRICS.rung_psnr.collect(), channel, gauge),
            ssim: by_rung(METRICS.rung_ssim.collect(), channel, gauge),
        }
    }

    fn view(&self, rung: RungInfo) -> RungView {
        let name = rung.name.as_str();
        let every = self.dropped.get(EVERY_RUNG).copied().unwrap_or(0.0);
        let transcoded = rung.backend.is_some();
        RungView {
            realtime_ratio: self.realtime.get(name).copied(),
            // The source is passed through: the decoder's drops are not its.
            dropped_gops: (self.dropped.get(name).copied().unwrap_or(0.0)
                + if transcoded { every } else { 0.0 }) as u64,
            psnr_db: self.psnr.get(name).copied(),
            ssim: self.ssim.get(name).copied(),
            rung,
        }
    }
}

/// Values of a `{channel, rung}` metric for `channel`, by rung.
fn by_rung(
    families: Vec<prometheus::proto::MetricFamily>,
    channel: &str,
    value: impl Fn(&prometheus::proto::Metric) -> f64,
) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for m in families.iter().flat_map(|f| f.get_metric()) {
        let label = |name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value())
        };
        if label("channel") == Some(channel)
            && let Some(rung) = label("rung")
        {
            out.insert(rung.to_string(), value(m));
        }
    }
    out
}

async fn stream(
    State(api): State<HealthApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize_admin(&api.token, &headers) {
        return *r;
    }
    let now = Instant::now();
    let hub = api.hub.clone();
    // SQLite may wait on a lock another process holds: off the async workers.
    match tokio::task::spawn_blocking(move || stream_view(&hub, &id, now)).await {
        Ok(Ok(view)) => ok_json(view),
        Ok(Err(e)) => registry_error(e),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsQuery {
    limit: Option<usize>,
}

async fn sessions(
    State(api): State<HealthApi>,
    Path(id): Path<String>,
    query: Result<Query<SessionsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize_admin(&api.token, &headers) {
        return *r;
    }
    let limit = match query {
        Ok(Query(q)) => q.limit.unwrap_or(DEFAULT_SESSIONS),
        Err(_) => return error(StatusCode::BAD_REQUEST, "the one parameter is limit=N"),
    };
    let hub = api.hub.clone();
    let listed = tokio::task::spawn_blocking(move || {
        hub.registry().get(&id)?;
        let list = hub.registry().sessions(&id, limit)?;
        Ok(sessions_view(&id, &list))
    })
    .await;
    match listed {
        Ok(Ok(v)) => ok_json(v),
        Ok(Err(e)) => registry_error(e),
        Err(e) => internal(e),
    }
}

fn ok_json(body: impl Serialize) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

fn registry_error(e: RegistryError) -> Response {
    match e {
        RegistryError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        e => {
            tracing::error!(error = %e, "channel registry");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "channel registry unavailable",
            )
        }
    }
}

fn internal(e: tokio::task::JoinError) -> Response {
    tracing::error!(error = %e, "stream health task failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Notes every playlist served on the HLS routes (multivariant or media,
/// answered 2xx) as a player of its channel, for the `viewers` estimate.
pub async fn count_viewers(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let channel = playlist_channel(req.uri().path()).map(str::to_owned);
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let res = next.run(req).await;
    if let (Some(channel), Some(addr)) = (channel, addr)
        && res.status().is_success()
    {
        hub.note_playlist_request(&channel, addr, Instant::now());
    }
    res
}

/// The channel of `/hls/{id}/master.m3u8` and `/hls/{id}/{rendition}/index.m3u8`.
fn playlist_channel(path: &str) -> Option<&str> {
    let (id, rest) = path.strip_prefix("/hls/")?.split_once('/')?;
    let playlist = match rest.split_once('/') {
        None => rest == "master.m3u8",
        Some((_, file)) => file == "index.m3u8",
    };
    playlist.then_some(id)
}

/// `rungs channel stream`: the stream view as lines for a terminal.
pub fn stream_text(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "channel {}: {}, {}",
        s(&v["channel"]),
        s(&v["state"]),
        s(&v["health"])
    );
    if let Some(t) = v["started_at"].as_str() {
        let _ = write!(out, ", since {t}");
    }
    let _ = writeln!(out, ", {} viewers", v["viewers"].as_u64().unwrap_or(0));
    let ing = &v["ingest"];
    if ing.is_object() {
        let _ = writeln!(
            out,
            "ingest {}: {}; speed {} (media s per wall s), last media {} s ago",
            s(&ing["protocol"]),
            ingest_text(ing),
            num(&ing["speed"], 2),
            num(&ing["last_media_age_s"], 2)
        );
    }
    if let Some(tracks) = ing["tracks"].as_array() {
        for t in tracks {
            let video = format!(
                "{} {}x{} {} fps, {}",
                s(&t["codec"]),
                t["width"],
                t["height"],
                num(&t["frame_rate"], 2),
                t["bitrate_bps"]
                    .as_f64()
                    .map_or("-".to_string(), |b| format!("{:.2} Mb/s", b / 1e6)),
            );
            let fate = match t["rendition"].as_str() {
                Some(r) => format!("rung {r}"),
                None => s(&t["reason"]),
            };
            let _ = writeln!(out, "  track {}: {video}: {fate}", t["id"]);
        }
    }
    if let Some(rungs) = v["rungs"].as_array().filter(|r| !r.is_empty()) {
        let _ = writeln!(
            out,
            "  {:<10} {:<12} {:<8} {:>9} {:>8} {:>8} {:>7}",
            "rung", "encoder", "backend", "rt-ratio", "drops", "PSNR dB", "SSIM"
        );
        for r in rungs {
            let _ = writeln!(
                out,
                "  {:<10} {:<12} {:<8} {:>9} {:>8} {:>8} {:>7}",
                s(&r["name"]),
                s(&r["encoder"]),
                s(&r["backend"]),
                num(&r["realtime_ratio"], 2),
                r["dropped_gops"].as_u64().unwrap_or(0),
                num(&r["psnr_db"], 2),
                num(&r["ssim"], 4)
            );
        }
    }
    if v["last_session"].is_object() {
        out.push_str("last session: ");
        out.push_str(&session_text(&v["last_session"]));
    }
    out
}

/// `rungs channel sessions`: the sessions view as lines for a terminal.
pub fn sessions_text(v: &Value) -> String {
    let list = v["sessions"].as_array().map_or(&[][..], Vec::as_slice);
    if list.is_empty() {
        return format!(
            "channel {}: no stream sessions recorded\n",
            v["channel"].as_str().unwrap_or("-")
        );
    }
    list.iter().map(session_text).collect()
}

fn session_text(s: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let end = match s["ended_at"].as_str() {
        Some(t) => format!("{t}, {}", text(&s["end_reason"])),
        None => "live".to_string(),
    };
    let mut out = format!(
        "#{} {} {} -> {}\n",
        s["id"],
        text(&s["protocol"]),
        text(&s["started_at"]),
        end
    );
    if s["ingest"].is_object() {
        let _ = writeln!(out, "    {}", ingest_text(&s["ingest"]));
    }
    for e in s["events"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "    {}  {}: {}",
            text(&e["at"]),
            text(&e["kind"]),
            text(&e["detail"])
        );
    }
    if let Some(n) = s["events_dropped"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(out, "    ({n} more events not kept)");
    }
    out
}

/// `h264 High 3.0 640x360 30 fps, aac LC 48000 Hz 2 ch, 1.10 Mb/s`.
fn ingest_text(i: &Value) -> String {
    let mut parts = Vec::new();
    let v = &i["video"];
    if v.is_object() {
        parts.push(format!(
            "{} {} {} {}x{} {} fps",
            v["codec"].as_str().unwrap_or("-"),
            v["profile"].as_str().unwrap_or("-"),
            v["level"].as_str().unwrap_or("-"),
            v["width"],
            v["height"],
            num(&v["frame_rate"], 2)
        ));
    }
    let a = &i["audio"];
    if a.is_object() {
        parts.push(format!(
            "{} {} {} Hz {} ch",
            a["codec"].as_str().unwrap_or("-"),
            a["profile"].as_str().unwrap_or("-"),
            a["sample_rate"],
            a["channels"]
        ));
    }
    if let Some(bps) = i["bitrate_bps"].as_f64() {
        parts.push(format!("{:.2} Mb/s", bps / 1e6));
    }
    if parts.is_empty() {
        return "no media yet".to_string();
    }
    parts.join(", ")
}

fn num(v: &Value, decimals: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SessionEvent;

    #[test]
    fn playlist_paths_name_their_channel_and_nothing_else_counts() {
        assert_eq!(playlist_channel("/hls/abc/master.m3u8"), Some("abc"));
        assert_eq!(playlist_channel("/hls/abc/720p/index.m3u8"), Some("abc"));
        assert_eq!(playlist_channel("/hls/abc/720p/init-x-1.mp4"), None);
        assert_eq!(playlist_channel("/hls/abc/720p/x-1.2.m4s"), None);
        assert_eq!(playlist_channel("/api/v1/channels/abc/stream"), None);
        assert_eq!(playlist_channel("/hls/abc"), None);
    }

    #[test]
    fn a_session_reads_the_same_as_json_and_as_text() {
        let s = StreamSession {
            id: 7,
            channel_id: "c1".into(),
            protocol: "rtmp".into(),
            started_at_ms: 1_700_000_000_000,
            ended_at_ms: Some(1_700_000_060_000),
            end_reason: Some("publisher did not come back (disconnected)".into()),
            ingest: Some(serde_json::json!({
                "protocol": "rtmp",
                "video": {"codec": "h264", "profile": "High", "level": "3.0",
                          "width": 640, "height": 360, "frame_rate": 30.0},
                "audio": {"codec": "aac", "profile": "LC", "sample_rate": 48000, "channels": 2},
                "bitrate_bps": 1_100_000
            })),
            events: vec![SessionEvent {
                at_ms: 1_700_000_030_000,
                kind: "publisher left".into(),
                detail: "disconnected".into(),
            }],
            events_dropped: 2,
        };
        let v = sessions_view("c1", std::slice::from_ref(&s));
        let first = &v["sessions"][0];
        assert_eq!(first["started_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(first["events"][0]["kind"], "publisher left");
        let text = sessions_text(&v);
        assert!(text.starts_with("#7 rtmp 2023-11-14T22:13:20.000Z -> 2023-11-14T22:14:20.000Z, publisher did not come back (disconnected)\n"), "{text}");
        assert!(
            text.contains("h264 High 3.0 640x360 30.00 fps, aac LC 48000 Hz 2 ch, 1.10 Mb/s"),
            "{text}"
        );
        assert!(
            text.contains("2023-11-14T22:13:50.000Z  publisher left: disconnected"),
            "{text}"
        );
        assert!(text.contains("(2 more events not kept)"), "{text}");
        // A summary leaves the events out.
        let summary = serde_json::to_value(SessionView::new(&s, false)).expect("json");
        assert!(summary.get("events").is_none());
    }
}
