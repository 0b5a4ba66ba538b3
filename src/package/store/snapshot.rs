//! What playlist requests read: every rendition's media playlist as of one
//! batch of updates, and each form of it rendered at most once.
//!
//! Owns the render-once rule: the first request that needs a form
//! (rendition, delta or not, held newest segment or not, gzip or not) of a
//! snapshot renders it, and every other request for that form gets the same
//! bytes. Must never reach back into the store's lock: the packager builds a
//! snapshot, readers only read it.

use super::Inner;
use crate::package::playlist::{self, MediaPlaylist, RenditionReport, Skip};
use bytes::Bytes;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};

/// Delta or not (3) x held newest segment or not (2) x encoding (2).
const FORMS: usize = 12;

/// How a playlist's bytes are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Every rendition's playlist after one batch of updates.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(super) renditions: Vec<Published>,
}

/// One rendition's playlist in a snapshot, and its forms rendered so far.
#[derive(Debug)]
pub(crate) struct Published {
    pub(super) name: Arc<str>,
    pub(super) active: bool,
    pub(super) playlist: Arc<MediaPlaylist>,
    forms: [OnceLock<Bytes>; FORMS],
}

impl Snapshot {
    /// The snapshot after a batch: a rendition whose playlist did not change
    /// shares its copy with `prev` (its text still changes: the other
    /// renditions' reports are part of it).
    pub(super) fn after(prev: &Snapshot, inner: &Inner) -> Snapshot {
        let renditions = inner
            .renditions
            .iter()
            .map(|r| {
                let kept = prev
                    .renditions
                    .iter()
                    .find(|p| p.name == r.entry.name && *p.playlist == r.playlist)
                    .map(|p| p.playlist.clone());
                Published {
                    name: r.entry.name.clone(),
                    active: r.entry.active,
                    playlist: kept.unwrap_or_else(|| Arc::new(r.playlist.clone())),
                    forms: Default::default(),
                }
            })
            .collect();
        Snapshot { renditions }
    }

    pub(super) fn rendition(&self, name: &str) -> Option<(usize, &Published)> {
        self.renditions
            .iter()
            .enumerate()
            .find(|(_, r)| &*r.name == name)
    }

    /// Rendition `index`'s playlist in the form asked for, rendered by the
    /// first caller and shared with every later one.
    pub(super) fn form(
        &self,
        index: usize,
        skip: Option<Skip>,
        hold: bool,
        encoding: Encoding,
    ) -> Bytes {
        let slot = |skip, hold, encoding| {
            let s = match skip {
                None => 0,
                Some(Skip::Segments) => 1,
                Some(Skip::SegmentsAndDateRanges) => 2,
            };
            let e = match encoding {
                Encoding::Identity => 0,
                Encoding::Gzip => 1,
            };
            (s * 2 + usize::from(hold)) * 2 + e
        };
        let forms = &self.renditions[index].forms;
        forms[slot(skip, hold, encoding)]
            .get_or_init(|| match encoding {
                Encoding::Identity => Bytes::from(self.render(index, skip, hold)),
                Encoding::Gzip => gzip(&self.form(index, skip, hold, Encoding::Identity)),
            })
            .clone()
    }

    fn render(&self, index: usize, skip: Option<Skip>, hold: bool) -> String {
        let mut reports = Vec::new();
        for (i, r) in self.renditions.iter().enumerate() {
            if i == index || !r.active {
                continue;
            }
            // RFC 8216bis B.1: "Each Media Playlist MUST contain one
            // EXT-X-RENDITION-REPORT tag for each Media Playlist (Rendition)
            // in the Multivariant Playlist, except for the Media Playlist to
            // which the EXT-X-RENDITION-REPORT tag is being added".
            let (last_msn, last_part) = match (r.playlist.reported_part(), r.playlist.last_msn()) {
                (Some((msn, part)), _) => (msn, Some(part)),
                (None, Some(msn)) => (msn, None),
                (None, None) => continue,
            };
            reports.push(RenditionReport {
                uri: format!("../{}/index.m3u8", r.name),
                last_msn,
                last_part,
            });
        }
        playlist::render_media(&self.renditions[index].playlist, skip, &reports, hold)
    }
}

/// Apple's HLS authoring spec (10.1): playlists MUST be compressed with gzip
/// when the client accepts it; done once per form, not per request.
fn gzip(text: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text);
    Bytes::from(enc.finish().unwrap_or_default())
}
