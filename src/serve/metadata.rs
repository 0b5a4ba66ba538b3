//! `POST /api/v1/channels/{id}/metadata`: timed metadata into a live
//! channel's next part, guarded by the admin token and rate limited per
//! channel.
//!
//! Owns the HTTP side only (status codes, the body's type, the rate
//! limit); where the event lands is the channel core's and the packager's
//! decision. Must never block an async thread: the hand-off to the
//! channel's thread runs on the blocking pool.

use super::api::{authorize_admin, error};
use crate::hub::{Hub, MetadataError};
use crate::package::metadata::{MAX_PAYLOAD, MetadataRefusal, Payload};
use crate::package::playlist::program_date_time;
use crate::registry::RegistryError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Calls allowed per channel within [`WINDOW`], as the managed service
/// allows (5 a second).
pub const RATE: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(1);
/// Channels whose recent calls are remembered; past it the stalest go.
const MAX_TRACKED: usize = 10_000;

/// A sliding-window log per channel: a call is allowed when fewer than
/// `rate` calls were allowed in the `window` before it. Exact (no burst at a
/// window's edge, unlike a fixed window), and small: `rate` instants each.
#[derive(Debug)]
pub struct RateLimiter {
    rate: usize,
    window: Duration,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(rate: usize, window: Duration) -> Self {
        RateLimiter {
            rate,
            window,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a call for `key` at `now` is allowed (and counts it), or how
    /// long until one is.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if calls.len() >= MAX_TRACKED && !calls.contains_key(key) {
            let window = self.window;
            calls.retain(|_, log| log.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let log = calls.entry(key.to_owned()).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            log.pop_front();
        }
        if log.len() >= self.rate {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        log.push_back(now);
        Ok(())
    }
}

#[derive(Clone)]
struct MetadataApi {
    hub: Arc<Hub>,
    token: Arc<str>,
    limiter: Arc<RateLimiter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Seconds the event lasts: DURATION and the emsg event_duration.
    duration: Option<f64>,
}

/// The metadata route with its own state.
pub fn routes(hub: Arc<Hub>, admin_token: Arc<str>) -> Router {
    Router::new()
        .route("/api/v1/channels/{id}/metadata", post(insert))
        .with_state(MetadataApi {
            hub,
            token: admin_token,
            limiter: Arc::new(RateLimiter::new(RATE, WINDOW)),
        })
}

async fn insert(
    State(api): State<MetadataApi>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize_admin(&api.token, &headers) {
        return *r;
    }
    if body.len() > MAX_PAYLOAD {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "metadata is {} bytes; at most {MAX_PAYLOAD} are allowed",
                body.len()
            ),
        );
    }
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "empty metadata");
    }
    let duration = match params.duration {
        None => None,
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
            Some(Duration::from_secs_f64(s))
        }
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "duration must be between 0 and 86400 seconds",
            );
        }
    };
    let payload = match payload(&headers, body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Err(wait) = api.limiter.check(&id, Instant::now()) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("at most {RATE} metadata calls per second per channel"),
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = secs.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let hub = api.hub.clone();
    let ch = id.clone();
    let placed = tokio::task::spawn_blocking(move || {
        let placed = hub.insert_metadata(&ch, payload, duration);
        // Not live: tell an unknown channel from one without a stream.
        let known = match &placed {
            Err(MetadataError::Refused(MetadataRefusal::NotLive)) => {
                match hub.registry().get(&ch) {
                    Ok(_) => Ok(true),
                    Err(RegistryError::NotFound(_)) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(true),
        };
        (placed, known)
    })
    .await;
    let (placed, known) = match placed {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(channel = %id, error = %e, "metadata insertion failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    match (placed, known) {
        (_, Ok(false)) => error(StatusCode::NOT_FOUND, format!("no channel {id}")),
        (_, Err(e)) => {
            tracing::error!(channel = %id, error = %e, "registry read failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "registry unavailable")
        }
        (Ok(p), Ok(true)) => (
            StatusCode::ACCEPTED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({
                "id": p.id,
                "daterange_id": format!("rungs-{}", p.id),
                "media_time_s": p.media_time.as_secs_f64(),
                "start_date": program_date_time(p.date),
            })),
        )
            .into_response(),
        (Err(MetadataError::Refused(MetadataRefusal::NotLive)), Ok(true)) => error(
            StatusCode::CONFLICT,
            format!("channel {id} is not live: metadata needs a stream to carry it"),
        ),
        (Err(MetadataError::Refused(MetadataRefusal::TooLarge(n))), _) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("metadata is {n} bytes; at most {MAX_PAYLOAD} are allowed"),
        ),
        (Err(MetadataError::Refused(MetadataRefusal::Backlog)), _) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many events waiting for the channel's next part",
        ),
        (Err(MetadataError::Unreachable(e)), _) => {
            tracing::warn!(channel = %id, error = %e, "metadata not delivered to the channel");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the channel did not answer",
            )
        }
    }
}

/// `text/*` is text (and must be UTF-8); anything else is bytes.
fn payload(headers: &HeaderMap, body: Bytes) -> Result<Payload, Box<Response>> {
    let text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/"));
    if !text {
        return Ok(Payload::Bytes(body.to_vec()));
    }
    match String::from_utf8(body.to_vec()) {
        Ok(t) => Ok(Payload::Text(t)),
        Err(_) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "a text/* body must be UTF-8; send other bytes as application/octet-stream",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_allows_five_a_second_per_channel() {
        let l = RateLimiter::new(RATE, WINDOW);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.check("a", t0 + Duration::from_millis(i * 100)).is_ok());
        }
        let wait = l.check("a", t0 + Duration::from_millis(500));
        assert_eq!(wait, Err(Duration::from_millis(500)));
        // Another channel has its own budget.
        assert!(l.check("b", t0 + Duration::from_millis(500)).is_ok());
        // The first call leaves the window at 1 s: one more is allowed, and
        // a refused call does not count.
        assert!(l.check("a", t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.check("a", t0 + Duration::from_millis(1050)).is_err());
        assert!(l.check("a", t0 + Duration::from_millis(1100)).is_ok());
    }

    #[test]
    fn text_types_are_text_and_the_rest_bytes() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        assert_eq!(
            payload(&h, Bytes::from_static(b"hi")).ok(),
            Some(Payload::Text("hi".into()))
        );
        assert!(payload(&h, Bytes::from_static(&[0xff])).is_err());
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        assert_eq!(
            payload(&h, Bytes::from_static(&[0xff])).ok(),
            Some(Payload::Bytes(vec![0xff]))
        );
        assert_eq!(
            payload(&HeaderMap::new(), Bytes::from_static(b"x")).ok(),
            Some(Payload::Bytes(b"x".to_vec()))
        );
    }
}
