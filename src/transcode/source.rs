//! Reads a media file (any container FFmpeg demuxes) as the node's ingest
//! events: H.264, HEVC or AV1 video and AAC audio, timestamps in the node timebase.
//!
//! The offline `rungs transcode` command feeds these to the same packager
//! and pipeline a live channel uses. Never decodes: packets pass as they are,
//! converted only from Annex B (MPEG-TS) to length-prefixed NAL units.

use crate::media::aac::parse_audio_specific_config;
use crate::media::annexb::{
    NAL_AUD, NAL_PPS, NAL_SPS, annexb_to_length_prefixed, avc_config_from_annexb, nal_type,
};
use crate::media::av1::parse_av1_config;
use crate::media::h264::parse_avc_config;
use crate::media::hevc::parse_hevc_config;
use crate::media::{
    AudioParams, IngestEvent, MediaError, Packet, TIMEBASE, TrackKind, VideoParams,
};
use crate::transcode::encode::FrameRate;
use bytes::{Bytes, BytesMut};
use ffmpeg_next as ffmpeg;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: ffmpeg::Error,
    },
    #[error("{path} has no video stream")]
    NoVideo { path: PathBuf },
    #[error("{path}: video is {codec}; only H.264, HEVC and AV1 can be transcoded")]
    Codec { path: PathBuf, codec: String },
    #[error("{path}: video configuration: {source}")]
    Params { path: PathBuf, source: MediaError },
    #[error("{path}: reading packets: {source}")]
    Read {
        path: PathBuf,
        source: ffmpeg::Error,
    },
}

/// A demuxed file, read packet by packet.
pub struct FileSource {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    video_index: usize,
    video_tb: ffmpeg::Rational,
    audio_index: Option<usize>,
    audio_tb: ffmpeg::Rational,
    /// The file carries Annex B (start codes), as MPEG-TS does.
    annexb: bool,
    pending: VecDeque<IngestEvent>,
    /// Video packets read without a decode time, waiting for one that has it.
    undated: Vec<Packet>,
    scratch: BytesMut,
    pub video: Arc<VideoParams>,
    pub audio: Option<Arc<AudioParams>>,
    /// The container's average frame rate, when it states one.
    pub frame_rate: Option<FrameRate>,
    /// Media duration in seconds, when the container states it.
    pub duration_s: Option<f64>,
}

