use super::*;
use crate::transcode::decode::test_clip;
use crate::transcode::ladder::STANDARD;
use std::collections::BTreeMap;

fn config(pace: Pace) -> PipelineConfig {
    PipelineConfig {
        ladder: STANDARD.into(),
        ladders: Arc::new(Ladders::default()),
        pace,
        encoder: EncoderTuning {
            preset: "veryfast".into(),
            low_latency: pace == Pace::Live,
            threads: 1,
        },
        decoder_threads: 1,
        scaler: Default::default(),
        queue_frames: 8,
        quality_every_gops: 2,
        frame_rate: None,
        gpu: None,
        covered: Vec::new(),
    }
}

/// Per rung: (pts, keyframe) of every packet, config seen, summary.
type Collected = BTreeMap<usize, (Vec<(i64, bool)>, bool, Option<RungSummary>)>;

fn collect(outputs: impl IntoIterator<Item = Output>) -> (Vec<Vec<Rung>>, Collected) {
    let (mut plans, mut rungs) = (Vec::new(), Collected::new());
    for o in outputs {
        match o {
            Output::Plan(p) => plans.push(p),
            Output::Config { rung, .. } => rungs.entry(rung).or_default().1 = true,
            Output::Packet { rung, packet, .. } => {
                let e = rungs.entry(rung).or_default();
                assert!(e.1, "rung {rung}: a packet before its config");
                e.0.push((packet.pts, packet.keyframe));
            }
            Output::Summary { rung, summary } => rungs.entry(rung).or_default().2 = Some(summary),
            Output::Backends(_) => {}
        }
    }
    (plans, rungs)
}

#[test]
fn offline_ladder_has_every_frame_and_idrs_exactly_on_source_keyframes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 720p source, GOP 20 frames with an extra keyframe-free stretch.
    let clip = test_clip::flv(
        dir.path(),
        "src",
        "testsrc2=size=1280x720:rate=30",
        50,
        &[
            "-g",
            "20",
            "-keyint_min",
            "20",
            "-sc_threshold",
            "0",
            "-bf",
            "2",
        ],
    );
    let source_keys: Vec<i64> = clip
        .packets
        .iter()
        .filter(|p| p.keyframe)
        .map(|p| p.pts)
        .collect();
    assert_eq!(source_keys.len(), 3);

    let mut p = Pipeline::start("test", config(Pace::Offline)).expect("start");
    p.push_config(clip.params.clone());
    for pkt in clip.packets.iter().cloned() {
        p.push_packet(pkt, crate::media::Arrival::now());
    }
    let (plans, rungs) = collect(p.finish());
    let names: Vec<&str> = plans[0].iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["480p", "360p", "160p"]);
    assert_eq!(rungs.len(), 3);
    for (i, (packets, configured, summary)) in &rungs {
        assert!(configured);
        assert_eq!(packets.len(), 50, "rung {i}: every frame encoded");
        let mut keys: Vec<i64> = packets.iter().filter(|p| p.1).map(|p| p.0).collect();
        keys.sort_unstable();
        assert_eq!(
            keys, source_keys,
            "rung {i}: IDRs exactly on source keyframes"
        );
        let s = summary.as_ref().expect("summary");
        assert_eq!(s.frames, 50);
        let psnr = s.psnr.as_ref().expect("sampled psnr").average;
        assert!(psnr > 30.0, "rung {i}: PSNR {psnr}");
        let ssim = s.ssim.as_ref().expect("sampled ssim").all;
        assert!(ssim > 0.9, "rung {i}: SSIM {ssim}");
    }
}

/// Everything the pipeline logs at warn level and above, from every
/// thread, for tests that check what a fallback says.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(logs))
            .try_init();
        logs
    })
}

