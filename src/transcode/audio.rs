//! `OpusToAac`: Opus packets from WebRTC (WHIP) publishers in, raw AAC-LC frames for the HLS
//! packager out, through FFmpeg's native `opus` decoder and `aac` encoder. Owns both codec
//! contexts, the sample FIFO between them and the output timeline. Synchronous and sans-IO:
//! it runs on a media thread, never on tokio, and never reads the clock (time is the pts the
//! caller gives it).

use std::sync::Arc;

use bytes::Bytes;
use ffmpeg::format::Sample;
use ffmpeg::format::sample::Type as SampleType;
use ffmpeg::packet::Mut as _;
use ffmpeg::{ChannelLayout, Rational, codec};
use ffmpeg_next as ffmpeg;

use crate::media::aac::parse_audio_specific_config;
use crate::media::{AudioParams, MediaError};

pub type Result<T, E = AudioError> = std::result::Result<T, E>;

/// RFC 7587 4.1: "The RTP timestamp is incremented with a 48000 Hz clock rate for all modes
/// of Opus and all sampling rates." FFmpeg's Opus decoder always outputs 48 kHz too, and the
/// AAC output keeps that rate, so one tick of every pts here is one sample.
pub const SAMPLE_RATE: u32 = 48_000;
/// PCM samples per AAC-LC frame.
pub const AAC_FRAME_SAMPLES: usize = 1024;
const CHANNELS: usize = 2;
/// RFC 6716 3.2.5: "the total duration contained within a packet MUST NOT exceed 120 ms".
const MAX_OPUS_PACKET_SAMPLES: usize = 5760;
/// The most one packet may decode to: FFmpeg's decoder adds the samples its SILK resampler
/// held back from the previous packet, which are far fewer than one AAC frame.
const MAX_DECODED_SAMPLES: usize = MAX_OPUS_PACKET_SAMPLES + AAC_FRAME_SAMPLES;
/// The shortest Opus frame (2.5 ms, RFC 6716 2.1.4). A gap (or overlap) at least this long is
/// a lost (or repeated) packet; a shorter offset between the pts and the count is not.
const MIN_OPUS_FRAME_SAMPLES: i64 = 120;

const DECODER: &str = "opus";
const ENCODER: &str = "aac";

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("FFmpeg has no native {0} codec")]
    NoCodec(&'static str),
    #[error(
        "AAC bitrate {0} b/s is outside 8000..=576000 (576 kb/s is the most AAC-LC frames can \
         carry at 48 kHz stereo)"
    )]
    Bitrate(u64),
    #[error("cannot open FFmpeg's {codec} codec: {source}")]
    Open {
        codec: &'static str,
        source: ffmpeg::Error,
    },
    #[error("FFmpeg's aac encoder {0}")]
    Encoder(String),
    #[error("the aac encoder's AudioSpecificConfig {asc:02x?} is unusable: {source}")]
    Config { asc: Vec<u8>, source: MediaError },
    #[error("empty Opus packet at pts {pts}")]
    EmptyPacket { pts: i64 },
    #[error(
        "Opus decoder refused the packet at pts {pts} ({bytes} bytes, TOC {toc:#04x}): {source}"
    )]
    Decode {
        pts: i64,
        bytes: usize,
        toc: u8,
        source: ffmpeg::Error,
    },
    #[error(
        "Opus decoder output {format:?}, {channels} channels, {rate} Hz, {samples} samples for \
         the packet at pts {pts}; only planar float, stereo, 48 kHz, at most 120 ms is handled"
    )]
    DecodedFormat {
        pts: i64,
        format: Sample,
        channels: u16,
        rate: u32,
        samples: usize,
    },
    #[error("AAC encoder failed on the frame at pts {pts}: {source}")]
    Encode { pts: i64, source: ffmpeg::Error },
    #[error("AAC encoder returned a packet without pts after the frame at pts {pts}")]
    NoTimestamp { pts: i64 },
    #[error("Opus packet at pts {pts} arrived after flush; a new stream needs a new OpusToAac")]
    Flushed { pts: i64 },
}

