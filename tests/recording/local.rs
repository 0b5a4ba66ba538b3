//! Test 1: a local recording across a reconnect, played back in hls.js.

use super::common::*;
use super::support::*;
use std::time::{Duration, Instant};

#[test]
fn local_recording_survives_a_reconnect_and_plays_in_hlsjs() {
    require_browser();
    let _turn = take_turn();
    let f = Findings::default();
    let t0 = Instant::now();
    let node = Node::start(node_config(leak(format!("[recording]\n{RECORDING_KEYS}"))));
    let http = Http::new();
    let scratch = tempfile::tempdir().expect("scratch dir");

    // The node records channels that say so: this one does, by the API.
    let ch = node.create_channel_with_ladder("rec-local", "standard");
    let r = node.api(
        "PATCH",
        &format!("/api/v1/channels/{}", ch.id),
        Some(br#"{"record": true}"#),
    );
    assert_eq!(r.status, 200, "PATCH record: {}", r.text());
    assert_eq!(
        r.json()["record"],
        true,
        "the channel says record: {}",
        r.text()
    );

    // 960x540: the standard ladder's 480p, 360p and 160p rungs below the
    // source, and no 720p (never upscaled), at a cost two cores can carry.
    const FIRST_S: u32 = 8;
    const SECOND_S: u32 = 8;
    let mut first = publish_for(&node, &ch, 960, 540, FIRST_S);
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("not live; ffmpeg:\n{}", first.log()));

    // Timed metadata mid-stream: at 2-3 s of the first publish's 8, early
    // enough that a slow machine still finds the stream live.
    let dr_id = post_metadata(&node, &http, &ch.id);

    // While live the API lists the recording as `recording`, not yet ended.
    let live = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        recordings(&node, &ch.id).into_iter().next()
    });
    f.check(
        live.as_ref()
            .is_some_and(|r| r["state"] == "recording" && r["ended_at"].is_null()),
        "a live stream's recording is listed as `recording`",
        || format!("{live:?}"),
    );

    // The publisher leaves; another comes back within the grace period: the
    // same stream, so the same recording, with a discontinuity.
    wait_published(&mut first, FIRST_S);
    let mut second = publish_for(&node, &ch, 960, 540, SECOND_S);
    wait_published(&mut second, SECOND_S);
    let list = wait_complete(&node, &ch.id, Duration::from_secs_f64(GRACE_S + 60.0));
    eprintln!("recording complete after {:?}", t0.elapsed());
    assert_eq!(
        list.len(),
        1,
        "one recording across the reconnect: {list:?}"
    );
    let entry = &list[0];
    let session = entry["session"].as_str().expect("session").to_string();

    // Read back as a player would: over HTTP from the node's /recordings.
    let base = node.url(&format!("/recordings/{}/{session}/", ch.id));
    let fetch = |rel: &str| -> Option<Vec<u8>> {
        let r = http.get(&format!("{base}{rel}"));
        (r.status == 200).then_some(r.body)
    };
    let vod = read_vod(&f, &fetch, scratch.path());
    let names: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["source", "480p", "360p", "160p", "audio"],
        "renditions of a 960x540 source on the standard ladder"
    );

    let published = (FIRST_S + SECOND_S) as f64;
    for r in &vod {
        f.check(
            r.discontinuities == 1 && r.segments.iter().filter(|s| s.discontinuity).count() == 1,
            "exactly one EXT-X-DISCONTINUITY (the reconnect)",
            || format!("{}:\n{}", r.name, r.text),
        );
        // Each publish's seconds are recorded, on either side of it.
        let cut = r.segments.iter().position(|s| s.discontinuity).unwrap_or(0);
        let (a, b) = r.segments.split_at(cut);
        for (part, want) in [(a, FIRST_S), (b, SECOND_S)] {
            let sum: f64 = part.iter().map(|s| s.extinf).sum();
            f.check(
                (sum - want as f64).abs() <= FRAME_S * part.len().max(1) as f64,
                "each publish's length is recorded (EXTINF sum within a frame per segment)",
                || format!("{}: {sum:.4} s for a {want} s publish:\n{}", r.name, r.text),
            );
        }
        let media: f64 = r.segments.iter().map(|s| s.media_s).sum();
        f.check(
            (r.extinf_sum() - media).abs() <= FRAME_S * r.segments.len() as f64
                && (media - published).abs() <= FRAME_S * r.segments.len() as f64,
            "EXTINF sum, decoded media and the published length agree",
            || {
                format!(
                    "{}: EXTINF {:.4}, media {media:.4}, published {published}",
                    r.name,
                    r.extinf_sum()
                )
            },
        );
        // The metadata: a date range in the playlist, the emsg in a segment.
        f.check(
            r.text.lines().any(|l| {
                l.starts_with(&format!("#EXT-X-DATERANGE:ID=\"{dr_id}\""))
                    && l.contains(&format!("X-RUNGS-TEXT=\"{TEXT}\""))
            }),
            "the inserted metadata is an EXT-X-DATERANGE of every recorded rendition",
            || format!("{}:\n{}", r.name, r.text),
        );
        f.check(
            r.segments.iter().any(|s| {
                fmp4::id3_emsg_payloads(&s.bytes).iter().any(|p| {
                    p.starts_with(b"ID3\x04") && p.windows(TEXT.len()).any(|w| w == TEXT.as_bytes())
                })
            }),
            "the inserted metadata is an emsg in a recorded segment of every rendition",
            || r.name.clone(),
        );
    }

    let ended_resp = http.get(&format!("{base}recording-ended.json"));
    assert_eq!(ended_resp.status, 200, "recording-ended.json");
    f.check(
        ended_resp.content_type() == "application/json",
        "recording-ended.json is served as JSON",
        || ended_resp.content_type(),
    );
    let ended = ended_resp.json();
    check_ended_json(&f, &ended, &ch.id, &session, &vod);
    f.check(
        ended["recovered"] == false,
        "a stream that ended is not `recovered`",
        || ended.to_string(),
    );
    check_api_entry(&f, entry, &ended);
    let url = entry["url"].as_str().unwrap_or_default().to_string();
    let want_path = format!("/recordings/{}/{session}/master.m3u8", ch.id);
    f.check(
        url.starts_with("http://") && url.ends_with(&want_path),
        "the API's url is the node's /recordings master",
        || url.clone(),
    );
    f.check(
        http.try_get(&url)
            .is_ok_and(|r| r.status == 200 && Some(r.body) == fetch("master.m3u8")),
        "the API's url serves the recording's master",
        || url.clone(),
    );

    // Thumbnails, every 4 s of a 16 s stream, and the channel's latest one:
    // files of the local store, and served.
    let store = node.data_dir.join("recordings").join(&ch.id);
    let mut thumbs: Vec<String> = std::fs::read_dir(store.join(&session).join("thumbnails"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    thumbs.sort();
    f.check(
        thumbs.len() >= 2
            && thumbs.iter().all(|t| {
                t.len() == 10 && t.ends_with(".jpg") && t[..6].bytes().all(|b| b.is_ascii_digit())
            }),
        "thumbnails/<6-digit seconds>.jpg, several over 16 s at one per 4 s",
        || format!("{thumbs:?}"),
    );
    let mut thumb_bytes = Vec::new();
    for t in &thumbs {
        let bytes =
            std::fs::read(store.join(&session).join("thumbnails").join(t)).unwrap_or_default();
        let size = is_jpeg(&bytes, scratch.path());
        f.check(
            size.as_ref()
                .is_ok_and(|&(w, h)| (1..=640).contains(&w) && h > 0),
            "a thumbnail is a JPEG at most 640 wide",
            || format!("{t}: {size:?}"),
        );
        thumb_bytes.push(bytes);
    }
    if let Some(t) = thumbs.first() {
        let r = http.get(&format!("{base}thumbnails/{t}"));
        f.check(
            r.status == 200
                && r.content_type() == "image/jpeg"
                && Some(&r.body) == thumb_bytes.first(),
            "a thumbnail is served as image/jpeg",
            || format!("{t}: {} {}", r.status, r.content_type()),
        );
    }
    let latest = std::fs::read(store.join("latest.jpg")).unwrap_or_default();
    f.check(
        is_jpeg(&latest, scratch.path()).is_ok() && thumb_bytes.contains(&latest),
        "<channel>/latest.jpg is a JPEG, one of the recording's thumbnails",
        || format!("{} bytes", latest.len()),
    );

    // Metrics: every segment went through the uploader, nothing waits, nothing failed.
    let segments: usize = vod.iter().map(|r| r.segments.len()).sum();
    let m = node.metrics();
    f.check(
        m.sum("rungs_recording_uploaded_bytes_total", &[])
            >= ended["bytes"].as_f64().unwrap_or(f64::MAX),
        "rungs_recording_uploaded_bytes_total counts the recording's bytes",
        || {
            format!(
                "{} vs {}",
                m.sum("rungs_recording_uploaded_bytes_total", &[]),
                ended["bytes"]
            )
        },
    );
    f.check(
        m.sum("rungs_recording_uploaded_segments_total", &[]) == segments as f64,
        "rungs_recording_uploaded_segments_total is the recorded segments",
        || {
            format!(
                "{} vs {segments}",
                m.sum("rungs_recording_uploaded_segments_total", &[])
            )
        },
    );
    for zero in [
        "rungs_recording_upload_errors_total",
        "rungs_recording_dropped_segments_total",
        "rungs_recordings_active",
    ] {
        f.check(
            m.sum(zero, &[]) == 0.0,
            "no upload error, no dropped segment, none active",
            || format!("{zero} = {}", m.sum(zero, &[])),
        );
    }
    // A late thumbnail may still be on its way out of the spool.
    let drained = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        (metric(&node, "rungs_recording_spool_files") == 0.0).then_some(())
    });
    f.check(drained.is_some(), "the spool empties", || {
        format!(
            "{} files: {:?}",
            metric(&node, "rungs_recording_spool_files"),
            spool_files(&node)
        )
    });

    // hls.js plays the recording from the API's URL to its end, through the
    // discontinuity, and the metadata's ID3 cue fires on the way.
    let v = run_page_script("tests/player/vod_metadata.mjs", &[&url, TEXT, &dr_id]);
    let fired = v["report"]["fired"].as_array().cloned().unwrap_or_default();
    f.check(
        v["ended"] == true
            && v["report"]["fatal"]
                .as_array()
                .is_some_and(|a| a.is_empty()),
        "hls.js plays the recording to its end without a fatal error",
        || v.to_string(),
    );
    f.check(
        v["emsgFired"] == true,
        "hls.js fires the recording's ID3 (emsg) cue",
        || v.to_string(),
    );
    // The date range as hls.js reads it from the recording's video and audio
    // playlists (its cue cannot fire in Chromium: tests/player/vod_metadata.mjs
    // says why): the same event, where the emsg's cue fired, within about a part.
    let emsg_at = fired
        .iter()
        .find(|c| c["key"] == "TXXX" && c["data"] == TEXT)
        .and_then(|c| c["start"].as_f64());
    for kind in ["video", "audio"] {
        let range = v["dateRanges"][kind]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == dr_id.as_str())
            .cloned();
        let at = range.as_ref().and_then(|r| r["startTime"].as_f64());
        f.check(
            range.as_ref().is_some_and(|r| r["text"] == TEXT)
                && matches!((at, emsg_at), (Some(d), Some(e)) if (d - e).abs() <= 0.35),
            "hls.js places the recording's date range where its ID3 cue fired",
            || {
                format!(
                    "{kind}: date range {range:?}, emsg cue at {emsg_at:?}\n{}",
                    v["dateRanges"]
                )
            },
        );
    }
    let duration = v["report"]["duration"].as_f64().unwrap_or(f64::NAN);
    f.check(
        (duration - published).abs() <= 0.25,
        "hls.js sees the recording's whole length",
        || format!("{duration} s for {published} s published"),
    );
    eprintln!("local recording test took {:?}", t0.elapsed());
    f.assert_empty("local recording");
}
