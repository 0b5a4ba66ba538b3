//! The browser pages of a channel: `/play/<id>` (hls.js in low-latency mode,
//! held at its target latency, showing the live latency) and `/publish/<id>`
//! (go live from the camera over WHIP), and the scripts they load.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;

const PAGE: &str = include_str!("player.html");
const PUBLISH: &str = include_str!("publish.html");
const LATENCY_JS: &str = include_str!("latency.js");

pub fn routes(hls_js: PathBuf) -> Router {
    Router::new()
        .route("/play/{id}", get(page))
        .route("/publish/{id}", get(publish_page))
        .route("/assets/hls.min.js", get(script))
        .route("/assets/rungs-latency.js", get(latency_script))
        .with_state(Arc::new(hls_js))
}

/// Channel ids are lowercase hex; anything else is refused before it could
/// reach the HTML.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn page(Path(id): Path<String>) -> Response {
    html(PAGE, &id)
}

async fn publish_page(Path(id): Path<String>) -> Response {
    html(PUBLISH, &id)
}

fn html(template: &str, id: &str) -> Response {
    if !valid_id(id) {
        return (StatusCode::NOT_FOUND, "no such channel").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        template.replace("{{CHANNEL}}", id),
    )
        .into_response()
}

/// The playback rate control of `/play/<id>`, for any page that embeds
/// hls.js (the README shows how).
async fn latency_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        LATENCY_JS,
    )
        .into_response()
}

async fn script(State(path): State<Arc<PathBuf>>) -> Response {
    match tokio::fs::read(path.as_path()).await {
        Ok(js) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            js,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "hls.js missing; run `npm install` or `make run`");
            (
                StatusCode::NOT_FOUND,
                "hls.js is not installed on this node: run `make run` or `npm install`",
            )
                .into_response()
        }
    }
}