/// The codec parameters' extradata (avcC, Annex B parameter sets or an
/// AudioSpecificConfig).
fn extradata(stream: &ffmpeg::format::stream::Stream<'_>) -> Bytes {
    let params = stream.parameters();
    // SAFETY: ffmpeg-next exposes no extradata getter. The parameters belong
    // to the open input, which outlives this call; FFmpeg keeps
    // `extradata_size` bytes at `extradata` (or null with size 0), and the
    // bytes are copied before the borrow ends.
    unsafe {
        let raw = params.as_ptr();
        let (data, len) = ((*raw).extradata, (*raw).extradata_size);
        match usize::try_from(len) {
            Ok(n) if n > 0 && !data.is_null() => {
                Bytes::copy_from_slice(std::slice::from_raw_parts(data, n))
            }
            _ => Bytes::new(),
        }
    }
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        crate::av::init();
        let path_buf = path.to_path_buf();
        let input = ffmpeg::format::input(&path).map_err(|source| SourceError::Open {
            path: path_buf.clone(),
            source,
        })?;
        let video = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| SourceError::NoVideo {
                path: path_buf.clone(),
            })?;
        let codec = video.parameters().id();
        let extra = extradata(&video);
        let params_err = |source| SourceError::Params {
            path: path_buf.clone(),
            source,
        };
        let unsupported = |what: &str| SourceError::Codec {
            path: path_buf.clone(),
            codec: what.to_owned(),
        };
        // A configuration record starts with configurationVersion 1 (avcC, hvcC) or the av1C
        // marker and version (0x81); H.264 without one is Annex B, as MPEG-TS carries it.
        let (annexb, params) = match codec {
            ffmpeg::codec::Id::H264 if extra.first() == Some(&1) => {
                (false, parse_avc_config(extra).map_err(params_err)?)
            }
            ffmpeg::codec::Id::H264 => {
                let record = avc_config_from_annexb(&extra).map_err(params_err)?;
                (true, parse_avc_config(record).map_err(params_err)?)
            }
            ffmpeg::codec::Id::HEVC if extra.first() == Some(&1) => {
                (false, parse_hevc_config(extra).map_err(params_err)?)
            }
            ffmpeg::codec::Id::HEVC => return Err(unsupported("HEVC without an hvcC (Annex B)")),
            ffmpeg::codec::Id::AV1 if extra.first() == Some(&0x81) => {
                (false, parse_av1_config(extra).map_err(params_err)?)
            }
            ffmpeg::codec::Id::AV1 => return Err(unsupported("AV1 without an av1C")),
            other => return Err(unsupported(&format!("{other:?}"))),
        };
        let video_params = Arc::new(params);
        let rate = video.avg_frame_rate();
        let frame_rate = (rate.numerator() > 0 && rate.denominator() > 0).then(|| {
            FrameRate::new(
                rate.numerator().unsigned_abs(),
                rate.denominator().unsigned_abs(),
            )
        });
        let (video_index, video_tb) = (video.index(), video.time_base());

        let audio = input.streams().best(ffmpeg::media::Type::Audio).and_then(|a| {
            if a.parameters().id() != ffmpeg::codec::Id::AAC {
                tracing::warn!(path = %path.display(), codec = ?a.parameters().id(), "audio is not AAC; leaving it out");
                return None;
            }
            match parse_audio_specific_config(extradata(&a)) {
                Ok(p) => Some((a.index(), a.time_base(), Arc::new(p))),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "AAC without a usable AudioSpecificConfig; leaving audio out");
                    None
                }
            }
        });
        let duration = input.duration();
        let duration_s =
            (duration > 0).then(|| duration as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));

        let mut pending = VecDeque::new();
        pending.push_back(IngestEvent::VideoConfig(video_params.clone()));
        if let Some((_, _, p)) = &audio {
            pending.push_back(IngestEvent::AudioConfig(p.clone()));
        }
        Ok(FileSource {
            path: path_buf,
            input,
            video_index,
            video_tb,
            audio_index: audio.as_ref().map(|a| a.0),
            audio_tb: audio.as_ref().map_or(video_tb, |a| a.1),
            annexb,
            pending,
            undated: Vec::new(),
            scratch: BytesMut::new(),
            video: video_params,
            audio: audio.map(|a| a.2),
            frame_rate,
            duration_s,
        })
    }

    /// The next event in file order; `None` at the end.
    pub fn next_event(&mut self) -> Result<Option<IngestEvent>, SourceError> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        let node = ffmpeg::Rational::new(1, TIMEBASE as i32);
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) if self.undated.is_empty() => return Ok(None),
                Err(ffmpeg::Error::Eof) => {
                    self.date_by_order();
                    return Ok(self.pending.pop_front());
                }
                Err(source) => {
                    return Err(SourceError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            let index = packet.stream();
            let (track, tb) = if index == self.video_index {
                (TrackKind::Video, self.video_tb)
            } else if Some(index) == self.audio_index {
                (TrackKind::Audio, self.audio_tb)
            } else {
                continue;
            };
            packet.rescale_ts(tb, node);
            let Some(data) = packet.data() else { continue };
            let (Some(dts), Some(pts)) =
                (packet.dts().or(packet.pts()), packet.pts().or(packet.dts()))
            else {
                continue;
            };
            let undated = track == TrackKind::Video && packet.dts().is_none();
            let data = if track == TrackKind::Video && self.annexb {
                self.scratch.clear();
                // In-band parameter sets repeat the config; delimiters mean nothing in MP4.
                let keep = |n: &[u8]| !matches!(nal_type(n), NAL_SPS | NAL_PPS | NAL_AUD);
                if annexb_to_length_prefixed(data, &mut self.scratch, keep).is_err() {
                    continue;
                }
                self.scratch.split().freeze()
            } else {
                Bytes::copy_from_slice(data)
            };
            let packet = Packet {
                track,
                dts,
                pts,
                keyframe: track == TrackKind::Audio || packet.is_key(),
                data,
            };
            if undated {
                self.undated.push(packet);
                if self.undated.len() >= MAX_UNDATED {
                    self.date_by_order();
                    return Ok(self.pending.pop_front());
                }
                continue;
            }
            if track == TrackKind::Video && !self.undated.is_empty() {
                self.date_before(dts);
                self.pending.push_back(IngestEvent::Packet(packet));
                return Ok(self.pending.pop_front());
            }
            return Ok(Some(IngestEvent::Packet(packet)));
        }
    }

    /// One frame's duration in node ticks, from the container's rate (30 fps
    /// when it states none).
    fn frame_ticks(&self) -> i64 {
        let (num, den) = self
            .frame_rate
            .map_or((30, 1), |r| (i64::from(r.num), i64::from(r.den)));
        (i64::from(TIMEBASE) * den / num.max(1)).max(1)
    }

    /// Matroska stores presentation times only: libavformat leaves the decode
    /// time of the first packets of a stream with B-frames unset until its
    /// parser has seen the reorder delay. Their presentation times in its
    /// place would send decode times backwards (0, 67 ms, then 0 again), so
    /// they are dated one frame apart, ending a frame before the first packet
    /// that has a decode time.
    fn date_before(&mut self, next_dts: i64) {
        let step = self.frame_ticks();
        let n = self.undated.len() as i64;
        for (i, mut p) in self.undated.drain(..).enumerate() {
            p.dts = (next_dts - (n - i as i64) * step).min(p.pts);
            self.pending.push_back(IngestEvent::Packet(p));
        }
    }

    /// Dates the waiting packets when no later decode time comes (the stream
    /// ended, or too many waited): the i-th decode time is the i-th smallest
    /// presentation time, all shifted back by the largest reorder delay so
    /// that no decode time follows its presentation time.
    fn date_by_order(&mut self) {
        let mut order: Vec<i64> = self.undated.iter().map(|p| p.pts).collect();
        order.sort_unstable();
        let delay = self
            .undated
            .iter()
            .zip(&order)
            .map(|(p, o)| o - p.pts)
            .max()
            .unwrap_or(0)
            .max(0);
        for (mut p, o) in self.undated.drain(..).zip(order) {
            p.dts = o - delay;
            self.pending.push_back(IngestEvent::Packet(p));
        }
    }
}

