//! Unit tests of the e2e harness itself: the playlist parser, the fMP4 box
//! reader and the metrics parser. They need no node.

mod common;

use common::fmp4;
use common::playlist::{parse_attrs, parse_date_time, parse_media, parse_multivariant, resolve};
use common::{Metrics, quantile};

const LL: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2024-01-02T03:04:05.500Z
#EXT-X-PART:DURATION=0.2,URI=\"p10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"p10.1.m4s\"
#EXTINF:2.000,
s10.m4s
#EXT-X-PROGRAM-DATE-TIME:2024-01-02T03:04:07.500Z
#EXTINF:2.000,
s11.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2024-01-02T03:04:09.500Z
#EXT-X-PART:DURATION=0.2,URI=\"p12.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"p12.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=12,LAST-PART=1
";

#[test]
fn parses_ll_hls_media_playlist() {
    let pl = parse_media(LL).unwrap();
    assert_eq!(pl.version, Some(9));
    assert_eq!(pl.target_duration, Some(2));
    assert_eq!(pl.media_sequence, 10);
    assert_eq!(pl.part_target, Some(0.2));
    let sc = pl.server_control.clone().unwrap();
    assert!(sc.can_block_reload);
    assert_eq!(sc.part_hold_back, Some(0.6));
    assert_eq!(sc.can_skip_until, Some(12.0));
    assert_eq!(pl.segments.len(), 2);
    assert_eq!(pl.segments[0].msn, 10);
    assert_eq!(pl.segments[0].parts.len(), 2);
    assert!(pl.segments[0].parts[0].independent);
    assert!(!pl.segments[0].parts[1].independent);
    assert_eq!(pl.segments[1].uri, "s11.m4s");
    assert_eq!(pl.segments[1].parts.len(), 0);
    assert_eq!(pl.open_msn(), 12);
    assert_eq!(pl.open_parts.len(), 2);
    assert!(pl.open_discontinuity);
    assert_eq!(pl.discontinuity_tags, 1);
    assert_eq!(pl.last_part(), Some((12, 1)));
    assert_eq!(pl.next_part(), (12, 2));
    assert_eq!(pl.hint("PART").unwrap().uri, "p12.2.m4s");
    assert_eq!(pl.rendition_reports[0].last_msn, Some(12));
    assert_eq!(pl.rendition_reports[0].last_part, Some(1));
    let d = pl.segments[1].pdt.unwrap() - pl.segments[0].pdt.unwrap();
    assert!((d - 2.0).abs() < 1e-6);
    assert_eq!(pl.find_part(10, 1).unwrap().uri, "p10.1.m4s");
    assert_eq!(pl.find_part(12, 0).unwrap().uri, "p12.0.m4s");
    assert!(pl.find_part(12, 2).is_none());
    assert_eq!(pl.all_parts().len(), 4);
}

#[test]
fn parses_delta_update() {
    let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n\
        #EXT-X-SKIP:SKIPPED-SEGMENTS=4,RECENTLY-REMOVED-DATERANGES=\"\"\n#EXTINF:2.0,\na.m4s\n#EXTINF:2.0,\nb.m4s\n";
    let pl = parse_media(text).unwrap();
    let sk = pl.skip.clone().unwrap();
    assert_eq!(sk.skipped_segments, 4);
    assert_eq!(sk.recently_removed_dateranges.as_deref(), Some(""));
    assert_eq!(pl.segments[0].msn, 7);
    assert_eq!(pl.segments[1].msn, 8);
    assert_eq!(pl.open_msn(), 9);
}