/// The probe's answers injected: a GPU with NVDEC and NVENC (kernels not
/// loaded). On this machine without a driver both open for real and
/// fail, so the stream decodes in software and every rung runs on
/// libx264, each fallback logged and counted, and the ladder is whole.
/// (On a machine with a driver they may open: then only the ladder is
/// checked.)
#[test]
fn nvdec_and_nvenc_that_do_not_open_fall_back_to_the_cpu_per_stream_and_rung() {
    use crate::transcode::backend::{DeviceFacts, GpuPool, MachineFacts};
    let logs = captured_logs();
    let driver = crate::gpu::device::driver_present();
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = test_clip::flv(
        dir.path(),
        "src",
        "testsrc2=size=1280x720:rate=30",
        40,
        &["-g", "20", "-keyint_min", "20", "-sc_threshold", "0"],
    );
    let source_keys: Vec<i64> = clip
        .packets
        .iter()
        .filter(|p| p.keyframe)
        .map(|p| p.pts)
        .collect();
    let machine = MachineFacts {
        no_gpu: None,
        devices: vec![DeviceFacts {
            index: 0,
            name: "injected GPU with NVDEC and NVENC".into(),
            memory_bytes: 16 << 30,
            nvdec: true,
            nvdec_av1: true,
            nvenc: true,
            nvenc_session_limit: None,
        }],
        kernels: false,
    };
    let pool = GpuPool::new(crate::gpu::GpuMode::Auto, machine);
    let count = |m: &prometheus::IntCounterVec, r: &str| m.with_label_values(&[r]).get();
    let metrics = &crate::metrics::METRICS;
    let decode_before = count(&metrics.decode_backend_fallbacks, "open_failed");
    let encode_before = count(&metrics.encode_backend_fallbacks, "open_failed");

    let mut cfg = config(Pace::Offline);
    cfg.gpu = Some(GpuRuntime::new(pool.clone(), Vec::new()));
    let mut p = Pipeline::start("fallback", cfg).expect("start");
    p.push_config(clip.params.clone());
    for pkt in clip.packets.iter().cloned() {
        p.push_packet(pkt, crate::media::Arrival::now());
    }
    // The backend plans apart, the rest as `collect` reads it.
    let mut backends = Vec::new();
    let mut rest = Vec::new();
    for o in p.finish() {
        match o {
            Output::Backends(b) => backends.push(b),
            other => rest.push(other),
        }
    }
    let (_, rungs) = collect(rest);
    // The ladder is whole and aligned whatever ran it.
    assert_eq!(rungs.len(), 3);
    for (i, (packets, configured, summary)) in &rungs {
        assert!(configured);
        assert_eq!(packets.len(), 40, "rung {i}");
        let mut keys: Vec<i64> = packets.iter().filter(|p| p.1).map(|p| p.0).collect();
        keys.sort_unstable();
        assert_eq!(keys, source_keys, "rung {i}");
        let s = summary.as_ref().expect("summary");
        assert!(s.psnr.as_ref().is_some_and(|p| p.average > 30.0), "{s:?}");
        if !driver {
            assert_eq!(s.backend, "x264", "rung {i}");
        }
    }
    assert_eq!(
        pool.loads()[0],
        crate::transcode::backend::DeviceLoad::default(),
        "every session given back"
    );
    if driver {
        return;
    }
    let plan = backends.last().expect("a backend plan");
    assert_eq!(plan.device, Some(0));
    let DecodeBackend::Software(SoftwareDecode::OpenFailed(why)) = &plan.decode else {
        panic!("{plan}");
    };
    assert!(why.contains("libcuda.so.1"), "{why}");
    for r in &plan.rungs {
        let EncodeBackend::X264(X264Reason::OpenFailed(why)) = r else {
            panic!("{plan}");
        };
        assert!(
            why.contains("h264_nvenc") && why.contains("libcuda.so.1"),
            "{why}"
        );
    }
    // The stream and its three rungs were counted (other tests may add).
    assert!(count(&metrics.decode_backend_fallbacks, "open_failed") > decode_before);
    assert!(count(&metrics.encode_backend_fallbacks, "open_failed") >= encode_before + 3);
    let logs =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    for rung in ["480p", "360p", "160p"] {
        let line = logs
            .lines()
            .find(|l| {
                l.contains("NVENC did not open; this rung runs on libx264")
                    && l.contains(&format!("rung={rung}"))
                    && l.contains("channel=fallback")
            })
            .unwrap_or_else(|| panic!("no fallback line for {rung} in:\n{logs}"));
        assert!(line.contains("libcuda.so.1"), "{line}");
    }
    assert!(
        logs.lines().any(
            |l| l.contains("NVDEC not used for this stream; decoding in software")
                && l.contains("channel=fallback")
                && l.contains("libcuda.so.1")
        ),
        "{logs}"
    );
}

