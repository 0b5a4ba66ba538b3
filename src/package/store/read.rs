//! The store's read side: playlists (with blocking reload and delta
//! updates), the multivariant playlist, and media files with preload-hint
//! blocking.
//!
//! Owns how long a request may wait and which requests are refused. Must
//! never hold the store lock across an await and never poll: a waiter
//! re-checks only when the store's snapshot changes. Playlist requests never
//! take the lock at all: they read the snapshot.

use super::snapshot::{Encoding, Snapshot};
use super::{ChannelStore, Inner, RenditionInfo};
use crate::metrics::METRICS;
use crate::package::ledger;
use crate::package::names::{self, MediaName};
use crate::package::playlist::{self, Skip};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Why a request gets no content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("not available in time")]
    Unavailable,
    /// The node holds as many parked requests as it allows.
    #[error("too many requests waiting; retry")]
    Busy,
}

/// A media playlist request's delivery directives (RFC 8216bis 6.2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaylistRequest {
    /// `_HLS_msn`
    pub msn: Option<u64>,
    /// `_HLS_part`
    pub part: Option<u32>,
    /// `_HLS_skip`
    pub skip: Option<Skip>,
}

/// An init segment, part or segment ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFile {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

/// The node's budget of parked requests (blocking playlist reloads and
/// hinted parts, every channel together): each holds a socket, a task and a
/// wake-up on every update, so past the budget a request is refused at once
/// rather than parked.
#[derive(Debug)]
pub struct ParkingLot {
    parked: AtomicUsize,
    max: AtomicUsize,
}

/// The node's one lot; `http.max_blocked_requests` sets its size at start.
pub static PARKING: ParkingLot = ParkingLot::new(10_000);

impl ParkingLot {
    pub const fn new(max: usize) -> Self {
        ParkingLot {
            parked: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A place, or [`StoreError::Busy`] (counted) when the lot is full.
    pub(super) fn enter(&self) -> Result<Parked<'_>, StoreError> {
        let max = self.max.load(Ordering::Relaxed);
        let took = self
            .parked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if took.is_err() {
            METRICS
                .http_refused_requests
                .with_label_values(&["too_many_blocked"])
                .inc();
            return Err(StoreError::Busy);
        }
        METRICS.blocked_requests.inc();
        Ok(Parked(self))
    }
}

/// A parked request's place; dropping the request's future (a client that
/// hangs up) gives it back too.
pub(super) struct Parked<'a>(&'a ParkingLot);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::AcqRel);
        METRICS.blocked_requests.dec();
    }
}

impl ChannelStore {
    /// RFC 8216bis 6.2.5.2: "A Server that cannot provide the requested
    /// Playlist after blocking for more than three Target Durations SHOULD
    /// return Service Unavailable, such as HTTP 503." Parts and first
    /// playlists wait as long.
    fn wait_limit(&self) -> Duration {
        Duration::from_secs(3 * u64::from(self.cfg.target_duration()))
    }