/// One raw AAC-LC frame (no ADTS header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AacFrame {
    /// Presentation time in 48 kHz ticks, on the timeline of the Opus pts: the first sample
    /// this frame's 2048-sample window starts at, which is also the first source sample that
    /// decoding it reproduces. See [`OpusToAac`] for the priming frame.
    pub pts: i64,
    pub data: Bytes,
}

/// What the timeline did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioStats {
    /// Times the timeline restarted at a packet's pts (gap, DTX or clock jump over one frame).
    pub restarts: u64,
    /// Samples the restarts discarded from the FIFO (less than one AAC frame each).
    pub dropped_samples: u64,
    /// Samples of silence put in for lost packets (gaps of 2.5 ms up to one AAC frame).
    pub silence_samples: u64,
    /// Samples skipped from packets that started up to one AAC frame before the count
    /// (repeated packets, or ones after a bad packet that still decoded).
    pub overlap_samples: u64,
}

/// Opus (RFC 7587 payloads, any frame size, mono or stereo) to AAC-LC 48 kHz stereo.
///
/// Timestamps: an AAC frame's pts is the pts of the first source sample that decoding it
/// reproduces, i.e. the time to present its decoded samples at. FFmpeg's aac encoder delays
/// its output by [`OpusToAac::encoder_delay`] samples (1024): the first frame after the first
/// packet is priming and carries pts `first_pts - 1024`; it decodes to (near) silence, and it
/// must be kept, since the decoder overlaps it with the next frame to rebuild the first real
/// samples. We keep FFmpeg's own labelling rather than shifting every pts by +1024 so that
/// audio presented at its pts lines up with video presented at its pts, with no edit list;
/// the price is one frame that starts 21.3 ms before the first Opus packet.
///
/// Output pts count samples from the first packet's pts. A packet that arrives more than one
/// AAC frame away from where the count says it should be (DTX, a long loss, a clock jump)
/// restarts the count at its pts, discarding the partial frame in the FIFO; the encoder runs
/// on, so the frames before the restart still come out with their old pts. A shorter forward
/// gap (a lost packet) is filled with silence, and a packet that overlaps the count by up to
/// one frame loses its overlapping samples, so that later audio keeps its pts either way.
pub struct OpusToAac {
    decoder: ffmpeg::decoder::Audio,
    encoder: ffmpeg::encoder::Audio,
    /// Reused for every Opus packet; points at the caller's bytes only during `send_packet`.
    packet: ffmpeg::Packet,
    /// Reused for every `receive_frame` on the decoder.
    decoded: ffmpeg::frame::Audio,
    /// One AAC input frame (planar float, stereo, 1024 samples), refilled for every frame.
    input: ffmpeg::frame::Audio,
    /// Reused for every `receive_packet` on the encoder.
    encoded: ffmpeg::Packet,
    params: Arc<AudioParams>,
    /// Decoded samples not yet sent to the encoder, one plane per channel. Emptied down to less
    /// than one AAC frame after every packet, so it holds at most one frame of leftovers, one
    /// frame of gap silence and one packet's worth (`MAX_DECODED_SAMPLES`).
    fifo: [Vec<f32>; CHANNELS],
    /// Pts of the FIFO's first sample; `None` until the first packet decodes.
    fifo_pts: Option<i64>,
    encoder_delay: i64,
    stats: AudioStats,
    flushed: bool,
    /// Pts of the last frame sent to the encoder, for error context.
    last_frame_pts: i64,
}

