//! Completing the recordings a node left unfinished when it stopped without
//! ending them (a crash, SIGKILL, power cut): their working playlists get
//! EXT-X-ENDLIST and become the VOD, and `recording-ended.json` says
//! `"recovered": true`, so the uploader stores them like any other. Runs once,
//! as the node starts, before any channel can record.

use super::session::{ENDED, MASTER, MEDIA, STARTED, SUMMARY, Summary};
use super::spool::{STATE, Spool};
use crate::package::playlist::program_date_time;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Completes every unfinished recording in the spool; returns how many.
pub(crate) fn recover(spool: &Spool) -> io::Result<usize> {
    let mut done = 0;
    for channel in dirs(spool.root())? {
        for session in dirs(&channel)? {
            if session.join(ENDED).exists() || super::spool::walk(&session)?.is_empty() {
                continue;
            }
            complete(spool, &session)?;
            done += 1;
        }
    }
    Ok(done)
}

fn complete(spool: &Spool, dir: &Path) -> io::Result<()> {
    let rel = |p: &Path| {
        p.strip_prefix(spool.root())
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for rendition in dirs(dir)? {
        let working = rendition.join(format!("{MEDIA}{STATE}"));
        if let Ok(text) = std::fs::read_to_string(&working) {
            spool.write(&rel(&rendition.join(MEDIA)), ended(&text).as_bytes())?;
        }
    }
    if let Ok(master) = std::fs::read(dir.join(format!("{MASTER}{STATE}"))) {
        spool.write(&rel(&dir.join(MASTER)), &master)?;
    }
    // The working summary is as of the last segment; a recording killed
    // before its first segment has only the started event.
    let state = dir.join(format!("{SUMMARY}{STATE}"));
    let (mut summary, last): (Option<Summary>, Option<SystemTime>) = (
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok()),
        std::fs::metadata(&state).and_then(|m| m.modified()).ok(),
    );
    if summary.is_none() {
        summary = std::fs::read(dir.join(STARTED))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    }
    let Some(mut summary) = summary else {
        tracing::warn!(dir = %dir.display(), "recording without a summary in the spool; leaving it");
        return Ok(());
    };
    summary.event = "recording-ended".into();
    summary.recovered = true;
    summary.ended_at = last
        .map(program_date_time)
        .or(Some(summary.started_at.clone()));
    spool.write(&rel(&dir.join(ENDED)), &summary.to_json())?;
    tracing::info!(channel = %summary.channel, session = %summary.session,
        duration_s = summary.duration_s, "recording left unfinished by the last run completed from the spool");
    Ok(())
}

/// A working playlist made whole: its target duration raised to its
/// longest segment, and its end.
fn ended(text: &str) -> String {
    // RFC 8216bis 4.4.3.1: "The EXTINF duration of each Media Segment in the
    // Playlist file, when rounded to the nearest integer, MUST be less than
    // or equal to the Target Duration". The working playlist's head was
    // written with the first segment, before the longest was known.
    // A node that died mid-append (a full disk, a power cut) may have left
    // half an entry: the playlist ends with its last whole segment line.
    let whole = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .rfind(|&end| {
            let start = text[..end - 1].rfind('\n').map_or(0, |i| i + 1);
            let line = &text[start..end - 1];
            !line.is_empty() && !line.starts_with('#')
        })
        .unwrap_or(0);
    let text = &text[..whole];
    let longest = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.parse::<f64>().ok())
        .map(|d| d.round() as u64)
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len() + 16);
    for l in text.lines() {
        match l
            .strip_prefix("#EXT-X-TARGETDURATION:")
            .and_then(|t| t.parse::<u64>().ok())
        {
            Some(t) => out.push_str(&format!("#EXT-X-TARGETDURATION:{}", t.max(longest))),
            None => out.push_str(l),
        }
        out.push('\n');
    }
    // RFC 8216bis 4.4.3.4: "EXT-X-ENDLIST [...] indicates that no more Media
    // Segments will be added to the Media Playlist file."
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

fn dirs(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}