    /// Re-runs `probe` under the lock whenever the store changes, until it
    /// answers or `wait_limit` passes (then [`StoreError::Unavailable`]).
    async fn wait_for<T>(
        &self,
        mut probe: impl FnMut(&Inner) -> Option<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // Subscribing before the first look means no change can slip in
        // between the look and the wait.
        let mut rx = self.snapshot.subscribe();
        if let Some(answer) = probe(&self.lock()) {
            return answer;
        }
        let _parked = self.parking.enter()?;
        let deadline = tokio::time::sleep(self.wait_limit());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    // The sender lives in `self`, which outlives this call.
                    if changed.is_err() {
                        return Err(StoreError::Unavailable);
                    }
                }
                () = &mut deadline => return Err(StoreError::Unavailable),
            }
            if let Some(answer) = probe(&self.lock()) {
                return answer;
            }
        }
    }

    /// A media playlist's text, once it satisfies `req`'s delivery
    /// directives.
    pub async fn media_playlist(
        &self,
        rendition: &str,
        req: PlaylistRequest,
    ) -> Result<String, StoreError> {
        let bytes = self.playlist(rendition, req, Encoding::Identity).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A media playlist in `encoding`, once it satisfies `req`'s delivery
    /// directives. Every request answered from the same snapshot in the same
    /// form gets the same bytes, rendered once.
    pub async fn playlist(
        &self,
        rendition: &str,
        req: PlaylistRequest,
        encoding: Encoding,
    ) -> Result<Bytes, StoreError> {
        // RFC 8216bis 6.2.5.2: "If the Playlist URI contains an _HLS_part
        // directive but no _HLS_msn directive, the Server MUST return Bad
        // Request, such as HTTP 400."
        if req.part.is_some() && req.msn.is_none() {
            return Err(StoreError::BadRequest("_HLS_part without _HLS_msn"));
        }
        let mut rx = self.snapshot.subscribe();
        let mut parked = None;
        let deadline = tokio::time::sleep(self.wait_limit());
        tokio::pin!(deadline);
        loop {
            let snap = rx.borrow_and_update().clone();
            if let Some(answer) = answer(&snap, rendition, req, encoding) {
                return answer;
            }
            if parked.is_none() {
                parked = Some(self.parking.enter()?);
            }
            tokio::select! {
                changed = rx.changed() => {
                    // The sender lives in `self`, which outlives this call.
                    if changed.is_err() {
                        return Err(StoreError::Unavailable);
                    }
                }
                () = &mut deadline => return Err(StoreError::Unavailable),
            }
        }
    }

    /// The multivariant playlist, once every active rendition has a complete
    /// segment (a live channel without them waits a few seconds). Past the
    /// wait, the renditions that have one are listed, as long as the source
    /// and audio are: a player that picks a rendition from it must find
    /// media there at once, or it starts on a playlist with nothing to play
    /// and meets the others' timelines late.
    pub async fn master_playlist(&self) -> Result<String, StoreError> {
        let answer = self
            .wait_for(|inner| {
                let complete = source_measured(inner)
                    && inner
                        .renditions
                        .iter()
                        .filter(|r| r.entry.active)
                        .all(|r| r.entry.playable());
                complete.then(|| Ok(self.render_master(inner)))
            })
            .await;
        match answer {
            Err(StoreError::Unavailable) => {
                let inner = self.lock();
                if source_measured(&inner) {
                    Ok(self.render_master(&inner))
                } else {
                    Err(StoreError::Unavailable)
                }
            }
            other => other,
        }
    }

    fn render_master(&self, inner: &Inner) -> String {
        // Audio as soon as it is active; a video rendition once its codecs
        // are known and it has media to play.
        let listed = inner.renditions.iter().filter(|r| {
            r.entry.active && (r.entry.is_audio() || (r.configured && r.entry.playable()))
        });
        ledger::master(listed.map(|r| &r.entry), self.cfg.segment_target / 2)
    }

    /// An init segment, part or segment of `rendition` by file name. A part
    /// that is hinted but not yet produced is waited for.
    pub async fn media_file(&self, rendition: &str, file: &str) -> Result<MediaFile, StoreError> {
        let name = names::parse(file).ok_or(StoreError::NotFound)?;
        let advance = self.advance_part_limit();
        self.wait_for(|inner| {
            let Some(r) = inner.rendition(rendition) else {
                return Some(Err(StoreError::NotFound));
            };
            let found = |bytes: Option<&Bytes>| {
                bytes.map(|b| MediaFile {
                    bytes: b.clone(),
                    content_type: r.entry.info.content_type(),
                })
            };
            match &name {
                MediaName::Init { .. } => Some(
                    found(
                        r.held
                            .inits
                            .iter()
                            .find(|(uri, _)| uri == file)
                            .map(|(_, b)| b),
                    )
                    .ok_or(StoreError::NotFound),
                ),
                MediaName::Segment { sid, msn } => Some(
                    found(
                        r.held
                            .media
                            .get(msn)
                            .filter(|s| &s.sid == sid)
                            .and_then(|s| s.whole.as_ref()),
                    )
                    .ok_or(StoreError::NotFound),
                ),
                MediaName::Part { sid, msn, part } => {
                    if let Some(stored) = r.held.media.get(msn) {
                        if &stored.sid != sid || stored.parts_dropped {
                            return Some(Err(StoreError::NotFound));
                        }
                        if let Some(bytes) = stored.parts.get(*part as usize) {
                            return Some(found(Some(bytes)).ok_or(StoreError::NotFound));
                        }
                        if stored.whole.is_some() {
                            // RFC 8216bis 6.2.6: a server "MAY choose not to
                            // publish previously-hinted resources if the
                            // planned segmentation changes [...] The server
                            // SHOULD respond to client requests for those
                            // resources with 'Not Found'". The segment ended
                            // before this part.
                            return Some(Err(StoreError::NotFound));
                        }
                    }
                    // Not produced yet: wait only for the live edge of the
                    // current stream, the hinted part and a little beyond.
                    // RFC 8216bis 6.2.6: "The server SHOULD respond with 'Not
                    // Found' [...] to a request for a resource that it cannot
                    // find and that is not specified by an
                    // EXT-X-PRELOAD-HINT tag in an active Media Playlist."
                    let live = inner.sid.as_deref() == Some(sid.as_str()) && !r.playlist.ended;
                    let next = r.playlist.next_msn();
                    let produced = r.playlist.open.as_ref().map_or(0, |o| o.parts.len() as u32);
                    let near = (*msn == next && *part < produced + advance)
                        || (*msn == next + 1 && *part < advance);
                    if live && near {
                        None
                    } else {
                        Some(Err(StoreError::NotFound))
                    }
                }
            }
        })
        .await
    }

    /// RFC 8216bis 6.2.5.2: "The Advance Part Limit is three divided by the
    /// Part Target Duration if the Part Target Duration is less than one
    /// second, or three otherwise." As a whole number of parts.
    fn advance_part_limit(&self) -> u32 {
        let pt = self.lock().part_target().as_secs_f64();
        if pt > 0.0 && pt < 1.0 {
            (3.0 / pt).floor() as u32
        } else {
            3
        }
    }
}

