//! LL-HLS client helpers: fetch a media playlist (plain or blocking) and
//! parse it strictly, or wait for a live one to have complete segments.

use std::time::{Duration, Instant};

use super::http::{Http, Resp};
use super::node::Node;
use super::playlist::{MediaPlaylist, parse_media};
use super::wait_for;

/// A fetched and parsed media playlist.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub resp: Resp,
    pub pl: MediaPlaylist,
}

/// GET a media playlist (with an optional query) and parse it strictly; panics
/// on a non-200 or a parse error, showing the text.
pub fn fetch_media(http: &Http, url: &str, query: &str) -> Fetched {
    let full = if query.is_empty() {
        url.to_string()
    } else {
        format!("{url}?{query}")
    };
    let resp = http.get(&full);
    assert_eq!(
        resp.status,
        200,
        "GET {full}: status {} body {:?}",
        resp.status,
        resp.text()
    );
    let text = resp.text();
    let pl = parse_media(&text)
        .unwrap_or_else(|e| panic!("GET {full}: invalid media playlist: {e}\n{text}"));
    Fetched { resp, pl }
}

/// Blocking reload for part `(msn, part)`.
pub fn fetch_blocking(http: &Http, url: &str, msn: u64, part: u64) -> Fetched {
    fetch_media(http, url, &format!("_HLS_msn={msn}&_HLS_part={part}"))
}

/// Waits until `url` answers 200 with a playlist that has at least
/// `min_segments` complete segments.
pub fn wait_playlist(
    http: &Http,
    url: &str,
    min_segments: usize,
    timeout: Duration,
) -> Option<Fetched> {
    wait_for(timeout, Duration::from_millis(200), || {
        let r = http.try_get(url).ok()?;
        if r.status != 200 {
            return None;
        }
        let pl = parse_media(&r.text()).ok()?;
        (pl.segments.len() >= min_segments).then_some(Fetched { resp: r, pl })
    })
}

/// Waits until every rendition in `names` (and audio) lists `n` complete
/// segments, within `timeout` in all.
pub fn wait_all(http: &Http, node: &Node, id: &str, names: &[&str], n: usize, timeout: Duration) {
    let end = Instant::now() + timeout;
    for name in names.iter().chain(&["audio"]) {
        let url = node.media_url(id, name);
        let left = end.saturating_duration_since(Instant::now());
        if wait_playlist(http, &url, n, left).is_none() {
            let r = http.try_get(&url);
            panic!(
                "{url} did not list {n} complete segments within {timeout:?}; last answer: {}",
                r.map_or_else(|e| e, |r| format!("{} {}", r.status, r.text()))
            );
        }
    }
}
