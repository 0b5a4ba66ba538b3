//! Enhanced RTMP v2 tag parsing (veovera, "Enhanced RTMP", v2): ExVideoTagHeader and
//! ExAudioTagHeader with their FourCC, packet types, ModEx (the nanosecond timestamp offset)
//! and multitrack bodies with per-track ids. Sans-IO and zero-copy like `flv.rs`, whose error
//! type it shares: `Truncated` when the body ends before a field, `Invalid` naming the field
//! and its byte offset. It parses; what the node ingests is the session's decision.

use super::tag_error::FlvError;
use crate::media::TrackKind;
use bytes::Bytes;

/// "IsExHeader": bit 7 of a video tag's first byte.
pub const VIDEO_EX_HEADER: u8 = 0x80;
/// "SoundFormat.ExHeader = 9": the audio tag's first nibble announcing an ExAudioTagHeader.
pub const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// VideoPacketType / AudioPacketType values the two headers share the meaning of.
const PACKET_SEQUENCE_START: u8 = 0;
const PACKET_CODED_FRAMES: u8 = 1;
const PACKET_SEQUENCE_END: u8 = 2;
const VIDEO_CODED_FRAMES_X: u8 = 3;
const VIDEO_METADATA: u8 = 4;
const VIDEO_MPEG2TS_SEQUENCE_START: u8 = 5;
const VIDEO_MULTITRACK: u8 = 6;
const AUDIO_MULTICHANNEL_CONFIG: u8 = 4;
const AUDIO_MULTITRACK: u8 = 5;
/// ModEx is 7 for both video and audio.
const PACKET_MOD_EX: u8 = 7;
/// "VideoFrameType.Command = 5".
const FRAME_COMMAND: u8 = 5;
/// "ModExType.TimestampOffsetNano = 0".
const MOD_EX_TIMESTAMP_OFFSET_NANO: u8 = 0;

/// AvMultitrackType: how the tracks of a multitrack tag are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multitrack {
    /// "OneTrack = 0": one track, with its id, and no size field.
    OneTrack,
    /// "ManyTracks = 1": several tracks of the header's one codec, each with a UI24 size.
    ManyTracks,
    /// "ManyTracksManyCodecs = 2": each track names its own FourCC.
    ManyTracksManyCodecs,
}

impl Multitrack {
    pub fn name(self) -> &'static str {
        match self {
            Multitrack::OneTrack => "OneTrack",
            Multitrack::ManyTracks => "ManyTracks",
            Multitrack::ManyTracksManyCodecs => "ManyTracksManyCodecs",
        }
    }
}

/// Video FourCCs of the spec's VideoFourCc table that this node names; others are kept raw
/// so that the refusal can name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoFourCc {
    Avc,
    Hevc,
    Av1,
    Vp9,
    Other([u8; 4]),
}

impl VideoFourCc {
    fn from_bytes(b: [u8; 4]) -> Self {
        match &b {
            b"avc1" => VideoFourCc::Avc,
            b"hvc1" => VideoFourCc::Hevc,
            b"av01" => VideoFourCc::Av1,
            b"vp09" => VideoFourCc::Vp9,
            _ => VideoFourCc::Other(b),
        }
    }

    /// "if (videoFourCc == AVC or HEVC) compositionTimeOffset = SI24" in CodedFrames: the
    /// other codecs carry no composition time offset.
    fn has_composition_time(self) -> bool {
        matches!(self, VideoFourCc::Avc | VideoFourCc::Hevc)
    }
}

/// One track's part of an ExVideoTagBody.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoPacket {
    /// The codec's decoder configuration record (avcC, hvcC, av1C, vpcC).
    SequenceStart(Bytes),
    /// CodedFrames or CodedFramesX (whose composition time is implicitly 0).
    CodedFrames {
        composition_time_ms: i32,
        data: Bytes,
    },
    SequenceEnd,
    /// AMF-encoded metadata (colorInfo for HDR).
    Metadata(Bytes),
    /// An AV1VideoDescriptor for AV1 carried as in MPEG-2 TS.
    Mpeg2TsSequenceStart(Bytes),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTrack {
    /// 0 outside multitrack tags.
    pub track_id: u8,
    pub fourcc: VideoFourCc,
    pub packet: VideoPacket,
}

