//! Timed metadata end to end, with a live ffmpeg publish on the `standard`
//! ladder: `POST /api/v1/channels/{id}/metadata` puts an `emsg` (ID3 in
//! the AOM scheme) into a part of every rendition and an EXT-X-DATERANGE
//! into every rendition's playlist (delta updates too); the 6th call in a
//! second is refused with 429, 1 KB + 1 byte with 413, an unknown channel
//! with 404; and hls.js in Chromium raises the ID3 cue where the date range
//! says it belongs.

mod common;

use common::*;
use std::time::Duration;

const TEXT: &str = "rungs-metadata-e2e";

/// Rendition playlist URLs named in the multivariant playlist.
fn renditions(master: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in master.lines() {
        if l.starts_with("#EXT-X-MEDIA:") {
            out.extend(uri_attribute(l));
        } else if !l.starts_with('#') && !l.trim().is_empty() {
            out.push(l.trim().to_string());
        }
    }
    out
}

/// The value of a tag line's `URI="..."` attribute.
fn uri_attribute(line: &str) -> Option<String> {
    let rest = &line[line.find("URI=\"")? + 5..];
    Some(rest[..rest.find('"')?].to_string())
}

fn post(node: &Node, id: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {}", node.token);
    let r = node
        .http
        .request(
            "POST",
            &node.admin_url(&format!("/api/v1/channels/{id}/metadata")),
            &[("authorization", &auth), ("content-type", content_type)],
            Some(body),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

/// The URIs of the parts (or the segment) listed after the line holding
/// `tag`, up to the next segment's date.
fn media_after(pl: &str, tag: &str) -> Vec<String> {
    let mut found = false;
    let mut out = Vec::new();
    for l in pl.lines() {
        if l.contains(tag) {
            found = true;
            continue;
        }
        if !found {
            continue;
        }
        if l.starts_with("#EXT-X-PROGRAM-DATE-TIME") && !out.is_empty() {
            break;
        }
        if l.starts_with("#EXT-X-PART:") {
            out.extend(uri_attribute(l));
        } else if !l.starts_with('#') && !l.trim().is_empty() {
            out.push(l.trim().to_string());
        }
    }
    out
}

#[test]
fn timed_metadata_reaches_every_rendition_and_hlsjs() {
    require_browser();
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel_with_ladder("meta", "standard");
    let f = Findings::default();

    // Not live yet: a clear 409; unknown: 404.
    let (status, body) = post(&node, &ch.id, "text/plain", b"early");
    f.check(
        status == 409,
        "metadata to a channel that is not live: 409",
        || format!("{status} {body}"),
    );
    let (status, _) = post(&node, "no-such-channel", "text/plain", b"x");
    f.check(status == 404, "metadata to an unknown channel: 404", || {
        status.to_string()
    });

    let mut publisher = node.publish_live(&ch, 2);
    let master_url = node.master_url(&ch.id);
    let master = http.get(&master_url).text();
    let base = master_url.trim_end_matches("master.m3u8").to_string();
    let urls: Vec<String> = renditions(&master)
        .iter()
        .map(|u| format!("{base}{u}"))
        .collect();
    assert!(urls.len() >= 3, "source, a rung and audio:\n{master}");

    let (status, placed) = post(&node, &ch.id, "text/plain; charset=utf-8", TEXT.as_bytes());
    assert_eq!(status, 202, "metadata accepted: {placed}");
    let dr_id = placed["daterange_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no daterange_id: {placed}"))
        .to_string();
    let dr_tag = format!("#EXT-X-DATERANGE:ID=\"{dr_id}\"");

    for url in &urls {
        let pl = wait_for(Duration::from_secs(12), Duration::from_millis(200), || {
            let t = http.get(url).text();
            t.contains(&dr_tag).then_some(t)
        });
        let Some(pl) = pl else {
            f.check(false, "EXT-X-DATERANGE in every rendition playlist", || {
                format!("{url}:\n{}", http.get(url).text())
            });
            continue;
        };
        f.check(
            pl.lines().any(|l| {
                l.starts_with(&dr_tag)
                    && l.contains(&format!("X-RUNGS-TEXT=\"{TEXT}\""))
                    && l.contains("START-DATE=\"")
                    && l.contains("CLASS=\"rungs.metadata\"")
            }),
            "the date range carries the text, its date and class",
            || pl.clone(),
        );
        // The emsg is in the part listed after the date range.
        let dir = url.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let carried = media_after(&pl, &dr_tag).iter().any(|u| {
            let r = http.get(&format!("{dir}/{u}"));
            fmp4::id3_emsg_payloads(&r.body).iter().any(|p| {
                p.starts_with(b"ID3\x04")
                    && p.windows(4).any(|w| w == b"TXXX")
                    && p.windows(TEXT.len()).any(|w| w == TEXT.as_bytes())
            })
        });
        f.check(
            carried,
            "an emsg with the ID3 TXXX frame before the moof of the part",
            || format!("{url}:\n{pl}"),
        );
        let delta = http.get(&format!("{url}?_HLS_skip=YES")).text();
        f.check(
            delta.contains(&dr_tag),
            "the date range in a delta update",
            || delta.clone(),
        );
    }

    // Rate: at most 5 a second per channel. Six calls at once, so that a
    // loaded machine cannot spread them over more than a second.
    std::thread::sleep(Duration::from_millis(1100));
    let mut statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let (node, id) = (&node, &ch.id);
                s.spawn(move || post(node, id, "text/plain", format!("burst {i}").as_bytes()).0)
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap_or(0)).collect()
    });
    statuses.sort_unstable();
    f.check(
        statuses == [202, 202, 202, 202, 202, 429],
        "five calls in a second accepted, the sixth refused with 429",
        || format!("{statuses:?}"),
    );
    let (status, _) = post(&node, &ch.id, "application/octet-stream", &[7u8; 1025]);
    f.check(status == 413, "1 KB + 1 byte: 413", || status.to_string());

    // The CLI calls the running node's admin API: bytes from a file go as
    // a PRIV frame and a hex date range.
    std::thread::sleep(Duration::from_millis(1100));
    let file = tmp_file(&node.data_dir, "meta.bin", &[0xC0, 0xFF, 0xEE]);
    let admin = format!("127.0.0.1:{}", node.admin_port);
    let file_arg = file.to_string_lossy().into_owned();
    let out = node.cli(&[
        "channel",
        "metadata",
        &ch.id,
        "--file",
        &file_arg,
        "--admin-addr",
        &admin,
    ]);
    let cli: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    let cli_tag = format!("#EXT-X-DATERANGE:ID=\"rungs-{}\"", cli["id"]);
    let source = node.media_url(&ch.id, "source");
    let listed = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let t = http.get(&source).text();
        t.lines()
            .any(|l| l.starts_with(&cli_tag) && l.contains("X-RUNGS-DATA=0xC0FFEE"))
            .then_some(())
    });
    f.check(
        listed.is_some(),
        "`rungs channel metadata --file` lands as a hex date range",
        || format!("CLI said {out}"),
    );

    // hls.js raises the ID3 cue of the emsg within about a part of where
    // the date range of the same event puts it.
    std::thread::sleep(Duration::from_millis(1100));
    let v = run_page_script(
        "tests/player/metadata.mjs",
        &[
            &master_url,
            &node.admin_url(&format!("/api/v1/channels/{}/metadata", ch.id)),
            &node.token,
            "cue-from-the-browser",
        ],
    );
    let cues = v["cues"].as_array().cloned().unwrap_or_default();
    let id = format!("rungs-{}", v["placed"]["id"]);
    let emsg_cue = cues
        .iter()
        .find(|c| c["key"] == "TXXX" && c["data"] == "cue-from-the-browser")
        .and_then(|c| c["start"].as_f64());
    let dr_cue = cues
        .iter()
        .find(|c| c["id"] == id.as_str())
        .and_then(|c| c["start"].as_f64());
    f.check(
        v["ok"] == true && emsg_cue.is_some(),
        "hls.js raised the ID3 cue of the emsg",
        || v.to_string(),
    );
    if let (Some(e), Some(d)) = (emsg_cue, dr_cue) {
        f.check(
            (e - d).abs() <= 0.35,
            "the ID3 cue within about a part of the date range's position",
            || format!("emsg cue {e:.3} s, date range cue {d:.3} s\n{v}"),
        );
    } else {
        f.check(false, "hls.js raised the date range cue too", || {
            v.to_string()
        });
    }
    publisher.stop();
    f.assert_empty("timed metadata");
}
