//! The rung ladder side of [`ChannelPackager`]: which transcoded rungs a
//! channel has, and their encoders' events.
//!
//! Owns matching a re-planned ladder to the rungs already packaged (by
//! name) and handing each rung event to its rung at the right moment of the
//! stream's life. Must never let a rung event reach a rung of another
//! ladder, and never read a clock.

use super::rung::{Ctx, Rung, RungDecl};
use super::{ChannelPackager, Phase};
use crate::media::TrackKind;
use crate::media::VideoEvent;
use crate::package::Update;
use std::time::{Instant, SystemTime};

impl ChannelPackager {
    /// The transcoded rungs of the current stream, top down; empty for
    /// passthrough only. Rung indexes in [`Self::push_rung`] refer to the
    /// latest call. A rung that keeps its name keeps its playlist; a new
    /// one starts at its first keyframe's segment; a dropped one finishes
    /// its open segment and leaves the multivariant playlist. Call it in
    /// order with `push_rung`: after the last packet of the old ladder,
    /// before the first of the new.
    pub fn set_rungs(&mut self, rungs: Vec<RungDecl>) {
        let mut out = Vec::new();
        let mut old = std::mem::take(&mut self.rungs);
        let mut ladder: Vec<Rung> = Vec::with_capacity(rungs.len());
        for (rank, decl) in (1u32..).zip(rungs) {
            let taken = ladder
                .iter()
                .any(|r| r.valid && r.name.as_ref() == decl.name);
            let kept = old
                .iter()
                .position(|r| r.valid && !taken && r.name.as_ref() == decl.name);
            let (mut rung, joins) = match kept {
                Some(i) => {
                    let mut r = old.remove(i);
                    r.decl = decl;
                    (r, false)
                }
                None => {
                    let mut r = Rung::new(decl);
                    if taken {
                        tracing::error!(channel = %self.p.channel_id, rung = %r.name, "two rungs of one name; the second is ignored");
                        r.valid = false;
                    }
                    (r, true)
                }
            };
            if rung.valid {
                out.push(rung.declare(rank));
                // A rung new to a live stream joins it at its first keyframe.
                if joins && let Phase::Live(live) = &self.phase {
                    let mut ctx = Ctx {
                        edge: live.video.edge,
                        p: &mut self.p,
                        live,
                        now: live.last_arrival,
                    };
                    rung.start_stream(&mut ctx, &mut out);
                }
            }
            ladder.push(rung);
        }
        for mut gone in old.into_iter().filter(|r| r.valid) {
            if let Phase::Live(live) = &self.phase {
                let edge = live.video.edge;
                let mut ctx = Ctx {
                    p: &mut self.p,
                    live,
                    edge,
                    now: live.last_arrival,
                };
                gone.finish(&mut ctx, None, &mut out);
            }
            crate::metrics::METRICS.forget_rendition(&self.p.channel_id, &gone.name);
            out.push(Update::Retire {
                rendition: gone.name.clone(),
            });
        }
        self.rungs = ladder;
        self.emit(out);
    }

    /// Takes one event of rung `rung` (an index into the last
    /// [`Self::set_rungs`]). `arrival` is when ingest received the source
    /// frame it was made from, so `ingest_to_part` covers the transcoding
    /// too. `now` is a wall clock for the event (the present, or the source
    /// frame's): a part is taken to be published at the later of that and
    /// the newest source arrival, the packager's only clock.
    pub fn push_rung(&mut self, rung: usize, event: VideoEvent, now: SystemTime, arrival: Instant) {
        let Some(r) = self.rungs.get_mut(rung).filter(|r| r.valid) else {
            tracing::debug!(channel = %self.p.channel_id, rung, "event for a rung not in the ladder; ignored");
            return;
        };
        let mut out = Vec::new();
        match (&self.phase, event) {
            (Phase::Live(live), event) => {
                let estimate = self.p.instant_at(now).unwrap_or(arrival);
                let now = estimate.max(live.last_arrival).max(arrival);
                let mut ctx = Ctx {
                    edge: live.video.edge,
                    p: &mut self.p,
                    live,
                    now,
                };
                match event {
                    VideoEvent::Config(params) => r.config(params, Some(&mut ctx), &mut out),
                    VideoEvent::Packet(pkt) if pkt.track == TrackKind::Video => {
                        r.packet(&mut ctx, pkt, arrival, &mut out);
                    }
                    VideoEvent::Packet(_) => {}
                }
            }
            (_, VideoEvent::Config(params)) => r.config(params, None, &mut out),
            (Phase::Probing { .. }, VideoEvent::Packet(pkt)) if pkt.track == TrackKind::Video => {
                r.hold_early(pkt, arrival);
            }
            (Phase::Idle | Phase::Probing { .. }, VideoEvent::Packet(_)) => {}
        }
        self.emit(out);
    }
}
