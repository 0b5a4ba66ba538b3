//! The part store: one channel's playlists, init segments, parts and
//! segments in RAM, shared by the packaging thread (writes) and HTTP
//! handlers (reads, blocking reloads).
//!
//! Owns the live window and when media leaves it. Must never hold its lock
//! across an await, never let a waiter poll (they await a watch), and never
//! keep more than the playlist window plus a small margin.

mod read;
mod snapshot;

pub use read::{MediaFile, PARKING, ParkingLot, PlaylistRequest, StoreError};
pub use snapshot::Encoding;

use super::PackageConfig;
use super::Update;
pub use super::ledger::RenditionInfo;
use super::ledger::book::{Effect, Ledger, Tracked};
use super::names;
use bytes::{Bytes, BytesMut};
use snapshot::Snapshot;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Segments whose media stays downloadable after leaving the playlist.
/// RFC 8216bis 6.2.2: a removed segment must stay available until "the time
/// at which it first appeared in the Playlist plus the segment's
/// Availability Duration" (its duration plus the playlist's).
const SEGMENT_MARGIN: usize = 3;
/// Init segments kept per rendition; older ones serve no listed segment.
const INITS_KEPT: usize = 4;

#[derive(Debug)]
struct Stored {
    sid: String,
    parts: Vec<Bytes>,
    /// Part bytes were released; the whole segment may remain.
    parts_dropped: bool,
    whole: Option<Bytes>,
}

/// What the store keeps of a rendition beside the ledger's book: its bytes.
#[derive(Debug, Default)]
struct Held {
    inits: VecDeque<(String, Bytes)>,
    media: BTreeMap<u64, Stored>,
}

type Rendition = Tracked<Held>;
type Inner = Ledger<Held>;

/// One channel's packaged media, shared between its packager and HTTP.
#[derive(Debug)]
pub struct ChannelStore {
    channel_id: String,
    cfg: PackageConfig,
    inner: Mutex<Inner>,
    /// Every rendition's playlist after the last batch of updates; replaced
    /// after every batch, and waiters await its change. Playlist requests
    /// read it without the lock above, which the packager needs.
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// Where its requests park: the node's lot, shared by every channel.
    parking: &'static ParkingLot,
}

impl ChannelStore {
    pub fn new(channel_id: &str, cfg: &PackageConfig) -> Arc<Self> {
        Self::parked_in(channel_id, cfg, &PARKING)
    }

    /// A store whose requests park in `parking` rather than the node's lot.
    pub(crate) fn parked_in(
        channel_id: &str,
        cfg: &PackageConfig,
        parking: &'static ParkingLot,
    ) -> Arc<Self> {
        let cfg = cfg.sanitized();
        Arc::new(ChannelStore {
            channel_id: channel_id.to_owned(),
            inner: Mutex::new(Ledger::new(
                channel_id,
                cfg.target_duration(),
                cfg.part_target,
                cfg.playlist_segments,
            )),
            cfg,
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            parking,
        })
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// Names of the renditions the current (or last) stream produced.
    pub fn renditions(&self) -> Vec<String> {
        self.lock()
            .renditions
            .iter()
            .filter(|r| r.entry.active)
            .map(|r| r.entry.name.to_string())
            .collect()
    }

    /// Whether any rendition ever published a part or segment: a stream that
    /// never did has nothing for players to wait for.
    pub fn has_media(&self) -> bool {
        self.lock().renditions.iter().any(|r| {
            !r.playlist.segments.is_empty()
                || r.playlist
                    .open
                    .as_ref()
                    .is_some_and(|o| !o.parts.is_empty())
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while applying updates leaves a half-applied batch; serving
        // it is still better than taking every HTTP request down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one batch from the packager and wakes every waiter once.
    pub(crate) fn apply(&self, updates: Vec<Update>) {
        if updates.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for u in updates {
            self.apply_one(&mut inner, u);
        }
        let sid = inner.sid.clone();
        for r in &mut inner.renditions {
            let pl = &mut r.playlist;
            // RFC 8216bis 6.2.6: "A hinted resource MUST be available for
            // request when its EXT-X-PRELOAD-HINT tag is added": only a
            // producing stream hints, and the part routes hold the
            // request until the part exists.
            pl.preload_hint = match (&sid, r.entry.active && !pl.ended) {
                (Some(sid), true) => {
                    let next = pl.open.as_ref().map_or(0, |o| o.parts.len() as u32);
                    Some(names::part(sid, pl.next_msn(), next))
                }
                _ => None,
            };
        }
        // Sent under the lock, so that snapshots go out in the order their
        // batches were applied; a send only swaps a pointer.
        let next = Snapshot::after(&self.snapshot.borrow(), &inner);
        self.snapshot.send_replace(Arc::new(next));
    }

    fn apply_one(&self, inner: &mut Inner, u: Update) {
        match inner.apply(u) {
            Effect::None => {}
            Effect::Init { index, uri, bytes } => {
                let inits = &mut inner.renditions[index].held.inits;
                inits.push_back((uri, bytes));
                while inits.len() > INITS_KEPT {
                    inits.pop_front();
                }
            }
            Effect::Opened { index, msn, sid } => {
                let stored = Stored {
                    sid,
                    parts: Vec::new(),
                    parts_dropped: false,
                    whole: None,
                };
                inner.renditions[index].held.media.insert(msn, stored);
            }
            Effect::Part { index, msn, bytes } => {
                if let Some(stored) = inner.renditions[index].held.media.get_mut(&msn) {
                    stored.parts.push(bytes);
                }
            }
            Effect::Closed {
                index, msn, gap, ..
            } => {
                self.keep_segment(&mut inner.renditions[index], msn, gap);
            }
        }
    }

    /// Segment `msn` is listed complete: keeps it whole, and lets go of
    /// what left the window.
    fn keep_segment(&self, r: &mut Rendition, msn: u64, gap: bool) {
        let media = &mut r.held.media;
        if let Some(stored) = media.get_mut(&msn) {
            let len = stored.parts.iter().map(Bytes::len).sum();
            let mut whole = BytesMut::with_capacity(len);
            for p in &stored.parts {
                whole.extend_from_slice(p);
            }
            stored.whole = (!gap).then(|| whole.freeze());
        }
        // Count-based, not MSN-based: after a new playlist starts, the old
        // stream's tail must stay downloadable for players finishing it.
        while media.len() > self.cfg.playlist_segments + SEGMENT_MARGIN + 1 {
            media.pop_first();
        }
        let keep_parts = self.parts_kept();
        let complete: Vec<u64> = media
            .iter()
            .filter(|(_, s)| s.whole.is_some())
            .map(|(m, _)| *m)
            .collect();
        for m in complete.iter().rev().skip(keep_parts) {
            if let Some(s) = media.get_mut(m) {
                s.parts = Vec::new();
                s.parts_dropped = true;
            }
        }
    }

    /// Complete segments whose parts stay downloadable. RFC 8216bis 6.2.2:
    /// "EXT-X-PART tags SHOULD be removed from the Playlist after they are
    /// greater than three Target Durations from the end of the Playlist.
    /// Clients MUST be able to download the Partial Segment for at least
    /// three Target Durations after the EXT-X-PART tag is removed".
    fn parts_kept(&self) -> usize {
        let six_targets = 6_000 * u128::from(self.cfg.target_duration());
        let segs = six_targets.div_ceil(self.cfg.segment_target.as_millis().max(1));
        usize::try_from(segs)
            .unwrap_or(usize::MAX)
            .saturating_add(2)
    }
}

#[cfg(test)]
mod tests;
