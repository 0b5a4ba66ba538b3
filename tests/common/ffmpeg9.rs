//! FFmpeg 9 (the static build `make` fetches into `.ffmpeg9/`) as a publisher: its FLV muxer
//! writes Enhanced RTMP v2 and sends every video stream after the first as a multitrack
//! track. Clips are encoded once and sent with `-c copy`, so a test or bench measures the
//! node's work, not the publisher's encoding.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{repo_root, wait_for};

pub fn ffmpeg9() -> PathBuf {
    let bin = repo_root().join(".ffmpeg9/ffmpeg");
    assert!(
        bin.exists(),
        "{} is missing: run `make .ffmpeg9/ffmpeg` (or `make test`)",
        bin.display()
    );
    bin
}

/// H.264 as an encoder in a studio sends it: IDRs only where `-g` puts them.
pub const STUDIO_X264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-sc_threshold",
    "0",
];

/// One video stream of a clip: its size, bit rate (with a VBV of two seconds' worth) and
/// keyframe interval in frames.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
    pub gop: u32,
}

pub const fn clip_stream(width: u32, height: u32, kbps: u32, gop: u32) -> Stream {
    Stream {
        width,
        height,
        kbps,
        gop,
    }
}

/// A clip (Matroska) of `seconds` of `picture` (a lavfi source at 30 fps), one video stream
/// per `streams` scaled from it and encoded with `encoder` (the codec and its options; each
/// stream's keyframes every `gop` frames come from `-g`/`-keyint_min`), and AAC audio.
pub fn clip(
    dir: &Path,
    name: &str,
    picture: &str,
    streams: &[Stream],
    seconds: u32,
    encoder: &[&str],
) -> PathBuf {
    let out = dir.join(format!("{name}.mkv"));
    let mut graph = format!("[0:v]split={}", streams.len());
    graph.extend((0..streams.len()).map(|i| format!("[s{i}]")));
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        picture,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &seconds.to_string(),
    ]
    .map(String::from)
    .to_vec();
    for (i, s) in streams.iter().enumerate() {
        graph.push_str(&format!(";[s{i}]scale={}:{}[v{i}]", s.width, s.height));
        args.extend([
            format!("-b:v:{i}"),
            format!("{}k", s.kbps),
            format!("-maxrate:v:{i}"),
            format!("{}k", s.kbps),
            format!("-bufsize:v:{i}"),
            format!("{}k", s.kbps * 2),
            format!("-g:v:{i}"),
            s.gop.to_string(),
            format!("-keyint_min:v:{i}"),
            s.gop.to_string(),
        ]);
    }
    args.extend(["-filter_complex".into(), graph]);
    for i in 0..streams.len() {
        args.extend(["-map".into(), format!("[v{i}]")]);
    }
    args.extend(encoder.iter().map(|s| s.to_string()));
    args.extend(
        [
            "-pix_fmt", "yuv420p", "-map", "1:a", "-c:a", "aac", "-b:a", "64k",
        ]
        .map(String::from),
    );
    args.push(out.to_string_lossy().into_owned());
    let o = Command::new(ffmpeg9())
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg 9");
    assert!(
        o.status.success(),
        "ffmpeg 9 {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// FFmpeg 9 sending a clip's video streams `maps` and its audio over RTMP at the clip's
/// pace, looped, `-c copy`; killed on Drop.
pub struct CopyPublisher {
    child: Child,
    log: PathBuf,
}

impl CopyPublisher {
    pub fn start(clip: &Path, maps: &[&str], url: &str, dir: &Path, name: &str) -> Self {
        let log = dir.join(format!("ffmpeg9-{name}.log"));
        let file = std::fs::File::create(&log).expect("publisher log file");
        let mut cmd = Command::new(ffmpeg9());
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(clip);
        for m in maps.iter().chain(&["0:a"]) {
            cmd.args(["-map", m]);
        }
        // HEVC and AV1 go as Enhanced RTMP anyway; announcing them in the connect is
        // harmless for H.264 and gets the node's capabilities back.
        cmd.args([
            "-c",
            "copy",
            "-rtmp_enhanced_codecs",
            "hvc1,av01",
            "-f",
            "flv",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
        let child = cmd.spawn().expect("spawn ffmpeg 9");
        CopyPublisher { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How it ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit (the node closed the connection).
    pub fn exited(&mut self, within: Duration) -> bool {
        wait_for(within, Duration::from_millis(100), || self.exit_status()).is_some()
    }
}

impl Drop for CopyPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
