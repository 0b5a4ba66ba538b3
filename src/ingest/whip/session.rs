//! One WHIP session's WebRTC state: the str0m `Rtc` (ICE-lite, DTLS-SRTP,
//! RTCP), which frames go on to the media thread, when to ask for a
//! keyframe and when the session is over. Sans-IO: datagrams and time come
//! in, datagrams to send go out; the UDP task does the socket work.

use super::media::MediaMsg;
use super::offer::OfferError;
use super::timing::{KeyframePolicy, SenderClock};
use crate::media::{Arrival, TrackKind};
use crate::metrics::METRICS;
use crossbeam_channel::{Sender, TrySendError};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Why a session could not be set up from an offer.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("malformed SDP offer: {0}")]
    Sdp(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("no usable ICE candidate address: {0}")]
    Candidate(String),
}

/// Why a session ended, for its log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The publisher sent DELETE.
    Deleted,
    /// No packet for the configured time.
    Timeout,
    /// ICE lost the peer.
    Disconnected,
    /// str0m failed; the session cannot go on.
    Failed(String),
    /// The channel was taken over or deleted: the media thread is gone.
    ChannelGone,
}

impl End {
    pub fn reason(&self) -> &'static str {
        match self {
            End::Deleted => "deleted",
            End::Timeout => "session_timeout",
            End::Disconnected => "ice_disconnected",
            End::Failed(_) => "webrtc_error",
            End::ChannelGone => "channel_gone",
        }
    }
}

/// H.264 profiles offered in this order: WebRTC publishers send with the
/// first one the answer lists. Constrained Baseline 3.1 is what every
/// browser encodes; Main and High serve OBS and game engines.
const H264_PROFILES: [u32; 4] = [0x42e01f, 0x4d001f, 0x64001f, 0x42001f];

fn crypto() -> Arc<str0m::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<str0m::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(str0m::crypto::from_feature_flags()))
        .clone()
}

/// An ICE-lite `Rtc` that answers `offer` with H.264 and Opus only, and the
/// SDP answer. `candidates`: the host candidates to announce.
pub fn negotiate(
    offer: &str,
    candidates: &[SocketAddr],
    now: Instant,
) -> Result<(Rtc, String), SetupError> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SetupError::Sdp(e.to_string()))?;
    let mut cfg = RtcConfig::new()
        .set_ice_lite(true)
        .set_crypto_provider(crypto())
        .clear_codecs()
        .enable_opus(true, false);
    for (i, profile) in (0u8..).zip(H264_PROFILES) {
        // str0m answers with the offer's payload types; these only need to
        // be distinct.
        let pt = 100 + 2 * i;
        cfg.codec_config()
            .add_h264(pt.into(), Some((pt + 1).into()), true, profile);
    }
    let mut rtc = cfg.build(now);
    for addr in candidates {
        let c = Candidate::host(*addr, "udp").map_err(|e| SetupError::Candidate(e.to_string()))?;
        // Candidates are added before the offer is accepted; str0m only
        // rejects duplicates, which `candidates` has none of.
        let _ = rtc.add_local_candidate(c);
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| SetupError::Negotiation(e.to_string()))?
        .to_sdp_string();
    // str0m disables a section whose formats it cannot match (a profile
    // it does not know, a garbled rtpmap) rather than fail: an answer
    // without H.264, or with audio but no Opus, is a refusal.
    match super::offer::check(&answer) {
        Ok(_) => Ok((rtc, answer)),
        Err(OfferError::NoOpus) => Err(SetupError::Negotiation(
            "none of the offer's Opus formats could be agreed on".into(),
        )),
        Err(_) => Err(SetupError::Negotiation(format!(
            "none of the offer's H.264 formats could be agreed on; this node takes \
             packetization-mode=1 with profile-level-id {}",
            H264_PROFILES.map(|p| format!("{p:06x}")).join(", ")
        ))),
    }
}