impl OpusToAac {
    /// AAC-LC, 48 kHz, stereo, `bitrate_bps` (e.g. 128_000).
    pub fn new(bitrate_bps: u64) -> Result<Self> {
        if !(8_000..=576_000).contains(&bitrate_bps) {
            return Err(AudioError::Bitrate(bitrate_bps));
        }
        crate::av::init();
        let decoder = open_decoder()?;
        let encoder = open_encoder(bitrate_bps)?;

        let asc = extradata(&encoder).to_vec();
        let params =
            parse_audio_specific_config(Bytes::copy_from_slice(&asc)).map_err(|source| {
                AudioError::Config {
                    asc: asc.clone(),
                    source,
                }
            })?;
        let expected = (2, SAMPLE_RATE, CHANNELS as u8, AAC_FRAME_SAMPLES as u32);
        let got = (
            params.object_type,
            params.sample_rate,
            params.channels,
            params.samples_per_frame,
        );
        if got != expected || encoder.frame_size() != AAC_FRAME_SAMPLES as u32 {
            return Err(AudioError::Encoder(format!(
                "was asked for AAC-LC 48 kHz stereo; ASC {asc:02x?} says (object type, rate, \
                 channels, samples per frame) {got:?}, and its frame size is {}",
                encoder.frame_size()
            )));
        }
        // SAFETY: ffmpeg-next has no getter for initial_padding; the context is open and
        // owned by `encoder`, and the field is a plain int that the encoder set at open.
        let encoder_delay = i64::from(unsafe { (*encoder.as_ptr()).initial_padding });

        let mut input = ffmpeg::frame::Audio::new(
            Sample::F32(SampleType::Planar),
            AAC_FRAME_SAMPLES,
            ChannelLayout::STEREO,
        );
        input.set_rate(SAMPLE_RATE);
        if input.planes() != CHANNELS || input.samples() != AAC_FRAME_SAMPLES {
            return Err(AudioError::Encoder(
                "input frame could not be allocated".into(),
            ));
        }
        let fifo_capacity = 2 * AAC_FRAME_SAMPLES + MAX_DECODED_SAMPLES;
        Ok(Self {
            decoder,
            encoder,
            packet: ffmpeg::Packet::empty(),
            decoded: ffmpeg::frame::Audio::empty(),
            input,
            encoded: ffmpeg::Packet::empty(),
            params: Arc::new(params),
            fifo: [
                Vec::with_capacity(fifo_capacity),
                Vec::with_capacity(fifo_capacity),
            ],
            fifo_pts: None,
            encoder_delay,
            stats: AudioStats::default(),
            flushed: false,
            last_frame_pts: 0,
        })
    }

    /// The output's AudioSpecificConfig and what it says.
    pub fn params(&self) -> &Arc<AudioParams> {
        &self.params
    }

    /// Samples by which the encoder delays its output (FFmpeg's `initial_padding`, 1024): the
    /// first frame's pts is the first packet's pts minus this.
    pub fn encoder_delay(&self) -> i64 {
        self.encoder_delay
    }

    pub fn stats(&self) -> AudioStats {
        self.stats
    }

