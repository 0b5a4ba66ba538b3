//! HLS routes: playlists with blocking reload and skip, init segments, parts and segments.
//!
//! Owns the HTTP mapping: delivery-directive parsing, status codes, content
//! types and cache headers. Must never wait on its own (the store does the
//! blocking) and never add CORS (the caller layers it on). Every request
//! passes `access` first (the channel's origin, network and country rules;
//! for a private channel its token too), and a private channel's playlists
//! are rewritten per request to carry the token (the store's bytes stay
//! token-free).

use crate::hooks::{Decision, Hooks, PlayQuestion};
use crate::metrics::METRICS;
use crate::package::playlist::Skip;
use crate::package::{ChannelStore, Encoding, MediaFile, PlaylistRequest, StoreError};
use crate::serve::access::{self, Access, Grant, Refusal};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub(super) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Media names never repeat (they carry the stream id and MSN), so a cache
/// may keep them forever.
pub(super) const MEDIA_CACHE: &str = "public, max-age=31536000, immutable";
/// A blocking reload's URL names what it waited for: any copy answers the
/// same question, so a CDN may share it briefly.
const BLOCKING_PLAYLIST_CACHE: &str = "public, max-age=60";
/// A plain playlist changes with every part.
const LIVE_PLAYLIST_CACHE: &str = "no-cache";
const ERROR_CACHE: &str = "no-store";

/// How routes find a channel's store by id.
pub trait Lookup: Fn(&str) -> Option<Arc<ChannelStore>> + Clone + Send + Sync + 'static {}
impl<F> Lookup for F where F: Fn(&str) -> Option<Arc<ChannelStore>> + Clone + Send + Sync + 'static {}

/// `/hls/{id}/master.m3u8`, `/hls/{id}/{rendition}/index.m3u8` (with
/// `_HLS_msn`, `_HLS_part`, `_HLS_skip`) and the media files they name.
pub fn routes<F>(lookup: F) -> Router
where
    F: Fn(&str) -> Option<Arc<ChannelStore>> + Clone + Send + Sync + 'static,
{
    routes_with_access(lookup, Access::detached(), Arc::new(Hooks::none()))
}

/// [`routes`] with private channels: `access` says which channels need a
/// playback token and checks it.
pub fn routes_with_access<F>(lookup: F, access: Arc<Access>, hooks: Arc<Hooks>) -> Router
where
    F: Fn(&str) -> Option<Arc<ChannelStore>> + Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/hls/{id}/master.m3u8", get(master::<F>))
        .route("/hls/{id}/{rendition}/{file}", get(rendition_file::<F>))
        .with_state(Hls {
            lookup,
            access,
            hooks,
        })
}

#[derive(Clone)]
struct Hls<F> {
    lookup: F,
    access: Arc<Access>,
    hooks: Arc<Hooks>,
}

pub(super) type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// A request that passed [`guard`].
pub(super) struct Admitted {
    /// The client's address (behind a trusted proxy, the one it names).
    pub client: Option<IpAddr>,
    /// For a private channel, what the token grants and the token itself.
    pub private: Option<(Grant, String)>,
}

/// The channel's rules, then for a private channel its token; or the 403
/// that refuses the request. Checked before the store is looked up, so a
/// refusal says nothing about whether the channel is live.
#[allow(clippy::result_large_err)]
pub(super) fn guard(
    access: &Access,
    channel: &str,
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    query: &QueryPairs,
    multivariant: bool,
) -> Result<Admitted, Response> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = access.client(peer, headers);
    let origin = access::request_origin(headers);
    access.admit(channel, client, origin).map_err(refused)?;
    if !access.is_private(channel) {
        return Ok(Admitted {
            client,
            private: None,
        });
    }
    let token = match query {
        Ok(Query(pairs)) => pairs
            .iter()
            .find(|(k, _)| k == access::TOKEN_PARAM)
            .map(|(_, v)| v.clone()),
        Err(_) => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let req = access::Request {
        channel,
        token: token.as_deref(),
        origin,
        now,
        multivariant,
    };
    match access.check(&req) {
        Ok(grant) => Ok(Admitted {
            client,
            private: Some((grant, token.unwrap_or_default())),
        }),
        Err(why) => Err(refused(why)),
    }
}

