use super::*;
use crate::metrics::METRICS;

const GIB: u64 = 1 << 30;

fn device(index: usize, name: &str, nvdec: bool, nvenc: bool) -> DeviceFacts {
    DeviceFacts {
        index,
        name: name.into(),
        memory_bytes: 80 * GIB,
        nvdec,
        // Ada, as an L4: AV1 too.
        nvdec_av1: nvdec,
        nvenc,
        nvenc_session_limit: nvenc_session_limit(name),
    }
}

fn machine(devices: Vec<DeviceFacts>) -> MachineFacts {
    MachineFacts {
        no_gpu: None,
        devices,
        kernels: true,
    }
}

/// Hopper: NVDEC without AV1, no NVENC.
fn h100(index: usize) -> DeviceFacts {
    DeviceFacts {
        nvdec_av1: false,
        ..device(index, "NVIDIA H100 80GB HBM3", true, false)
    }
}

fn l4(index: usize) -> DeviceFacts {
    device(index, "NVIDIA L4", true, true)
}

fn hd(profile_idc: u8) -> StreamFacts {
    StreamFacts {
        codec: crate::media::VideoCodec::Avc,
        profile_idc,
        chroma_format_idc: Some(1),
        bit_depth: Some(8),
        width: 1920,
        height: 1080,
    }
}

#[test]
fn h100_decodes_on_nvdec_scales_on_cuda_and_encodes_every_rung_with_x264() {
    let p = plan(GpuMode::Auto, &machine(vec![h100(0)]), &[], &hd(100), 4);
    assert_eq!(p.device, Some(0));
    assert_eq!(p.decode, DecodeBackend::Nvdec);
    assert_eq!((p.scale, p.quality), (Stage::Cuda, Stage::Cuda));
    assert_eq!(p.rungs, vec![EncodeBackend::X264(X264Reason::NoNvenc); 4]);
    assert_eq!(
        p.to_string(),
        "GPU 0: decode nvdec, scale cuda, quality cuda, encode x264 x4 (the GPU has no NVENC)"
    );
}

#[test]
fn nvenc_takes_rungs_until_the_session_limit_then_x264_says_why() {
    let l4 = DeviceFacts {
        nvenc_session_limit: Some(3),
        ..device(0, "NVIDIA L4", true, true)
    };
    let m = machine(vec![l4]);
    let p = plan(GpuMode::Auto, &m, &[], &hd(100), 4);
    let limit = EncodeBackend::X264(X264Reason::SessionLimit { limit: 3 });
    assert_eq!(
        p.rungs,
        [
            EncodeBackend::Nvenc,
            EncodeBackend::Nvenc,
            EncodeBackend::Nvenc,
            limit.clone()
        ]
    );
    assert_eq!(p.nvenc_rungs(), 3);
    assert!(
        p.to_string()
            .contains("nvenc x3, x264 (the GPU's 3 NVENC sessions are in use)")
    );
    // Sessions held by other channels count.
    let busy = DeviceLoad {
        nvenc_sessions: 2,
        ..DeviceLoad::default()
    };
    let p = plan(GpuMode::Auto, &m, &[busy], &hd(100), 3);
    assert_eq!(p.rungs, [EncodeBackend::Nvenc, limit.clone(), limit]);
    // A T4-like GPU (no driver limit known) takes every rung.
    let t4 = machine(vec![device(0, "Tesla T4", true, true)]);
    let p = plan(GpuMode::Auto, &t4, &[], &hd(77), 6);
    assert_eq!(p.rungs, vec![EncodeBackend::Nvenc; 6]);
    // GeForce drivers limit sessions.
    assert_eq!(
        nvenc_session_limit("NVIDIA GeForce RTX 4090"),
        Some(GEFORCE_NVENC_SESSIONS)
    );
    assert_eq!(nvenc_session_limit("NVIDIA H100 80GB HBM3"), None);
}