    /// One Opus packet (RFC 7587 payload, any frame size 2.5..120 ms, mono or stereo TOC)
    /// whose first sample is at `pts` (48 kHz ticks). Appends the AAC frames that became
    /// complete, each with its own pts.
    ///
    /// An error concerns this packet only: the next good packet decodes as if this one had
    /// been lost.
    pub fn push(&mut self, opus: &[u8], pts: i64, out: &mut Vec<AacFrame>) -> Result<()> {
        if self.flushed {
            return Err(AudioError::Flushed { pts });
        }
        let toc = self.send_opus(opus, pts)?;
        // The packet's pts places its first decoded frame; any later frame of the same
        // packet follows it sample for sample.
        let mut skip = None;
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::EAGAIN,
                })
                | Err(ffmpeg::Error::Eof) => break,
                Err(source) => {
                    return Err(AudioError::Decode {
                        pts,
                        bytes: opus.len(),
                        toc,
                        source,
                    });
                }
            }
            check_decoded(&self.decoded, pts)?;
            let to_skip = match skip {
                Some(n) => n,
                None => self.align(pts),
            };
            skip = Some(self.append_decoded(to_skip));
        }
        self.encode_ready(out)
    }

    /// End of stream: encodes what is buffered (the last frame padded with silence) and
    /// drains the encoder. Later pushes are refused; a second flush does nothing.
    pub fn flush(&mut self, out: &mut Vec<AacFrame>) -> Result<()> {
        if self.flushed {
            return Ok(());
        }
        self.flushed = true;
        let pts = self.fifo_end().unwrap_or(self.last_frame_pts);
        // The decoder holds back a few samples when SILK's resampler is in use; they belong
        // to the stream's last packet.
        let drained = self.decoder.send_eof().and_then(|()| {
            loop {
                match self.decoder.receive_frame(&mut self.decoded) {
                    Ok(()) => {}
                    Err(ffmpeg::Error::Eof)
                    | Err(ffmpeg::Error::Other {
                        errno: ffmpeg::error::EAGAIN,
                    }) => return Ok(()),
                    Err(e) => return Err(e),
                }
                if check_decoded(&self.decoded, pts).is_ok() && self.fifo_pts.is_some() {
                    self.append_decoded(0);
                }
            }
        });
        // A decoder that fails to drain loses those few samples, not the stream's end.
        if let Err(e) = drained {
            tracing::debug!(pts, error = %e, "Opus decoder failed to drain at end of stream");
        }

        let len = self.fifo[0].len();
        if len > 0 {
            let padded = len.next_multiple_of(AAC_FRAME_SAMPLES);
            for plane in &mut self.fifo {
                plane.resize(padded, 0.0);
            }
        }
        self.encode_ready(out)?;
        let pts = self.last_frame_pts;
        self.encoder
            .send_eof()
            .map_err(|source| AudioError::Encode { pts, source })?;
        self.receive_encoded(out)
    }

    /// Sends one packet to the decoder and returns its TOC byte, for error context.
    fn send_opus(&mut self, opus: &[u8], pts: i64) -> Result<u8> {
        // An empty packet would read as end of stream to FFmpeg; refuse it here instead.
        let Some(&toc) = opus.first() else {
            return Err(AudioError::EmptyPacket { pts });
        };
        let decode_err = |source| AudioError::Decode {
            pts,
            bytes: opus.len(),
            toc,
            source,
        };
        let size = i32::try_from(opus.len()).map_err(|_| decode_err(ffmpeg::Error::InvalidData))?;
        self.packet.set_pts(Some(pts));
        self.packet.set_dts(Some(pts));
        let raw = self.packet.as_mut_ptr();
        // SAFETY: ffmpeg-next cannot point a packet at borrowed bytes. `raw` is our own packet
        // with no `buf`, so FFmpeg treats the data as not reference-counted: send_packet copies
        // it into a padded buffer of its own before returning and never writes through the
        // pointer, which is cleared right after while `opus` is still borrowed.
        unsafe {
            (*raw).data = opus.as_ptr().cast_mut();
            (*raw).size = size;
        }
        let sent = self.decoder.send_packet(&self.packet);
        // SAFETY: as above.
        unsafe {
            (*raw).data = std::ptr::null_mut();
            (*raw).size = 0;
        }
        sent.map_err(decode_err)?;
        Ok(toc)
    }

    /// Pts just after the FIFO's last sample: where the next packet should start.
    fn fifo_end(&self) -> Option<i64> {
        let len = i64::try_from(self.fifo[0].len()).ok()?;
        self.fifo_pts.map(|start| start.saturating_add(len))
    }

    /// Places a packet that starts at `pts` on the timeline, before its samples go in, and
    /// returns how many of its first samples to skip.
    fn align(&mut self, pts: i64) -> usize {
        let ahead = match self.fifo_end() {
            Some(expected) => pts.saturating_sub(expected),
            None => {
                self.fifo_pts = Some(pts);
                return 0;
            }
        };
        if ahead.unsigned_abs() > AAC_FRAME_SAMPLES as u64 {
            self.stats.restarts += 1;
            self.stats.dropped_samples += self.fifo[0].len() as u64;
            for plane in &mut self.fifo {
                plane.clear();
            }
            self.fifo_pts = Some(pts);
            return 0;
        }
        // From here on |ahead| is at most one AAC frame.
        if ahead >= MIN_OPUS_FRAME_SAMPLES {
            let silence = ahead as usize;
            for plane in &mut self.fifo {
                plane.resize(plane.len() + silence, 0.0);
            }
            self.stats.silence_samples += silence as u64;
        } else if ahead <= -MIN_OPUS_FRAME_SAMPLES {
            // The count is ahead of this packet (a duplicate, or a bad packet that still
            // decoded): the samples already counted for these pts stay, and the packet's own
            // go, so that everything after keeps its pts.
            return ahead.unsigned_abs() as usize;
        }
        // Less than the shortest Opus frame either way is not a lost or repeated packet:
        // the count stands.
        0
    }

    /// Appends `decoded`, already checked by `check_decoded`, to the FIFO, less its first
    /// `skip` samples; returns how many of those remain to skip in the next frame.
    fn append_decoded(&mut self, skip: usize) -> usize {
        let samples = self.decoded.samples();
        self.stats.overlap_samples += skip.min(samples) as u64;
        for (ch, plane) in self.fifo.iter_mut().enumerate() {
            let decoded = self.decoded.plane::<f32>(ch);
            plane.extend_from_slice(decoded.get(skip..).unwrap_or_default());
        }
        skip.saturating_sub(samples)
    }

    /// Encodes every whole AAC frame in the FIFO and keeps the remainder.
    fn encode_ready(&mut self, out: &mut Vec<AacFrame>) -> Result<()> {
        let mut used = 0;
        let mut result = Ok(());
        while self.fifo[0].len() - used >= AAC_FRAME_SAMPLES {
            // A frame exists only after `align` set the pts.
            let pts = self.fifo_pts.unwrap_or_default();
            result = self.encode_frame(used, pts, out);
            used += AAC_FRAME_SAMPLES;
            self.fifo_pts = Some(pts.saturating_add(AAC_FRAME_SAMPLES as i64));
            if result.is_err() {
                break;
            }
        }
        // Even after an error the samples go: keeping them would only fail again.
        for plane in &mut self.fifo {
            plane.drain(..used);
        }
        result
    }

    fn encode_frame(&mut self, from: usize, pts: i64, out: &mut Vec<AacFrame>) -> Result<()> {
        let encode_err = |source| AudioError::Encode { pts, source };
        // SAFETY: ffmpeg-next has no av_frame_make_writable. `input` is a valid frame that we
        // allocated; the call only reallocates its buffers (same format and size) if the
        // encoder still holds a reference to them, so writing below never races the encoder.
        let writable = unsafe { ffmpeg::ffi::av_frame_make_writable(self.input.as_mut_ptr()) };
        if writable < 0 {
            return Err(encode_err(ffmpeg::Error::from(writable)));
        }
        for (ch, plane) in self.fifo.iter().enumerate() {
            self.input
                .plane_mut::<f32>(ch)
                .copy_from_slice(&plane[from..from + AAC_FRAME_SAMPLES]);
        }
        self.input.set_pts(Some(pts));
        self.last_frame_pts = pts;
        self.encoder.send_frame(&self.input).map_err(encode_err)?;
        self.receive_encoded(out)
    }

    fn receive_encoded(&mut self, out: &mut Vec<AacFrame>) -> Result<()> {
        let pts = self.last_frame_pts;
        loop {
            match self.encoder.receive_packet(&mut self.encoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::EAGAIN,
                })
                | Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => return Err(AudioError::Encode { pts, source }),
            }
            // The encoder's pts already carries its delay: FFmpeg's audio frame queue labels
            // its first input frame `pts - initial_padding` and every packet with the label of
            // the samples it decodes to.
            let frame_pts = self.encoded.pts().ok_or(AudioError::NoTimestamp { pts })?;
            let data = Bytes::copy_from_slice(self.encoded.data().unwrap_or_default());
            out.push(AacFrame {
                pts: frame_pts,
                data,
            });
        }
    }
}

