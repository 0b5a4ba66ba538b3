//! Players asking this node for a channel live on another node of the fleet:
//! a 307 to the holding node's public URL, or the holder's answer fetched
//! and passed on (`fleet.forward = "proxy"`). One hostname in front of the
//! fleet (a load balancer, a CDN) can send any player to any node.
//!
//! Also `/healthz` (is the node working) and `/readyz` (does it take
//! publishers), which load balancers and orchestrators probe.

use crate::config::Forward;
use crate::fleet::{Fleet, Whereabouts};
use crate::hub::Hub;
use crate::metrics::METRICS;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// Set on a proxied request: the node asked answers with what it has and
/// never forwards again, so a stale live map cannot make a loop.
const FORWARDED: &str = "x-rungs-forwarded";

/// The longest a proxied request may take: a blocking playlist reload waits
/// up to three target durations on the holder.
const PROXY_TIMEOUT: Duration = Duration::from_secs(40);

/// Headers of the holder's answer that a player or cache needs.
const PASSED_ON: [header::HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CACHE_CONTROL,
    header::AGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::VARY,
];

#[derive(Clone)]
pub struct Forwarding {
    hub: Arc<Hub>,
    fleet: Arc<Fleet>,
    mode: Forward,
    /// `None` only where no HTTP client can be built at all.
    client: Option<reqwest::Client>,
}

impl Forwarding {
    pub fn new(hub: Arc<Hub>, fleet: Arc<Fleet>, mode: Forward) -> Self {
        // A host without a trust store (a minimal container) still proxies
        // to http:// nodes; `Client::new` would panic there.
        let builder = || {
            reqwest::Client::builder()
                .timeout(PROXY_TIMEOUT)
                // The holder's own answer (a redirect, say) goes to the player.
                .redirect(reqwest::redirect::Policy::none())
        };
        let client = crate::hooks::http_client(builder).map_or(None, |(c, _)| Some(c));
        Forwarding {
            hub,
            fleet,
            mode,
            client,
        }
    }
}

/// Middleware on the HLS routes: requests for a channel that has no stream
/// here but is live on another node go there.
pub async fn forward(State(f): State<Forwarding>, req: Request, next: Next) -> Response {
    let Some(channel) = req
        .uri()
        .path()
        .strip_prefix("/hls/")
        .and_then(|rest| rest.split('/').next())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
    else {
        return next.run(req).await;
    };
    if f.hub.store(&channel).is_some() || req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let fleet = f.fleet.clone();
    let found = tokio::task::spawn_blocking(move || fleet.whereabouts(&channel)).await;
    let Ok(Whereabouts::Elsewhere(node)) = found else {
        return next.run(req).await;
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    let target = format!("{}{path}", node.public_url.trim_end_matches('/'));
    match f.mode {
        Forward::Redirect => {
            METRICS
                .fleet_forwarded
                .with_label_values(&["redirect"])
                .inc();
            redirect(&target)
        }
        Forward::Proxy => {
            let headers = req.headers().clone();
            drop(req);
            match &f.client {
                Some(client) => proxy(client, &target, &headers).await,
                None => redirect(&target),
            }
        }
    }
}

fn redirect(target: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(target) else {
        return (StatusCode::BAD_GATEWAY, "bad node URL in the live map\n").into_response();
    };
    // 307, not 302: the method and body stay as they were. The answer is
    // only true while the stream stays on that node: never cache it.
    (
        StatusCode::TEMPORARY_REDIRECT,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

async fn proxy(client: &reqwest::Client, target: &str, headers: &HeaderMap) -> Response {
    let mut ask = client.get(target).header(FORWARDED, "1");
    for h in [
        header::ACCEPT_ENCODING,
        header::IF_NONE_MATCH,
        header::ORIGIN,
    ] {
        if let Some(v) = headers.get(&h) {
            ask = ask.header(h, v);
        }
    }
    let answer = match ask.send().await {
        Ok(a) => a,
        Err(e) => {
            METRICS
                .fleet_forwarded
                .with_label_values(&["proxy_error"])
                .inc();
            tracing::warn!(error = %e.without_url(), "proxying a player request to the holding node");
            return (
                StatusCode::BAD_GATEWAY,
                "the node holding this channel did not answer\n",
            )
                .into_response();
        }
    };
    METRICS.fleet_forwarded.with_label_values(&["proxy"]).inc();
    let mut res = Response::builder().status(answer.status().as_u16());
    for h in &PASSED_ON {
        if let Some(v) = answer.headers().get(h) {
            res = res.header(h, v.as_bytes());
        }
    }
    res.body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// `/healthz`: 200 while the node works (its node-wide tasks run, its
/// registry answers), else 503 with what is wrong.
pub async fn healthz(State(fleet): State<Arc<Fleet>>) -> Response {
    match fleet.problems() {
        problems if problems.is_empty() => (StatusCode::OK, "ok\n").into_response(),
        problems => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {}\n", problems.join("; ")),
        )
            .into_response(),
    }
}

/// `/readyz`: 200 while the node takes publishers; 503 while it drains or
/// is unhealthy, so a load balancer sends new publishers elsewhere.
pub async fn readyz(State(fleet): State<Arc<Fleet>>) -> Response {
    if fleet.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match fleet.problems() {
        problems if problems.is_empty() => (StatusCode::OK, "ready\n").into_response(),
        problems => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response(),
    }
}