#[test]
fn the_pool_counts_sessions_across_channels_and_gives_them_back() {
    let l4 = DeviceFacts {
        nvenc_session_limit: Some(4),
        ..device(0, "NVIDIA L4", true, true)
    };
    let pool = GpuPool::new(GpuMode::Auto, machine(vec![l4]));
    let a = pool.assign(&hd(100), 3);
    assert_eq!(a.plan().nvenc_rungs(), 3);
    let mut b = pool.assign(&hd(100), 3);
    assert_eq!(b.plan().nvenc_rungs(), 1, "{}", b.plan());
    assert_eq!(
        pool.loads()[0],
        DeviceLoad {
            channels: 2,
            nvdec_sessions: 2,
            nvenc_sessions: 4,
            memory_used_bytes: 0
        }
    );
    // b's NVENC rung does not open: its session comes back, x264 takes it.
    let why = b
        .rung_open_failed(0, "Cannot load libcuda.so.1")
        .expect("was nvenc");
    assert_eq!(why.reason(), "open_failed");
    assert_eq!(b.plan().rungs[0], EncodeBackend::X264(why));
    assert!(b.rung_open_failed(0, "again").is_none(), "already x264");
    assert_eq!(pool.loads()[0].nvenc_sessions, 3);
    let why = b.decode_failed(SoftwareDecode::OpenFailed("no device".into()));
    assert_eq!(why.map(|w| w.reason()), Some("open_failed"));
    assert_eq!(pool.loads()[0].nvdec_sessions, 1);
    drop(a);
    drop(b);
    assert_eq!(pool.loads()[0], DeviceLoad::default());
}

#[test]
fn two_gpus_take_new_channels_alternately_by_load() {
    let pool = GpuPool::new(GpuMode::Auto, machine(vec![h100(0), h100(1)]));
    let a = pool.assign(&hd(100), 4);
    let b = pool.assign(&hd(100), 4);
    let c = pool.assign(&hd(100), 4);
    let devices: Vec<_> = [&a, &b, &c].iter().map(|x| x.plan().device).collect();
    assert_eq!(devices, [Some(0), Some(1), Some(0)]);
    // GPU 0 now carries two channels: the next goes to GPU 1, then, with
    // both at two, to the one with more free memory.
    drop(a);
    drop(c);
    let d = pool.assign(&hd(100), 4);
    assert_eq!(d.plan().device, Some(0), "GPU 0 is empty again");
    pool.set_memory_used(0, 40 * GIB);
    pool.set_memory_used(1, 10 * GIB);
    // 1 channel each: the one with more free memory wins.
    let e = pool.assign(&hd(100), 4);
    assert_eq!(e.plan().device, Some(1));
    let f = pool.assign(&hd(100), 4);
    assert_eq!(f.plan().device, Some(0), "fewest channels first");
    drop((b, d, e, f));
    assert_eq!(pool.loads().iter().map(|l| l.channels).sum::<usize>(), 0);
}

#[test]
fn high_10_and_other_profiles_nvdec_refuses_decode_in_software() {
    let m = machine(vec![h100(0)]);
    for (profile, reason) in [
        (110, "profile"),
        (122, "profile"),
        (244, "profile"),
        (88, "profile"),
    ] {
        let p = plan(GpuMode::Auto, &m, &[], &hd(profile), 2);
        let DecodeBackend::Software(why) = &p.decode else {
            panic!("profile {profile}: {p}");
        };
        assert_eq!(why.reason(), reason);
        assert!(why.is_fallback());
        // The rest of the GPU plan stands.
        assert_eq!((p.device, p.scale), (Some(0), Stage::Cuda));
    }
    let p = plan(GpuMode::Auto, &m, &[], &hd(110), 2);
    assert!(
        p.to_string()
            .contains("(NVDEC does not decode H.264 profile 110 (High 10))"),
        "{p}"
    );
    // High profile flagged 4:2:2 or 10-bit by its record.
    let s = StreamFacts {
        chroma_format_idc: Some(2),
        ..hd(100)
    };
    assert_eq!(s.nvdec_refusal().map(|w| w.reason()), Some("chroma"));
    let s = StreamFacts {
        bit_depth: Some(10),
        ..hd(100)
    };
    assert_eq!(s.nvdec_refusal().map(|w| w.reason()), Some("bit_depth"));
    assert_eq!(
        s.nvdec_refusal().map(|w| w.to_string()).as_deref(),
        Some("NVDEC does not decode 10-bit H.264")
    );
    assert_eq!(hd(66).nvdec_refusal(), None);
    assert_eq!(hd(77).nvdec_refusal(), None);
}

