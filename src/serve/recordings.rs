//! `/recordings/{channel}/{session}/...`: recordings kept in the local
//! store, served to players under the same rules as the channel's live
//! stream (origins, networks, countries; a private channel's token, which
//! its playlists are rewritten to carry). Never serves a path outside a
//! recording's folder, nor the spool.

use super::access::{self, Access};
use super::hls::{self, Admitted, MEDIA_CACHE, PLAYLIST_TYPE, QueryPairs};
use crate::package::StoreError;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;

/// A finished recording never changes; a cache may keep its playlists a
/// while (a re-recorded session would have a new folder).
const PLAYLIST_CACHE: &str = "public, max-age=3600";

#[derive(Clone)]
struct Recorded {
    root: Arc<PathBuf>,
    access: Arc<Access>,
}

/// The routes, when recordings are kept in `root` on this node.
pub(super) fn routes(root: PathBuf, access: Arc<Access>) -> Router {
    Router::new()
        .route("/recordings/{id}/{session}/{*path}", get(file))
        .with_state(Recorded {
            root: Arc::new(root),
            access,
        })
}

async fn file(
    State(rec): State<Recorded>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    path: Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>,
    query: QueryPairs,
) -> Response {
    let Ok(Path((id, session, rest))) = path else {
        return hls::error(StoreError::NotFound);
    };
    let multivariant = rest == "master.m3u8";
    let Admitted { private, .. } = match hls::guard(
        &rec.access,
        &id,
        &extensions,
        &headers,
        &query,
        multivariant,
    ) {
        Ok(a) => a,
        Err(r) => return r,
    };
    // Only names the recorder writes: no `..`, no hidden files, at most
    // `<rendition>/<file>` or `thumbnails/<file>` below the session.
    let parts: Vec<&str> = std::iter::once(id.as_str())
        .chain(std::iter::once(session.as_str()))
        .chain(rest.split('/'))
        .collect();
    if parts.len() > 4 || !parts.iter().all(|p| plain_name(p)) {
        return hls::error(StoreError::NotFound);
    }
    let file = parts.iter().fold((*rec.root).clone(), |p, c| p.join(c));
    let Ok(bytes) = tokio::fs::read(&file).await else {
        return hls::error(StoreError::NotFound);
    };
    let name = parts.last().copied().unwrap_or_default();
    let (kind, cache) = match name.rsplit_once('.').map(|(_, e)| e) {
        Some("m3u8") => (PLAYLIST_TYPE, PLAYLIST_CACHE),
        Some("mp4") => ("video/mp4", MEDIA_CACHE),
        Some("m4s") => ("video/iso.segment", MEDIA_CACHE),
        Some("jpg") => ("image/jpeg", PLAYLIST_CACHE),
        Some("json") => ("application/json", PLAYLIST_CACHE),
        _ => return hls::error(StoreError::NotFound),
    };
    let body = match (kind == PLAYLIST_TYPE, private) {
        (true, Some((_, token))) => {
            access::rewrite_playlist(&String::from_utf8_lossy(&bytes), &token).into_bytes()
        }
        _ => bytes,
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

/// A file or folder name as the recorder makes them.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorders_names_pass() {
        for ok in ["master.m3u8", "720p", "init-abc-0.mp4", "20261207T183005Z"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["..", ".hidden", "", "a b", "a%2f", "x\\y"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
