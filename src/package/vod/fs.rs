//! Writes a VOD directory: each file the [`VodAssembler`] completes from the
//! packager's updates, then the playlists.
//!
//! The only file in `package` that does I/O (std::fs, blocking: it runs on
//! the offline `rungs transcode` command's thread, never on a live
//! channel's). Must never write outside the directory it was given, and
//! never name a file from anything but the packager's own names.

use super::{Result, VodAssembler, VodError, VodSummary};
use crate::package::PackageConfig;
use crate::package::Update;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Packages a whole input as HLS VOD into a directory:
/// `DIR/master.m3u8`, and `DIR/<rendition>/index.m3u8` beside that
/// rendition's init and segment files.
///
/// Apply the packager's updates in order (the channel core drives the
/// packager, as for a live channel), then [`Self::finish`] once the stream
/// has ended.
#[derive(Debug)]
pub struct VodWriter {
    dir: PathBuf,
    asm: VodAssembler,
    folders: BTreeSet<Arc<str>>,
}

impl VodWriter {
    /// Creates `dir` (and its parents) if needed.
    pub fn new(dir: &Path, cfg: &PackageConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| VodError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(VodWriter {
            dir: dir.to_owned(),
            asm: VodAssembler::new(cfg),
            folders: BTreeSet::new(),
        })
    }

    /// One batch of the packager's updates: writes the files it completes.
    pub(crate) fn apply(&mut self, updates: Vec<Update>) -> Result<()> {
        for f in self.asm.apply(updates) {
            self.write(Some(&f.rendition), &f.name, &f.bytes)?;
        }
        Ok(())
    }

    /// Writes every playlist; the stream must have ended.
    pub fn finish(mut self) -> Result<VodSummary> {
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
