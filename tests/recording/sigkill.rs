//! Test 3: SIGKILL mid-stream, the recording recovered at the next start.

use super::common::*;
use super::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn sigkill_mid_stream_recovers_the_recording_at_the_next_start() {
    let _turn = take_turn();
    let f = Findings::default();
    let t0 = Instant::now();
    let cfg = node_config(leak(format!("[recording]\n{RECORDING_KEYS}")));
    let mut node = Node::start(cfg.clone());
    let http = Http::new();
    let scratch = tempfile::tempdir().expect("scratch dir");
    // This channel records by the CLI's flag (the node's default is off).
    let out = node.cli(&[
        "channel", "create", "--name", "rec-kill", "--ladder", "standard", "--record", "--json",
    ]);
    let ch = Channel::from_json(
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}")),
    );
    assert_eq!(ch.json["record"], true, "channel create --record: {out}");

    // A first publish of 6 s, then a reconnect within the grace period: the
    // working playlists the node keeps for a crash then hold a discontinuity
    // and a second init, which the recovered VOD must keep.
    let mut first = publish_for(&node, &ch, 640, 360, 6);
    wait_published(&mut first, 6);
    let mut publisher = publish_for(&node, &ch, 640, 360, 120);
    // Segments after the reconnect's discontinuity in a live playlist.
    let after_cut = |name: &str| {
        let r = http.try_get(&node.media_url(&ch.id, name)).ok()?;
        let pl = parse_media(&r.text()).ok()?;
        let cut = pl.segments.iter().position(|s| s.discontinuity)?;
        Some(pl.segments.len() - cut)
    };
    let wait_after_cut = |k: usize| {
        let all = wait_for(Duration::from_secs(45), Duration::from_millis(200), || {
            ["source", "160p", "audio"]
                .iter()
                .all(|n| after_cut(n).is_some_and(|have| have >= k))
                .then_some(())
        });
        assert!(
            all.is_some(),
            "not {k} segments after the reconnect in every live playlist"
        );
    };
    // Timed metadata once the second publish has a segment: it lands in the
    // second or third segment after the discontinuity, both complete (and so
    // noted) once there are three, about 6 s into the second publish.
    wait_after_cut(1);
    let dr_id = post_metadata(&node, &http, &ch.id);
    let dr_tag = format!("#EXT-X-DATERANGE:ID=\"{dr_id}\"");
    wait_after_cut(3);
    let master_url = node.master_url(&ch.id);
    let master = http.get(&master_url).text();
    let live = renditions(&master);
    let mut noted: Vec<Noted> = Vec::new();
    // (rendition, the date range's line) where a complete segment carried it.
    let mut noted_ranges: Vec<(String, String)> = Vec::new();
    for (name, uri) in &live {
        let url = resolve(&master_url, uri);
        let Fetched { resp, pl } = fetch_media(&http, &url, "");
        let text = resp.text();
        let lines: Vec<&str> = text.lines().collect();
        let last_uri = pl
            .segments
            .last()
            .and_then(|s| lines.iter().rposition(|l| *l == s.uri));
        let range = lines.iter().position(|l| l.starts_with(&dr_tag));
        if let (Some(r), Some(u)) = (range, last_uri)
            && r < u
        {
            noted_ranges.push((name.clone(), lines[r].to_string()));
        }
        for s in &pl.segments {
            let map_uri = s.map_uri.clone().unwrap_or_default();
            let get = |u: &str| {
                let r = http.get(&resolve(&url, u));
                assert_eq!(r.status, 200, "GET {u} of live {name}");
                r.body
            };
            noted.push(Noted {
                rendition: name.clone(),
                uri: s.uri.clone(),
                extinf: s.duration,
                bytes: get(&s.uri),
                init: get(&map_uri),
                map_uri,
            });
        }
    }
    // The recorder spools a segment right after the live store publishes it
    // (players first): a second lets a loaded machine's channel thread do
    // that for the last one noted before the kill.
    std::thread::sleep(Duration::from_secs(1));
    let pid = node.pid().expect("the node runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {pid}");
    assert!(
        time_until(Duration::from_secs(10), || !node.is_running()).is_some(),
        "the node did not die of SIGKILL"
    );
    publisher.kill();
    eprintln!(
        "killed the node after {:?} with {} segments noted",
        t0.elapsed(),
        noted.len()
    );

    // The next node on the same data directory completes the recording.
    let again = Node::start_in(&node.data_dir, cfg, &node_bin());
    let list = wait_complete(&again, &ch.id, Duration::from_secs(60));
    eprintln!("recovered recording complete after {:?}", t0.elapsed());
    assert_eq!(list.len(), 1, "one recording: {list:?}");
    let entry = &list[0];
    let session = entry["session"].as_str().expect("session").to_string();
    let base = again.url(&format!("/recordings/{}/{session}/", ch.id));
    let fetch = |rel: &str| -> Option<Vec<u8>> {
        let r = http.get(&format!("{base}{rel}"));
        (r.status == 200).then_some(r.body)
    };
    let vod = read_vod(&f, &fetch, scratch.path());
    let got: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    let want: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, want, "recorded renditions are the live ones");
    for r in &vod {
        f.check(
            r.discontinuities == 1,
            "the recovered VOD keeps the reconnect's one discontinuity",
            || format!("{}:\n{}", r.name, r.text),
        );
    }

    // Every segment the live playlists listed as complete is in the
    // recording, with its EXTINF, its init and its very bytes.
    for n in &noted {
        let Some(r) = vod.iter().find(|r| r.name == n.rendition) else {
            continue;
        };
        let listed = r
            .text
            .lines()
            .position(|l| l == n.uri)
            .and_then(|i| r.text.lines().nth(i.checked_sub(1)?))
            .and_then(|l| {
                l.strip_prefix("#EXTINF:")?
                    .trim_end_matches(',')
                    .parse::<f64>()
                    .ok()
            });
        f.check(
            listed.is_some_and(|d| (d - n.extinf).abs() < 1e-6),
            "every segment complete live before the kill is listed in the recovered VOD with its EXTINF",
            || format!("{}/{} (live EXTINF {}):\n{}", n.rendition, n.uri, n.extinf, r.text),
        );
        f.check(
            fetch(&format!("{}/{}", n.rendition, n.uri)).as_ref() == Some(&n.bytes),
            "a recovered segment has the live segment's bytes",
            || format!("{}/{}", n.rendition, n.uri),
        );
        f.check(
            r.text
                .contains(&format!("#EXT-X-MAP:URI=\"{}\"", n.map_uri))
                && fetch(&format!("{}/{}", n.rendition, n.map_uri)).as_ref() == Some(&n.init),
            "a recovered segment's init is the live one, byte for byte",
            || format!("{}/{}", n.rendition, n.map_uri),
        );
    }

    // The metadata, complete in every live playlist before the kill, is in
    // every recovered one, the same date range line.
    f.check(
        noted_ranges.len() == live.len(),
        "the metadata's segment was complete in every live playlist before the kill",
        || format!("{noted_ranges:?}"),
    );
    for (name, line) in &noted_ranges {
        let text = vod
            .iter()
            .find(|r| &r.name == name)
            .map_or("", |r| r.text.as_str());
        f.check(
            text.lines().any(|l| l == line),
            "the recovered VOD keeps the live playlist's EXT-X-DATERANGE",
            || format!("{name}: {line}\n{text}"),
        );
    }

    let ended: Value = serde_json::from_slice(&fetch("recording-ended.json").unwrap_or_default())
        .expect("recording-ended.json in the store");
    f.check(
        ended["event"] == "recording-ended"
            && ended["channel"] == ch.id.as_str()
            && ended["session"] == session.as_str()
            && ended["recovered"] == true,
        "recording-ended.json of a recording completed after a kill says recovered",
        || ended.to_string(),
    );
    let (a, b) = (
        ended["started_at"]
            .as_str()
            .and_then(playlist::parse_date_time),
        ended["ended_at"]
            .as_str()
            .and_then(playlist::parse_date_time),
    );
    f.check(
        matches!((a, b), (Some(a), Some(b)) if b >= a),
        "a recovered recording's ended_at is not before its start",
        || ended.to_string(),
    );
    check_api_entry(&f, entry, &ended);
    f.check(
        entry["recovered"] == true,
        "the API lists the recording as recovered",
        || entry.to_string(),
    );
    let drained = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        (metric(&again, "rungs_recording_spool_files") == 0.0).then_some(())
    });
    f.check(
        drained.is_some(),
        "the spool is empty once the recovered recording is stored",
        || format!("{} files", metric(&again, "rungs_recording_spool_files")),
    );
    eprintln!("SIGKILL recording test took {:?}", t0.elapsed());
    f.assert_empty("recovered recording");
}

/// One complete segment of a live playlist, noted before the kill.
struct Noted {
    rendition: String,
    uri: String,
    extinf: f64,
    bytes: Vec<u8>,
    map_uri: String,
    init: Vec<u8>,
}