#[test]
fn refuses_invalid_playlists() {
    let bad = [
        ("no header", "#EXT-X-TARGETDURATION:2\n"),
        (
            "uri without extinf",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\na.m4s\n",
        ),
        (
            "extinf without uri",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n",
        ),
        ("no target duration", "#EXTM3U\n#EXTINF:2,\na\n"),
        (
            "two versions",
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n",
        ),
        (
            "media seq after segment",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na\n#EXT-X-MEDIA-SEQUENCE:3\n",
        ),
        (
            "part without uri",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=0.2\n",
        ),
        (
            "part quoted duration",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=\"0.2\",URI=\"a\"\n",
        ),
        (
            "space in attrs",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=0.2, URI=\"a\"\n",
        ),
        (
            "dup attr",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=0.2,URI=\"a\",URI=\"b\"\n",
        ),
        (
            "negative",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-2,\na\n",
        ),
        (
            "pdt after part",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=0.2,URI=\"a\"\n#EXT-X-PROGRAM-DATE-TIME:2024-01-02T03:04:05Z\n",
        ),
        (
            "two part hints",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"a\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"b\"\n",
        ),
        (
            "hint type",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PRELOAD-HINT:TYPE=SEGMENT,URI=\"a\"\n",
        ),
        (
            "multivariant tag",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-STREAM-INF:BANDWIDTH=1\na\n",
        ),
        (
            "bad date",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:yesterday\n#EXTINF:2,\na\n",
        ),
        (
            "unterminated",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\n",
        ),
    ];
    for (what, text) in bad {
        assert!(parse_media(text).is_err(), "{what}: parsed {text:?}");
    }
}

#[test]
fn attribute_lists() {
    let a = parse_attrs("A=1,B=\"x,y\",C-D=YES,E=0x1F", 1).unwrap();
    assert_eq!(a.get("A"), Some("1"));
    assert_eq!(a.quoted("B"), Some("x,y"));
    assert_eq!(a.get("C-D"), Some("YES"));
    assert_eq!(a.get("E"), Some("0x1F"));
    assert!(parse_attrs("a=1", 1).is_err());
    assert!(parse_attrs("A=1,", 1).is_err());
    assert!(parse_attrs("A=", 1).is_err());
}

#[test]
fn date_times() {
    assert_eq!(parse_date_time("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(
        parse_date_time("2000-03-01T00:00:00.250Z"),
        Some(951868800.25)
    );
    assert_eq!(
        parse_date_time("2000-03-01T01:00:00+01:00"),
        Some(951868800.0)
    );
    assert_eq!(
        parse_date_time("2000-02-29T23:00:00-01:00"),
        Some(951868800.0)
    );
    assert!(parse_date_time("2000-13-01T00:00:00Z").is_none());
    assert!(parse_date_time("2000-01-01 00:00:00Z").is_none());
}

#[test]
fn multivariant() {
    let t = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/index.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=2000000,AVERAGE-BANDWIDTH=1500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"aud\"\n\
        source/index.m3u8\n";
    let mv = parse_multivariant(t).unwrap();
    assert_eq!(mv.media.len(), 1);
    assert_eq!(mv.variants.len(), 1);
    assert_eq!(mv.variants[0].uri, "source/index.m3u8");
    assert_eq!(
        mv.variants[0].attrs.quoted("CODECS"),
        Some("avc1.64001f,mp4a.40.2")
    );
    assert!(parse_multivariant("#EXTM3U\n#EXTINF:2,\na\n").is_err());
}

#[test]
fn resolves_relative_uris() {
    let b = "http://127.0.0.1:80/hls/c/source/index.m3u8?_HLS_msn=3";
    assert_eq!(
        resolve(b, "p1.m4s"),
        "http://127.0.0.1:80/hls/c/source/p1.m4s"
    );
    assert_eq!(
        resolve(b, "../audio/index.m3u8"),
        "http://127.0.0.1:80/hls/c/audio/index.m3u8"
    );
    assert_eq!(resolve(b, "/x/y"), "http://127.0.0.1:80/x/y");
    assert_eq!(resolve(b, "http://h/z"), "http://h/z");
}

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&flags.to_be_bytes()[1..]);
    b.extend_from_slice(body);
    bx(kind, &b)
}