/// A datagram for the UDP task to send.
pub struct Transmit {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

pub struct Session {
    pub channel: String,
    rtc: Rtc,
    mids: Vec<(Mid, MediaKind)>,
    video_mid: Option<Mid>,
    keyframes: KeyframePolicy,
    last_video_rtp: Option<u64>,
    media: Sender<MediaMsg>,
    created: Instant,
    last_rx: Instant,
    /// The latest datagram's arrival: the wall clock of str0m's network
    /// times, which are monotonic only.
    last_arrival: Arrival,
    idle: Duration,
    rtc_timeout: Instant,
    ended: Option<End>,
}

/// The HLS targets the keyframe policy works to, and the idle timeout.
#[derive(Clone, Copy, Debug)]
pub struct SessionTiming {
    pub segment_target: Duration,
    pub part_target: Duration,
    pub idle: Duration,
}

impl Session {
    pub fn new(
        channel: String,
        rtc: Rtc,
        media: Sender<MediaMsg>,
        timing: SessionTiming,
        arrival: Arrival,
        out: &mut Vec<Transmit>,
    ) -> Self {
        let now = arrival.at;
        let mut s = Session {
            channel,
            rtc,
            mids: Vec::new(),
            video_mid: None,
            keyframes: KeyframePolicy::new(timing.segment_target, timing.part_target),
            last_video_rtp: None,
            media,
            created: now,
            last_rx: now,
            last_arrival: arrival,
            idle: timing.idle,
            rtc_timeout: now,
            ended: None,
        };
        // accept_offer was a mutation: drain before anything else.
        s.drain(now, out);
        s
    }

    /// Whether a datagram from a new address is this session's (its ICE
    /// credentials match).
    pub fn accepts(&self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        match receive(now, from, to, data) {
            Some(input) => self.rtc.accepts(&input),
            None => false,
        }
    }

    /// Feeds one datagram. Returns false when it was not usable (junk).
    /// One datagram, read off the socket at `arrival`.
    pub fn receive(
        &mut self,
        arrival: Arrival,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
        out: &mut Vec<Transmit>,
    ) -> bool {
        let now = arrival.at;
        self.last_arrival = arrival;
        let Some(input) = receive(now, from, to, data) else {
            return false;
        };
        if self.ended.is_some() {
            return true;
        }
        let usable = match self.rtc.handle_input(input) {
            Ok(()) => true,
            Err(e) => {
                // One bad packet from a peer's address must not end its
                // session: SRTP authentication drops forgeries the same way.
                tracing::debug!(channel = %self.channel, error = %e, "whip: datagram refused");
                false
            }
        };
        if usable {
            self.last_rx = now;
        }
        self.drain(now, out);
        usable
    }

