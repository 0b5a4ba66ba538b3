//! FLV tag body parsing for RTMP audio and video messages (Adobe FLV spec v10.1, E.4.2 and
//! E.4.3). Sans-IO and zero-copy: payloads are slices of the message `Bytes`. Recognises the
//! legacy codecs it refuses so the refusal can name them; Enhanced RTMP tags go to
//! `enhanced.rs`.

use super::enhanced::{self, ExAudioTag, ExVideoTag, SOUND_FORMAT_EX_HEADER, VIDEO_EX_HEADER};
pub use super::tag_error::FlvError;
use crate::media::TrackKind;
use bytes::Bytes;

/// E.4.3.1 CodecID 7.
const CODEC_AVC: u8 = 7;
/// E.4.2.1 SoundFormat 10.
const SOUND_FORMAT_AAC: u8 = 10;

/// A parsed video tag body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCPacketType 0: an AVCDecoderConfigurationRecord.
    SequenceHeader(Bytes),
    /// AVCPacketType 1: one access unit of length-prefixed NAL units.
    Frame {
        keyframe: bool,
        /// CompositionTime (SI24), milliseconds from dts to pts.
        composition_time_ms: i32,
        data: Bytes,
    },
    /// AVCPacketType 2: end of sequence; nothing to decode.
    EndOfSequence,
    /// FrameType 5: a video info/command frame (seek markers), not a picture.
    Command,
    /// IsExHeader set: an Enhanced RTMP tag (FourCC codecs, multitrack).
    Enhanced(ExVideoTag),
}

/// A parsed audio tag body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// AACPacketType 0: an AudioSpecificConfig.
    SequenceHeader(Bytes),
    /// AACPacketType 1: one raw AAC frame.
    Frame(Bytes),
    /// SoundFormat ExHeader: an Enhanced RTMP tag.
    Enhanced(ExAudioTag),
}

