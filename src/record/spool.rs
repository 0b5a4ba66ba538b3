//! The on-disk spool between a recording and object storage: files are
//! written here by channel threads and the thumbnailer, and taken away by
//! the uploader once stored. Owns the spool's byte and file counts and its
//! limit; never talks to object storage.
//!
//! Files land whole (written beside their name, then renamed), so the
//! uploader and a node starting after a crash never see half a file. Names
//! ending in [`STATE`] are a recording's working state, kept for recovery
//! and never uploaded.

use crate::metrics::METRICS;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Suffix of a recording's working files (playlists so far, its summary).
pub(crate) const STATE: &str = ".live";
/// Suffix of a file being written.
const TMP: &str = ".tmp";

#[derive(Debug)]
pub(crate) struct Spool {
    root: PathBuf,
    max_bytes: u64,
    /// (files, bytes) waiting for upload.
    held: Mutex<(u64, u64)>,
    /// Wakes the uploader when a file is ready.
    pub(crate) ready: tokio::sync::Notify,
}

impl Spool {
    /// Opens (creating) the spool at `root` and counts what a previous run
    /// left there.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut held = (0, 0);
        for f in walk(root)? {
            if uploadable(&f) {
                held.0 += 1;
                held.1 += std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            }
        }
        let spool = Spool {
            root: root.to_owned(),
            max_bytes,
            held: Mutex::new(held),
            ready: tokio::sync::Notify::new(),
        };
        spool.publish(held);
        Ok(spool)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `len` more bytes fit under the limit.
    pub fn has_room(&self, len: usize) -> bool {
        lock(&self.held).1 + len as u64 <= self.max_bytes
    }

    /// Writes `bytes` at `rel` (a path below the root made from the node's
    /// own names) whole, replacing what was there.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_file_name(format!(
            "{}{TMP}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        std::fs::write(&tmp, bytes)?;
        let replaced = std::fs::metadata(&path).map(|m| m.len()).ok();
        std::fs::rename(&tmp, &path)?;
        if uploadable(&path) {
            let mut held = lock(&self.held);
            // The uploader may have taken the old file meanwhile and
            // counted it out already.
            if let Some(old) = replaced {
                held.0 = held.0.saturating_sub(1);
                held.1 = held.1.saturating_sub(old);
            }
            held.0 += 1;
            held.1 += bytes.len() as u64;
            self.publish(*held);
            drop(held);
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Appends to a working file (never uploaded, so not counted).
    pub fn append(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let path = self.root.join(rel);
        debug_assert!(!uploadable(&path), "only working state is appended to");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?
            .write_all(bytes)
    }

    /// Deletes a file the uploader stored.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        let len = std::fs::metadata(path)?.len();
        std::fs::remove_file(path)?;
        let mut held = lock(&self.held);
        held.0 = held.0.saturating_sub(1);
        held.1 = held.1.saturating_sub(len);
        self.publish(*held);
        Ok(())
    }

    fn publish(&self, (files, bytes): (u64, u64)) {
        METRICS.recording_spool_files.set(files as i64);
        METRICS.recording_spool_bytes.set(bytes as i64);
    }
}

/// Whether the uploader takes this file (not working state, not half written).
pub(crate) fn uploadable(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.ends_with(STATE) && !n.ends_with(TMP))
}

/// Every file below `dir`, depth first.
pub(crate) fn walk(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            // Removed meanwhile by the uploader.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let ty = e.file_type()?;
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The counts stay consistent whatever a panicking holder did.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_waits_and_refuses_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100).unwrap();
        spool.write("a/b/seg.m4s", &[0; 60]).unwrap();
        spool.write("a/b/index.m3u8.live", &[0; 500]).unwrap();
        assert_eq!(*lock(&spool.held), (1, 60));
        assert!(spool.has_room(40));
        assert!(!spool.has_room(41));
        // A file written again counts once, at its new size.
        spool.write("a/b/seg.m4s", &[0; 30]).unwrap();
        assert_eq!(*lock(&spool.held), (1, 30));
        spool.remove(&dir.path().join("a/b/seg.m4s")).unwrap();
        assert_eq!(*lock(&spool.held), (0, 0));
        // A restart counts what is left, working state aside.
        spool.write("c/x.jpg", &[0; 7]).unwrap();
        let again = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(*lock(&again.held), (1, 7));
    }
}