/// Opens the native Opus decoder for a stereo output whatever the packets' TOC says.
fn open_decoder() -> Result<ffmpeg::decoder::Audio> {
    let open_err = |source| AudioError::Open {
        codec: DECODER,
        source,
    };
    let codec = ffmpeg::decoder::find_by_name(DECODER).ok_or(AudioError::NoCodec(DECODER))?;
    let mut ctx = codec::Context::new_with_codec(codec);
    // Without extradata (RTP carries no OpusHead) FFmpeg picks one output channel unless the
    // context asks for more, and then downmixes stereo packets; asking for stereo instead
    // upmixes mono packets, so the output layout never changes mid-stream.
    // SAFETY: ffmpeg-next has no setters on an unopened decoder. The context is ours, not yet
    // opened, and `ch_layout` is zeroed (no heap map) so overwriting it leaks nothing.
    unsafe {
        let raw = ctx.as_mut_ptr();
        (*raw).sample_rate = SAMPLE_RATE as i32;
        ffmpeg::ffi::av_channel_layout_default(&mut (*raw).ch_layout, CHANNELS as i32);
        (*raw).request_sample_fmt = Sample::F32(SampleType::Planar).into();
    }
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(Rational::new(1, SAMPLE_RATE as i32));
    dec.open_as(codec).and_then(|o| o.audio()).map_err(open_err)
}