/// Parses an FLV VIDEODATA body (E.4.3.1) as carried in an RTMP video message.
pub fn parse_video_tag(body: Bytes) -> Result<VideoTag, FlvError> {
    const T: TrackKind = TrackKind::Video;
    let first = *body.first().ok_or(FlvError::Truncated {
        track: T,
        need: 1,
        have: 0,
    })?;
    if first & VIDEO_EX_HEADER != 0 {
        return enhanced::parse_video_tag(body).map(VideoTag::Enhanced);
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if codec_id != CODEC_AVC {
        return Err(FlvError::Unsupported {
            track: T,
            codec: video_codec_name(codec_id),
        });
    }
    // E.4.3.1 FrameType: 1 key, 2 inter, 3 disposable inter (H.263 only), 4 generated key
    // (server use only), 5 video info/command frame.
    let keyframe = match frame_type {
        1 | 4 => true,
        2 | 3 => false,
        // E.4.3.1: "If FrameType = 5, instead of a video payload, the message stream
        // contains a UI8" (a command), so there is no AVCPacketType to read.
        5 => return Ok(VideoTag::Command),
        other => {
            return Err(FlvError::Invalid {
                track: T,
                offset: 0,
                why: format!("reserved FrameType {other}"),
            });
        }
    };
    // E.4.3.1 AVCVIDEOPACKET: AVCPacketType (UI8), CompositionTime (SI24), Data.
    if body.len() < 5 {
        return Err(FlvError::Truncated {
            track: T,
            need: 5,
            have: body.len(),
        });
    }
    let cts_raw = (u32::from(body[2]) << 16) | (u32::from(body[3]) << 8) | u32::from(body[4]);
    // Sign-extend 24 bits: shift the value to the top of an i32 and back.
    let composition_time_ms = ((cts_raw << 8) as i32) >> 8;
    let data = body.slice(5..);
    match body[1] {
        0 => Ok(VideoTag::SequenceHeader(data)),
        1 => Ok(VideoTag::Frame {
            keyframe,
            composition_time_ms,
            data,
        }),
        2 => Ok(VideoTag::EndOfSequence),
        other => Err(FlvError::Invalid {
            track: T,
            offset: 1,
            why: format!("AVCPacketType {other}"),
        }),
    }
}

/// Parses an FLV AUDIODATA body (E.4.2.1) as carried in an RTMP audio message.
pub fn parse_audio_tag(body: Bytes) -> Result<AudioTag, FlvError> {
    const T: TrackKind = TrackKind::Audio;
    let first = *body.first().ok_or(FlvError::Truncated {
        track: T,
        need: 1,
        have: 0,
    })?;
    let format = first >> 4;
    if format == SOUND_FORMAT_EX_HEADER {
        return enhanced::parse_audio_tag(body).map(AudioTag::Enhanced);
    }
    if format != SOUND_FORMAT_AAC {
        return Err(FlvError::Unsupported {
            track: T,
            codec: sound_format_name(format).to_string(),
        });
    }
    // E.4.2.1: for AAC, SoundRate, SoundSize and SoundType are fixed values the player
    // ignores; the AudioSpecificConfig is authoritative, so they are not checked.
    let packet_type = *body.get(1).ok_or(FlvError::Truncated {
        track: T,
        need: 2,
        have: body.len(),
    })?;
    let data = body.slice(2..);
    match packet_type {
        0 => Ok(AudioTag::SequenceHeader(data)),
        1 => Ok(AudioTag::Frame(data)),
        other => Err(FlvError::Invalid {
            track: T,
            offset: 1,
            why: format!("AACPacketType {other}"),
        }),
    }
}

/// A FourCC for a log line: quoted when printable, hex otherwise (peer bytes never reach a
/// log unescaped).
pub fn fourcc_name(f: &[u8]) -> String {
    if f.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("'{}'", String::from_utf8_lossy(f))
    } else {
        format!(
            "0x{}",
            f.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }
}

/// E.4.3.1 CodecID names.
fn video_codec_name(id: u8) -> String {
    match id {
        1 => "JPEG".into(),
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "On2 VP6".into(),
        5 => "On2 VP6 with alpha channel".into(),
        6 => "Screen video version 2".into(),
        // Not in the spec; some CDNs' FLV extensions use 12 for HEVC.
        12 => "codec id 12 (HEVC, non-standard FLV extension)".into(),
        other => format!("codec id {other}"),
    }
}

/// E.4.2.1 SoundFormat names.
fn sound_format_name(format: u8) -> &'static str {
    match format {
        0 => "Linear PCM, platform endian",
        1 => "ADPCM",
        2 => "MP3",
        3 => "Linear PCM, little endian",
        4 => "Nellymoser 16 kHz mono",
        5 => "Nellymoser 8 kHz mono",
        6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        11 => "Speex",
        14 => "MP3 8 kHz",
        15 => "Device-specific sound",
        _ => "reserved SoundFormat",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(b: &[u8]) -> Result<VideoTag, FlvError> {
        parse_video_tag(Bytes::copy_from_slice(b))
    }

    fn audio(b: &[u8]) -> Result<AudioTag, FlvError> {
        parse_audio_tag(Bytes::copy_from_slice(b))
    }

    fn unsupported(r: Result<impl std::fmt::Debug, FlvError>) -> String {
        match r {
            Err(FlvError::Unsupported { codec, .. }) => codec,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn avc_sequence_header_and_frames() {
        assert_eq!(
            video(&[0x17, 0, 0, 0, 0, 1, 0x64]).ok(),
            Some(VideoTag::SequenceHeader(Bytes::from_static(&[1, 0x64])))
        );
        assert_eq!(
            video(&[0x17, 1, 0, 0, 0x50, 0, 0, 0, 1, 0x65]).ok(),
            Some(VideoTag::Frame {
                keyframe: true,
                composition_time_ms: 80,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            })
        );
        // Negative composition time, inter frame.
        assert_eq!(
            video(&[0x27, 1, 0xff, 0xff, 0xd8, 0xaa]).ok(),
            Some(VideoTag::Frame {
                keyframe: false,
                composition_time_ms: -40,
                data: Bytes::from_static(&[0xaa]),
            })
        );
        assert_eq!(
            video(&[0x17, 2, 0, 0, 0]).ok(),
            Some(VideoTag::EndOfSequence)
        );
        assert_eq!(video(&[0x57, 0]).ok(), Some(VideoTag::Command));
    }

    #[test]
    fn frame_payload_is_a_slice_of_the_message() {
        let body = Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]);
        let Ok(VideoTag::Frame { data, .. }) = parse_video_tag(body.clone()) else {
            panic!("frame expected");
        };
        assert_eq!(data.as_ptr(), body[5..].as_ptr());
    }

    #[test]
    fn aac() {
        assert_eq!(
            audio(&[0xaf, 0, 0x12, 0x10]).ok(),
            Some(AudioTag::SequenceHeader(Bytes::from_static(&[0x12, 0x10])))
        );
        assert_eq!(
            audio(&[0xaf, 1, 0x21, 0x1b]).ok(),
            Some(AudioTag::Frame(Bytes::from_static(&[0x21, 0x1b])))
        );
        assert!(matches!(
            audio(&[0xaf, 2, 0]),
            Err(FlvError::Invalid { offset: 1, .. })
        ));
    }

    #[test]
    fn truncated_vs_invalid_vs_unsupported() {
        assert!(matches!(
            video(&[]),
            Err(FlvError::Truncated { need: 1, .. })
        ));
        assert!(matches!(
            video(&[0x17, 1, 0]),
            Err(FlvError::Truncated {
                need: 5,
                have: 3,
                ..
            })
        ));
        assert!(matches!(
            audio(&[0xaf]),
            Err(FlvError::Truncated { need: 2, .. })
        ));
        assert!(matches!(
            video(&[0x07, 1, 0, 0, 0]),
            Err(FlvError::Invalid { offset: 0, .. })
        ));
        assert!(matches!(
            video(&[0x17, 3, 0, 0, 0]),
            Err(FlvError::Invalid { offset: 1, .. })
        ));
        assert_eq!(unsupported(video(&[0x22, 0])), "Sorenson H.263");
        assert_eq!(unsupported(video(&[0x14, 0])), "On2 VP6");
        assert_eq!(unsupported(audio(&[0x2f, 0])), "MP3");
        assert_eq!(unsupported(audio(&[0xb6, 0])), "Speex");
    }

    #[test]
    fn enhanced_tags_go_to_the_enhanced_parser() {
        assert!(matches!(
            video(b"\x91hvc1\0\0\0\0"),
            Ok(VideoTag::Enhanced(ExVideoTag::Tracks { .. }))
        ));
        assert!(matches!(
            video(b"\x90hv"),
            Err(FlvError::Truncated { need: 5, .. })
        ));
        assert!(matches!(audio(b"\x90Opus"), Ok(AudioTag::Enhanced(_))));
        assert_eq!(fourcc_name(b"hvc1"), "'hvc1'");
        assert_eq!(fourcc_name(b"\x00\x01\xff\x02"), "0x0001ff02");
    }
}
