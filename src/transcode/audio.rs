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
        crate::transcode::decode::init_ffmpeg();
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
mod tests {
    use ffmpeg::Dictionary;

    use super::*;

    /// An arbitrary first pts, as an RTP clock gives: nothing may assume a stream starts at 0.
    const START: i64 = 7 * 48_000 + 123;
    const RATE: f64 = SAMPLE_RATE as f64;
    const FRAME: i64 = AAC_FRAME_SAMPLES as i64;

    #[derive(Clone, Copy, Debug)]
    enum Tone {
        Sine {
            hz: f64,
            amp: f64,
        },
        /// A linear sweep, 200 Hz to 5 kHz over 3 s: unlike a sine, no two lags look alike.
        Sweep {
            amp: f64,
        },
    }

    impl Tone {
        /// Source sample `i`; silence before the source starts.
        fn at(self, i: i64) -> f64 {
            if i < 0 {
                return 0.0;
            }
            let t = i as f64 / RATE;
            let phase = match self {
                Tone::Sine { hz, .. } => hz * t,
                Tone::Sweep { .. } => 200.0 * t + (5000.0 - 200.0) * t * t / (2.0 * 3.0),
            };
            let amp = match self {
                Tone::Sine { amp, .. } | Tone::Sweep { amp } => amp,
            };
            amp * (std::f64::consts::TAU * phase).sin()
        }
    }

    const SINE: Tone = Tone::Sine {
        hz: 1000.0,
        amp: 0.5,
    };
    /// Lower and phase-inverted, so a swapped, mixed or mid/side-confused channel shows.
    const SINE_RIGHT: Tone = Tone::Sine {
        hz: 1000.0,
        amp: -0.25,
    };

    /// How the test's libopus encoder runs.
    #[derive(Clone, Copy, Debug)]
    struct Opus {
        channels: usize,
        frame_ms: &'static str,
        bitrate: usize,
        application: &'static str,
    }

    const STEREO: Opus = Opus {
        channels: 2,
        frame_ms: "20",
        bitrate: 128_000,
        application: "audio",
    };
    const MONO: Opus = Opus {
        channels: 1,
        bitrate: 64_000,
        ..STEREO
    };

    struct Encoded {
        /// (pts, payload); pts count samples from START, as RTP timestamps do.
        packets: Vec<(i64, Vec<u8>)>,
        frame_samples: i64,
        /// libopus's lookahead (its initial_padding): audio decoded at pts t is the source's
        /// sample t - START - lookahead. RTP has no pre-skip, so a WHIP stream carries it too.
        lookahead: i64,
        source_samples: i64,
    }