#[test]
fn reads_fragments() {
    // traf: tfhd with default duration 3000; tfdt v1; trun with sizes and first-sample flags
    let mut tfhd = 1u32.to_be_bytes().to_vec();
    tfhd.extend_from_slice(&3000u32.to_be_bytes());
    let tfhd = full(b"tfhd", 0, 0x08, &tfhd);
    let tfdt = full(b"tfdt", 1, 0, &90000u64.to_be_bytes());
    let mut trun = 3u32.to_be_bytes().to_vec();
    trun.extend_from_slice(&0i32.to_be_bytes()); // data offset
    trun.extend_from_slice(&0x0200_0000u32.to_be_bytes()); // first sample flags: sync
    for s in [100u32, 20, 30] {
        trun.extend_from_slice(&s.to_be_bytes());
    }
    let trun = full(b"trun", 0, 0x1 | 0x4 | 0x200, &trun);
    let traf = bx(b"traf", &[tfhd, tfdt, trun].concat());
    let mfhd = full(b"mfhd", 0, 0, &7u32.to_be_bytes());
    let moof = bx(b"moof", &[mfhd, traf].concat());
    let mdat = bx(b"mdat", &[0u8; 150]);
    let data = [moof, mdat].concat();
    let f = fmp4::parse_fragments(&data, None).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].sequence_number, 7);
    assert_eq!(f[0].track_id, 1);
    assert_eq!(f[0].base_decode_time, 90000);
    assert_eq!(f[0].samples.len(), 3);
    assert_eq!(f[0].duration(), 9000);
    assert!(f[0].samples[0].is_sync());
    assert_eq!(f[0].samples[1].size, 20);
    assert_eq!(f[0].mdat_len, 150);
    // truncated data is an error, not a panic
    assert!(fmp4::parse_fragments(&data[..data.len() - 10], None).is_err());
    assert!(fmp4::parse_fragments(b"\0\0\0\x10junk", None).is_err());
}

#[test]
fn reads_init_with_avcc() {
    let ftyp = bx(b"ftyp", b"iso6\0\0\0\0iso6cmfc");
    let mut tkhd = vec![0u8; 8];
    tkhd.extend_from_slice(&1u32.to_be_bytes());
    tkhd.extend_from_slice(&[0u8; 60]);
    let tkhd = full(b"tkhd", 0, 3, &tkhd);
    let mut mdhd = vec![0u8; 8];
    mdhd.extend_from_slice(&90000u32.to_be_bytes());
    mdhd.extend_from_slice(&[0u8; 8]);
    let mdhd = full(b"mdhd", 0, 0, &mdhd);
    let mut hdlr = vec![0u8; 4];
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0u8; 13]);
    let hdlr = full(b"hdlr", 0, 0, &hdlr);
    let avcc = bx(b"avcC", &[1, 0x64, 0x00, 0x1f, 0xff]);
    let mut avc1 = vec![0u8; 6];
    avc1.extend_from_slice(&1u16.to_be_bytes());
    avc1.extend_from_slice(&[0u8; 16]);
    avc1.extend_from_slice(&1280u16.to_be_bytes());
    avc1.extend_from_slice(&720u16.to_be_bytes());
    avc1.extend_from_slice(&[0u8; 50]);
    avc1.extend_from_slice(&avcc);
    let avc1 = bx(b"avc1", &avc1);
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend_from_slice(&avc1);
    let stsd = full(b"stsd", 0, 0, &stsd);
    let stbl = bx(b"stbl", &stsd);
    let minf = bx(b"minf", &stbl);
    let mdia = bx(b"mdia", &[mdhd, hdlr, minf].concat());
    let trak = bx(b"trak", &[tkhd, mdia].concat());
    let mut trex = 1u32.to_be_bytes().to_vec();
    for v in [1u32, 3000, 0, 0x0101_0000] {
        trex.extend_from_slice(&v.to_be_bytes());
    }
    let trex = full(b"trex", 0, 0, &trex);
    let moov = bx(b"moov", &[trak, bx(b"mvex", &trex)].concat());
    let init = fmp4::parse_init(&[ftyp, moov].concat()).unwrap();
    assert!(init.brands.contains(&"cmfc".to_string()));
    let t = &init.tracks[0];
    assert_eq!(t.track_id, 1);
    assert_eq!(t.timescale, 90000);
    assert_eq!(t.handler, "vide");
    assert_eq!(t.codec, "avc1.64001f");
    assert_eq!((t.width, t.height), (1280, 720));
    assert_eq!(t.default_sample_duration, 3000);
}

