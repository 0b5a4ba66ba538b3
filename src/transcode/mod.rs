//! Decoded-video processing between decode and encode: pooled frames, the
//! ladder scaler and the quality probe. Nothing here touches sockets or tokio.

pub mod audio;
pub mod backend;
pub mod decode;
pub mod encode;
pub mod frame;
pub mod ladder;
pub mod pipeline;
pub mod quality;
pub mod scale;
pub mod source;

/// Drives the FFmpeg CLI for tests that compare against libswscale and
/// FFmpeg's metric filters. Panics loudly when `ffmpeg` is missing: those
/// comparisons are the point of the tests, so skipping would hide a gap.
#[cfg(test)]
pub(crate) mod ffmpeg_cli {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::transcode::frame::{Frame, FramePool, Size};

    /// Runs `ffmpeg` with `args` and returns what it logged (stderr).
    pub fn run(args: &[&str]) -> String {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-y"])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run the ffmpeg CLI ({e}); install it: apt-get install ffmpeg")
            });
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "ffmpeg {args:?} failed:\n{log}");
        log
    }

    fn raw_input<'a>(size: &'a str, path: &'a str) -> [&'a str; 8] {
        [
            "-s", size, "-pix_fmt", "yuv420p", "-f", "rawvideo", "-i", path,
        ]
    }

    /// Renders `frames` frames of a lavfi source graph to raw I420.
    pub fn generate(dir: &Path, name: &str, graph: &str, frames: usize) -> PathBuf {
        let path = dir.join(format!("{name}.yuv"));
        let frames = frames.to_string();
        let out = path.to_str().expect("temp paths are UTF-8");
        run(&[
            "-f",
            "lavfi",
            "-i",
            graph,
            "-frames:v",
            &frames,
            "-pix_fmt",
            "yuv420p",
            "-f",
            "rawvideo",
            out,
        ]);
        path
    }

    /// Scales a raw I420 file with libswscale (`flags`: `lanczos`, `bicubic`).
    pub fn swscale(input: &Path, from: Size, to: Size, flags: &str) -> PathBuf {
        let path = input.with_extension(format!("{to}.{flags}.yuv"));
        let (from, filter) = (
            from.to_string(),
            format!("scale={}:{}:flags={flags}", to.width, to.height),
        );
        let input = input.to_str().expect("temp paths are UTF-8");
        let out = path.to_str().expect("temp paths are UTF-8");
        let mut args = raw_input(&from, input).to_vec();
        args.extend(["-vf", &filter, "-pix_fmt", "yuv420p", "-f", "rawvideo", out]);
        run(&args);
        path
    }

    /// Runs a two-input metric filter (`psnr` or `ssim`) on raw I420 files
    /// and returns its summary line, e.g. `PSNR y:.. u:.. v:.. average:..`.
    pub fn metric(filter: &str, a: &Path, b: &Path, size: Size) -> String {
        let size = size.to_string();
        let (a, b) = (a.to_str().expect("UTF-8"), b.to_str().expect("UTF-8"));
        let mut args = raw_input(&size, a).to_vec();
        args.extend(raw_input(&size, b));
        let graph = format!("[0][1]{filter}");
        args.extend(["-lavfi", &graph, "-f", "null", "-"]);
        let log = run(&args);
        let tag = format!("Parsed_{filter}_0");
        let line = log.lines().rfind(|l| l.contains(&tag));
        line.unwrap_or_else(|| panic!("no {filter} summary in ffmpeg's output:\n{log}"))
            .to_owned()
    }

    /// The number after `key` (e.g. `"average:"`) in a metric summary line.
    pub fn field(line: &str, key: &str) -> f64 {
        let value = line
            .split(key)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        let value = value.unwrap_or_else(|| panic!("no `{key}` in {line:?}"));
        value
            .parse()
            .unwrap_or_else(|_| panic!("`{key}{value}` is not a number"))
    }

    pub fn read_frames(path: &Path, size: Size) -> Vec<Frame> {
        let data = std::fs::read(path).expect("ffmpeg wrote the file");
        let pool = FramePool::new(size, 64).expect("test sizes are valid");
        let len = pool.get().expect("fresh pool").layout().packed_len();
        assert_eq!(
            data.len() % len,
            0,
            "{path:?} is not a whole number of {size} frames"
        );
        data.chunks_exact(len)
            .map(|chunk| {
                let mut frame = pool.get().expect("pool holds 64 test frames");
                frame
                    .copy_from_packed(chunk)
                    .expect("chunk has the packed length");
                frame
            })
            .collect()
    }
}
