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

use super::ledger::{self, Entry, SegmentStats};
use super::names;
use super::playlist::{self, VodPlaylist, VodSegment};
use super::store::{RenditionInfo, Update};
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
}

/// The playlists of a finished VOD.
#[derive(Clone, Debug, PartialEq)]
pub struct VodPlaylists {
    pub master: String,
    /// (rendition, its `index.m3u8`).
    pub media: Vec<(Arc<str>, String)>,
    pub summary: VodSummary,
}

#[derive(Debug)]
struct Listed {
    segment: VodSegment,
    msn: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Open {
    msn: u64,
    sid: String,
    discontinuity: bool,
    map_uri: String,
    bytes: BytesMut,
    independent: Option<bool>,
}

#[derive(Debug)]
struct Rendition {
    entry: Entry,
    init_bytes: u64,
    open: Option<Open>,
    segments: Vec<Listed>,
}

/// Builds a VOD from packager updates.
#[derive(Debug)]
pub struct VodAssembler {
    target_duration: u32,
    /// Half the segment target: shorter segments (a stream's tail) are left
    /// out of the peak bit rate, as for live.
    peak_min: Duration,
    sid: Option<String>,
    renditions: Vec<Rendition>,
}

impl VodAssembler {
    pub fn new(cfg: &super::PackageConfig) -> Self {
        let cfg = cfg.sanitized();
        VodAssembler {
            target_duration: cfg.target_duration(),
            peak_min: cfg.segment_target / 2,
            sid: None,
            renditions: Vec::new(),
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

    fn rendition(&mut self, name: &Arc<str>, info: &RenditionInfo) -> &mut Rendition {
        let i = match self.renditions.iter().position(|r| r.entry.name == *name) {
            Some(i) => i,
            None => {
                self.renditions.push(Rendition {
                    entry: Entry::new(name.clone(), info.clone()),
                    init_bytes: 0,
                    open: None,
                    segments: Vec::new(),
                });
                self.renditions.len() - 1
            }
        };
        &mut self.renditions[i]
    }

    fn apply_one(&mut self, u: Update, files: &mut Vec<VodFile>) {
        match u {
            Update::StreamStart { sid, .. } => self.sid = Some(sid),
            Update::Init {
                rendition,
                info,
                uri,
                bytes,
            } => {
                let r = self.rendition(&rendition, &info);
                r.entry.info = info;
                r.entry.active = true;
                r.init_bytes += bytes.len() as u64;
                files.push(VodFile {
                    rendition,
                    name: uri,
                    bytes,
                });
            }
            Update::Declare {
                rendition,
                width,
                height,
                bitrate_bps,
                rank,
            } => {
                let info = RenditionInfo::Video {
                    codecs: String::new(),
                    width,
                    height,
                };
                self.rendition(&rendition, &info)
                    .entry
                    .declare(rank, bitrate_bps);
            }
            Update::Retire { rendition } => {
                if let Some(r) = self
                    .renditions
                    .iter_mut()
                    .find(|r| r.entry.name == rendition)
                {
                    r.entry.active = false;
                }
            }
            Update::SegmentStart {
                rendition,
                msn,
                discontinuity,
                map_uri,
                ..
            } => self.start_segment(&rendition, msn, discontinuity, map_uri),
            Update::Part {
                rendition,
                msn,
                independent,
                bytes,
                ..
            } => {
                let open = self
                    .renditions
                    .iter_mut()
                    .find(|r| r.entry.name == rendition)
                    .and_then(|r| r.open.as_mut())
                    .filter(|o| o.msn == msn);
                if let Some(o) = open {
                    o.independent.get_or_insert(independent);
                    o.bytes.extend_from_slice(&bytes);
                }
            }
            Update::SegmentEnd {
                rendition,
                msn,
                duration,
                gap,
                samples,
            } => self.end_segment(&rendition, msn, duration, gap, samples, files),
            Update::Pause | Update::End => {}
        }
    }

    /// Opens segment `msn` of `rendition`, listing what it skipped as gaps.
    fn start_segment(&mut self, rendition: &str, msn: u64, discontinuity: bool, map_uri: String) {
        let Some(sid) = self.sid.clone() else { return };
        let fill = self.fill(rendition, msn);
        let Some(r) = self
            .renditions
            .iter_mut()
            .find(|r| &*r.entry.name == rendition)
        else {
            return;
        };
        if r.segments.last().is_some_and(|l| l.msn >= msn) {
            return;
        }
        for (gap_msn, duration) in fill {
            r.segments.push(Listed {
                segment: VodSegment {
                    uri: names::segment("gap", gap_msn),
                    duration,
                    gap: true,
                    discontinuity: false,
                    map_uri: map_uri.clone(),
                },
                msn: gap_msn,
                bytes: 0,
            });
            r.entry.stats.push_back(SegmentStats {
                bytes: 0,
                duration,
                samples: 0,
                independent: true,
                gap: true,
            });
        }
        r.open = Some(Open {
            msn,
            sid,
            discontinuity,
            map_uri,
            bytes: BytesMut::new(),
            independent: None,
        });
    }

    /// Closes segment `msn` of `rendition` and hands its file over.
    fn end_segment(
        &mut self,
        rendition: &str,
        msn: u64,
        duration: Duration,
        gap: bool,
        samples: u32,
        files: &mut Vec<VodFile>,
    ) {
        let Some(r) = self
            .renditions
            .iter_mut()
            .find(|r| &*r.entry.name == rendition)
        else {
            return;
        };
        let Some(open) = r.open.take_if(|o| o.msn == msn) else {
            return;
        };
        let uri = if gap {
            names::segment("gap", msn)
        } else {
            names::segment(&open.sid, msn)
        };
        let bytes = open.bytes.freeze();
        r.segments.push(Listed {
            segment: VodSegment {
                uri: uri.clone(),
                duration,
                gap,
                discontinuity: open.discontinuity,
                map_uri: open.map_uri,
            },
            msn,
            bytes: bytes.len(),
        });
        r.entry.stats.push_back(SegmentStats {
            bytes: bytes.len(),
            duration,
            samples,
            independent: open.independent.unwrap_or(true),
            gap,
        });
        if !gap {
            files.push(VodFile {
                rendition: r.entry.name.clone(),
                name: uri,
                bytes,
            });
        }
    }

    /// Segments a rendition skipped before `msn` (a rung that left the
    /// ladder and came back).
    fn fill(&self, rendition: &str, msn: u64) -> Vec<(u64, Duration)> {
        let Some(r) = self.renditions.iter().find(|r| &*r.entry.name == rendition) else {
            return Vec::new();
        };
        let Some(last) = r.segments.last().map(|l| l.msn) else {
            return Vec::new();
        };
        let listed = |m| {
            self.renditions.iter().find_map(|o| {
                let found = o.segments.iter().rev().find(|l| l.msn == m);
                found.map(|l| l.segment.duration)
            })
        };
        ledger::gaps(last + 1..msn, listed, self.target_duration)
    }

    /// The playlists of everything applied so far (call after the
    /// packager's `end`).
    pub fn finish(&self) -> VodPlaylists {
        let mut order: Vec<&Rendition> = self
            .renditions
            .iter()
            .filter(|r| !r.segments.is_empty())
            .collect();
        // Source, rungs top down, then audio.
        order.sort_by_key(|r| (r.entry.is_audio(), r.entry.rank));
        let source = order.first().copied();
        let media = order
            .iter()
            .map(|r| {
                (
                    r.entry.name.clone(),
                    playlist::render_vod(&self.playlist(r, source)),
                )
            })
            .collect();
        let summary = VodSummary {
            renditions: order
                .iter()
                .map(|r| RenditionSummary {
                    name: r.entry.name.to_string(),
                    bytes: r.init_bytes + r.segments.iter().map(|l| l.bytes as u64).sum::<u64>(),
                    duration: r.segments.iter().map(|l| l.segment.duration).sum(),
                    segments: r.segments.len(),
                })
                .collect(),
        };
        VodPlaylists {
            master: self.master(&order),
            media,
            summary,
        }
    }

    fn playlist(&self, r: &Rendition, source: Option<&Rendition>) -> VodPlaylist {
        let first = r.segments.first().map_or(0, |l| l.msn);
        // RFC 8216bis 6.2.2 counts discontinuities from the playlist start;
        // a rendition that starts later must count the ones it never saw,
        // or players pair its segments with the wrong ones.
        let before = source.map_or(0, |s| {
            s.segments
                .iter()
                .filter(|l| l.msn < first && l.segment.discontinuity)
                .count() as u64
        });
        VodPlaylist {
            media_sequence: first,
            discontinuity_sequence: before,
            target_duration: self.target_duration,
            segments: r.segments.iter().map(|l| l.segment.clone()).collect(),
        }
    }

    fn master(&self, order: &[&Rendition]) -> String {
        let listed = order.iter().map(|r| &r.entry).filter(|e| e.active);
        ledger::master(listed, self.peak_min)
    }
}
