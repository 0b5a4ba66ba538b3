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
    crate::av::init();
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