#[test]
fn sizes_outside_nvdecs_limits_decode_in_software() {
    let m = machine(vec![h100(0)]);
    for (w, h) in [(7680, 4320), (4112, 2160), (32, 32), (64, 8)] {
        let s = StreamFacts {
            width: w,
            height: h,
            ..hd(100)
        };
        let p = plan(GpuMode::Auto, &m, &[], &s, 2);
        assert_eq!(
            p.decode,
            DecodeBackend::Software(SoftwareDecode::Size {
                codec: "H.264",
                width: w,
                height: h,
                limits: NVDEC_H264,
            }),
            "{w}x{h}"
        );
    }
    let s = StreamFacts {
        width: 4112,
        ..hd(100)
    };
    assert_eq!(
        s.nvdec_refusal().map(|w| w.to_string()).as_deref(),
        Some("4112x1080 is outside NVDEC's H.264 limits (48x16..4096x4096)")
    );
    for (w, h) in [(4096, 4096), (48, 16), (3840, 2160)] {
        let s = StreamFacts {
            width: w,
            height: h,
            ..hd(100)
        };
        assert_eq!(s.nvdec_refusal(), None, "{w}x{h}");
    }
}

/// A stream as its hvcC or av1C describes it.
fn stream(codec: crate::media::VideoCodec, profile_idc: u8, bits: u8) -> StreamFacts {
    StreamFacts {
        codec,
        profile_idc,
        chroma_format_idc: Some(1),
        bit_depth: Some(bits),
        width: 1920,
        height: 1080,
    }
}

fn hevc(profile_idc: u8, bits: u8) -> StreamFacts {
    use crate::media::hevc::HevcProfile;
    let profile = HevcProfile {
        profile_space: 0,
        high_tier: false,
        profile_idc,
        compatibility: 0,
        constraints: [0; 6],
        level_idc: 120,
        bit_depth: bits,
    };
    stream(crate::media::VideoCodec::Hevc(profile), profile_idc, bits)
}

fn av1(profile: u8, bits: u8) -> StreamFacts {
    use crate::media::av1::Av1Profile;
    let p = Av1Profile {
        profile,
        level_idx: 8,
        high_tier: false,
        bit_depth: bits,
    };
    stream(crate::media::VideoCodec::Av1(p), profile, bits)
}

#[test]
fn hevc_main_and_main_10_decode_on_nvdec_within_its_hevc_limits() {
    let m = machine(vec![h100(0)]);
    for s in [hevc(1, 8), hevc(2, 8), hevc(2, 10)] {
        let p = plan(GpuMode::Auto, &m, &[], &s, 3);
        assert_eq!(p.decode, DecodeBackend::Nvdec, "{s:?}");
    }
    // Range Extensions (4:4:4, 4:2:2, 12-bit) and 12 bits however flagged.
    let why = hevc(4, 8).nvdec_refusal().expect("RExt");
    assert_eq!(
        why.to_string(),
        "NVDEC does not decode HEVC profile 4 (Range Extensions)"
    );
    assert_eq!(
        hevc(2, 12).nvdec_refusal().map(|w| w.reason()),
        Some("bit_depth")
    );
    let s = StreamFacts {
        chroma_format_idc: Some(2),
        ..hevc(2, 10)
    };
    assert_eq!(s.nvdec_refusal().map(|w| w.reason()), Some("chroma"));
    // HEVC's limits, not H.264's: 8K decodes, below 144 lines does not.
    for (w, h, ok) in [
        (8192, 8192, true),
        (7680, 4320, true),
        (144, 144, true),
        (8200, 4320, false),
        (1920, 8200, false),
        (256, 143, false),
        (143, 256, false),
    ] {
        let s = StreamFacts {
            width: w,
            height: h,
            ..hevc(2, 10)
        };
        let why = s.nvdec_refusal();
        assert_eq!(why.is_none(), ok, "{w}x{h}: {why:?}");
        if let Some(why) = why {
            assert!(
                why.to_string()
                    .contains("NVDEC's HEVC limits (144x144..8192x8192)"),
                "{why}"
            );
        }
    }
}