/// 403 naming the reason in `X-Rungs-Refusal`; never a word about keys,
/// the token or the client's address. Counted by reason.
fn refused(why: Refusal) -> Response {
    METRICS
        .play_refused
        .with_label_values(&[&why.as_str().replace(' ', "_")])
        .inc();
    (
        StatusCode::FORBIDDEN,
        [
            (
                header::HeaderName::from_static(access::REFUSAL_HEADER),
                HeaderValue::from_static(why.as_str()),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(ERROR_CACHE)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        format!("forbidden: {}\n", why.as_str()),
    )
        .into_response()
}

async fn master<F: Lookup>(
    State(hls): State<Hls<F>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    path: Result<Path<String>, PathRejection>,
    query: QueryPairs,
) -> Response {
    let Ok(Path(id)) = path else {
        return error(StoreError::NotFound);
    };
    let Admitted { client, private } =
        match guard(&hls.access, &id, &extensions, &headers, &query, true) {
            Ok(a) => a,
            Err(r) => return r,
        };
    // The play hook is asked once per multivariant request (and its answer
    // cached): a player reaches every other URI from this one.
    if hls.hooks.has_play_hook() {
        let q = PlayQuestion {
            channel: &id,
            client: client.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            claims: private.as_ref().map(|(grant, _)| &grant.claims),
        };
        if hls.hooks.play(&q).await == Decision::Deny {
            return refused(Refusal::Hook);
        }
    }
    let Some(store) = (hls.lookup)(&id) else {
        return error(StoreError::NotFound);
    };
    match (store.master_playlist().await, private) {
        (Ok(text), None) => playlist(text, LIVE_PLAYLIST_CACHE),
        (Ok(text), Some((grant, token))) => {
            let text = match grant.max_height {
                Some(h) => access::limit_height(&text, h),
                None => text,
            };
            playlist(access::rewrite_playlist(&text, &token), LIVE_PLAYLIST_CACHE)
        }
        (Err(e), _) => error(e),
    }
}

async fn rendition_file<F: Lookup>(
    State(hls): State<Hls<F>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    path: Result<Path<(String, String, String)>, PathRejection>,
    query: QueryPairs,
) -> Response {
    let Ok(Path((id, rendition, file))) = path else {
        return error(StoreError::NotFound);
    };
    let private = match guard(&hls.access, &id, &extensions, &headers, &query, false) {
        Ok(a) => a.private,
        Err(r) => return r,
    };
    let Some(store) = (hls.lookup)(&id) else {
        return error(StoreError::NotFound);
    };
    if file != "index.m3u8" {
        return match store.media_file(&rendition, &file).await {
            Ok(f) => media(f),
            Err(e) => error(e),
        };
    }
    let Ok(Query(pairs)) = query else {
        return error(StoreError::BadRequest("malformed query"));
    };
    let req = match directives(&pairs) {
        Ok(r) => r,
        Err(why) => return error(StoreError::BadRequest(why)),
    };
    let cache = if req.msn.is_some() {
        BLOCKING_PLAYLIST_CACHE
    } else {
        LIVE_PLAYLIST_CACHE
    };
    if let Some((_, token)) = private {
        // The store's gzip is shared by every request; a rewritten playlist
        // is one token's, so it is read plain, rewritten, and left to the
        // compression layer to gzip for this response alone.
        return match store.playlist(&rendition, req, Encoding::Identity).await {
            Ok(bytes) => {
                let text = access::rewrite_playlist(&String::from_utf8_lossy(&bytes), &token);
                let mut res = playlist(text, cache);
                res.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                res
            }
            Err(e) => error(e),
        };
    }
    let encoding = if accepts_gzip(&headers) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    match store.playlist(&rendition, req, encoding).await {
        Ok(bytes) => media_playlist(bytes, encoding, cache),
        Err(e) => error(e),
    }
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero weight
/// (RFC 9110 12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or("").trim();
            let weight = params
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && weight > 0.0
        })
}

