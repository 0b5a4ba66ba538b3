//! WebRTC time to node time: the A/V clock that maps each track's RTP time
//! onto the node timeline, and the keyframe policy that decides when to ask
//! the publisher for an IDR. Pure state machines; time is an input.

use crate::media::TIMEBASE;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// RTP clock rates WebRTC uses for H.264 (RFC 6184 8.2.1) and Opus (RFC 7587 4.1).
pub const VIDEO_RATE: u64 = 90_000;
pub const AUDIO_RATE: u64 = 48_000;

/// An RTCP sender report's pairing of a track's RTP time with the sender's
/// wallclock (RFC 3550 6.4.1): how two tracks' RTP clocks relate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SenderClock {
    pub rtp: u64,
    pub ntp: SystemTime,
}

impl SenderClock {
    /// Sender wallclock, in seconds, of RTP time `rtp` of a track at `rate`.
    fn wallclock(&self, rtp: u64, rate: u64) -> f64 {
        let base = self
            .ntp
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        base + (rtp as f64 - self.rtp as f64) / rate as f64
    }
}

/// Places video and audio on the node timeline. Video time 0 is the first
/// video frame passed on; audio follows it through the sender reports of
/// both tracks once they have come, and by arrival time until then.
#[derive(Debug, Default)]
pub struct AvClock {
    /// RTP time and arrival of the first video frame passed on.
    origin: Option<(u64, Instant)>,
    video_sr: Option<SenderClock>,
    audio_sr: Option<SenderClock>,
    /// Arrival-based placement of audio: an RTP time and its node ticks.
    audio_anchor: Option<(u64, i64)>,
}

impl AvClock {
    pub fn video_report(&mut self, sr: SenderClock) {
        self.video_sr = Some(sr);
    }

    pub fn audio_report(&mut self, sr: SenderClock) {
        self.audio_sr = Some(sr);
    }

    pub fn started(&self) -> bool {
        self.origin.is_some()
    }

    /// Node ticks of a video frame; the first call sets the origin.
    pub fn video(&mut self, rtp: u64, arrival: Instant) -> i64 {
        let (rtp0, _) = *self.origin.get_or_insert((rtp, arrival));
        rtp_delta(rtp, rtp0)
    }

    /// Node ticks of an audio frame, `None` before video has started.
    pub fn audio(&mut self, rtp: u64, arrival: Instant) -> Option<i64> {
        let (vrtp0, arrival0) = self.origin?;
        if let (Some(v), Some(a)) = (self.video_sr, self.audio_sr) {
            // RFC 3550 6.4.1: the NTP/RTP pairs of two sender reports from
            // one sender put both tracks on its one wallclock.
            let secs = a.wallclock(rtp, AUDIO_RATE) - v.wallclock(vrtp0, VIDEO_RATE);
            return Some((secs * f64::from(TIMEBASE)).round() as i64);
        }
        let (rtp_a, ticks_a) = *self.audio_anchor.get_or_insert_with(|| {
            let since = arrival.saturating_duration_since(arrival0);
            (rtp, duration_ticks(since))
        });
        Some(ticks_a + rtp_delta(rtp, rtp_a) * VIDEO_RATE as i64 / AUDIO_RATE as i64)
    }
}

fn rtp_delta(rtp: u64, base: u64) -> i64 {
    i64::try_from(i128::from(rtp) - i128::from(base)).unwrap_or(0)
}

fn duration_ticks(d: Duration) -> i64 {
    i64::try_from(d.as_micros() * u128::from(TIMEBASE) / 1_000_000).unwrap_or(i64::MAX)
}

/// When to send the publisher a PLI (RFC 4585 6.3.1). Browsers send an IDR
/// only when asked, and segments may only start at one: ask at the start,
/// after loss, and before a segment would outgrow its target.
#[derive(Debug)]
pub struct KeyframePolicy {
    /// RTP ticks after the last IDR at which the next one is wanted.
    due_after: u64,
    /// A repeated request waits this long for the IDR asked for.
    retry: Duration,
    last_idr: Option<u64>,
    last_request: Option<Instant>,
    /// Loss or a dropped frame: frames are useless until an IDR.
    broken: bool,
}