/// An NVENC rung behind the CUDA scaler tries CUDA frames first, then host frames, then
/// gives the rung to libx264; each step says why. Without a driver (CI) all fail: the plan
/// ends on libx264 with NVENC's reason. With NVENC, the CUDA-frames encoder opens and the
/// plan says the rung reads device memory.
#[test]
fn an_nvenc_rung_tries_cuda_frames_then_host_frames_then_libx264() {
    use crate::transcode::backend::{Assignment, ChannelPlan};
    let logs = captured_logs();
    let settings = crate::transcode::encode::EncoderSettings::live(
        320,
        240,
        crate::transcode::encode::FrameRate::new(30, 1),
        400_000,
    );
    let mut plan = ChannelPlan::cpu(1, SoftwareDecode::GpuOff, X264Reason::GpuOff);
    plan.rungs[0] = EncodeBackend::Nvenc;
    let mut assignment = Assignment::without_gpu(plan);
    let open = NvencOpen {
        channel: "nvenc-input",
        rung: 0,
        name: "240p",
        settings: &settings,
        device: Some(0),
        scaler_gpu: Some(0),
    };
    let codec = open.open(&mut assignment);
    let rung = &assignment.plan().rungs[0];
    match codec {
        Some(RungCodec::Device(_)) => assert_eq!(*rung, EncodeBackend::NvencCuda),
        Some(RungCodec::Host(_)) => assert_eq!(*rung, EncodeBackend::Nvenc),
        None => {
            let EncodeBackend::X264(X264Reason::OpenFailed(why)) = rung else {
                panic!("{rung:?}");
            };
            assert!(why.contains("h264_nvenc"), "{why}");
            let logs = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned();
            for said in [
                "NVENC cannot read CUDA frames; this rung goes through host memory",
                "NVENC did not open; this rung runs on libx264",
            ] {
                assert!(
                    logs.lines()
                        .any(|l| l.contains(said) && l.contains("channel=nvenc-input")),
                    "no {said:?} in:\n{logs}"
                );
            }
        }
    }
}

#[test]
fn a_passthrough_ladder_starts_no_encoders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = test_clip::flv(dir.path(), "src", "testsrc2=size=640x360:rate=30", 10, &[]);
    let mut cfg = config(Pace::Live);
    cfg.ladder = crate::transcode::ladder::PASSTHROUGH.into();
    let mut p = Pipeline::start("test", cfg).expect("start");
    p.push_config(clip.params.clone());
    for pkt in clip.packets.iter().cloned() {
        p.push_packet(pkt, crate::media::Arrival::now());
    }
    let (plans, rungs) = collect(p.finish());
    assert_eq!(plans, vec![Vec::<Rung>::new()]);
    assert!(rungs.is_empty());
}

