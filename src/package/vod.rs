//! HLS VOD output: the packager's updates turned into files and on-demand
//! playlists, for a whole file packaged at once (`rungs transcode`).
//!
//! Owns which files a VOD directory holds and what its playlists say:
//! `master.m3u8`, and per rendition `index.m3u8` with its init and segment
//! files. [`VodAssembler`] is sans-IO: updates in, finished files out as
//! soon as each segment completes, so memory holds one open segment per
//! rendition however long the input is. Only [`VodWriter`] (in `fs.rs`)
//! touches the file system. Must never hold more than the open segments and
//! the playlist entries, and never write a playlist before the end.

mod fs;

pub use fs::VodWriter;

use super::Update;
use super::ledger::{
    self,
    book::{Effect, Ledger, Tracked},
};
use super::playlist::{self, VodPlaylist, VodSegment};
use bytes::{Bytes, BytesMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why a VOD could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VodError {
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nothing to package: no video reached a keyframe")]
    Empty,
}

pub type Result<T, E = VodError> = std::result::Result<T, E>;

/// What one rendition of a VOD holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenditionSummary {
    pub name: String,
    /// Init and segment bytes written.
    pub bytes: u64,
    /// Sum of the listed segments' durations (gaps included).
    pub duration: Duration,
    pub segments: usize,
}

/// What a finished VOD holds, source first, rungs top down, audio last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VodSummary {
    pub renditions: Vec<RenditionSummary>,
}

/// A file to write under the VOD directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VodFile {
    /// The rendition's folder.
    pub rendition: Arc<str>,
    pub name: String,
    pub bytes: Bytes,
    /// A media segment (else an init segment).
    pub segment: bool,
}

/// The playlists of a finished VOD.
#[derive(Clone, Debug, PartialEq)]
pub struct VodPlaylists {
    pub master: String,
    /// (rendition, its `index.m3u8`).
    pub media: Vec<(Arc<str>, String)>,
    pub summary: VodSummary,
}

/// What the VOD keeps of a rendition beside the ledger's book.
#[derive(Debug, Default)]
struct Held {
    init_bytes: u64,
    /// The open segment's parts so far.
    open: BytesMut,
}

type Rendition = Tracked<Held>;

/// Builds a VOD from packager updates.
#[derive(Debug)]
pub struct VodAssembler {
    /// Half the segment target: shorter segments (a stream's tail) are left
    /// out of the peak bit rate, as for live.
    peak_min: Duration,
    ledger: Ledger<Held>,
}

impl VodAssembler {
    pub fn new(cfg: &super::PackageConfig) -> Self {
        let cfg = cfg.sanitized();
        VodAssembler {
            peak_min: cfg.segment_target / 2,
            // Every segment stays listed.
            ledger: Ledger::new("vod", cfg.target_duration(), cfg.part_target, usize::MAX),
        }
    }

    /// Takes a batch of updates; returns the files they completed.
    pub(crate) fn apply(&mut self, updates: Vec<Update>) -> Vec<VodFile> {
        let mut files = Vec::new();
        for u in updates {
            self.apply_one(u, &mut files);
        }
        files
    }

    fn apply_one(&mut self, u: Update, files: &mut Vec<VodFile>) {
        match self.ledger.apply(u) {
            Effect::None => {}
            Effect::Init { index, uri, bytes } => {
                let r = &mut self.ledger.renditions[index];
                r.held.init_bytes += bytes.len() as u64;
                files.push(VodFile {
                    rendition: r.entry.name.clone(),
                    name: uri,
                    bytes,
                    segment: false,
                });
            }
            Effect::Opened { index, .. } => self.ledger.renditions[index].held.open.clear(),
            Effect::Part { index, bytes, .. } => {
                self.ledger.renditions[index]
                    .held
                    .open
                    .extend_from_slice(&bytes);
            }
            Effect::Closed {
                index, uri, gap, ..
            } => {
                let r = &mut self.ledger.renditions[index];
                let bytes = std::mem::take(&mut r.held.open).freeze();
                if !gap {
                    files.push(VodFile {
                        rendition: r.entry.name.clone(),
                        name: uri,
                        bytes,
                        segment: true,
                    });
                }
            }
        }
    }