/// Reads the delivery directives. RFC 8216bis 6.2.5: "Query parameters for
/// Playlist requests that begin with the string _HLS_ are reserved"; other
/// parameters (cache busters, tokens) are not ours to judge.
fn directives(pairs: &[(String, String)]) -> Result<PlaylistRequest, &'static str> {
    let mut req = PlaylistRequest::default();
    for (key, value) in pairs {
        match key.as_str() {
            "_HLS_msn" => set(
                &mut req.msn,
                decimal(value).ok_or("_HLS_msn is not a decimal-integer")?,
            )?,
            "_HLS_part" => set(
                &mut req.part,
                decimal(value).ok_or("_HLS_part is not a decimal-integer")?,
            )?,
            "_HLS_skip" => {
                let skip = match value.as_str() {
                    "YES" => Skip::Segments,
                    "v2" => Skip::SegmentsAndDateRanges,
                    _ => return Err("_HLS_skip must be YES or v2"),
                };
                set(&mut req.skip, skip)?;
            }
            _ => {}
        }
    }
    Ok(req)
}

fn set<T>(slot: &mut Option<T>, value: T) -> Result<(), &'static str> {
    if slot.replace(value).is_some() {
        return Err("a delivery directive is repeated");
    }
    Ok(())
}

/// RFC 8216bis 4.2 decimal-integer: digits only, no sign or spaces.
fn decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn playlist(text: String, cache: &'static str) -> Response {
    playlist_headers(cache, Bytes::from(text)).into_response()
}

/// A media playlist as the store rendered it: already gzipped where the
/// client accepts that, so the compression layer leaves it be.
fn media_playlist(bytes: Bytes, encoding: Encoding, cache: &'static str) -> Response {
    let mut res = playlist_headers(cache, bytes).into_response();
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if encoding == Encoding::Gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    res
}

fn playlist_headers(cache: &'static str, body: Bytes) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
}

fn media(f: MediaFile) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(f.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(MEDIA_CACHE)),
        ],
        f.bytes,
    )
        .into_response()
}