/// RFC 8216bis 6.2.5.2: "If the _HLS_msn is greater than the Media Sequence
/// Number of the last Media Segment in the current Playlist plus two, or if
/// the _HLS_part exceeds the last Partial Segment in the current Playlist by
/// the Advance Part Limit, then the server SHOULD immediately return Bad
/// Request, such as HTTP 400."
fn too_far(pl: &playlist::MediaPlaylist, msn: u64, part: Option<u32>) -> Option<&'static str> {
    // Before any complete segment the "last" one is the one before the first.
    let last = pl
        .last_msn()
        .map_or(i128::from(pl.media_sequence) - 1, i128::from);
    if i128::from(msn) > last + 2 {
        return Some("_HLS_msn is more than two segments ahead");
    }
    let part = part?;
    let pt = pl.part_target.as_secs_f64();
    let limit = if pt > 0.0 && pt < 1.0 { 3.0 / pt } else { 3.0 };
    let ahead = match pl.last_part() {
        Some((m, p)) if msn == m => f64::from(part) - f64::from(p),
        Some((m, _)) if msn < m => 0.0,
        // The next segment's parts come after the rest of the current one:
        // counting only `part` itself is lenient, never wrongly strict.
        _ => f64::from(part) + 1.0,
    };
    (ahead > limit).then_some("_HLS_part is beyond the Advance Part Limit")
}

/// A playlist request's answer from `snap`, or `None` while it must wait.
fn answer(
    snap: &Snapshot,
    rendition: &str,
    req: PlaylistRequest,
    encoding: Encoding,
) -> Option<Result<Bytes, StoreError>> {
    let Some((index, r)) = snap.rendition(rendition) else {
        return Some(Err(StoreError::NotFound));
    };
    let pl = &r.playlist;
    let ready = if pl.ended {
        // "A Server MUST ignore _HLS_msn and _HLS_part if the Playlist
        // contains an EXT-X-ENDLIST tag."
        true
    } else if let Some(msn) = req.msn {
        if let Some(why) = too_far(pl, msn, req.part) {
            return Some(Err(StoreError::BadRequest(why)));
        }
        // "the Server MUST defer responding to the request until the
        // Playlist contains a Media Segment with a Media Sequence Number of M
        // or later" (or, with _HLS_part, "the Partial Segment with Part Index
        // N and with a Media Sequence Number of M or later").
        match req.part {
            Some(part) => pl.has_part(msn, part),
            None => pl.has_segment(msn),
        }
    } else {
        // A first load before any media would be an empty playlist.
        !pl.segments.is_empty() || pl.open.as_ref().is_some_and(|o| !o.parts.is_empty())
    };
    // A request for a segment alone (`_HLS_msn` without `_HLS_part`) was
    // answered because that segment is complete: show it so.
    let hold = req.msn.is_none() || req.part.is_some();
    ready.then(|| Ok(snap.form(index, req.skip, hold, encoding)))
}

/// The source (a video rendition that was not declared as a rung) has a
/// complete segment, and audio too if there is audio.
fn source_measured(inner: &Inner) -> bool {
    let (mut video, mut audio) = (false, true);
    for r in inner.renditions.iter().filter(|r| r.entry.active) {
        match r.entry.info {
            RenditionInfo::Video { .. } if r.entry.declared_bps.is_none() => {
                video |= r.entry.playable()
            }
            RenditionInfo::Audio { .. } => audio &= r.entry.playable(),
            RenditionInfo::Video { .. } => {}
        }
    }
    video && audio
}
