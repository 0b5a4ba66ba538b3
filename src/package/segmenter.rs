//! Cuts one rendition's samples into LL-HLS parts and segments.
//!
//! Owns the part and segment boundary rules of RFC 8216bis for one track.
//! Pure: time is the samples' own timestamps; it never reads a clock, never
//! writes boxes and never touches the store. It must never emit a part
//! longer than PART-TARGET.

use bytes::Bytes;
use std::time::Instant;

/// The most time, in parts, a sample lends its successors: a publisher's
/// freeze after packet loss is bridged, a longer stall stays a hole.
pub const MAX_LOAN_PARTS: u64 = 3;

/// One access unit (video) or AAC frame (audio) whose duration is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode time in the track timescale, monotonic within the rendition.
    pub dts: u64,
    /// Ticks until the next sample's decode time.
    pub duration: u32,
    /// Presentation minus decode time, in ticks.
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// Who decides where segments end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutPolicy {
    /// Video: cut before a keyframe once the segment holds at least `min`
    /// ticks; cut at a part boundary, keyframe or not, rather than let a
    /// segment grow past `max` ticks.
    Keyframes { min: u64, max: u64 },
    /// Followers (audio, transcoded rungs): cut only when told, where the
    /// source video rendition cut, so that segment N of every rendition
    /// covers the same time. Independence still comes from the samples'
    /// keyframe flags (every AAC frame is one; a rung's are its IDRs).
    External,
}

/// The limits one segmenter works to, in its track's timescale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// PART-TARGET in ticks.
    pub part_target: u64,
    /// A part closes as soon as it holds this many samples, without waiting
    /// to see whether the next one would still fit.
    pub samples_per_part: u32,
    pub cuts: CutPolicy,
}

/// What the segmenter produced, in playlist order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A segment begins; its parts follow.
    SegmentStart {
        msn: u64,
        dts: u64,
        independent: bool,
    },
    Part(Part),
    /// The segment is complete. `gap` marks a segment with no media at all,
    /// kept so that media sequence numbers stay aligned across renditions.
    SegmentEnd {
        msn: u64,
        start_dts: u64,
        end_dts: u64,
        samples: u32,
        gap: bool,
    },
}

/// A closed part: one fMP4 fragment's worth of samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub msn: u64,
    pub index: u32,
    /// The fragment's base media decode time.
    pub dts: u64,
    /// Sum of the samples' durations.
    pub duration: u64,
    /// Starts with a random access point.
    pub independent: bool,
    pub samples: Vec<Sample>,
    /// Ingest arrival of the first sample, for the latency histogram.
    pub first_arrival: Instant,
}

#[derive(Debug)]
struct OpenSegment {
    start: u64,
    end: u64,
    parts: u32,
    samples: u32,
}

#[derive(Debug)]
struct OpenPart {
    dts: u64,
    duration: u64,
    independent: bool,
    samples: Vec<Sample>,
    first_arrival: Instant,
}

/// Parts and segment boundaries for one rendition.
#[derive(Debug)]
pub struct Segmenter {
    rules: Rules,
    msn: u64,
    /// Where the next segment starts if it gets no sample (a gap segment).
    boundary: u64,
    segment: Option<OpenSegment>,
    part: Option<OpenPart>,
    /// Ticks the last sample lent to fill its part: the next sample starts
    /// that much earlier and lasts that much longer.
    lent: u64,
}

impl Segmenter {
    /// A segmenter whose first segment is `msn`, starting no earlier than
    /// `start` (track ticks).
    pub fn new(rules: Rules, msn: u64, start: u64) -> Self {
        Segmenter {
            rules,
            msn,
            boundary: start,
            segment: None,
            part: None,
            lent: 0,
        }
    }

    /// Media sequence number of the segment being filled (or the next one).
    pub fn msn(&self) -> u64 {
        self.msn
    }

    /// End of the last sample taken, or the next segment's start.
    pub fn end(&self) -> u64 {
        self.segment.as_ref().map_or(self.boundary, |s| s.end)
    }

    /// Ticks the open part can still take, if a part is open and closing
    /// it now would leave it under 85% of PART-TARGET, which only a
    /// segment's last part may be (RFC 8216bis 4.4.4.9).
    fn short_part_room(&self) -> Option<u64> {
        let target = self.rules.part_target;
        let room = target.saturating_sub(self.part.as_ref()?.duration);
        (room * 100 > target * 15).then_some(room)
    }

    /// Ticks of its own the next sample can last, when a keyframe follows
    /// it, without leaving a hole: what the open part still takes (or a
    /// part of its own), less the time the sample before lent it, which it
    /// carries too. Never zero: a sample lasts at least a tick.
    pub fn keyframe_fit(&self) -> u64 {
        let target = self.rules.part_target;
        let room = match self.short_part_room() {
            Some(room) if self.lent < room => room,
            _ => target,
        };
        room.saturating_sub(self.lent).max(1)
    }