#[test]
fn av1_decodes_on_nvdec_only_where_the_gpu_has_it() {
    let s = av1(0, 10);
    // Hopper's NVDEC has no AV1: software, said with the GPU's name.
    let p = plan(GpuMode::Auto, &machine(vec![h100(0)]), &[], &s, 2);
    let DecodeBackend::Software(why) = &p.decode else {
        panic!("{p}")
    };
    assert_eq!(why.reason(), "codec");
    assert!(why.is_fallback());
    assert_eq!(
        why.to_string(),
        "the NVDEC of NVIDIA H100 80GB HBM3 does not decode AV1"
    );
    assert_eq!((p.device, p.scale), (Some(0), Stage::Cuda));
    // H.264 and HEVC still decode on that GPU.
    let p = plan(GpuMode::Auto, &machine(vec![h100(0)]), &[], &hevc(1, 8), 2);
    assert_eq!(p.decode, DecodeBackend::Nvdec);
    // Ada decodes AV1 Main, 8 and 10 bits, within AV1's limits.
    let ada = machine(vec![l4(0)]);
    for s in [av1(0, 8), av1(0, 10)] {
        assert_eq!(
            plan(GpuMode::Auto, &ada, &[], &s, 2).decode,
            DecodeBackend::Nvdec
        );
    }
    for (s, reason) in [
        (av1(1, 8), "profile"),
        (av1(2, 12), "profile"),
        (av1(0, 12), "bit_depth"),
    ] {
        let p = plan(GpuMode::Auto, &ada, &[], &s, 2);
        let DecodeBackend::Software(why) = &p.decode else {
            panic!("{s:?}: {p}")
        };
        assert_eq!(why.reason(), reason, "{s:?}");
    }
    assert_eq!(
        av1(1, 8).nvdec_refusal().map(|w| w.to_string()).as_deref(),
        Some("NVDEC does not decode AV1 profile 1 (High)")
    );
    let small = |w, h| StreamFacts {
        width: w,
        height: h,
        ..av1(0, 8)
    };
    assert_eq!(small(128, 128).nvdec_refusal(), None);
    assert_eq!(
        small(127, 128).nvdec_refusal().map(|w| w.reason()),
        Some("size")
    );
    assert_eq!(
        small(8193, 2160).nvdec_refusal().map(|w| w.reason()),
        Some("size")
    );
}

#[test]
fn av1_nvdec_follows_the_compute_capability() {
    for (cc, av1) in [
        ("7.5", false),
        ("8.0", false),
        ("8.6", true),
        ("8.7", true),
        ("8.9", true),
        ("9.0", false),
        ("10.0", true),
        ("12.0", true),
        ("", false),
        ("nine", false),
    ] {
        assert_eq!(nvdec_decodes_av1(cc), av1, "{cc}");
    }
}

#[test]
fn hevc_and_av1_records_give_chroma_and_bit_depth() {
    // x265's own Main record, as an Enhanced RTMP publisher sends it.
    let record = crate::media::hevc::tests::hex(crate::media::hevc::tests::X265_MAIN_320X180);
    let p = crate::media::hevc::parse_hevc_config(record).expect("x265 hvcC");
    let s = StreamFacts::from_params(&p);
    assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(1), Some(8)));
    // The same fields set by hand: 10 bits, then 4:2:2.
    let params = |codec, avcc: Vec<u8>, profile_idc| VideoParams {
        codec,
        avcc: bytes::Bytes::from(avcc),
        width: 1920,
        height: 1080,
        profile_idc,
        constraint_flags: 0,
        level_idc: 120,
        nal_length_size: 4,
    };
    let h = hevc(2, 10);
    // hvcC up to numOfArrays; byte 16 is reserved '111111' then chromaFormat.
    let mut hvcc = vec![1, 2, 0x20, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120, 0xf0, 0, 0xfc];
    hvcc.extend([0xfc | 1, 0xf8 | 2, 0xf8 | 2, 0, 0, 0x0f, 0]);
    let s = StreamFacts::from_params(&params(h.codec, hvcc.clone(), 2));
    assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(1), Some(10)));
    assert_eq!(s.nvdec_refusal(), None);
    hvcc[16] = 0xfc | 2;
    let s = StreamFacts::from_params(&params(h.codec, hvcc, 2));
    assert_eq!(s.chroma_format_idc, Some(2));
    // av1C byte 2: tier, high_bitdepth, twelve_bit, mono_chrome, subsampling x and y.
    let a = av1(0, 10);
    for (flags, chroma) in [(0x4c, 1), (0x48, 2), (0x40, 3), (0x5c, 0)] {
        let s = StreamFacts::from_params(&params(a.codec, vec![0x81, 0x08, flags, 0], 0));
        assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(chroma), Some(10)));
    }
}