    /// Real Opus packets: `tones` (one per channel) through FFmpeg's libopus wrapper.
    fn opus_encode(cfg: Opus, tones: [Tone; 2], seconds: f64) -> Encoded {
        crate::transcode::decode::init_ffmpeg();
        let codec = ffmpeg::encoder::find_by_name("libopus").expect("FFmpeg built with libopus");
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .unwrap();
        let layout = match cfg.channels {
            1 => ChannelLayout::MONO,
            _ => ChannelLayout::STEREO,
        };
        enc.set_rate(SAMPLE_RATE as i32);
        enc.set_format(Sample::F32(SampleType::Packed));
        enc.set_channel_layout(layout);
        enc.set_bit_rate(cfg.bitrate);
        enc.set_time_base(Rational::new(1, SAMPLE_RATE as i32));
        let mut opts = Dictionary::new();
        opts.set("frame_duration", cfg.frame_ms);
        opts.set("application", cfg.application);
        let mut enc = enc.open_as_with(codec, opts).unwrap();
        let frame_samples = enc.frame_size() as usize;
        // SAFETY: reads an int of the open context.
        let lookahead = i64::from(unsafe { (*enc.as_ptr()).initial_padding });
        let total = (seconds * RATE).round() as usize;
        assert_eq!(total % frame_samples, 0, "{cfg:?}: whole frames only");

        let mut payloads = Vec::new();
        let mut pkt = ffmpeg::Packet::empty();
        let mut drain = |enc: &mut ffmpeg::encoder::Audio, payloads: &mut Vec<Vec<u8>>| loop {
            match enc.receive_packet(&mut pkt) {
                Ok(()) => payloads.push(pkt.data().unwrap().to_vec()),
                Err(ffmpeg::Error::Eof)
                | Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::EAGAIN,
                }) => return,
                Err(e) => panic!("libopus: {e}"),
            }
        };
        for start in (0..total).step_by(frame_samples) {
            let mut frame =
                ffmpeg::frame::Audio::new(Sample::F32(SampleType::Packed), frame_samples, layout);
            frame.set_rate(SAMPLE_RATE);
            let data = frame.plane_mut::<f32>(0);
            for (i, samples) in data.chunks_exact_mut(cfg.channels).enumerate() {
                for (ch, s) in samples.iter_mut().enumerate() {
                    *s = tones[ch].at((start + i) as i64) as f32;
                }
            }
            frame.set_pts(Some(start as i64));
            enc.send_frame(&frame).unwrap();
            drain(&mut enc, &mut payloads);
        }
        enc.send_eof().unwrap();
        drain(&mut enc, &mut payloads);
        let frame_samples = frame_samples as i64;
        let packets = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| (START + i as i64 * frame_samples, p))
            .collect();
        Encoded {
            packets,
            frame_samples,
            lookahead,
            source_samples: total as i64,
        }
    }

    /// Pushes every packet, checking after each that the FIFO never keeps a whole frame nor
    /// grows past what it was allocated with, then flushes.
    fn transcode(packets: &[(i64, Vec<u8>)]) -> (Vec<AacFrame>, OpusToAac) {
        let mut t = OpusToAac::new(128_000).unwrap();
        let capacity = t.fifo[0].capacity();
        let mut out = Vec::new();
        for (pts, p) in packets {
            t.push(p, *pts, &mut out).unwrap();
            assert!(t.fifo[0].len() < AAC_FRAME_SAMPLES);
            assert_eq!(t.fifo[1].len(), t.fifo[0].len());
        }
        t.flush(&mut out).unwrap();
        assert_eq!(t.fifo[0].capacity(), capacity, "the FIFO reallocated");
        (out, t)
    }

    /// Decoded AAC, each decoded frame placed at its AacFrame's pts.
    struct Pcm {
        frame_pts: Vec<i64>,
        planes: [Vec<f32>; 2],
    }

    impl Pcm {
        /// The sample presented at `pts`; the latest frame wins where a restart overlaps.
        fn at(&self, ch: usize, pts: i64) -> f32 {
            let k = self
                .frame_pts
                .iter()
                .rposition(|&p| (p..p + FRAME).contains(&pts))
                .unwrap_or_else(|| panic!("no frame covers pts {pts}"));
            self.planes[ch][k * AAC_FRAME_SAMPLES + (pts - self.frame_pts[k]) as usize]
        }

        fn len(&self) -> i64 {
            self.planes[0].len() as i64
        }
    }

    /// FFmpeg's own AAC decoder, given the ASC as extradata as an MP4 demuxer would.
    fn decode_aac(params: &AudioParams, frames: &[AacFrame]) -> Pcm {
        let codec = ffmpeg::decoder::find(codec::Id::AAC).unwrap();
        let mut ctx = codec::Context::new_with_codec(codec);
        // SAFETY: as decode.rs's set_extradata: av_mallocz'd, padded, context not yet open.
        unsafe {
            let pad = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
            let buf = ffmpeg::ffi::av_mallocz(params.asc.len() + pad).cast::<u8>();
            assert!(!buf.is_null());
            std::ptr::copy_nonoverlapping(params.asc.as_ptr(), buf, params.asc.len());
            (*ctx.as_mut_ptr()).extradata = buf;
            (*ctx.as_mut_ptr()).extradata_size = params.asc.len() as i32;
        }
        let mut dec = ctx.decoder().open_as(codec).unwrap().audio().unwrap();
        let mut pcm = Pcm {
            frame_pts: frames.iter().map(|f| f.pts).collect(),
            planes: [Vec::new(), Vec::new()],
        };
        let mut frame = ffmpeg::frame::Audio::empty();
        let mut receive = |dec: &mut ffmpeg::decoder::Audio, pcm: &mut Pcm| {
            while dec.receive_frame(&mut frame).is_ok() {
                assert_eq!(frame.format(), Sample::F32(SampleType::Planar));
                assert_eq!((frame.channels(), frame.rate()), (2, SAMPLE_RATE));
                assert_eq!(frame.samples(), AAC_FRAME_SAMPLES);
                for (ch, plane) in pcm.planes.iter_mut().enumerate() {
                    plane.extend_from_slice(frame.plane::<f32>(ch));
                }
            }
        };
        for f in frames {
            assert!(!f.data.is_empty());
            let mut p = ffmpeg::Packet::copy(&f.data);
            p.set_pts(Some(f.pts));
            dec.send_packet(&p).unwrap();
            receive(&mut dec, &mut pcm);
        }
        dec.send_eof().unwrap();
        receive(&mut dec, &mut pcm);
        assert_eq!(
            pcm.len(),
            frames.len() as i64 * FRAME,
            "one PCM frame per AAC frame"
        );
        pcm
    }

    #[derive(Debug)]
    struct Match {
        /// Output RMS over source RMS.
        rms_db: f64,
        /// Zero crossings per second over two.
        crossing_hz: f64,
        /// Normalised correlation with the source.
        corr: f64,
    }

    /// Compares channel `ch` with `tone` over source seconds `from..to`, source sample `i`
    /// being expected at pts `START + offset + i`.
    fn compare(pcm: &Pcm, ch: usize, tone: Tone, offset: i64, from: f64, to: f64) -> Match {
        let (a, b) = ((from * RATE) as i64, (to * RATE) as i64);
        let y: Vec<f64> = (a..b)
            .map(|i| f64::from(pcm.at(ch, START + offset + i)))
            .collect();
        let x: Vec<f64> = (a..b).map(|i| tone.at(i)).collect();
        let energy = |v: &[f64]| v.iter().map(|s| s * s).sum::<f64>();
        let (ex, ey) = (energy(&x), energy(&y));
        let crossings = y
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        Match {
            rms_db: 10.0 * (ey / ex).log10(),
            crossing_hz: crossings as f64 / 2.0 / (to - from),
            corr: x.iter().zip(&y).map(|(x, y)| x * y).sum::<f64>() / (ex * ey).sqrt(),
        }
    }

    /// The lag in `lags` at which channel `ch` correlates best with `tone` (source seconds
    /// 0.5..2.5), and that correlation.
    fn best_lag(pcm: &Pcm, ch: usize, tone: Tone, lags: std::ops::Range<i64>) -> (i64, f64) {
        let (a, b) = ((0.5 * RATE) as i64, (2.5 * RATE) as i64);
        let y: Vec<f64> = (a + lags.start..b + lags.end)
            .map(|i| f64::from(pcm.at(ch, START + i)))
            .collect();
        let x: Vec<f64> = (a..b).map(|i| tone.at(i)).collect();
        let ex = x.iter().map(|s| s * s).sum::<f64>();
        lags.clone()
            .map(|lag| {
                let y = &y[(lag - lags.start) as usize..][..x.len()];
                let ey = y.iter().map(|s| s * s).sum::<f64>();
                let xy = x.iter().zip(y).map(|(x, y)| x * y).sum::<f64>();
                (lag, xy / (ex * ey).sqrt())
            })
            .max_by(|p, q| p.1.total_cmp(&q.1))
            .unwrap()
    }

    fn hz(tone: Tone) -> f64 {
        match tone {
            Tone::Sine { hz, .. } => hz,
            Tone::Sweep { .. } => unreachable!("a sweep has no one frequency"),
        }
    }

    /// Checks pts, length and sound of a whole transcoded stream of 1 kHz sines.
    fn check_round_trip(cfg: Opus, tones: [Tone; 2], seconds: f64) {
        let src = opus_encode(cfg, tones, seconds);
        let (frames, t) = transcode(&src.packets);
        let first = START - t.encoder_delay();
        for (k, f) in frames.iter().enumerate() {
            assert_eq!(f.pts, first + k as i64 * FRAME, "{cfg:?}: frame {k}");
        }
        assert_eq!(t.stats(), AudioStats::default(), "{cfg:?}");

        let pcm = decode_aac(t.params(), &frames);
        // Everything from START on is the Opus stream's audio, padded to a whole frame.
        let fed = src.packets.len() as i64 * src.frame_samples;
        let real = pcm.len() - t.encoder_delay();
        assert!(
            (0..FRAME).contains(&(real - fed)),
            "{cfg:?}: {real} for {fed}"
        );
        // And the Opus stream is the source plus libopus's lookahead, in whole packets.
        let over = fed - src.source_samples - src.lookahead;
        assert!((0..src.frame_samples).contains(&over), "{cfg:?}: {over}");

        for ch in 0..CHANNELS {
            let tone = tones[ch.min(cfg.channels - 1)];
            let m = compare(&pcm, ch, tone, src.lookahead, 0.25, seconds - 0.25);
            eprintln!("{cfg:?} channel {ch}: {m:?}");
            assert!(m.rms_db.abs() < 1.0, "{cfg:?} channel {ch}: {m:?}");
            assert!(
                (m.crossing_hz / hz(tone) - 1.0).abs() < 0.01,
                "{cfg:?} channel {ch}: {m:?}"
            );
            assert!(m.corr > 0.98, "{cfg:?} channel {ch}: {m:?}");
        }
    }

    #[test]
    fn params_describe_aac_lc_48k_stereo() {
        let t = OpusToAac::new(128_000).unwrap();
        let p = t.params();
        assert_eq!(
            (
                p.object_type,
                p.sample_rate,
                p.channels,
                p.samples_per_frame
            ),
            (2, 48_000, 2, 1024)
        );
        assert_eq!(p.codec_string(), "mp4a.40.2");
        // AOT 2 (5 bits), frequency index 3 (4), channel configuration 2 (4), then
        // GASpecificConfig zeros; FFmpeg appends an explicit "no SBR" sync extension.
        assert_eq!(p.asc[..2], [0x11, 0x90], "{:02x?}", p.asc);
        assert_eq!(t.encoder_delay(), FRAME);
        assert!(matches!(OpusToAac::new(0), Err(AudioError::Bitrate(0))));
        assert!(OpusToAac::new(1_000_000).is_err());
    }

    #[test]
    fn mono_opus_is_upmixed_to_both_channels() {
        check_round_trip(MONO, [SINE, SINE], 3.0);
    }

    #[test]
    fn stereo_opus_keeps_its_channels() {
        check_round_trip(STEREO, [SINE, SINE_RIGHT], 3.0);
    }

    #[test]
    fn every_opus_frame_size_transcodes() {
        for frame_ms in ["2.5", "5", "10", "40", "60", "120"] {
            let cfg = Opus { frame_ms, ..STEREO };
            check_round_trip(cfg, [SINE, SINE_RIGHT], 1.2);
        }
    }

    /// The pts convention end to end: audio decoded from the AAC frames and presented at
    /// their pts lines up with the Opus packets' pts to the sample (after libopus's own
    /// lookahead, which any Opus sender adds).
    #[test]
    fn frame_pts_are_presentation_times() {
        let sweep = Tone::Sweep { amp: 0.5 };
        let src = opus_encode(STEREO, [sweep, sweep], 3.0);
        let (frames, t) = transcode(&src.packets);
        assert_eq!(frames[0].pts, START - 1024, "the priming frame");
        let pcm = decode_aac(t.params(), &frames);
        for ch in 0..CHANNELS {
            let (lag, corr) = best_lag(&pcm, ch, sweep, 0..2048);
            eprintln!("channel {ch}: lag {lag}, correlation {corr:.4}");
            assert_eq!(lag, src.lookahead, "channel {ch}, correlation {corr}");
            assert!(corr > 0.95, "{corr}");
        }
        // The priming frame decodes to next to nothing.
        let priming: f32 = pcm.planes[0][..AAC_FRAME_SAMPLES]
            .iter()
            .map(|s| s.abs())
            .fold(0.0, f32::max);
        assert!(priming < 0.05, "priming frame peaks at {priming}");
    }

    /// Browsers send SILK or hybrid Opus at voice bitrates, and FFmpeg decodes SILK through
    /// a resampler that holds samples back: the count must not mistake that for lost packets,
    /// and the audio must still land at its pts.
    #[test]
    fn silk_at_voice_bitrate_keeps_its_timing() {
        let cfg = Opus {
            channels: 1,
            bitrate: 12_000,
            application: "voip",
            ..STEREO
        };
        let sweep = Tone::Sweep { amp: 0.5 };
        let src = opus_encode(cfg, [sweep, sweep], 3.0);
        // TOC configurations 0..=11 are SILK-only (RFC 6716 3.1, Table 2).
        let silk = src.packets.iter().filter(|(_, p)| p[0] >> 3 < 12).count();
        assert!(silk > src.packets.len() / 2, "only {silk} SILK packets");
        let (frames, t) = transcode(&src.packets);
        for (k, f) in frames.iter().enumerate() {
            assert_eq!(f.pts, START - FRAME + k as i64 * FRAME, "frame {k}");
        }
        assert_eq!(t.stats(), AudioStats::default());
        let pcm = decode_aac(t.params(), &frames);
        for ch in 0..CHANNELS {
            let (lag, corr) = best_lag(&pcm, ch, sweep, 0..2048);
            eprintln!(
                "SILK channel {ch}: lag {lag} (libopus lookahead {}), correlation {corr:.4}",
                src.lookahead
            );
            assert!((lag - src.lookahead).abs() <= 2, "lag {lag}");
            assert!(corr > 0.95, "correlation {corr}");
        }
    }

    #[test]
    fn repeated_packet_is_skipped() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 3.0);
        let mut packets = src.packets.clone();
        packets.insert(31, packets[30].clone());
        let (frames, t) = transcode(&packets);
        for (k, f) in frames.iter().enumerate() {
            assert_eq!(f.pts, START - FRAME + k as i64 * FRAME, "frame {k}");
        }
        let stats = t.stats();
        assert_eq!((stats.restarts, stats.overlap_samples), (0, 960));
        let pcm = decode_aac(t.params(), &frames);
        // The repeat adds nothing: the stream's samples, padded to a whole frame.
        let fed = (src.packets.len() * 960).next_multiple_of(AAC_FRAME_SAMPLES);
        assert_eq!(pcm.len() - FRAME, fed as i64);
        let m = compare(&pcm, 0, SINE, src.lookahead, 0.25, 2.75);
        assert!(m.rms_db.abs() < 1.0 && m.corr > 0.98, "{m:?}");
    }

    #[test]
    fn pts_jump_of_one_second_restarts_the_timeline() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 3.0);
        let jump = 48_000;
        let split = 50; // 1 s of 20 ms packets
        let mut packets = src.packets.clone();
        for (pts, _) in &mut packets[split..] {
            *pts += jump;
        }
        let new_start = packets[split].0;
        let (frames, t) = transcode(&packets);

        // Up to the jump: the priming frame and every whole frame of the first second; the
        // 896 samples after the last whole frame are dropped.
        let restart = frames.iter().position(|f| f.pts == new_start).unwrap();
        assert_eq!(restart, 1 + 48_000 / AAC_FRAME_SAMPLES);
        for (k, f) in frames[..restart].iter().enumerate() {
            assert_eq!(f.pts, START - FRAME + k as i64 * FRAME);
        }
        for (k, f) in frames[restart..].iter().enumerate() {
            assert_eq!(f.pts, new_start + k as i64 * FRAME);
        }
        let stats = t.stats();
        assert_eq!(stats.restarts, 1);
        assert_eq!(stats.dropped_samples, 48_000 % 1024);

        // Both sides sound right at their own pts.
        let pcm = decode_aac(t.params(), &frames);
        for ch in 0..CHANNELS {
            let tone = [SINE, SINE_RIGHT][ch];
            let before = compare(&pcm, ch, tone, src.lookahead, 0.25, 0.9);
            let after = compare(&pcm, ch, tone, src.lookahead + jump, 1.1, 2.75);
            for m in [before, after] {
                assert!(m.rms_db.abs() < 1.0 && m.corr > 0.98, "channel {ch}: {m:?}");
            }
        }
    }

    #[test]
    fn lost_packet_becomes_silence_and_later_audio_keeps_its_pts() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 3.0);
        let lost = 60;
        let mut packets = src.packets.clone();
        let (lost_pts, _) = packets.remove(lost);
        let (frames, t) = transcode(&packets);
        for (k, f) in frames.iter().enumerate() {
            assert_eq!(f.pts, START - FRAME + k as i64 * FRAME, "frame {k}");
        }
        let stats = t.stats();
        assert_eq!((stats.restarts, stats.silence_samples), (0, 960));

        let pcm = decode_aac(t.params(), &frames);
        let after = compare(&pcm, 0, SINE, src.lookahead, 1.5, 2.75);
        assert!(after.rms_db.abs() < 1.0 && after.corr > 0.98, "{after:?}");
        // The middle of the lost 20 ms is quiet (codec ringing stays near its edges).
        let gap_peak = (lost_pts + 240..lost_pts + 720)
            .map(|pts| pcm.at(0, pts).abs())
            .fold(0.0, f32::max);
        assert!(gap_peak < 0.1, "lost packet's slot peaks at {gap_peak}");
    }

    #[test]
    fn corrupt_packet_is_an_error_and_the_stream_continues() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 3.0);
        let garbage: [&[u8]; 4] = [
            // Code 3 (RFC 6716 3.2.5) with 63 frames: more than 120 ms.
            &[0xff; 40],
            // Code 1: two frames of equal size, but an odd number of bytes follows the TOC.
            &[0x01, 1, 2, 3],
            // Code 3 with a frame count of 0.
            &[0x03, 0x00],
            // Code 2: the first frame's two-byte length is cut off.
            &[0x02, 0xfd],
        ];
        let mut t = OpusToAac::new(128_000).unwrap();
        let mut frames = Vec::new();
        for (i, (pts, p)) in src.packets.iter().enumerate() {
            if i % 25 == 10 {
                let bad = garbage[(i / 25) % garbage.len()];
                let err = t.push(bad, *pts, &mut frames).unwrap_err();
                eprintln!("{err}");
                assert!(
                    matches!(err, AudioError::Decode { pts: e, toc, .. } if e == *pts && toc == bad[0]),
                    "{err:?}"
                );
            }
            t.push(p, *pts, &mut frames).unwrap();
        }
        t.flush(&mut frames).unwrap();
        for (k, f) in frames.iter().enumerate() {
            assert_eq!(f.pts, START - FRAME + k as i64 * FRAME, "frame {k}");
        }
        assert_eq!(t.stats(), AudioStats::default());
        let pcm = decode_aac(t.params(), &frames);
        let m = compare(&pcm, 1, SINE_RIGHT, src.lookahead, 0.25, 2.75);
        assert!(m.rms_db.abs() < 1.0 && m.corr > 0.98, "{m:?}");
    }

    /// Random payloads may or may not parse as Opus (a code-0 packet of any bytes is valid
    /// framing); either way nothing panics, the FIFO stays bounded and good packets after
    /// them come out right at their own pts.
    #[test]
    fn random_bytes_never_panic_nor_grow_the_fifo() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 3.0);
        let mut t = OpusToAac::new(128_000).unwrap();
        let capacity = t.fifo[0].capacity();
        let mut frames = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (mut refused, mut decoded) = (0, 0);
        for (i, (pts, p)) in src.packets.iter().enumerate() {
            if (40..90).contains(&i) {
                for _ in 0..4 {
                    let len = 1 + (next() % 300) as usize;
                    let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    match t.push(&junk, *pts, &mut frames) {
                        Ok(()) => decoded += 1,
                        Err(AudioError::Decode { .. }) => refused += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                    assert!(t.fifo[0].len() < AAC_FRAME_SAMPLES);
                }
            }
            t.push(p, *pts, &mut frames).unwrap();
        }
        t.flush(&mut frames).unwrap();
        eprintln!(
            "random packets: {refused} refused, {decoded} decoded; {:?}",
            t.stats()
        );
        assert!(refused > 0);
        assert_eq!(t.fifo[0].capacity(), capacity, "the FIFO reallocated");
        let pcm = decode_aac(t.params(), &frames);
        let m = compare(&pcm, 0, SINE, src.lookahead, 2.0, 2.75);
        assert!(m.rms_db.abs() < 1.0 && m.corr > 0.98, "{m:?}");
    }

    #[test]
    fn empty_packet_is_an_error_not_end_of_stream() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 0.2);
        let mut t = OpusToAac::new(128_000).unwrap();
        let mut frames = Vec::new();
        let err = t.push(&[], START, &mut frames).unwrap_err();
        assert!(
            matches!(err, AudioError::EmptyPacket { pts: START }),
            "{err:?}"
        );
        for (pts, p) in &src.packets {
            t.push(p, *pts, &mut frames).unwrap();
        }
        assert!(!frames.is_empty());
    }

    #[test]
    fn push_after_flush_is_refused() {
        let src = opus_encode(STEREO, [SINE, SINE_RIGHT], 0.2);
        let mut t = OpusToAac::new(128_000).unwrap();
        let mut frames = Vec::new();
        let (pts, p) = &src.packets[0];
        t.push(p, *pts, &mut frames).unwrap();
        t.flush(&mut frames).unwrap();
        // 960 samples, padded to one frame, behind the priming frame.
        assert_eq!(frames.len(), 2);
        t.flush(&mut frames).unwrap();
        assert_eq!(frames.len(), 2);
        let (pts, p) = &src.packets[1];
        let err = t.push(p, *pts, &mut frames).unwrap_err();
        assert!(matches!(err, AudioError::Flushed { .. }), "{err:?}");
    }

    #[test]
    fn decoded_frame_in_another_format_is_refused() {
        for (format, layout) in [
            (Sample::I16(SampleType::Packed), ChannelLayout::STEREO),
            (Sample::F32(SampleType::Packed), ChannelLayout::STEREO),
            (Sample::F32(SampleType::Planar), ChannelLayout::MONO),
        ] {
            let mut frame = ffmpeg::frame::Audio::new(format, 960, layout);
            frame.set_rate(SAMPLE_RATE);
            let err = check_decoded(&frame, 42).unwrap_err();
            assert!(
                matches!(err, AudioError::DecodedFormat { pts: 42, .. }),
                "{err:?}"
            );
        }
        let mut good =
            ffmpeg::frame::Audio::new(Sample::F32(SampleType::Planar), 960, ChannelLayout::STEREO);
        good.set_rate(SAMPLE_RATE);
        check_decoded(&good, 42).unwrap();
    }
}