    /// A segment has samples and has not ended yet.
    pub fn is_open(&self) -> bool {
        self.segment.is_some()
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Takes the next sample in decode order. `next_is_keyframe` is a peek at
    /// the sample after it, when known: whether it is a keyframe (keyframe
    /// cuts) or opens the next segment (external cuts). It lets the segment
    /// (and its final part) close now instead of one frame later, and
    /// `Some(false)` lets this sample lend its successor time.
    pub fn push(
        &mut self,
        mut sample: Sample,
        arrival: Instant,
        next_is_keyframe: Option<bool>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let target = self.rules.part_target;
        if self.lent > 0 {
            sample.dts = sample.dts.saturating_sub(self.lent);
            sample.duration = sample
                .duration
                .saturating_add(u32::try_from(self.lent).unwrap_or(u32::MAX));
            self.lent = 0;
        }
        let mut dur = u64::from(sample.duration);

        // A hole or overlap in the timeline: samples inside a fragment are
        // back to back, so a new fragment (with its own tfdt) must start.
        if let Some(p) = &self.part
            && p.dts + p.duration != sample.dts
        {
            self.close_part(&mut out);
        }
        if let (CutPolicy::Keyframes { max, .. }, Some(seg)) = (self.rules.cuts, &self.segment)
            && (sample.dts + dur.min(target)).saturating_sub(seg.start) > max
        {
            let next = self.msn + 1;
            self.end_segment(&mut out, next);
        }
        // What of this sample's time goes to its successor: it starts that
        // much earlier and lasts that much longer (a frame shown early, no
        // hole in the timeline; a long loan passes on, frame by frame, each
        // shown for up to a part). Only before a sample known not to be a
        // keyframe, which may start a segment that audio and the other
        // renditions cut at its own time; and at most three parts (a WebRTC
        // publisher's freeze after packet loss), so a stall of seconds stays
        // a hole players step over rather than seconds of slow motion.
        let lendable = |rest: u64| {
            if next_is_keyframe == Some(false) {
                rest.min(MAX_LOAN_PARTS * target)
            } else {
                0
            }
        };
        if let Some(p) = &self.part
            && p.duration + dur > target
        {
            let room = target - p.duration;
            if next_is_keyframe == Some(false) && room * 100 > target * 15 {
                // A late or dropped frame before this one's successor: the
                // part closed now would be under 85% of PART-TARGET, which
                // RFC 8216bis 4.4.4.9 allows only a segment's last part
                // ("The duration of each Partial Segment MUST be at least 85%
                // of the Part Target Duration"). The sample fills the part
                // instead and lends the rest.
                self.lent = lendable(dur - room);
                dur = room;
            } else {
                self.close_part(&mut out);
            }
        }
        // A sample longer than a part (a publisher stall, or a loan) would
        // make its part break "MUST be less than or equal to the Part Target
        // Duration" (4.4.4.9): it gets one part and lends the rest where it
        // can; what is left is a hole in the timeline.
        if dur > target {
            self.lent = lendable(dur - target);
            dur = target;
        }
        sample.duration = u32::try_from(dur).unwrap_or(u32::MAX);

        let seg = self.segment.get_or_insert_with(|| {
            out.push(Event::SegmentStart {
                msn: self.msn,
                dts: sample.dts,
                independent: sample.keyframe,
            });
            OpenSegment {
                start: sample.dts,
                end: sample.dts,
                parts: 0,
                samples: 0,
            }
        });
        seg.end = sample.dts + dur;
        seg.samples += 1;
        let seg_len = seg.end - seg.start;
        let part = self.part.get_or_insert_with(|| OpenPart {
            dts: sample.dts,
            duration: 0,
            independent: sample.keyframe,
            samples: Vec::new(),
            first_arrival: arrival,
        });
        part.duration += dur;
        part.samples.push(sample);
        let part_full =
            part.duration >= target || part.samples.len() >= self.rules.samples_per_part as usize;

        match self.rules.cuts {
            CutPolicy::Keyframes { min, max } => {
                if next_is_keyframe == Some(true) && seg_len >= min {
                    let next = self.msn + 1;
                    self.end_segment(&mut out, next);
                } else if part_full {
                    self.close_part(&mut out);
                    // No keyframe in time: cut here, at a part boundary, while
                    // every part is still whole, rather than one sample before
                    // the limit.
                    if seg_len + target > max {
                        let next = self.msn + 1;
                        self.end_segment(&mut out, next);
                    }
                }
            }
            CutPolicy::External => {
                if part_full {
                    self.close_part(&mut out);
                }
            }
        }
        out
    }

    /// Ends the current segment where the caller says (audio following a
    /// video cut, or the end of a stream); the next one is `next_msn`.
    ///
    /// A segment that received nothing still ends, as a gap of the time from
    /// its start to `end`: skipping it would shift this rendition's media
    /// sequence numbers against the others'.
    pub fn cut(&mut self, end: u64, next_msn: u64) -> Vec<Event> {
        let mut out = Vec::new();
        if self.segment.is_some() {
            self.end_segment(&mut out, next_msn);
        } else {
            let start = self.boundary;
            // A zero-length EXTINF is meaningless; one tick keeps the slot.
            let end = end.max(start + 1);
            out.push(Event::SegmentStart {
                msn: self.msn,
                dts: start,
                independent: true,
            });
            out.push(Event::SegmentEnd {
                msn: self.msn,
                start_dts: start,
                end_dts: end,
                samples: 0,
                gap: true,
            });
            self.boundary = end;
            self.msn = next_msn;
        }
        out
    }

    fn close_part(&mut self, out: &mut Vec<Event>) {
        let Some(p) = self.part.take() else { return };
        let seg = self
            .segment
            .as_mut()
            .expect("a part is only open inside an open segment");
        out.push(Event::Part(Part {
            msn: self.msn,
            index: seg.parts,
            dts: p.dts,
            duration: p.duration,
            independent: p.independent,
            samples: p.samples,
            first_arrival: p.first_arrival,
        }));
        seg.parts += 1;
    }

    fn end_segment(&mut self, out: &mut Vec<Event>, next_msn: u64) {
        self.close_part(out);
        if let Some(seg) = self.segment.take() {
            out.push(Event::SegmentEnd {
                msn: self.msn,
                start_dts: seg.start,
                end_dts: seg.end,
                samples: seg.samples,
                gap: false,
            });
            self.boundary = seg.end;
            self.msn = next_msn;
        }
    }
}

#[cfg(test)]
mod tests;