#[test]
fn gpu_off_and_no_driver_are_cpu_everywhere_and_not_fallbacks() {
    let m = machine(vec![device(0, "NVIDIA L4", true, true)]);
    let p = plan(GpuMode::Off, &m, &[], &hd(100), 3);
    assert_eq!(
        p,
        ChannelPlan::cpu(3, SoftwareDecode::GpuOff, X264Reason::GpuOff)
    );
    assert_eq!(
        p.to_string(),
        "CPU (gpu.enabled = \"off\"): decode cpu, scale cpu, quality cpu, encode x264 x3"
    );
    let none = MachineFacts::cpu_only("no CUDA driver (libcuda.so.1 not found)");
    for mode in [GpuMode::Auto, GpuMode::On] {
        let p = plan(mode, &none, &[], &hd(100), 3);
        assert_eq!(p.device, None);
        assert_eq!((p.scale, p.quality), (Stage::Cpu, Stage::Cpu));
        let DecodeBackend::Software(why) = &p.decode else {
            panic!("{p}")
        };
        assert!(!why.is_fallback());
        assert!(why.to_string().contains("libcuda.so.1"), "{why}");
        assert_eq!(p.rungs, vec![EncodeBackend::X264(X264Reason::NoGpu); 3]);
    }
    // A CPU-only pool hands out plans and holds nothing.
    let pool = GpuPool::new(GpuMode::Auto, none);
    let a = pool.assign(&hd(100), 2);
    assert_eq!(a.plan().device, None);
    assert!(pool.loads().is_empty());
}

#[test]
fn without_kernels_nvdec_and_nvenc_still_serve_and_the_cpu_scales() {
    let mut m = machine(vec![device(3, "NVIDIA L4", true, true)]);
    m.kernels = false;
    let p = plan(GpuMode::Auto, &m, &[], &hd(100), 2);
    assert_eq!(p.device, Some(3));
    assert_eq!(p.decode, DecodeBackend::Nvdec);
    assert_eq!((p.scale, p.quality), (Stage::Cpu, Stage::Cpu));
    assert_eq!(p.rungs, vec![EncodeBackend::Nvenc; 2]);
    let mut no_nvdec = machine(vec![device(0, "X", false, false)]);
    no_nvdec.kernels = true;
    let p = plan(GpuMode::Auto, &no_nvdec, &[], &hd(100), 1);
    assert_eq!(p.decode, DecodeBackend::Software(SoftwareDecode::NoNvdec));
}

#[test]
fn fallback_transitions_change_only_what_was_on_the_gpu() {
    let mut p = plan(
        GpuMode::Auto,
        &machine(vec![device(0, "Tesla T4", true, true)]),
        &[],
        &hd(100),
        2,
    );
    assert!(p.fallback_on_open_failure(5, "x").is_none(), "no such rung");
    let why = p
        .fallback_on_open_failure(1, "Cannot load libcuda.so.1")
        .cloned();
    assert_eq!(
        why,
        Some(X264Reason::OpenFailed("Cannot load libcuda.so.1".into()))
    );
    assert_eq!(p.rungs[0], EncodeBackend::Nvenc);
    assert_eq!(p.nvenc_rungs(), 1);
    let why = p
        .fallback_on_decode_failure(SoftwareDecode::DecodeFailed("P010".into()))
        .cloned();
    assert_eq!(why.map(|w| w.reason()), Some("decode_failed"));
    assert!(
        p.fallback_on_decode_failure(SoftwareDecode::OpenFailed("again".into()))
            .is_none()
    );
    assert!(
        p.to_string()
            .contains("decode cpu (NVDEC refused the stream: P010)"),
        "{p}"
    );
}