    /// Advances time: RTCP (receiver reports, NACK, PLI), ICE consent,
    /// and the idle timeout.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        if self.ended.is_some() {
            return;
        }
        if now.saturating_duration_since(self.last_rx) >= self.idle {
            self.end(End::Timeout);
            return;
        }
        if now >= self.rtc_timeout {
            if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                self.end(End::Failed(e.to_string()));
                return;
            }
            self.drain(now, out);
        }
    }

    /// The next instant `tick` must be called.
    pub fn deadline(&self) -> Instant {
        self.rtc_timeout.min(self.last_rx + self.idle)
    }

    pub fn ended(&self) -> Option<&End> {
        self.ended.as_ref()
    }

    pub fn end(&mut self, why: End) {
        if self.ended.is_none() {
            self.rtc.disconnect();
            self.ended = Some(why);
        }
    }

    /// Drains str0m's output until it asks for time, as its contract
    /// requires after every mutation.
    fn drain(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        loop {
            let output = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.end(End::Failed(e.to_string()));
                    return;
                }
            };
            match output {
                Output::Timeout(at) => {
                    self.rtc_timeout = at;
                    if self.keyframe_due(now) {
                        continue;
                    }
                    return;
                }
                Output::Transmit(t) => out.push(Transmit {
                    to: t.destination,
                    data: t.contents.into(),
                }),
                Output::Event(e) => self.event(e, now),
            }
        }
    }

    /// Sends a PLI when the keyframe policy wants one; true when it did (a
    /// mutation, so the caller drains again).
    fn keyframe_due(&mut self, now: Instant) -> bool {
        let Some(mid) = self.video_mid else {
            return false;
        };
        if !self.keyframes.want_request(self.last_video_rtp, now) {
            return false;
        }
        let Some(mut writer) = self.rtc.writer(mid) else {
            return false;
        };
        match writer.request_keyframe(None, KeyframeRequestKind::Pli) {
            Ok(()) => {
                METRICS
                    .whip_keyframe_requests
                    .with_label_values(&[&self.channel])
                    .inc();
                true
            }
            Err(e) => {
                // Before the publisher's first RTP the stream is unknown:
                // the policy asks again after its retry interval.
                tracing::debug!(channel = %self.channel, error = %e, "whip: keyframe request not sent");
                false
            }
        }
    }

    fn event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                let secs = now.saturating_duration_since(self.created).as_secs_f64();
                METRICS.whip_connect_seconds.observe(secs);
                tracing::info!(channel = %self.channel, connect_ms = (secs * 1000.0) as u64, "whip: ICE and DTLS connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.end(End::Disconnected);
            }
            Event::MediaAdded(m) => {
                self.mids.push((m.mid, m.kind));
                if m.kind == MediaKind::Video && self.video_mid.is_none() {
                    self.video_mid = Some(m.mid);
                }
            }
            Event::MediaData(d) => self.media_data(d),
            _ => {}
        }
    }

    /// The arrival of a frame whose last datagram came at `at`.
    fn arrival_at(&self, at: Instant) -> Arrival {
        let a = self.last_arrival;
        let wall = match at.checked_duration_since(a.at) {
            Some(later) => a.wall + later,
            None => a.wall - a.at.duration_since(at),
        };
        Arrival { wall, at }
    }

    fn media_data(&mut self, d: str0m::media::MediaData) {
        let kind = self.mids.iter().find(|(m, _)| *m == d.mid).map(|(_, k)| *k);
        let sender = d.last_sender_info.map(|s| SenderClock {
            rtp: s.rtp_time.numer(),
            ntp: s.ntp_time,
        });
        let rtp = d.time.numer();
        let track = match (kind, d.params.spec().codec) {
            (Some(MediaKind::Video), Codec::H264) if Some(d.mid) == self.video_mid => {
                self.last_video_rtp = Some(rtp);
                if !d.contiguous {
                    // RFC 4585 6.3.1: after loss the decoder needs a fresh
                    // IDR; frames until then would decode to garbage.
                    self.keyframes.broken();
                }
                if !self.keyframes.frame(rtp, d.is_keyframe()) {
                    return;
                }
                TrackKind::Video
            }
            (Some(MediaKind::Audio), Codec::Opus) => TrackKind::Audio,
            _ => return,
        };
        let msg = MediaMsg {
            track,
            rtp,
            data: d.data,
            arrival: self.arrival_at(d.network_time),
            sender,
        };
        match self.media.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                METRICS
                    .ingest_dropped_packets
                    .with_label_values(&[&self.channel])
                    .inc();
                if track == TrackKind::Video {
                    self.keyframes.broken();
                }
            }
            Err(TrySendError::Disconnected(_)) => self.end(End::ChannelGone),
        }
    }
}

/// str0m's view of a datagram, `None` when it is none of STUN, DTLS, RTP or
/// RTCP (RFC 7983 demultiplexing).
fn receive(now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<Input<'_>> {
    let contents = data.try_into().ok()?;
    Some(Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source: from,
            destination: to,
            contents,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: [SocketAddr; 1] = [SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        8189,
    )];

    #[test]
    fn aiortc_offer_gets_an_answer_with_h264_opus_and_our_candidate() {
        let offer = include_str!("../../../tests/fixtures/whip/aiortc-1.16-offer.sdp");
        let (_, answer) = negotiate(offer, &HOST, Instant::now()).expect("negotiated");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 8189 typ host"), "{answer}");
        assert!(answer.contains("packetization-mode=1"), "{answer}");
        assert!(answer.contains("opus/48000/2"), "{answer}");
        assert!(
            answer.contains("a=rtcp-fb:") && answer.contains(" nack"),
            "NACK negotiated: {answer}"
        );
    }

    #[test]
    fn offer_whose_h264_cannot_be_agreed_on_is_refused() {
        let offer = include_str!("../../../tests/fixtures/whip/garbled-h264-offer.sdp");
        assert!(
            super::super::offer::check(offer).is_ok(),
            "the codec check alone passes it"
        );
        let err = negotiate(offer, &HOST, Instant::now()).expect_err("no H.264 agreed");
        assert!(err.to_string().contains("H.264"), "{err}");
    }
}
