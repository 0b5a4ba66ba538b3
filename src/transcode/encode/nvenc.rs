//! `NvencEncoder`: a rung encoded by the GPU's NVENC through FFmpeg's h264_nvenc, with the
//! rung settings libx264 gets (bitrate, VBV, forced IDRs on source keyframes, no B-frames,
//! low latency). Frames come from host memory, as for libx264; the encoder context, input
//! picture and output arena are the shared [`LavcEncoder`]'s.
//!
//! h264_nvenc loads libcuda and libnvidia-encode when it opens: without a driver, or on a GPU
//! without NVENC (H100, H200, A100), or past the driver's session limit, `new` fails and the
//! pipeline puts the rung on libx264 instead, saying so. It never falls back by itself.

use std::sync::Arc;

use super::lavc::{LavcEncoder, check_settings, gop};
use super::{EncodeError, EncodedPacket, EncoderSettings, Result, VideoEncoder};
use crate::media::VideoParams;
use crate::transcode::frame::Frame;

pub const CODEC: &str = "h264_nvenc";

/// NVENC's middle preset (p1 fastest .. p7 best): at 1080p it runs several hundred frames a
/// second, so one GPU carries many rungs; the x264 preset name in the settings does not apply.
const PRESET: &str = "p4";

pub struct NvencEncoder {
    inner: LavcEncoder,
}

impl NvencEncoder {
    /// Opens h264_nvenc for one rung, on CUDA device `device` (`None`: the driver's first).
    pub fn new(settings: &EncoderSettings, device: Option<usize>) -> Result<Self> {
        check_settings(settings).map_err(|why| EncodeError::Settings {
            codec: CODEC,
            size: settings.size(),
            why,
        })?;
        let inner =
            LavcEncoder::open(settings, CODEC, &options(settings, device)).map_err(|e| {
                // FFmpeg logs the cause ("Cannot load libcuda.so.1") and returns a generic error;
                // name the usual one in the error itself, where the fallback's log line shows it.
                if crate::gpu::device::driver_present() {
                    e
                } else {
                    EncodeError::Unavailable {
                        why: "no CUDA driver: libcuda.so.1 not found",
                        source: Box::new(e),
                    }
                }
            })?;
        Ok(Self { inner })
    }

    pub fn params(&self) -> &Arc<VideoParams> {
        self.inner.params()
    }
}

impl VideoEncoder for NvencEncoder {
    fn params(&self) -> &Arc<VideoParams> {
        self.inner.params()
    }

    fn encode(
        &mut self,
        frame: &Frame,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<()> {
        self.inner.encode(frame, force_idr, out)
    }

    fn flush(&mut self, out: &mut Vec<EncodedPacket>) -> Result<()> {
        self.inner.flush(out)
    }
}

/// h264_nvenc's AVOptions (FFmpeg 5.1, libavcodec/nvenc_h264.c) for a rung. Bitrate, maxrate
/// and the GOP length are set on the context by [`LavcEncoder::open`].
fn options(s: &EncoderSettings, device: Option<usize>) -> Vec<(&'static str, String)> {
    let mut o = vec![
        ("preset", PRESET.into()),
        // Constant bitrate within the VBV, as the ladder's bitrates promise.
        ("rc", "cbr".into()),
        ("bufsize", s.bufsize_bits.to_string()),
        // A frame marked I becomes an IDR: segments and parts start with one in every rung.
        ("forced-idr", "1".into()),
        // No scene-cut I-frames where the source has no keyframe.
        ("no-scenecut", "1".into()),
        ("keyint_min", gop(s).to_string()),
        ("profile", "high".into()),
        // No B-frames: dts = pts, nothing held for reordering.
        ("bf", "0".into()),
    ];
    if s.low_latency {
        o.extend([
            ("tune", "ll".into()),
            // One frame in, one packet out: no lookahead, no output delay.
            ("zerolatency", "1".into()),
            ("delay", "0".into()),
            ("rc-lookahead", "0".into()),
        ]);
    }
    if let Some(d) = device {
        o.push(("gpu", d.to_string()));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::encode::FrameRate;
    use crate::transcode::frame::FramePool;

    #[test]
    fn options_carry_the_rung_settings_and_low_latency() {
        let s = EncoderSettings::live(640, 360, FrameRate::new(30, 1), 700_000);
        let o = options(&s, Some(1));
        let get = |k: &str| o.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("rc"), Some("cbr"));
        assert_eq!(get("bufsize"), Some("1400000"));
        assert_eq!(get("forced-idr"), Some("1"));
        assert_eq!(get("bf"), Some("0"));
        assert_eq!(get("zerolatency"), Some("1"));
        assert_eq!(get("delay"), Some("0"));
        assert_eq!(get("tune"), Some("ll"));
        assert_eq!(get("preset"), Some("p4"));
        assert_eq!(get("keyint_min"), Some("300"));
        assert_eq!(get("gpu"), Some("1"));
        let offline = EncoderSettings {
            low_latency: false,
            ..s
        };
        let o = options(&offline, None);
        assert!(o.iter().all(|(k, _)| !matches!(*k, "zerolatency" | "gpu")));
    }

    /// Real behaviour on both kinds of machine: without a driver (CI) h264_nvenc fails to
    /// open with an error that names it, which is what sends a rung to libx264; with NVENC
    /// it opens, and forced frames come out as IDRs.
    #[test]
    fn opens_where_the_machine_has_nvenc_and_fails_cleanly_where_not() {
        let s = EncoderSettings::live(320, 240, FrameRate::new(30, 1), 400_000);
        let probe = crate::gpu::probe::probe(&crate::gpu::GpuConfig::default());
        match NvencEncoder::new(&s, None) {
            Err(e) => {
                assert!(
                    !probe.nvenc.usable,
                    "the probe opened h264_nvenc, the encoder did not: {e}"
                );
                assert!(
                    matches!(
                        e,
                        EncodeError::Open { .. } | EncodeError::Unavailable { .. }
                    ),
                    "{e}"
                );
                let text = e.to_string();
                assert!(text.contains("h264_nvenc"), "{text}");
                assert!(text.contains("forced-idr=1"), "{text}");
            }
            Ok(mut enc) => {
                let pool = FramePool::new(s.size(), 4).expect("pool");
                let mut out = Vec::new();
                for i in 0..30i64 {
                    let mut f = pool.get().expect("frame");
                    f.pixels_mut().fill((i * 8) as u8);
                    f.set_pts(i * 3000);
                    enc.encode(&f, i % 10 == 0, &mut out).expect("encode");
                }
                enc.flush(&mut out).expect("flush");
                assert_eq!(out.len(), 30);
                let keys: Vec<i64> = out.iter().filter(|p| p.keyframe).map(|p| p.pts).collect();
                assert_eq!(keys, [0, 30_000, 60_000]);
                assert!(out.iter().all(|p| p.dts == p.pts), "no B-frames");
            }
        }
    }
}
