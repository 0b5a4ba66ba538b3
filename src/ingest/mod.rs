//! Ways into the node: each ingest protocol turns a publisher's stream into `IngestEvent`s for the hub.

pub mod rtmp;
pub mod whip;

use crate::hub::Hub;
use std::sync::Arc;

/// Runs hub work that may block (the registry's SQLite, which another
/// process can hold locked for seconds; a channel's answer) on tokio's
/// blocking pool, so the async workers that serve HLS never wait on it.
/// `None` when the work panicked.
pub(crate) async fn off_async<T: Send + 'static>(
    hub: &Arc<Hub>,
    f: impl FnOnce(&Hub) -> T + Send + 'static,
) -> Option<T> {
    let hub = hub.clone();
    tokio::task::spawn_blocking(move || f(&hub)).await.ok()
}

/// The credentials of an `Authorization: Bearer` header. RFC 9110 11.1:
/// "It uses a case-insensitive token to identify the authentication scheme".
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::AUTHORIZATION,
                axum::http::header::HeaderValue::from_str(v).expect("header value"),
            );
            h
        };
        for v in ["Bearer at_x", "bearer at_x", "BEARER  at_x", "bEaReR at_x "] {
            assert_eq!(bearer(&with(v)), Some("at_x"), "{v}");
        }
        for v in ["Basic at_x", "Bearerat_x", "at_x", "Bearer"] {
            assert_eq!(bearer(&with(v)), None, "{v}");
        }
        assert_eq!(bearer(&axum::http::HeaderMap::new()), None);
    }
}
