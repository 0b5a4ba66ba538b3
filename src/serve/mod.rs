//! HTTP serving: HLS, WHIP, the control API, metrics, health and the player page.
//!
//! Only routing and HTTP concerns live here; what a playlist says is decided
//! by `package`.

pub mod api;
pub mod hls;
mod player;

use crate::config::Config;
use crate::hub::Hub;
use crate::ingest::whip::Whip;
use crate::metrics::METRICS;
use axum::Router;
use axum::http::{Extensions, HeaderMap, Method, StatusCode, Version, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};

/// The node's whole HTTP surface.
pub fn router(hub: Arc<Hub>, cfg: Arc<Config>, admin_token: Arc<str>, whip: Arc<Whip>) -> Router {
    let lookup = {
        let hub = hub.clone();
        move |id: &str| hub.store(id)
    };
    // Players on any origin may read the stream; the API stays same-origin.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .expose_headers([header::CONTENT_LENGTH, header::AGE]);
    // Apple's HLS authoring spec (10.1): playlists MUST be compressed with gzip
    // when the client accepts it. Media is already compressed; leave it be.
    let gzip = CompressionLayer::new().gzip(true).compress_when(
        |_: StatusCode, _: Version, h: &HeaderMap, _: &Extensions| {
            h.get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.apple.mpegurl"))
        },
    );
    Router::new()
        .merge(hls::routes(lookup).layer(cors).layer(gzip))
        .merge(crate::ingest::whip::routes(hub.clone(), whip))
        .merge(api::routes(hub, cfg.clone(), admin_token))
        .merge(player::routes(cfg.player.hls_js.clone()))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
}

async fn metrics() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        METRICS.render(),
    )
}