#[test]
fn a_live_pipeline_nobody_reads_drops_rung_packets_to_a_keyframe_not_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = OUTPUT_QUEUE + 600;
    let clip = test_clip::flv(
        dir.path(),
        "src",
        "testsrc2=size=320x180:rate=30",
        frames,
        &[
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ],
    );
    let channel = "unread-output";
    let dropped = || {
        METRICS
            .rung_dropped_gops
            .with_label_values(&[channel, "160p"])
            .get()
    };
    let before = dropped();
    let mut cfg = config(Pace::Live);
    cfg.quality_every_gops = 0;
    let mut p = Pipeline::start(channel, cfg).expect("start");
    p.push_config(clip.params.clone());
    let (first, second) = clip.packets.split_at(OUTPUT_QUEUE + 450);
    // Each GOP is fed once the pipeline has settled on the one before (the
    // decoder has taken every packet fed, then the output stopped growing),
    // however slow the machine: the decoder is never behind and each rung's
    // queue is empty when a GOP starts, so until the output is full only the
    // unread output can make a rung drop. Settled: no growth over 150 ms (a
    // starved machine pauses a stage for tens of milliseconds).
    let settle = |p: &Pipeline, fed: Option<i64>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
        while fed.is_some_and(|pts| p.decoded_pts.load(Ordering::Relaxed) < pts)
            && std::time::Instant::now() < deadline
        {
            pause();
        }
        let (mut seen, mut quiet) = (p.outputs().len(), 0);
        while quiet < 5 && seen < OUTPUT_QUEUE && std::time::Instant::now() < deadline {
            pause();
            let now = p.outputs().len();
            quiet = if now == seen { quiet + 1 } else { 0 };
            seen = now;
        }
    };
    let mut fed = None;
    let mut feed = |p: &mut Pipeline, packets: &[Packet]| {
        for pkt in packets.iter().cloned() {
            if pkt.keyframe {
                settle(p, fed);
            }
            fed = Some(pkt.pts);
            p.push_packet(pkt, crate::media::Arrival::now());
        }
    };
    feed(&mut p, first);
    // More than the queue holds went in: it fills, however slow the machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while p.outputs().len() < OUTPUT_QUEUE && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert_eq!(p.outputs().len(), OUTPUT_QUEUE, "bounded, and full");
    assert!(dropped() > before, "the drop is counted");
    // The channel thread catches up; the rung goes on from a keyframe.
    let mut outputs: Vec<Output> = p.outputs().try_iter().collect();
    feed(&mut p, second);
    outputs.extend(p.finish());
    let (_, rungs) = collect(outputs);
    let packets = &rungs[&0].0;
    assert!(packets.len() < frames, "{} packets", packets.len());
    // 30 fps is 3000 ticks a frame (FLV's milliseconds round it to 2970 or
    // 3060); a longer step in presentation order (a live rung has B-frames)
    // is frames that never came out.
    let mut shown = packets.clone();
    shown.sort_by_key(|p| p.0);
    let resumed: Vec<&(i64, bool)> = shown
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 > 4500)
        .map(|w| &w[1])
        .collect();
    assert!(!resumed.is_empty(), "a hole where packets were dropped");
    assert!(resumed.iter().all(|(_, key)| *key), "{resumed:?}");
}

#[test]
fn live_sources_up_to_1080p30_are_scaled_on_the_decode_thread() {
    let hd = Size::new(1920, 1080);
    let thirty = FrameRate::new(30, 1);
    // 30 fps estimated from millisecond timestamps: 33 ms apart.
    let from_flv = FrameRate::new(90_000, 2_970);
    assert_eq!(
        scale_threading(Pace::Live, Size::new(1280, 720), thirty),
        Threading::Caller
    );
    assert_eq!(scale_threading(Pace::Live, hd, from_flv), Threading::Caller);
    assert_eq!(
        scale_threading(Pace::Live, hd, FrameRate::new(60, 1)),
        Threading::Rayon
    );
    assert_eq!(
        scale_threading(Pace::Live, Size::new(3840, 2160), thirty),
        Threading::Rayon
    );
    assert_eq!(
        scale_threading(Pace::Offline, Size::new(3840, 2160), FrameRate::new(60, 1)),
        Threading::Caller
    );
}