/// A parsed Enhanced RTMP video tag body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExVideoTag {
    /// VideoFrameType Command: a UI8 command instead of a body.
    Command(u8),
    Tracks {
        /// VideoFrameType 1 (key) or 4 (generated key).
        keyframe: bool,
        /// ModEx TimestampOffsetNano: added to the tag's millisecond timestamp.
        timestamp_offset_ns: u32,
        /// `None` for a plain (single-track) tag.
        multitrack: Option<Multitrack>,
        /// One entry unless `multitrack` says several.
        tracks: Vec<VideoTrack>,
    },
}

/// One track's part of an ExAudioTagBody.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioPacket {
    SequenceStart(Bytes),
    CodedFrames(Bytes),
    SequenceEnd,
    /// MultichannelConfig: the channel order and count (the mapping after them is not kept).
    MultichannelConfig {
        order: u8,
        channels: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioTrack {
    pub track_id: u8,
    pub fourcc: [u8; 4],
    pub packet: AudioPacket,
}

/// A parsed Enhanced RTMP audio tag body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExAudioTag {
    pub timestamp_offset_ns: u32,
    pub multitrack: Option<Multitrack>,
    pub tracks: Vec<AudioTrack>,
}

/// The header fields both ExVideoTagHeader and ExAudioTagHeader have after their first byte.
struct ExHeader {
    packet_type: u8,
    timestamp_offset_ns: u32,
    multitrack: Option<Multitrack>,
    /// The header's FourCC; `None` for ManyTracksManyCodecs, where each track has one.
    fourcc: Option<[u8; 4]>,
}

/// One track's bytes as the multitrack loop cut them.
struct RawTrack {
    track_id: u8,
    fourcc: [u8; 4],
    body: Bytes,
    /// Offset of `body` in the tag, for errors.
    at: usize,
    /// Whether `body` runs to the end of the tag: then a short body is a truncated tag;
    /// otherwise its UI24 size says it is complete, and a short body is invalid.
    last: bool,
}

impl RawTrack {
    /// The error for a body shorter than the `need` bytes `field` takes.
    fn short(&self, track: TrackKind, need: usize, field: &str) -> FlvError {
        if self.last {
            FlvError::Truncated {
                track,
                need: self.at + need,
                have: self.at + self.body.len(),
            }
        } else {
            FlvError::Invalid {
                track,
                offset: self.at,
                why: format!(
                    "track {} of {} bytes is too short for {field}",
                    self.track_id,
                    self.body.len()
                ),
            }
        }
    }
}

