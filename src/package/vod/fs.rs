//! Writes a VOD directory: drives a [`ChannelPackager`] with a clock made of
//! media time, and writes each file the [`VodAssembler`] completes.
//!
//! The only file in `package` that does I/O (std::fs, blocking: it runs on
//! the offline `rungs transcode` command's thread, never on a live
//! channel's). Must never write outside the directory it was given, and
//! never name a file from anything but the packager's own names.

use super::{Result, VodAssembler, VodError, VodSummary, ticks_duration};
use crate::media::{IngestEvent, Packet, TrackKind};
use crate::package::PackageConfig;
use crate::package::packager::{ChannelPackager, RungDecl, RungEvent};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Packages a whole input as HLS VOD into a directory:
/// `DIR/master.m3u8`, and `DIR/<rendition>/index.m3u8` beside that
/// rendition's init and segment files.
///
/// Push the source's events in order, [`Self::set_rungs`] after the first
/// video configuration, each rung's events after the source packets they
/// were made from (up to about a minute behind), then [`Self::finish`].
#[derive(Debug)]
pub struct VodWriter {
    dir: PathBuf,
    pk: ChannelPackager,
    asm: VodAssembler,
    folders: BTreeSet<Arc<str>>,
    /// Instant of media time zero; nothing here measures latency, so any
    /// fixed instant works.
    t0: Instant,
    /// Video dts of media time zero.
    origin: Option<i64>,
    /// Media time of the newest source packet, 90 kHz ticks.
    latest: i64,
}

impl VodWriter {
    /// Creates `dir` (and its parents) if needed.
    pub fn new(dir: &Path, cfg: PackageConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| VodError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(VodWriter {
            dir: dir.to_owned(),
            asm: VodAssembler::new(&cfg),
            pk: ChannelPackager::buffered("vod", cfg),
            folders: BTreeSet::new(),
            t0: Instant::now(),
            origin: None,
            latest: 0,
        })
    }

    /// One source event (configuration or packet), in ingest order.
    pub fn push(&mut self, event: IngestEvent) -> Result<()> {
        if let IngestEvent::Packet(p) = &event {
            let t = self.media_time(p);
            self.latest = self.latest.max(t);
        }
        let (now, at) = self.clock(self.latest);
        self.pk.push(event, now, at);
        self.write_updates()
    }

    /// The transcoded rungs, top down (see [`ChannelPackager::set_rungs`]).
    pub fn set_rungs(&mut self, rungs: Vec<RungDecl>) -> Result<()> {
        self.pk.set_rungs(rungs);
        self.write_updates()
    }

    /// One event of rung `rung` (an index into the last `set_rungs`).
    pub fn push_rung(&mut self, rung: usize, event: RungEvent) -> Result<()> {
        let made_from = match &event {
            RungEvent::Packet(p) => self.media_time(p),
            RungEvent::Config(_) => self.latest,
        };
        let (now, _) = self.clock(self.latest);
        let (_, arrival) = self.clock(made_from);
        self.pk.push_rung(rung, event, now, arrival);
        self.write_updates()
    }

    /// Flushes the last segments and writes every playlist.
    pub fn finish(mut self) -> Result<VodSummary> {
        self.pk.end();
        self.write_updates()?;
        let out = self.asm.finish();
        if out.media.is_empty() {
            return Err(VodError::Empty);
        }
        for (rendition, text) in &out.media {
            self.write(Some(rendition), "index.m3u8", text.as_bytes())?;
        }
        self.write(None, "master.m3u8", out.master.as_bytes())?;
        Ok(out.summary)
    }

    /// A packet's media time: its dts since the first video packet's.
    fn media_time(&mut self, p: &Packet) -> i64 {
        if self.origin.is_none() && p.track == TrackKind::Video {
            self.origin = Some(p.dts);
        }
        p.dts.saturating_sub(self.origin.unwrap_or(p.dts))
    }

    /// Wall clock and instant at media time `ticks`. The wall clock only
    /// names the stream (EXT-X-PROGRAM-DATE-TIME is not written for VOD).
    fn clock(&self, ticks: i64) -> (SystemTime, Instant) {
        let d = ticks_duration(ticks);
        (UNIX_EPOCH + d, self.t0 + d)
    }

    fn write_updates(&mut self) -> Result<()> {
        let updates = self.pk.take_updates();
        for f in self.asm.apply(updates) {
            self.write(Some(&f.rendition), &f.name, &f.bytes)?;
        }
        Ok(())
    }

    fn write(&mut self, rendition: Option<&Arc<str>>, name: &str, bytes: &[u8]) -> Result<()> {
        let folder = match rendition {
            Some(r) => {
                let folder = self.dir.join(&**r);
                if !self.folders.contains(r) {
                    std::fs::create_dir_all(&folder).map_err(|source| VodError::Io {
                        path: folder.clone(),
                        source,
                    })?;
                    self.folders.insert(r.clone());
                }
                folder
            }
            None => self.dir.clone(),
        };
        let path = folder.join(name);
        std::fs::write(&path, bytes).map_err(|source| VodError::Io { path, source })
    }
}
