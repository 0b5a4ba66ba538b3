//! A cheap live-paced publisher for the ladder tests, and channel creation
//! with a ladder preset.
//!
//! `common::Publisher` encodes with `-preset veryfast` by default; a 1080p
//! source at that preset would take a whole core of a 2-core machine away
//! from the node under test. The ladder tests publish testsrc2 with
//! `ultrafast` + `zerolatency` (no B-frames), a fixed GOP and CBR-ish VBV,
//! so the node's transcoder is what the machine spends its time on.

use crate::common::{Channel, Node, PubOpts, Publisher};

/// What the publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames (`-g`, `-keyint_min`, no scene cuts).
    pub gop: u32,
    pub bitrate_k: u32,
    /// Stop by itself after this many seconds (a safety net for orphans).
    pub max_seconds: u32,
}

impl Source {
    pub fn new(width: u32, height: u32, bitrate_k: u32, max_seconds: u32) -> Source {
        Source {
            width,
            height,
            fps: 30,
            gop: 60,
            bitrate_k,
            max_seconds,
        }
    }
}

/// `rungs channel create --ladder LADDER --json`.
pub fn create_channel(node: &Node, name: &str, ladder: &str) -> Channel {
    let out = node.cli(&[
        "channel", "create", "--name", name, "--ladder", ladder, "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "`channel create --ladder {ladder} --json` did not print one JSON object ({e}): {out:?}"
        )
    });
    assert_eq!(
        v["ladder"].as_str(),
        Some(ladder),
        "channel create --ladder {ladder} answered {v}"
    );
    Channel::from_json(v)
}

/// Starts a cheap publisher for `ch` and attaches its log to the node's.
pub fn publish(node: &Node, ch: &Channel, s: Source) -> Publisher {
    let opts = PubOpts {
        width: s.width,
        height: s.height,
        fps: s.fps,
        gop: s.gop,
        bframes: false,
        zerolatency: true,
        preset: "ultrafast",
        vbv: true,
        video_bitrate_k: s.bitrate_k,
        max_seconds: s.max_seconds,
        ..PubOpts::default()
    };
    let p = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, &node.data_dir);
    node.attach_log(&p.log_path);
    p
}