/// Undated packets held at most: far more than any reorder delay.
const MAX_UNDATED: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::ffmpeg_cli;

    fn count(path: &Path) -> (usize, usize, usize) {
        let mut src = FileSource::open(path).expect("open");
        let (mut v, mut a, mut k) = (0, 0, 0);
        while let Some(e) = src.next_event().expect("read") {
            if let IngestEvent::Packet(p) = e {
                match p.track {
                    TrackKind::Video => {
                        v += 1;
                        k += usize::from(p.keyframe);
                    }
                    TrackKind::Audio => a += 1,
                }
            }
        }
        (v, a, k)
    }

    #[test]
    fn reads_mp4_and_mpegts_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        for ext in ["mp4", "ts"] {
            let out = dir.path().join(format!("in.{ext}"));
            ffmpeg_cli::run(&[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "2",
                "-c:v",
                "libx264",
                "-g",
                "25",
                "-c:a",
                "aac",
                out.to_str().expect("utf-8"),
            ]);
            let src = FileSource::open(&out).expect("open");
            assert_eq!((src.video.width, src.video.height), (320, 240), "{ext}");
            assert_eq!(src.frame_rate, Some(FrameRate::new(25, 1)), "{ext}");
            let (v, a, k) = count(&out);
            assert_eq!(v, 50, "{ext}: video packets");
            assert_eq!(k, 2, "{ext}: keyframes");
            if ext == "mp4" {
                assert!(a >= 90, "{ext}: audio packets {a}");
            }
        }
    }

    #[test]
    fn matroska_with_b_frames_gets_increasing_decode_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("in.mkv");
        ffmpeg_cli::run(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-bf",
            "3",
            "-g",
            "30",
            out.to_str().expect("utf-8"),
        ]);
        let mut src = FileSource::open(&out).expect("open");
        let mut video = Vec::new();
        while let Some(e) = src.next_event().expect("read") {
            if let IngestEvent::Packet(p) = e {
                video.push((p.dts, p.pts));
            }
        }
        assert_eq!(video.len(), 60);
        assert!(
            video.iter().any(|(dts, pts)| dts != pts),
            "the clip has B-frames: {video:?}"
        );
        for w in video.windows(2) {
            assert!(w[0].0 < w[1].0, "decode times must increase: {video:?}");
        }
        for (dts, pts) in &video {
            assert!(dts <= pts, "decoded before shown: {video:?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_transcode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("in.mkv");
        ffmpeg_cli::run(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "1",
            "-c:v",
            "mpeg4",
            out.to_str().expect("utf-8"),
        ]);
        let err = FileSource::open(&out).err().expect("mpeg4 refused");
        assert!(err.to_string().contains("only H.264"), "{err}");
        assert!(FileSource::open(&dir.path().join("missing.mp4")).is_err());
    }
}