    /// Lists a completed segment whose file was not kept as a gap
    /// (EXT-X-GAP), so the timeline keeps its length.
    pub(crate) fn lose_segment(&mut self, rendition: &str, uri: &str) {
        let Some(r) = self
            .ledger
            .renditions
            .iter_mut()
            .find(|r| &*r.entry.name == rendition)
        else {
            return;
        };
        let segments = &mut r.playlist.segments;
        let Some(from_end) = segments.iter().rev().position(|s| s.uri == uri) else {
            return;
        };
        let at = segments.len() - 1 - from_end;
        segments[at].gap = true;
        // A VOD keeps every segment's statistics beside it, in order.
        if let Some(at) = r.entry.stats.len().checked_sub(1 + from_end) {
            r.entry.stats[at].gap = true;
            r.entry.stats[at].bytes = 0;
        }
    }

    /// Renditions with a listed segment: source, rungs top down, then audio.
    fn order(&self) -> Vec<&Rendition> {
        let mut order: Vec<&Rendition> = self
            .ledger
            .renditions
            .iter()
            .filter(|r| !r.playlist.segments.is_empty())
            .collect();
        order.sort_by_key(|r| (r.entry.is_audio(), r.entry.rank));
        order
    }

    /// What each rendition holds so far.
    pub fn summary(&self) -> VodSummary {
        VodSummary {
            renditions: self
                .order()
                .iter()
                .map(|r| RenditionSummary {
                    name: r.entry.name.to_string(),
                    bytes: r.held.init_bytes
                        + r.entry.stats.iter().map(|s| s.bytes as u64).sum::<u64>(),
                    duration: r.playlist.segments.iter().map(|s| s.duration).sum(),
                    segments: r.playlist.segments.len(),
                })
                .collect(),
        }
    }

    /// The multivariant playlist of what is listed so far.
    pub fn master(&self) -> String {
        let order = self.order();
        let listed = order.iter().map(|r| &r.entry).filter(|e| e.active);
        ledger::master(listed, self.peak_min)
    }

    /// The media playlists' lines listed since `written` (segments per
    /// rendition already given out, updated): the head with a rendition's
    /// first segment, then each segment's tags, as [`playlist::render_vod`]
    /// writes them. Appended in order they make the playlist so far, without
    /// its end, at a cost that does not grow with the recording.
    pub(crate) fn new_lines(
        &self,
        written: &mut std::collections::HashMap<Arc<str>, usize>,
    ) -> Vec<(Arc<str>, String)> {
        let mut out = Vec::new();
        for r in self.order() {
            let done = written.entry(r.entry.name.clone()).or_insert(0);
            let segments = &r.playlist.segments;
            if segments.len() <= *done {
                continue;
            }
            let mut text = String::new();
            if *done == 0 {
                text.push_str(&playlist::render_vod_head(&vod_head(r), 0));
            }
            for i in *done..segments.len() {
                let map = i.checked_sub(1).map(|p| segments[p].head.map_uri.as_str());
                playlist::render_vod_segment(&mut text, &vod_segment(&segments[i]), map);
            }
            *done = segments.len();
            out.push((r.entry.name.clone(), text));
        }
        out
    }

    /// The playlists of everything applied so far (call after the
    /// packager's `end`).
    pub fn finish(&self) -> VodPlaylists {
        let media = self
            .order()
            .iter()
            .map(|r| (r.entry.name.clone(), playlist::render_vod(&vod_playlist(r))))
            .collect();
        VodPlaylists {
            master: self.master(),
            media,
            summary: self.summary(),
        }
    }
}

/// A rendition's playlist without its segments.
fn vod_head(r: &Rendition) -> VodPlaylist {
    let pl = &r.playlist;
    VodPlaylist {
        media_sequence: pl.media_sequence,
        discontinuity_sequence: pl.discontinuity_sequence,
        target_duration: pl.target_duration,
        segments: Vec::new(),
    }
}

fn vod_segment(s: &crate::package::playlist::Segment) -> VodSegment {
    VodSegment {
        uri: s.uri.clone(),
        duration: s.duration,
        gap: s.gap,
        discontinuity: s.head.discontinuity,
        map_uri: s.head.map_uri.clone(),
        program_date_time: s.head.program_date_time,
        date_ranges: s.head.date_ranges.clone(),
    }
}

/// The on-demand playlist of everything the rendition listed.
fn vod_playlist(r: &Rendition) -> VodPlaylist {
    VodPlaylist {
        segments: r.playlist.segments.iter().map(vod_segment).collect(),
        ..vod_head(r)
    }
}