/// NVENC rungs the CUDA scaler feeds in device memory stay NVENC sessions (counted, able
/// to fall back), and the plan says which read device memory; x264 rungs are not touched.
#[test]
fn nvenc_rungs_fed_from_device_memory_show_in_the_plan() {
    let l4 = DeviceFacts {
        nvenc_session_limit: Some(2),
        ..l4(0)
    };
    let mut p = plan(GpuMode::Auto, &machine(vec![l4]), &[], &hd(100), 4);
    assert!(p.nvenc_from_device(0));
    assert!(p.nvenc_from_device(1));
    assert!(!p.nvenc_from_device(1), "already");
    assert!(!p.nvenc_from_device(2), "x264: the session limit");
    assert!(!p.nvenc_from_device(9), "no such rung");
    assert_eq!(
        p.rungs[..2],
        [EncodeBackend::NvencCuda, EncodeBackend::NvencCuda]
    );
    assert_eq!(p.nvenc_rungs(), 2);
    assert_eq!(p.rungs[0].name(), "nvenc");
    assert_eq!(p.stages().encode, "nvenc");
    assert_eq!(
        p.to_string(),
        "GPU 0: decode nvdec, scale cuda, quality cuda, encode nvenc x2 (CUDA frames), \
         x264 x2 (the GPU's 2 NVENC sessions are in use)"
    );
    let why = p.fallback_on_open_failure(1, "lost").cloned();
    assert_eq!(why, Some(X264Reason::OpenFailed("lost".into())));
    assert_eq!(p.nvenc_rungs(), 1);
}

#[test]
fn chroma_and_bit_depth_come_from_the_avcc_extension() {
    // A 640x360 High-profile record as x264 writes it, with the extension:
    // 4:2:0, 8-bit.
    let mut avcc = vec![
        1, 100, 0, 30, 0xff, 0xe1, 0, 4, 0x67, 100, 0, 30, 1, 0, 2, 0x68, 0xee,
    ];
    let params = |avcc: &[u8]| VideoParams {
        codec: crate::media::VideoCodec::Avc,
        avcc: bytes::Bytes::copy_from_slice(avcc),
        width: 640,
        height: 360,
        profile_idc: avcc[1],
        constraint_flags: 0,
        level_idc: 30,
        nal_length_size: 4,
    };
    let s = StreamFacts::from_params(&params(&avcc));
    assert_eq!(
        (s.chroma_format_idc, s.bit_depth),
        (None, None),
        "no extension"
    );
    avcc.extend([0xfc | 1, 0xf8, 0xf8, 0]);
    let s = StreamFacts::from_params(&params(&avcc));
    assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(1), Some(8)));
    avcc[1] = 110;
    let n = avcc.len();
    avcc[n - 4] = 0xfc | 2;
    avcc[n - 3] = 0xf8 | 2;
    let s = StreamFacts::from_params(&params(&avcc));
    assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(2), Some(10)));
    assert_eq!(s.profile_idc, 110);
}

#[test]
fn planned_fallbacks_are_counted_once_per_reason() {
    let m = machine(vec![h100(0)]);
    let pool = GpuPool::new(GpuMode::Auto, m);
    let before = |r: &str| {
        METRICS
            .encode_backend_fallbacks
            .with_label_values(&[r])
            .get()
    };
    let dec = |r: &str| {
        METRICS
            .decode_backend_fallbacks
            .with_label_values(&[r])
            .get()
    };
    let (enc0, dec0) = (before("no_nvenc"), dec("profile"));
    let a = pool.assign(&hd(110), 3);
    a.count_planned_fallbacks();
    // Other tests may count too; at least ours are there.
    assert!(before("no_nvenc") >= enc0 + 3);
    assert!(dec("profile") > dec0);
    let off = Assignment::without_gpu(ChannelPlan::cpu(
        2,
        SoftwareDecode::GpuOff,
        X264Reason::GpuOff,
    ));
    let gpu_off = before("gpu_off");
    off.count_planned_fallbacks();
    assert_eq!(before("gpu_off"), gpu_off, "not a fallback");
}
