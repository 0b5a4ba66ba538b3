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
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use std::time::UNIX_EPOCH;
    use tower::ServiceExt as _;

    async fn get(app: &Router, uri: &str) -> (StatusCode, String, String) {
        let res = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = res.status();
        let kind = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let body = to_bytes(res.into_body(), 1 << 20).await.expect("body");
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_private_channels_recordings_need_its_token_and_carry_it_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("live/20261207T183005Z");
        std::fs::create_dir_all(session.join("source")).expect("dirs");
        std::fs::write(session.join("master.m3u8"), "#EXTM3U\nsource/index.m3u8\n")
            .expect("master");
        std::fs::write(
            session.join("source/index.m3u8"),
            "#EXTM3U\n#EXT-X-MAP:URI=\"init-a-1.mp4\"\n#EXTINF:2.00000,\na-0.m4s\n#EXT-X-ENDLIST\n",
        )
        .expect("media");
        std::fs::write(session.join("source/a-0.m4s"), b"segment").expect("segment");
        std::fs::write(dir.path().join("live/secret.txt"), b"not served").expect("file");
        let access = Access::detached();
        let (private_pem, public_pem) = access::generate_key_pair().expect("pair");
        access
            .set(&["live"], &[("pk_1", &public_pem)], &[])
            .expect("keys");
        let app = routes(dir.path().to_owned(), access);
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
        let base = "/recordings/live/20261207T183005Z";
        for uri in ["master.m3u8", "source/index.m3u8", "source/a-0.m4s"] {
            let (s, _, _) = get(&app, &format!("{base}/{uri}")).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{uri} without a token");
        }
        let (s, kind, master) = get(&app, &format!("{base}/master.m3u8?token={token}")).await;
        assert_eq!((s, kind.as_str()), (StatusCode::OK, PLAYLIST_TYPE));
        assert!(
            master.contains(&format!("source/index.m3u8?token={token}")),
            "{master}"
        );
        let (_, _, media) = get(&app, &format!("{base}/source/index.m3u8?token={token}")).await;
        assert!(
            media.contains(&format!("\na-0.m4s?token={token}\n")),
            "{media}"
        );
        assert!(
            media.contains(&format!("init-a-1.mp4?token={token}")),
            "{media}"
        );
        let (s, kind, body) = get(&app, &format!("{base}/source/a-0.m4s?token={token}")).await;
        assert_eq!(
            (s, kind.as_str(), body.as_str()),
            (StatusCode::OK, "video/iso.segment", "segment")
        );
        // Nothing outside a recording's own files, token or not.
        for uri in [
            format!("{base}/../secret.txt?token={token}"),
            format!("/recordings/live/%2e%2e/secret.txt?token={token}"),
            format!("{base}/source/.hidden?token={token}"),
            format!("{base}/a/b/c/d.m4s?token={token}"),
        ] {
            let (s, _, _) = get(&app, &uri).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        }
    }

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
