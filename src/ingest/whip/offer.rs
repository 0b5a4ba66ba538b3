//! What a WHIP offer must carry before a session is made for it: H.264 in
//! packetization mode 1 and, when audio is offered, Opus. A pure check over
//! the SDP text, so that the refusal can say exactly what was missing.

/// Why an offer was refused; the message is what the publisher reads.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error(
        "the offer has no H.264 video with packetization-mode=1; this node takes H.264 video and Opus audio"
    )]
    NoH264,
    #[error("the offer's audio has no Opus; this node takes H.264 video and Opus audio")]
    NoOpus,
}

impl OfferError {
    /// Short label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            OfferError::Malformed(_) => "bad_sdp",
            OfferError::NoH264 | OfferError::NoOpus => "unsupported_codec",
        }
    }
}

/// The media sections an acceptable offer brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    pub audio: bool,
}

/// One `m=` section: its kind and the payload types it maps to codecs.
#[derive(Default)]
struct Section<'a> {
    kind: &'a str,
    disabled: bool,
    rtpmap: Vec<(&'a str, String)>,
    fmtp: Vec<(&'a str, &'a str)>,
}

impl Section<'_> {
    fn has_codec(&self, name: &str) -> bool {
        self.rtpmap.iter().any(|(_, c)| c.starts_with(name))
    }

    /// RFC 6184 5.8: packetization-mode absent means mode 0 (single NAL
    /// unit), which carries no FU-A fragments; every WebRTC encoder offers
    /// mode 1, and str0m only negotiates what it depacketizes.
    fn has_h264_mode1(&self) -> bool {
        self.rtpmap
            .iter()
            .filter(|(_, c)| c.starts_with("h264/90000"))
            .any(|(pt, _)| {
                self.fmtp.iter().any(|(p, params)| {
                    p == pt
                        && params
                            .split(';')
                            .any(|kv| kv.trim().eq_ignore_ascii_case("packetization-mode=1"))
                })
            })
    }
}

/// Checks the codecs of an SDP offer. It does not validate the rest of the
/// SDP: str0m parses it next and its error is reported as malformed.
pub fn check(sdp: &str) -> Result<Offered, OfferError> {
    if !sdp.starts_with("v=0") {
        return Err(OfferError::Malformed("it does not start with v=0".into()));
    }
    let mut sections: Vec<Section> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split(' ');
            let kind = f.next().unwrap_or_default();
            // RFC 8866 5.14: port 0 marks a rejected or disabled stream.
            let disabled = f.next() == Some("0");
            sections.push(Section {
                kind,
                disabled,
                ..Section::default()
            });
        } else if let Some(s) = sections.last_mut() {
            if let Some(map) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, codec)) = map.split_once(' ') {
                    s.rtpmap.push((pt, codec.to_ascii_lowercase()));
                }
            } else if let Some(fmtp) = line.strip_prefix("a=fmtp:")
                && let Some((pt, params)) = fmtp.split_once(' ')
            {
                s.fmtp.push((pt, params));
            }
        }
    }
    if sections.is_empty() {
        return Err(OfferError::Malformed("it has no media section".into()));
    }
    let live = || sections.iter().filter(|s| !s.disabled);
    if !live().any(|s| s.kind == "video" && s.has_h264_mode1()) {
        return Err(OfferError::NoH264);
    }
    let mut audio = live().filter(|s| s.kind == "audio").peekable();
    let has_audio = audio.peek().is_some();
    if has_audio && !audio.any(|s| s.has_codec("opus/48000")) {
        return Err(OfferError::NoOpus);
    }
    Ok(Offered { audio: has_audio })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The media sections of a Chromium 156 offer (fake camera and microphone),
    /// trimmed to the lines the check reads plus a few it must ignore.
    const CHROMIUM: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 103 104\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:103 H264/90000\r\n\
a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=103\r\n";

    #[test]
    fn chromium_offer_passes() {
        assert_eq!(check(CHROMIUM), Ok(Offered { audio: true }));
    }

    #[test]
    fn aiortc_offer_passes() {
        let sdp = include_str!("../../../tests/fixtures/whip/aiortc-1.16-offer.sdp");
        assert_eq!(check(sdp), Ok(Offered { audio: true }));
    }

    #[test]
    fn video_only_offer_passes_without_audio() {
        let video_only = CHROMIUM.replace("m=audio 9", "m=audio 0");
        assert_eq!(check(&video_only), Ok(Offered { audio: false }));
    }

    #[test]
    fn vp8_only_is_refused_naming_h264() {
        let vp8 = CHROMIUM.replace("a=rtpmap:103 H264/90000", "a=rtpmap:103 AV1/90000");
        let err = check(&vp8).expect_err("no H.264");
        assert_eq!(err, OfferError::NoH264);
        assert!(err.to_string().contains("H.264"), "{err}");
    }

    #[test]
    fn h264_in_mode_0_is_refused() {
        let mode0 = CHROMIUM.replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check(&mode0), Err(OfferError::NoH264));
        let absent = CHROMIUM.replace("packetization-mode=1;", "");
        assert_eq!(check(&absent), Err(OfferError::NoH264));
    }

    #[test]
    fn disabled_h264_section_does_not_count() {
        let disabled = CHROMIUM.replace("m=video 9", "m=video 0");
        assert_eq!(check(&disabled), Err(OfferError::NoH264));
    }

    #[test]
    fn audio_without_opus_is_refused() {
        let pcmu = CHROMIUM.replace("opus/48000/2", "PCMU/8000");
        assert_eq!(check(&pcmu), Err(OfferError::NoOpus));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "hello",
            "v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\n",
            "\u{0}\u{ff}v=0",
        ] {
            assert!(
                matches!(check(bad), Err(OfferError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
