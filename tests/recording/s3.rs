//! Test 2: an S3 outage mid-stream, spooled without touching the live stream.

use super::common::*;
use super::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The last complete segment's media sequence number of each of `urls`.
fn last_msns(http: &Http, urls: &[String]) -> Vec<Option<u64>> {
    urls.iter()
        .map(|u| {
            let r = http.try_get(u).ok()?;
            parse_media(&r.text()).ok()?.last_msn()
        })
        .collect()
}

/// Test 2. See the file's comment.
#[test]
fn s3_outage_is_spooled_without_touching_the_live_stream() {
    let _turn = take_turn();
    let f = Findings::default();
    let t0 = Instant::now();
    let s3_dir = tempfile::Builder::new()
        .prefix("rungs-s3-")
        .tempdir()
        .expect("temp dir");
    let mut s3 = S3Server::start(s3_dir.path());
    // Every channel records, by the node's default; objects under `e2e/`.
    let node = Node::start(node_config(leak(format!(
        "{}enabled = true\n{RECORDING_KEYS}",
        s3.toml("e2e")
    ))));
    let http = Http::new();
    let scratch = tempfile::tempdir().expect("scratch dir");
    let ch = node.create_channel_with_ladder("rec-s3", "standard");
    let shown = node.api("GET", &format!("/api/v1/channels/{}", ch.id), None);
    assert_eq!(
        shown.json()["record"],
        true,
        "a channel that does not say records by the node's default: {}",
        shown.text()
    );

    // 640x360: the source, a 160p rung and audio, so that the rung's
    // dropped-GOP count means something and two cores keep up.
    const SECONDS: u32 = 20;
    let mut publisher = publish_for(&node, &ch, 640, 360, SECONDS);
    let started = publisher.spawned;
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("not live; ffmpeg:\n{}", publisher.log()));
    let master = http.get(&node.master_url(&ch.id)).text();
    let live = renditions(&master);
    let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["source", "160p", "audio"],
        "live renditions:\n{master}"
    );
    let urls: Vec<String> = live
        .iter()
        .map(|(_, uri)| node.url(&format!("/hls/{}/{uri}", ch.id)))
        .collect();

    // The store goes away at about 6 s and comes back at about 14 s.
    std::thread::sleep(
        (started + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    );
    let lost = |m: &Metrics| {
        m.sum("rungs_rung_dropped_gops_total", &[])
            + m.sum("rungs_ingest_dropped_packets_total", &[])
            + m.sum("rungs_recording_dropped_segments_total", &[])
    };
    let before = node.metrics();
    s3.stop();
    let down_at = Instant::now();
    let mut msns: Vec<(f64, Vec<Option<u64>>)> = Vec::new();
    let mut spool: Vec<(f64, f64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(14) {
        let at = down_at.elapsed().as_secs_f64();
        msns.push((at, last_msns(&http, &urls)));
        let m = node.metrics();
        spool.push((
            m.sum("rungs_recording_spool_bytes", &[]),
            m.sum("rungs_recording_spool_files", &[]),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = node.metrics();
    s3.restart();
    eprintln!(
        "S3 down for {:.1} s; spool (bytes, files) went {:?} -> {:?}",
        down_at.elapsed().as_secs_f64(),
        spool.first(),
        spool.last()
    );

    // While it was down: every live playlist kept advancing (a new segment
    // at least every 5 s, two or more in all), nothing was dropped, the
    // uploads failed and the spool held what waited.
    for (i, (name, _)) in live.iter().enumerate() {
        let series: Vec<(f64, Option<u64>)> = msns.iter().map(|(t, v)| (*t, v[i])).collect();
        let first = series.first().and_then(|s| s.1);
        let last = series.last().and_then(|s| s.1);
        f.check(
            matches!((first, last), (Some(a), Some(b)) if b >= a + 2),
            "live playlists advance while the store is down",
            || format!("{name}: {series:?}"),
        );
        let mut since = 0.0;
        let mut prev = first;
        for &(t, msn) in &series {
            if msn > prev {
                since = t;
                prev = msn;
            }
            f.check(
                t - since <= 5.0,
                "a new live segment at least every 5 s while the store is down",
                || format!("{name}: {series:?}"),
            );
        }
    }
    f.check(
        lost(&during) == lost(&before),
        "nothing dropped (rung GOPs, ingest packets, recorded segments) while the store is down",
        || format!("{} -> {}", lost(&before), lost(&during)),
    );
    let errors = |m: &Metrics| m.sum("rungs_recording_upload_errors_total", &[]);
    f.check(
        errors(&during) > errors(&before),
        "rungs_recording_upload_errors_total rises while the store is down",
        || format!("{} -> {}", errors(&before), errors(&during)),
    );
    let (first, last) = (spool.first().copied(), spool.last().copied());
    f.check(
        matches!((first, last), (Some(a), Some(b)) if b.0 > a.0 && b.1 > a.1),
        "rungs_recording_spool_bytes and _files rise while the store is down",
        || format!("{spool:?}"),
    );

    wait_published(&mut publisher, SECONDS);
    let after = node.metrics();
    f.check(
        lost(&after) == lost(&before),
        "nothing dropped after the store came back",
        || format!("{} -> {}", lost(&before), lost(&after)),
    );
    let list = wait_complete(&node, &ch.id, Duration::from_secs_f64(GRACE_S + 60.0));
    eprintln!("recording complete after {:?}", t0.elapsed());
    assert_eq!(list.len(), 1, "one recording: {list:?}");
    let entry = &list[0];
    let session = entry["session"].as_str().expect("session").to_string();

    // Read back through the S3 API, as a CDN in front of the bucket would.
    let prefix = format!("e2e/{}", ch.id);
    let objects = s3.list(&prefix);
    let sessions: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(&format!("{prefix}/"))?.split_once('/'))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        sessions.into_iter().collect::<Vec<_>>(),
        [session.as_str()],
        "one session folder in the bucket: {objects:?}"
    );
    f.check(
        objects
            .iter()
            .all(|(k, _)| !k.ends_with(".live") && !k.ends_with(".tmp")),
        "no working or half-written spool file reaches the store",
        || format!("{objects:?}"),
    );
    let fetch = |rel: &str| s3.try_get(&format!("{prefix}/{session}/{rel}")).ok();
    let vod = read_vod(&f, &fetch, scratch.path());
    let got: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got, names, "recorded renditions are the live ones");
    for r in &vod {
        let n = r.segments.len() as f64;
        let media: f64 = r.segments.iter().map(|s| s.media_s).sum();
        f.check(
            r.discontinuities == 0,
            "one publish, no discontinuity",
            || format!("{}:\n{}", r.name, r.text),
        );
        f.check(
            (r.extinf_sum() - SECONDS as f64).abs() <= FRAME_S * n
                && (media - SECONDS as f64).abs() <= FRAME_S * n,
            "the whole publish is recorded across the outage (EXTINF and media within a frame per segment)",
            || {
                format!(
                    "{}: EXTINF {:.4}, media {media:.4}, published {SECONDS}\n{}",
                    r.name,
                    r.extinf_sum(),
                    r.text
                )
            },
        );
    }
    let ended: Value = serde_json::from_slice(&fetch("recording-ended.json").unwrap_or_default())
        .expect("recording-ended.json in the bucket");
    check_ended_json(&f, &ended, &ch.id, &session, &vod);
    check_api_entry(&f, entry, &ended);
    let want_url = format!(
        "{}/{}/{prefix}/{session}/master.m3u8",
        s3.endpoint(),
        s3.bucket()
    );
    f.check(
        entry["url"] == want_url.as_str(),
        "the API's url is the bucket's master (no public_base_url: the endpoint)",
        || format!("{} vs {want_url}", entry["url"]),
    );
    let thumbs = s3.list(&format!("{prefix}/{session}/thumbnails"));
    f.check(
        thumbs.len() >= 3,
        "thumbnails reach the bucket (one per 4 s of 20)",
        || format!("{thumbs:?}"),
    );
    for (k, _) in thumbs.iter().chain(
        objects
            .iter()
            .filter(|(k, _)| k == &format!("{prefix}/latest.jpg")),
    ) {
        let jpeg = is_jpeg(&s3.get(k), scratch.path());
        f.check(jpeg.is_ok(), "stored thumbnails are JPEGs", || {
            format!("{k}: {jpeg:?}")
        });
    }
    f.check(
        objects
            .iter()
            .any(|(k, _)| k == &format!("{prefix}/latest.jpg")),
        "<channel>/latest.jpg in the bucket",
        || format!("{objects:?}"),
    );

    // Everything reached the store: the spool is empty again.
    let segments: usize = vod.iter().map(|r| r.segments.len()).sum();
    let drained = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        let m = node.metrics();
        (m.sum("rungs_recording_spool_files", &[]) == 0.0
            && m.sum("rungs_recording_spool_bytes", &[]) == 0.0)
            .then_some(m)
    });
    f.check(
        drained.is_some(),
        "the spool is empty once the recording is stored",
        || {
            let m = node.metrics();
            format!(
                "{} files, {} bytes",
                m.sum("rungs_recording_spool_files", &[]),
                m.sum("rungs_recording_spool_bytes", &[])
            )
        },
    );
    let m = node.metrics();
    f.check(
        m.sum("rungs_recording_uploaded_segments_total", &[]) == segments as f64,
        "rungs_recording_uploaded_segments_total counts each segment once",
        || {
            format!(
                "{} vs {segments}",
                m.sum("rungs_recording_uploaded_segments_total", &[])
            )
        },
    );
    eprintln!("S3 recording test took {:?}", t0.elapsed());
    f.assert_empty("S3 recording");
}
