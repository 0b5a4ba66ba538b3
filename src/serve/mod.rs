//! HTTP serving: HLS, WHIP, the control API, metrics, health and the player page.
//!
//! Only routing and HTTP concerns live here; what a playlist says is decided
//! by `package`. Two surfaces: the player port (what players and publishers
//! need) and the admin port (what an operator needs).

pub mod access;
pub mod api;
pub mod fleet;
pub mod geo;
pub mod health;
pub mod hls;
pub mod listener;
mod metadata;
mod player;
mod recordings;
pub mod rules;
pub mod tls;

use crate::config::Config;
use crate::hooks::Hooks;
use crate::hub::Hub;
use crate::ingest::whip::Whip;
use crate::metrics::METRICS;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Extensions, HeaderMap, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

/// The largest request body any route reads: a WHIP offer (SDP). Every
/// other route reads less (the API) or nothing.
const MAX_BODY: usize = 64 * 1024;

/// The node's two HTTP surfaces.
pub struct Routers {
    /// HLS, player pages, WHIP and `/healthz`: open to the internet.
    pub player: Router,
    /// `/metrics`, `/api/v1` and `/healthz`: for the operator.
    pub admin: Router,
}

/// The player and admin routers; with `http.admin_on_player_port` the
/// player router carries the admin routes too.
pub fn routers(
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    admin_token: Arc<str>,
    whip: Arc<Whip>,
    hooks: Arc<Hooks>,
    locator: geo::Locator,
    node: Arc<crate::fleet::Fleet>,
) -> Routers {
    // One view of private channels and channel rules for both surfaces: the
    // API reloads it after each change, the player side checks against it.
    let access = access::Access::new(hub.registry().clone(), locator);
    let operator = operator(
        hub.clone(),
        cfg.clone(),
        admin_token,
        access.clone(),
        node.clone(),
    );
    let forwarding = fleet::Forwarding::new(hub.clone(), node.clone(), cfg.fleet.forward);
    let mut player =
        player(hub, cfg.clone(), whip, hooks, access, forwarding).merge(probes(node.clone()));
    if cfg.http.admin_on_player_port {
        player = player.merge(operator.clone());
    }
    let admin = operator.merge(probes(node));
    // Behind a proxy that keeps `public_url`'s path prefix the node is asked
    // under it; one that strips it asks at the root: both work.
    let prefix = cfg.path_prefix();
    if !prefix.is_empty() {
        player = Router::new().nest(&prefix, player.clone()).merge(player);
    }
    let limit = |r: Router| {
        r.layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(RequestBodyLimitLayer::new(MAX_BODY))
    };
    Routers {
        player: limit(player),
        admin: limit(admin),
    }
}

/// `/metrics` tells whoever reads it every live channel's id, its ingest
/// bitrate and health, the node's load and its GPUs: enough to find and
/// target streams, so it is the operator's, like the API.
fn operator(
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    admin_token: Arc<str>,
    access: Arc<access::Access>,
    node: Arc<crate::fleet::Fleet>,
) -> Router {
    Router::new()
        .merge(metadata::routes(hub.clone(), admin_token.clone()))
        .merge(health::routes(hub.clone(), admin_token.clone()))
        .merge(api::routes(hub, cfg, admin_token, access, node))
        .route("/metrics", get(metrics))
}

/// `/healthz` and `/readyz`, on both ports.
fn probes(node: Arc<crate::fleet::Fleet>) -> Router {
    Router::new()
        .route("/healthz", get(fleet::healthz))
        .route("/readyz", get(fleet::readyz))
        .with_state(node)
}

fn player(
    hub: Arc<Hub>,
    cfg: Arc<Config>,
    whip: Arc<Whip>,
    hooks: Arc<Hooks>,
    access: Arc<access::Access>,
    forwarding: fleet::Forwarding,
) -> Router {
    let lookup = {
        let hub = hub.clone();
        move |id: &str| hub.store(id)
    };
    let mut served = hls::routes_with_access(lookup, access.clone(), hooks.clone()).layer(
        axum::middleware::from_fn_with_state(forwarding, fleet::forward),
    );
    if let Some(root) = hub.recordings().and_then(|r| r.local_root()) {
        served = served.merge(recordings::routes(root.to_owned(), access.clone()));
    }
    // Players on any origin may read the stream, unless its channel lists
    // allowed origins (`channel_cors` narrows it then); the API stays
    // same-origin.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .expose_headers([
            header::CONTENT_LENGTH,
            header::AGE,
            header::HeaderName::from_static(access::REFUSAL_HEADER),
        ]);
    // Apple's HLS authoring spec (10.1): playlists MUST be compressed with gzip
    // when the client accepts it. Media playlists come gzipped from the store
    // (once per version, not per request), which this layer leaves alone; it
    // compresses the multivariant playlist. Media is already compressed.
    let gzip = CompressionLayer::new().gzip(true).compress_when(
        |_: StatusCode, _: Version, h: &HeaderMap, _: &Extensions| {
            h.get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.apple.mpegurl"))
        },
    );
    Router::new()
        .merge(
            served
                .layer(cors)
                .layer(axum::middleware::from_fn_with_state(access, channel_cors))
                .layer(gzip)
                .layer(axum::middleware::from_fn_with_state(
                    hub.clone(),
                    health::count_viewers,
                )),
        )
        .merge(crate::ingest::whip::routes(
            hub,
            whip,
            hooks,
            &cfg.path_prefix(),
        ))
        .merge(player::routes(cfg.player.hls_js.clone(), cfg.path_prefix()))
}

/// For a channel with allowed origins, `Access-Control-Allow-Origin` echoes
/// the request's origin when it is one of them and is left out otherwise
/// (also on preflights, which the CORS layer answers itself); other
/// channels keep `*`. The HLS handlers refuse such requests anyway: this
/// keeps a page on another origin from even reading the refusal.
async fn channel_cors(
    State(access): State<Arc<access::Access>>,
    req: Request,
    next: Next,
) -> Response {
    let channel = req
        .uri()
        .path()
        .strip_prefix("/hls/")
        .or_else(|| req.uri().path().strip_prefix("/recordings/"))
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut res = next.run(req).await;
    let Some(channel) = channel else {
        return res;
    };
    let h = res.headers_mut();
    match access.cors(&channel, origin.as_ref().and_then(|o| o.to_str().ok())) {
        access::Cors::Any => {}
        access::Cors::Echo => {
            if let Some(o) = origin {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            }
        }
        access::Cors::Withhold => {
            h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
            h.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        }
    }
    // The answer depends on the origin now: caches must key on it. (The
    // CORS layer already says so; this keeps it true if its list changes.)
    let varies = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin"));
    if !varies {
        h.append(header::VARY, header::HeaderValue::from_static("origin"));
    }
    res
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