/// A big-endian cursor over a tag body whose errors carry the field name and its offset.
struct Cursor<'a> {
    body: &'a Bytes,
    pos: usize,
    track: TrackKind,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FlvError> {
        let end = self.pos.saturating_add(n);
        let out = self.body.get(self.pos..end).ok_or(FlvError::Truncated {
            track: self.track,
            need: end,
            have: self.body.len(),
        })?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FlvError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FlvError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<u32, FlvError> {
        let b = self.take(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    fn fourcc(&mut self) -> Result<[u8; 4], FlvError> {
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    fn rest(&mut self) -> Bytes {
        let out = self.body.slice(self.pos..);
        self.pos = self.body.len();
        out
    }

    fn invalid(&self, offset: usize, why: String) -> FlvError {
        FlvError::Invalid {
            track: self.track,
            offset,
            why,
        }
    }

    /// The header after the first byte's packet type: ModEx packets, then Multitrack, then
    /// the FourCC.
    fn ex_header(
        &mut self,
        mut packet_type: u8,
        multitrack_type: u8,
    ) -> Result<ExHeader, FlvError> {
        let mut timestamp_offset_ns = 0;
        // "while (videoPacketType == VideoPacketType.ModEx)": ModEx packets chain, each
        // ending with the next packet type.
        while packet_type == PACKET_MOD_EX {
            let size_at = self.pos;
            // "modExDataSize = UI8 + 1; if (modExDataSize == 256) modExDataSize = UI16 + 1"
            let mut size = usize::from(self.u8()?) + 1;
            if size == 256 {
                size = usize::from(self.u16()?) + 1;
            }
            let data = self.take(size)?;
            let types = self.u8()?;
            packet_type = types & 0x0f;
            if types >> 4 == MOD_EX_TIMESTAMP_OFFSET_NANO {
                // "videoTimestampNanoOffset = bytesToUI24(modExData)".
                let [a, b, c, ..] = *data else {
                    return Err(self.invalid(
                        size_at,
                        format!("ModEx TimestampOffsetNano with {size} data bytes, need 3"),
                    ));
                };
                timestamp_offset_ns = u32::from_be_bytes([0, a, b, c]);
            }
            // Other ModExTypes are reserved: their data is skipped, as the size lets us.
        }
        let mut multitrack = None;
        if packet_type == multitrack_type {
            let at = self.pos;
            let b = self.u8()?;
            packet_type = b & 0x0f;
            multitrack = Some(match b >> 4 {
                0 => Multitrack::OneTrack,
                1 => Multitrack::ManyTracks,
                2 => Multitrack::ManyTracksManyCodecs,
                other => return Err(self.invalid(at, format!("reserved AvMultitrackType {other}"))),
            });
            if packet_type == multitrack_type || packet_type == PACKET_MOD_EX {
                return Err(self.invalid(
                    at,
                    format!("packet type {packet_type} inside a Multitrack packet"),
                ));
            }
        }
        // "if (videoMultitrackType != AvMultitrackType.ManyTracksManyCodecs)
        //  videoFourCc = FOURCC" (and always outside multitrack).
        let fourcc = if multitrack == Some(Multitrack::ManyTracksManyCodecs) {
            None
        } else {
            Some(self.fourcc()?)
        };
        Ok(ExHeader {
            packet_type,
            timestamp_offset_ns,
            multitrack,
            fourcc,
        })
    }

    /// Splits the body into tracks per the multitrack loop of ExVideoTagBody /
    /// ExAudioTagBody; a tag that is not multitrack is one track with id 0.
    fn tracks(&mut self, header: &ExHeader) -> Result<Vec<RawTrack>, FlvError> {
        let Some(multitrack) = header.multitrack else {
            let at = self.pos;
            return Ok(vec![RawTrack {
                track_id: 0,
                // ex_header reads the FourCC whenever the tag is not ManyTracksManyCodecs,
                // which is multitrack.
                fourcc: header.fourcc.unwrap_or_default(),
                body: self.rest(),
                at,
                last: true,
            }]);
        };
        let mut tracks = Vec::new();
        loop {
            let fourcc = match header.fourcc {
                Some(f) => f,
                None => self.fourcc()?,
            };
            let track_id = self.u8()?;
            if multitrack == Multitrack::OneTrack {
                let at = self.pos;
                tracks.push(RawTrack {
                    track_id,
                    fourcc,
                    body: self.rest(),
                    at,
                    last: true,
                });
                return Ok(tracks);
            }
            // "sizeOfVideoTrack = UI24": the track's body, so a reader can skip it.
            let size = self.u24()? as usize;
            let at = self.pos;
            self.take(size)?;
            let last = self.pos == self.body.len();
            tracks.push(RawTrack {
                track_id,
                fourcc,
                body: self.body.slice(at..at + size),
                at,
                last,
            });
            if last {
                return Ok(tracks);
            }
        }
    }
}

/// Parses a video tag body whose first byte has IsExHeader set.
pub fn parse_video_tag(body: Bytes) -> Result<ExVideoTag, FlvError> {
    let mut c = Cursor {
        body: &body,
        pos: 0,
        track: TrackKind::Video,
    };
    let first = c.u8()?;
    if first & VIDEO_EX_HEADER == 0 {
        return Err(c.invalid(0, "IsExHeader is not set".into()));
    }
    // "videoFrameType = UB[3] as VideoFrameType; videoPacketType = UB[4]".
    let frame_type = (first >> 4) & 0b111;
    let packet_type = first & 0x0f;
    // "if (videoPacketType != VideoPacketType.Metadata && videoFrameType ==
    //  VideoFrameType.Command) { videoCommand = UI8 ... }": no FourCC, no body.
    if packet_type != VIDEO_METADATA && frame_type == FRAME_COMMAND {
        return Ok(ExVideoTag::Command(c.u8()?));
    }
    // VideoFrameType 5 (Command) reaches here only with Metadata, which has no picture.
    let keyframe = match frame_type {
        1 | 4 => true,
        2 | 3 | FRAME_COMMAND => false,
        other => return Err(c.invalid(0, format!("reserved VideoFrameType {other}"))),
    };
    let header = c.ex_header(packet_type, VIDEO_MULTITRACK)?;
    let mut tracks = Vec::new();
    for raw in c.tracks(&header)? {
        let fourcc = VideoFourCc::from_bytes(raw.fourcc);
        let packet = video_packet(header.packet_type, fourcc, &raw)?;
        tracks.push(VideoTrack {
            track_id: raw.track_id,
            fourcc,
            packet,
        });
    }
    Ok(ExVideoTag::Tracks {
        keyframe,
        timestamp_offset_ns: header.timestamp_offset_ns,
        multitrack: header.multitrack,
        tracks,
    })
}

fn video_packet(
    packet_type: u8,
    fourcc: VideoFourCc,
    raw: &RawTrack,
) -> Result<VideoPacket, FlvError> {
    let body = raw.body.clone();
    Ok(match packet_type {
        PACKET_SEQUENCE_START => VideoPacket::SequenceStart(body),
        PACKET_SEQUENCE_END => VideoPacket::SequenceEnd,
        VIDEO_METADATA => VideoPacket::Metadata(body),
        VIDEO_MPEG2TS_SEQUENCE_START => VideoPacket::Mpeg2TsSequenceStart(body),
        VIDEO_CODED_FRAMES_X => VideoPacket::CodedFrames {
            composition_time_ms: 0,
            data: body,
        },
        PACKET_CODED_FRAMES if fourcc.has_composition_time() => {
            if body.len() < 3 {
                return Err(raw.short(TrackKind::Video, 3, "compositionTimeOffset"));
            }
            let raw = u32::from_be_bytes([0, body[0], body[1], body[2]]);
            // SI24: shift the sign bit to the top of an i32 and back.
            let composition_time_ms = ((raw << 8) as i32) >> 8;
            VideoPacket::CodedFrames {
                composition_time_ms,
                data: body.slice(3..),
            }
        }
        PACKET_CODED_FRAMES => VideoPacket::CodedFrames {
            composition_time_ms: 0,
            data: body,
        },
        other => {
            return Err(FlvError::Invalid {
                track: TrackKind::Video,
                offset: 0,
                why: format!("reserved VideoPacketType {other}"),
            });
        }
    })
}

/// Parses an audio tag body whose SoundFormat is ExHeader (9).
pub fn parse_audio_tag(body: Bytes) -> Result<ExAudioTag, FlvError> {
    let mut c = Cursor {
        body: &body,
        pos: 0,
        track: TrackKind::Audio,
    };
    let first = c.u8()?;
    if first >> 4 != SOUND_FORMAT_EX_HEADER {
        return Err(c.invalid(0, format!("SoundFormat {} is not ExHeader", first >> 4)));
    }
    let header = c.ex_header(first & 0x0f, AUDIO_MULTITRACK)?;
    let mut tracks = Vec::new();
    for raw in c.tracks(&header)? {
        let packet = match header.packet_type {
            PACKET_SEQUENCE_START => AudioPacket::SequenceStart(raw.body.clone()),
            PACKET_CODED_FRAMES => AudioPacket::CodedFrames(raw.body.clone()),
            PACKET_SEQUENCE_END => AudioPacket::SequenceEnd,
            // "audioChannelOrder = UI8 as AudioChannelOrder; channelCount = UI8", then a
            // mapping this node does not use.
            AUDIO_MULTICHANNEL_CONFIG => match *raw.body {
                [order, channels, ..] => AudioPacket::MultichannelConfig { order, channels },
                _ => return Err(raw.short(TrackKind::Audio, 2, "channelCount")),
            },
            other => {
                return Err(c.invalid(0, format!("reserved AudioPacketType {other}")));
            }
        };
        tracks.push(AudioTrack {
            track_id: raw.track_id,
            fourcc: raw.fourcc,
            packet,
        });
    }
    Ok(ExAudioTag {
        timestamp_offset_ns: header.timestamp_offset_ns,
        multitrack: header.multitrack,
        tracks,
    })
}

#[cfg(test)]
mod tests;