impl KeyframePolicy {
    /// `segment_target` and `part_target` are the HLS ones: the packager
    /// cuts at the first keyframe once a segment is within one part of its
    /// target, so that is when the next IDR is due.
    pub fn new(segment_target: Duration, part_target: Duration) -> Self {
        let due = segment_target.saturating_sub(part_target);
        KeyframePolicy {
            due_after: u64::try_from(duration_ticks(due)).unwrap_or(u64::MAX),
            retry: (part_target * 2).max(Duration::from_millis(200)),
            last_idr: None,
            last_request: None,
            broken: true,
        }
    }

    /// A frame could not be used (loss, overflow): ask for an IDR.
    pub fn broken(&mut self) {
        self.broken = true;
    }

    /// Whether a frame can be passed on: not while waiting for an IDR after
    /// a break.
    pub fn frame(&mut self, rtp: u64, keyframe: bool) -> bool {
        if keyframe {
            self.last_idr = Some(rtp);
            self.broken = false;
            self.last_request = None;
        }
        !self.broken
    }

    /// Whether to send a PLI now, given the latest video RTP time.
    pub fn want_request(&mut self, rtp: Option<u64>, now: Instant) -> bool {
        let due = self.broken
            || matches!((self.last_idr, rtp), (Some(idr), Some(t)) if t.saturating_sub(idr) >= self.due_after);
        let waited = self
            .last_request
            .is_none_or(|at| now.saturating_duration_since(at) >= self.retry);
        if due && waited {
            self.last_request = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_starts_at_zero_and_follows_rtp() {
        let t0 = Instant::now();
        let mut c = AvClock::default();
        assert_eq!(c.audio(1000, t0), None, "no audio before video");
        assert_eq!(c.video(5_000_000, t0), 0);
        assert_eq!(c.video(5_003_000, t0 + Duration::from_millis(33)), 3000);
    }

    #[test]
    fn audio_by_arrival_until_sender_reports_then_by_them() {
        let t0 = Instant::now();
        let mut c = AvClock::default();
        c.video(90_000, t0);
        // First audio 100 ms after the first video frame arrived.
        let a = c.audio(480_000, t0 + Duration::from_millis(100));
        assert_eq!(a, Some(9000));
        // 20 ms of audio later, whatever its arrival jitter.
        assert_eq!(
            c.audio(480_960, t0 + Duration::from_millis(150)),
            Some(10_800)
        );

        // The reports say video RTP 90_000 and audio RTP 480_000 were both
        // sampled at wallclock W: that audio is at the video origin, not
        // where its arrival put it.
        let w = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        c.video_report(SenderClock {
            rtp: 90_000 + 4500,
            ntp: w + Duration::from_millis(50),
        });
        c.audio_report(SenderClock {
            rtp: 480_000 + 2400,
            ntp: w + Duration::from_millis(50),
        });
        assert_eq!(c.audio(480_000, t0), Some(0));
        assert_eq!(c.audio(480_960, t0), Some(1800));
    }

    #[test]
    fn keyframes_are_asked_for_at_start_on_loss_and_before_the_target() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = KeyframePolicy::new(Duration::from_secs(2), Duration::from_millis(200));
        assert!(p.want_request(None, t0), "at start");
        assert!(!p.want_request(None, ms(100)), "retry waits");
        assert!(!p.frame(0, false), "nothing before the first IDR");
        assert!(p.want_request(Some(0), ms(400)), "retried");
        assert!(p.frame(9000, true));
        assert!(!p.want_request(Some(9000), ms(410)));
        // 1.79 s after the IDR: not yet; 1.8 s: due.
        assert!(p.frame(9000 + 161_100, false));
        assert!(!p.want_request(Some(9000 + 161_100), ms(2200)));
        assert!(p.want_request(Some(9000 + 162_000), ms(2210)));
        assert!(
            !p.want_request(Some(9000 + 165_000), ms(2250)),
            "once per retry"
        );
        assert!(
            p.want_request(Some(9000 + 180_000), ms(2620)),
            "IDR late: ask again"
        );
        assert!(p.frame(9000 + 183_000, true));
        assert!(!p.want_request(Some(9000 + 183_000), ms(2650)));
        p.broken();
        assert!(!p.frame(9000 + 186_000, false), "dropped until an IDR");
        assert!(p.want_request(Some(9000 + 186_000), ms(2700)));
    }
}
