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

/// The pages name the node's other paths under `base`, the path prefix of
/// `public_url` (`/tv`, or "" without one), so they work behind a proxy that
/// serves the node under a prefix.
pub fn routes(hls_js: PathBuf, base: String) -> Router {
    let pages = Arc::new(Pages { hls_js, base });
    Router::new()
        .route("/play/{id}", get(page))
        .route("/publish/{id}", get(publish_page))
        .route("/assets/hls.min.js", get(script))
        .route("/assets/rungs-latency.js", get(latency_script))
        .with_state(pages)
}

struct Pages {
    hls_js: PathBuf,
    base: String,
}

/// Channel ids are lowercase hex; anything else is refused before it could
/// reach the HTML.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn page(State(pages): State<Arc<Pages>>, Path(id): Path<String>) -> Response {
    html(PAGE, &id, &pages.base)
}

async fn publish_page(State(pages): State<Arc<Pages>>, Path(id): Path<String>) -> Response {
    html(PUBLISH, &id, &pages.base)
}

fn html(template: &str, id: &str, base: &str) -> Response {
    if !valid_id(id) {
        return (StatusCode::NOT_FOUND, "no such channel").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        // The prefix comes from the operator's config and is a URL path
        // (checked at load), so it needs no escaping inside the page's quotes.
        template
            .replace("{{CHANNEL}}", id)
            .replace("{{BASE}}", base),
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

async fn script(State(pages): State<Arc<Pages>>) -> Response {
    let path = &pages.hls_js;
    match tokio::fs::read(path).await {
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