#[test]
fn metrics_text() {
    let m = Metrics::parse(
        "# HELP x y\n# TYPE x counter\nrungs_ingest_bytes_total{channel=\"a\",ingest=\"rtmp\"} 1234\n\
         rungs_live_channels 1\n\
         h_bucket{channel=\"a\",le=\"0.1\"} 1\nh_bucket{channel=\"a\",le=\"0.2\"} 3\nh_bucket{channel=\"a\",le=\"+Inf\"} 4\n\
         h_sum{channel=\"a\"} 0.5\nh_count{channel=\"a\"} 4\n",
    );
    assert_eq!(
        m.sum("rungs_ingest_bytes_total", &[("channel", "a")]),
        1234.0
    );
    assert_eq!(m.sum("rungs_ingest_bytes_total", &[("channel", "b")]), 0.0);
    assert_eq!(m.sum("rungs_live_channels", &[]), 1.0);
    assert!(m.has("h"));
    let q = m.histogram_quantile("h", &[("channel", "a")], 0.5).unwrap();
    assert!((q - 0.15).abs() < 1e-9, "{q}");
    assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.0);
}

/// The S3 server the recording tests upload to: objects put whole and by multipart
/// upload read back through the S3 API, a conditional create refused when the key
/// exists, requests failing while it is stopped, and every object still there after a
/// restart on the same port.
#[test]
fn s3_server_keeps_objects_across_restart() {
    use common::S3Server;
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};

    let dir = tempfile::Builder::new()
        .prefix("rungs-s3-")
        .tempdir()
        .unwrap();
    let mut s3 = S3Server::start(dir.path());
    assert_eq!(s3.bucket(), "rec");
    assert!(s3.toml("e2e").contains("store = \"s3://rec/e2e\""));
    assert!(
        s3.toml("e2e")
            .contains(&format!("s3_endpoint = \"{}\"", s3.endpoint()))
    );

    let small = b"#EXTM3U\n".to_vec();
    // Over 5 MiB, S3's smallest part but the last: three parts of WriteMultipart's 5 MiB.
    let big: Vec<u8> = (0..12 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let store = s3.store();
    s3.block_on(async {
        store
            .put(
                &ObjectPath::from("t/ch/master.m3u8"),
                PutPayload::from(small.clone()),
            )
            .await
            .unwrap();
        let upload = store
            .put_multipart(&ObjectPath::from("t/ch/source/seg.m4s"))
            .await
            .unwrap();
        let mut w = WriteMultipart::new(upload);
        w.write(&big);
        w.finish().await.unwrap();

        // The uploader's "never overwrite" put: If-None-Match: * on an existing key.
        let again = store
            .put_opts(
                &ObjectPath::from("t/ch/master.m3u8"),
                PutPayload::from_static(b"other"),
                PutMode::Create.into(),
            )
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{again:?}"
        );
    });

    let want = vec![
        ("t/ch/master.m3u8".to_string(), small.len() as u64),
        ("t/ch/source/seg.m4s".to_string(), big.len() as u64),
    ];
    assert_eq!(s3.list("t"), want);
    assert_eq!(s3.list("t/ch/source"), want[1..]);
    assert!(s3.list("t/c").is_empty(), "prefixes are whole segments");
    assert_eq!(s3.get("t/ch/master.m3u8"), small);
    assert!(s3.get("t/ch/source/seg.m4s") == big);

    s3.stop();
    let t0 = std::time::Instant::now();
    assert!(s3.try_get("t/ch/master.m3u8").is_err());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "a stopped server must fail fast, took {:?}",
        t0.elapsed()
    );

    let endpoint = s3.endpoint();
    s3.restart();
    assert_eq!(s3.endpoint(), endpoint);
    assert_eq!(s3.list(""), want);
    assert!(s3.get("t/ch/source/seg.m4s") == big);
    assert!(matches!(
        s3.try_get("t/ch/missing"),
        Err(object_store::Error::NotFound { .. })
    ));
}