pub(super) fn error(e: StoreError) -> Response {
    let status = match e {
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::BadRequest(_) => StatusCode::BAD_REQUEST,
        // RFC 8216bis 6.2.5.2: "SHOULD return Service Unavailable, such as
        // HTTP 503" after blocking for more than three target durations.
        StoreError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    // Past the node's cap on parked requests: a client may come back soon.
    let retry =
        (e == StoreError::Busy).then_some([(header::RETRY_AFTER, HeaderValue::from_static("1"))]);
    (
        status,
        retry,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static(ERROR_CACHE)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        format!("{e}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::PackageConfig;
    use crate::package::Update;
    use crate::package::store::RenditionInfo;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use bytes::Bytes;
    use std::time::{Duration, UNIX_EPOCH};
    use tower::ServiceExt as _;

    /// One URI of every kind a channel serves: what access rules must cover.
    const EVERY_KIND: [&str; 5] = [
        "/hls/live/master.m3u8",
        "/hls/live/source/index.m3u8",
        "/hls/live/source/init-s1-1.mp4",
        "/hls/live/source/s1-1.1.m4s",
        "/hls/live/source/s1-0.m4s",
    ];

    /// A channel `live` with one complete segment and two parts of the next.
    fn app() -> (Router, Arc<ChannelStore>) {
        let store = ChannelStore::new("live", &PackageConfig::default());
        let (video, audio): (Arc<str>, Arc<str>) = (Arc::from("source"), Arc::from("audio"));
        let mut updates = vec![Update::StreamStart {
            sid: "s1".into(),
            part_target: Duration::from_millis(202),
            new_playlist: true,
            next_msn: 0,
        }];
        for (r, info) in [
            (
                &video,
                RenditionInfo::Video {
                    codecs: "avc1.64001f".into(),
                    width: 1280,
                    height: 720,
                },
            ),
            (
                &audio,
                RenditionInfo::Audio {
                    codecs: "mp4a.40.2".into(),
                },
            ),
        ] {
            updates.push(Update::Init {
                rendition: r.clone(),
                info,
                uri: "init-s1-1.mp4".into(),
                bytes: Bytes::from_static(b"init"),
            });
            for (msn, parts) in [(0, 10), (1, 2)] {
                updates.push(Update::SegmentStart {
                    rendition: r.clone(),
                    msn,
                    discontinuity: false,
                    program_date_time: UNIX_EPOCH,
                    map_uri: "init-s1-1.mp4".into(),
                });
                for i in 0..parts {
                    updates.push(Update::Part {
                        rendition: r.clone(),
                        msn,
                        duration: Duration::from_millis(200),
                        independent: i == 0,
                        bytes: Bytes::from_static(b"moof"),
                    });
                }
                if msn == 0 {
                    updates.push(Update::SegmentEnd {
                        rendition: r.clone(),
                        msn,
                        duration: Duration::from_secs(2),
                        gap: false,
                        samples: 60,
                    });
                }
            }
        }
        store.apply(updates);
        let lookup = {
            let store = store.clone();
            move |id: &str| (id == "live").then(|| store.clone())
        };
        (routes(lookup), store)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String, String, Bytes) {
        let res = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let (ctype, cache) = {
            let header = |name| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL))
        };
        let status = res.status();
        let body = to_bytes(res.into_body(), 1 << 20).await.expect("body");
        (status, ctype, cache, body)
    }

    #[tokio::test]
    async fn playlists_and_media_with_their_headers() {
        let (app, _) = app();
        let (s, ctype, cache, body) = get(&app, "/hls/live/master.m3u8").await;
        assert_eq!(
            (s, ctype.as_str(), cache.as_str()),
            (StatusCode::OK, PLAYLIST_TYPE, "no-cache")
        );
        assert!(String::from_utf8_lossy(&body).contains("source/index.m3u8"));

        let (s, ctype, cache, body) = get(&app, "/hls/live/source/index.m3u8?token=abc").await;
        assert_eq!(
            (s, ctype.as_str(), cache.as_str()),
            (StatusCode::OK, PLAYLIST_TYPE, "no-cache")
        );
        assert!(
            String::from_utf8_lossy(&body)
                .contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-1.2.m4s\"")
        );

        let (s, _, cache, _) = get(
            &app,
            "/hls/live/source/index.m3u8?_HLS_msn=1&_HLS_part=1&_HLS_skip=YES",
        )
        .await;
        assert_eq!(
            (s, cache.as_str()),
            (StatusCode::OK, BLOCKING_PLAYLIST_CACHE)
        );

        let (s, ctype, cache, body) = get(&app, "/hls/live/source/s1-1.1.m4s").await;
        assert_eq!(
            (s, ctype.as_str(), cache.as_str()),
            (StatusCode::OK, "video/mp4", MEDIA_CACHE)
        );
        assert_eq!(&body[..], b"moof");
        let (s, ctype, _, _) = get(&app, "/hls/live/audio/init-s1-1.mp4").await;
        assert_eq!((s, ctype.as_str()), (StatusCode::OK, "audio/mp4"));
        let (s, _, _, body) = get(&app, "/hls/live/source/s1-0.m4s").await;
        assert_eq!((s, body.len()), (StatusCode::OK, 40));
    }

    #[tokio::test]
    async fn refusals_are_400_or_404_and_never_cached() {
        let (app, _) = app();
        let cases = [
            (
                "/hls/live/source/index.m3u8?_HLS_part=1",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_msn=abc",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_msn=-1",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_msn=1&_HLS_msn=2",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_msn=1&_HLS_part=x",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_skip=maybe",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_msn=9",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/hls/live/source/index.m3u8?_HLS_msn=1&_HLS_part=40",
                StatusCode::BAD_REQUEST,
            ),
            ("/hls/nope/master.m3u8", StatusCode::NOT_FOUND),
            ("/hls/nope/source/index.m3u8", StatusCode::NOT_FOUND),
            ("/hls/live/720p/index.m3u8", StatusCode::NOT_FOUND),
            ("/hls/live/source/s1-0.99.m4s", StatusCode::NOT_FOUND),
            ("/hls/live/source/s1-70.0.m4s", StatusCode::NOT_FOUND),
            ("/hls/live/source/secret.txt", StatusCode::NOT_FOUND),
            (
                "/hls/live/source/..%2F..%2Fetc%2Fpasswd",
                StatusCode::NOT_FOUND,
            ),
        ];
        for (uri, want) in cases {
            let (s, _, cache, _) = get(&app, uri).await;
            assert_eq!(s, want, "{uri}");
            assert_eq!(cache, ERROR_CACHE, "{uri}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_reload_gets_its_playlist_or_503() {
        let (app, store) = app();
        let waiting = tokio::spawn({
            let app = app.clone();
            async move { get(&app, "/hls/live/source/index.m3u8?_HLS_msn=1&_HLS_part=2").await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        store.apply(vec![Update::Part {
            rendition: Arc::from("source"),
            msn: 1,
            duration: Duration::from_millis(200),
            independent: false,
            bytes: Bytes::from_static(b"moof"),
        }]);
        let (s, _, _, body) = waiting.await.expect("task");
        assert_eq!(s, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("s1-1.2.m4s"));

        // Nothing will satisfy segment 2 in three target durations.
        let (s, _, cache, _) = get(&app, "/hls/live/source/index.m3u8?_HLS_msn=2").await;
        assert_eq!(
            (s, cache.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, ERROR_CACHE)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rung_without_media_is_not_listed_and_its_playlist_waits_then_503() {
        let (app, store) = app();
        let rung: Arc<str> = Arc::from("480p");
        store.apply(vec![
            Update::Declare {
                rendition: rung.clone(),
                width: 854,
                height: 480,
                bitrate_bps: 1_000_000,
                rank: 1,
            },
            Update::Init {
                rendition: rung,
                info: RenditionInfo::Video {
                    codecs: "avc1.4d401e".into(),
                    width: 854,
                    height: 480,
                },
                uri: "init-s1-3.mp4".into(),
                bytes: Bytes::from_static(b"init"),
            },
        ]);
        // A player that picked it would find nothing to play: after the
        // bounded wait for it, the source alone is listed.
        let (s, _, _, body) = get(&app, "/hls/live/master.m3u8").await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("source/index.m3u8"), "{text}");
        assert!(!text.contains("480p"), "{text}");
        let (s, _, _, _) = get(&app, "/hls/live/480p/init-s1-3.mp4").await;
        assert_eq!(s, StatusCode::OK);
        let started = tokio::time::Instant::now();
        let (s, _, cache, _) = get(&app, "/hls/live/480p/index.m3u8").await;
        assert_eq!(
            (s, cache.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, ERROR_CACHE)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(6), "bounded wait");
    }

    #[tokio::test]
    async fn media_playlists_come_gzipped_to_clients_that_accept_it() {
        let (app, _) = app();
        let req = |accept: Option<&str>| {
            let mut r = Request::get("/hls/live/source/index.m3u8");
            if let Some(a) = accept {
                r = r.header(header::ACCEPT_ENCODING, a);
            }
            r.body(Body::empty()).expect("request")
        };
        let res = app
            .clone()
            .oneshot(req(Some("br;q=1.0, gzip;q=0.8")))
            .await
            .expect("infallible");
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        let zipped = to_bytes(res.into_body(), 1 << 20).await.expect("body");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut text)
            .expect("gzip");
        for accept in [None, Some("gzip;q=0"), Some("identity")] {
            let res = app.clone().oneshot(req(accept)).await.expect("infallible");
            assert!(
                res.headers().get(header::CONTENT_ENCODING).is_none(),
                "{accept:?}"
            );
            let plain = to_bytes(res.into_body(), 1 << 20).await.expect("body");
            assert_eq!(String::from_utf8_lossy(&plain), text, "{accept:?}");
        }
    }

    #[tokio::test]
    async fn a_private_channel_checks_every_request_and_rewrites_its_playlists() {
        let (_, store) = app();
        let access = Access::detached();
        let (private_pem, public_pem) = access::generate_key_pair().expect("pair");
        access
            .set(&["live"], &[("pk_1", &public_pem)], &[])
            .expect("keys");
        let lookup = move |id: &str| (id == "live").then(|| store.clone());
        let app = routes_with_access(lookup, access, Arc::new(Hooks::none()));
        let exp = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 60;
        let token = access::sign_token(
            &private_pem,
            None,
            &serde_json::json!({ "channel": "live", "exp": exp }),
        )
        .expect("sign");
        for uri in EVERY_KIND {
            let res = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{uri}");
            assert_eq!(res.headers()[access::REFUSAL_HEADER], "missing", "{uri}");
            assert_eq!(res.headers()[header::CACHE_CONTROL], ERROR_CACHE, "{uri}");
            let (s, _, _, _) = get(&app, &format!("{uri}?token={token}")).await;
            assert_eq!(s, StatusCode::OK, "{uri} with a token");
        }
        // The store's shared gzip is not used: the rewritten playlist goes
        // out plain here, for the compression layer to gzip per response.
        let res = app
            .clone()
            .oneshot(
                Request::get(format!("/hls/live/source/index.m3u8?token={token}"))
                    .header(header::ACCEPT_ENCODING, "gzip")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
        let text = String::from_utf8(
            to_bytes(res.into_body(), 1 << 20)
                .await
                .expect("body")
                .to_vec(),
        )
        .expect("utf-8");
        assert!(
            text.contains(&format!("URI=\"s1-1.2.m4s?token={token}\"")),
            "{text}"
        );
        assert!(
            text.contains(&format!("\ns1-0.m4s?token={token}\n")),
            "{text}"
        );
        let (_, _, _, master) = get(&app, &format!("/hls/live/master.m3u8?token={token}")).await;
        assert!(
            String::from_utf8_lossy(&master).contains(&format!("source/index.m3u8?token={token}"))
        );
    }

    #[tokio::test]
    async fn channel_rules_refuse_every_uri_of_a_public_channel_by_the_client_address() {
        let (_, store) = app();
        let locator = crate::serve::geo::Locator::from_config(&crate::config::AccessConfig {
            trusted_proxies: vec!["127.0.0.1".into()],
            ..crate::config::AccessConfig::default()
        })
        .expect("valid");
        let access = Access::detached_with(locator);
        access
            .set_policy(
                "live",
                &crate::registry::Policy {
                    deny_cidrs: vec!["203.0.113.0/24".into()],
                    ..crate::registry::Policy::default()
                },
            )
            .expect("valid");
        let lookup = move |id: &str| (id == "live").then(|| store.clone());
        let app = routes_with_access(lookup, access, Arc::new(Hooks::none()));
        let get_from = |uri: &str, peer: [u8; 4], forwarded: Option<&'static str>| {
            let mut r = Request::get(uri).extension(ConnectInfo(SocketAddr::from((peer, 40000))));
            if let Some(f) = forwarded {
                r = r.header("x-forwarded-for", f);
            }
            app.clone().oneshot(r.body(Body::empty()).expect("request"))
        };
        let before = METRICS.play_refused.with_label_values(&["network"]).get();
        for uri in EVERY_KIND {
            let res = get_from(uri, [203, 0, 113, 9], None)
                .await
                .expect("infallible");
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{uri}");
            assert_eq!(res.headers()[access::REFUSAL_HEADER], "network", "{uri}");
            // Through the trusted proxy, the address it names counts.
            let res = get_from(uri, [127, 0, 0, 1], Some("203.0.113.9"))
                .await
                .expect("infallible");
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{uri} via the proxy");
            let res = get_from(uri, [127, 0, 0, 1], Some("198.51.100.9"))
                .await
                .expect("infallible");
            assert_eq!(res.status(), StatusCode::OK, "{uri} via the proxy");
            // From anyone else the header is not believed.
            let res = get_from(uri, [198, 51, 100, 1], Some("192.0.2.1, 203.0.113.9"))
                .await
                .expect("infallible");
            assert_eq!(res.status(), StatusCode::OK, "{uri} forged");
        }
        let after = METRICS.play_refused.with_label_values(&["network"]).get();
        assert!(after >= before + 10, "{before} -> {after}");
    }

    #[test]
    fn busy_is_503_with_retry_after() {
        let res = error(StoreError::Busy);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(
            error(StoreError::Unavailable)
                .headers()
                .get(header::RETRY_AFTER)
                .is_none()
        );
    }

    #[test]
    fn directives_parse_strictly() {
        let pairs = |q: &[(&str, &str)]| {
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            directives(&pairs(&[
                ("_HLS_msn", "12"),
                ("_HLS_part", "3"),
                ("_HLS_skip", "v2"),
                ("x", "y")
            ])),
            Ok(PlaylistRequest {
                msn: Some(12),
                part: Some(3),
                skip: Some(Skip::SegmentsAndDateRanges)
            })
        );
        for bad in [
            ("_HLS_msn", ""),
            ("_HLS_msn", "+1"),
            ("_HLS_msn", "1.0"),
            ("_HLS_part", "99999999999"),
            ("_HLS_skip", "yes"),
        ] {
            assert!(directives(&pairs(&[bad])).is_err(), "{bad:?}");
        }
    }
}
