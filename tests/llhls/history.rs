//! Rules across reloads: what must stay constant (TARGETDURATION,
//! PART-TARGET, PART-HOLD-BACK, CAN-SKIP-UNTIL), what may only grow (the
//! media sequence), and segments and parts that never change once listed
//! (RFC 8216bis 6.2.1). Fed one playlist at a time; never fetches.

use std::collections::HashMap;

use crate::common::Findings;
use crate::common::playlist::MediaPlaylist;

/// History-based rules: things that must stay constant across reloads.
#[derive(Default)]
pub struct History {
    td: Option<u64>,
    part_target: Option<f64>,
    part_hold_back: Option<f64>,
    can_skip_until: Option<f64>,
    media_sequence: u64,
    segs: HashMap<u64, (String, f64)>,
    parts: HashMap<(u64, u64), (String, f64)>,
    /// Playlists seen.
    pub reloads: usize,
}

impl History {
    pub fn add(&mut self, f: &Findings, pl: &MediaPlaylist, url: &str) {
        self.reloads += 1;
        // 6.2.1: "The EXT-X-TARGETDURATION value in the Media Playlist MUST NOT change."
        if let (Some(a), Some(b)) = (self.td, pl.target_duration) {
            f.check(
                a == b,
                "TARGETDURATION constant across reloads (6.2.1)",
                || format!("{url}: {a} then {b}"),
            );
        }
        // Apple HLS authoring / 4.4.3.7: PART-TARGET must not change for the life of the stream.
        if let (Some(a), Some(b)) = (self.part_target, pl.part_target) {
            f.check(
                a == b,
                "PART-TARGET constant across reloads (Apple)",
                || format!("{url}: {a} then {b}"),
            );
        }
        let phb = pl.server_control.as_ref().and_then(|s| s.part_hold_back);
        if let (Some(a), Some(b)) = (self.part_hold_back, phb) {
            f.check(
                a == b,
                "PART-HOLD-BACK constant across reloads (Apple)",
                || format!("{url}: {a} then {b}"),
            );
        }
        let csu = pl.server_control.as_ref().and_then(|s| s.can_skip_until);
        if let (Some(a), Some(b)) = (self.can_skip_until, csu) {
            f.check(a == b, "CAN-SKIP-UNTIL constant across reloads", || {
                format!("{url}: {a} then {b}")
            });
        }
        // 6.2.1: the media sequence number never decreases.
        f.check(
            pl.media_sequence >= self.media_sequence,
            "EXT-X-MEDIA-SEQUENCE never decreases (6.2.1)",
            || format!("{url}: {} after {}", pl.media_sequence, self.media_sequence),
        );
        self.td = pl.target_duration.or(self.td);
        self.part_target = pl.part_target.or(self.part_target);
        self.part_hold_back = phb.or(self.part_hold_back);
        self.can_skip_until = csu.or(self.can_skip_until);
        self.media_sequence = self.media_sequence.max(pl.media_sequence);
        for s in &pl.segments {
            let v = (s.uri.clone(), s.duration); // parts of old segments may be dropped (6.2.2)
            if let Some(old) = self.segs.get(&s.msn) {
                f.check(
                    *old == v,
                    "a segment never changes once listed (6.2.1)",
                    || format!("{url}: msn {} was {old:?}, now {v:?}", s.msn),
                );
            }
            self.segs.insert(s.msn, v);
        }
        for (m, i, p) in pl.all_parts() {
            let v = (p.uri.clone(), p.duration);
            if let Some(old) = self.parts.get(&(m, i)) {
                f.check(*old == v, "a part never changes once listed", || {
                    format!("{url}: part {m}.{i} was {old:?}, now {v:?}")
                });
            }
            self.parts.insert((m, i), v);
        }
        // Parts of consecutive complete segments and of the open segment are
        // numbered without gaps: checked by construction of the MSN/index.
    }
}