fn open_encoder(bitrate_bps: u64) -> Result<ffmpeg::encoder::Audio> {
    let open_err = |source| AudioError::Open {
        codec: ENCODER,
        source,
    };
    let codec = ffmpeg::encoder::find_by_name(ENCODER).ok_or(AudioError::NoCodec(ENCODER))?;
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(open_err)?;
    enc.set_rate(SAMPLE_RATE as i32);
    enc.set_format(Sample::F32(SampleType::Planar));
    enc.set_channel_layout(ChannelLayout::STEREO);
    // The range was checked by the caller and fits every usize.
    enc.set_bit_rate(bitrate_bps as usize);
    enc.set_time_base(Rational::new(1, SAMPLE_RATE as i32));
    // The ASC goes into the fMP4 `esds`, so it must exist before the first frame.
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    enc.open_as(codec).map_err(open_err)
}

/// Checks that a decoded frame is what the FIFO holds, so a surprise is an error, not noise.
fn check_decoded(frame: &ffmpeg::frame::Audio, pts: i64) -> Result<()> {
    let (format, channels, rate, samples) = (
        frame.format(),
        frame.channels(),
        frame.rate(),
        frame.samples(),
    );
    let planes_ok = frame.planes() == CHANNELS;
    if format != Sample::F32(SampleType::Planar)
        || usize::from(channels) != CHANNELS
        || !planes_ok
        || rate != SAMPLE_RATE
        || samples > MAX_DECODED_SAMPLES
    {
        return Err(AudioError::DecodedFormat {
            pts,
            format,
            channels,
            rate,
            samples,
        });
    }
    Ok(())
}

/// The global header the encoder wrote at open: the AudioSpecificConfig.
fn extradata(encoder: &ffmpeg::encoder::Audio) -> &[u8] {
    // SAFETY: ffmpeg-next has no extradata getter. An opened encoder's extradata is either
    // null or an av_malloc'd buffer of `extradata_size` bytes that FFmpeg leaves untouched
    // until the context is freed, which the returned borrow of `encoder` prevents.
    unsafe {
        let raw = encoder.as_ptr();
        match usize::try_from((*raw).extradata_size) {
            Ok(len) if len > 0 && !(*raw).extradata.is_null() => {
                std::slice::from_raw_parts((*raw).extradata, len)
            }
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests;
