//! An in-process RTMP publisher for the live part of bench/gpu_pipeline.rs:
//! what `ffmpeg -re -stream_loop -1 -i INPUT -c copy -f flv rtmp://...` did,
//! through the FFmpeg libraries the rungs binaries already link, so a
//! machine without the FFmpeg command line can run the live part.
//!
//! Owns one OS thread per publisher, which remuxes the input's best video
//! and best audio stream to FLV over RTMP: packets copied, never decoded;
//! paced at real time by dts against a wall clock started at the first
//! packet (`-re`); looped forever (`-stream_loop -1`), each pass's
//! timestamps offset by the file's duration so they keep increasing.
//! Stopped by [`Publisher::stop`] or by drop, either of which also breaks
//! a write the server is not reading. A publisher that goes down
//! (connection refused, the server closing on it) says why through
//! [`Publisher::exited`]; it never retries.

use ffmpeg::ffi;
use ffmpeg::{Rational, Rescale, Rounding};
use ffmpeg_next as ffmpeg;
use std::ffi::{CString, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Microseconds: FFmpeg's `AV_TIME_BASE_Q`.
const MICROS: Rational = Rational(1, 1_000_000);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{} is not a UTF-8 path, which FFmpeg's Rust bindings need", path.display())]
    Path { path: PathBuf },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: ffmpeg::Error,
    },
    #[error("{} has no video stream", path.display())]
    NoVideo { path: PathBuf },
    #[error("reading {} (pass {pass}): {source}", path.display())]
    Read {
        path: PathBuf,
        pass: u64,
        source: ffmpeg::Error,
    },
    #[error("cannot loop {} back to its start (pass {pass}): {source}", path.display())]
    Rewind {
        path: PathBuf,
        pass: u64,
        source: ffmpeg::Error,
    },
    #[error("{} has no packet with a timestamp, so it cannot be paced", path.display())]
    Untimed { path: PathBuf },
    #[error("{}: pass {pass} read no packet (pass 0 is the first)", path.display())]
    Empty { path: PathBuf, pass: u64 },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: ffmpeg::Error },
    #[error("{url}: setting up the FLV output: {what}")]
    Output { url: String, what: String },
    #[error("{url}: the FLV header was refused: {source}")]
    Header { url: String, source: ffmpeg::Error },
    #[error(
        "{url}: writing the {kind} packet at dts {dts_s:.3} s (pass {pass}, {sent} packets \
         sent) failed: {source}"
    )]
    Write {
        url: String,
        kind: &'static str,
        dts_s: f64,
        pass: u64,
        sent: u64,
        source: ffmpeg::Error,
    },
    #[error("cannot start a publisher thread: {0}")]
    Spawn(std::io::Error),
    #[error("the publisher thread panicked: {0}")]
    Panicked(String),
}

/// One input file published to one RTMP URL from a thread of its own.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), PublishError>>>,
    /// What [`Publisher::exited`] found, kept for later calls.
    ended: Option<Result<(), String>>,
}

impl Publisher {
    /// Opens `input` here (so a bad file fails at once), then connects to
    /// `url` and publishes from a new thread.
    pub fn start(input: &Path, url: &str) -> Result<Publisher, PublishError> {
        init();
        let source = Source::open(input)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let url = url.to_string();
        let thread = std::thread::Builder::new()
            .name("rtmp-publisher".into())
            .spawn(move || publish(source, &url, &flag))
            .map_err(PublishError::Spawn)?;
        Ok(Publisher {
            stop,
            thread: Some(thread),
            ended: None,
        })
    }

    /// `None` while it is publishing; once its thread has ended, how: `Ok`
    /// after a stop, the reason it went down otherwise.
    pub fn exited(&mut self) -> Option<Result<(), String>> {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            self.ended = Some(self.join());
        }
        self.ended.clone()
    }

    /// Asks it to stop (breaking a write in progress) without waiting;
    /// dropping it waits for its thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn join(&mut self) -> Result<(), String> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match thread.join() {
            Ok(end) => end.map_err(|e| e.to_string()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Err(PublishError::Panicked(msg).to_string())
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

/// `ffmpeg_next::init` (error strings, as src/av.rs says) and network
/// setup, once per process: neither may run twice at the same time.
fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Only device registration can fail, and nothing here uses devices.
        let _ = ffmpeg::init();
        ffmpeg::format::network::init();
        // Our errors say what went wrong; FFmpeg itself only speaks about errors.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

/// The opened input and the streams it publishes.
struct Source {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    /// (input index, time base, kind) of the best video and audio stream.
    streams: Vec<(usize, Rational, &'static str)>,
    /// The container's start time in microseconds: a pass starts there.
    start_us: i64,
}

impl Source {
    fn open(path: &Path) -> Result<Source, PublishError> {
        let path_buf = path.to_path_buf();
        // ffmpeg-next's `from_path` unwraps `to_str`: check first.
        if path.to_str().is_none() {
            return Err(PublishError::Path { path: path_buf });
        }
        let input = ffmpeg::format::input(&path).map_err(|source| PublishError::Open {
            path: path_buf.clone(),
            source,
        })?;
        let mut streams = Vec::new();
        let video =
            input
                .streams()
                .best(ffmpeg::media::Type::Video)
                .ok_or(PublishError::NoVideo {
                    path: path_buf.clone(),
                })?;
        streams.push((video.index(), video.time_base(), "video"));
        if let Some(audio) = input.streams().best(ffmpeg::media::Type::Audio) {
            streams.push((audio.index(), audio.time_base(), "audio"));
        }
        // SAFETY: `input` is open; this is a plain field of its context.
        let start = unsafe { (*input.as_ptr()).start_time };
        Ok(Source {
            path: path_buf,
            input,
            streams,
            start_us: if start == ffi::AV_NOPTS_VALUE {
                0
            } else {
                start
            },
        })
    }
}

/// FFmpeg's interrupt callback: non-zero breaks any blocking I/O (connect,
/// handshake, a write the server does not read) with `AVERROR_EXIT`.
extern "C" fn interrupted(opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the `AtomicBool` of `publish`'s `stop`, which
    // outlives the output context that calls this (see `open_output`).
    let stop = unsafe { &*(opaque as *const AtomicBool) };
    c_int::from(stop.load(Ordering::Relaxed))
}

/// An FLV muxer writing to `url` whose I/O `stop` interrupts. `stop` must
/// outlive the returned context (closing it still calls the callback).
fn open_output(
    url: &str,
    stop: &AtomicBool,
) -> Result<ffmpeg::format::context::Output, PublishError> {
    let c_url = CString::new(url).map_err(|_| PublishError::Output {
        url: url.to_string(),
        what: "the URL has a NUL byte".into(),
    })?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: the strings are valid C strings for the calls; on success
    // `ctx` is a new context, freed here on failure and otherwise owned by
    // the returned `Output`, whose drop closes `pb` and frees it. ffmpeg-next's
    // `output_as` cannot install an interrupt callback before it connects.
    unsafe {
        let ret = ffi::avformat_alloc_output_context2(
            &mut ctx,
            std::ptr::null_mut(),
            c"flv".as_ptr(),
            c_url.as_ptr(),
        );
        if ret < 0 || ctx.is_null() {
            return Err(PublishError::Output {
                url: url.to_string(),
                what: format!("no FLV muxer: {}", ffmpeg::Error::from(ret)),
            });
        }
        (*ctx).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(interrupted),
            opaque: stop as *const AtomicBool as *mut c_void,
        };
        let ret = ffi::avio_open2(
            &mut (*ctx).pb,
            c_url.as_ptr(),
            ffi::AVIO_FLAG_WRITE,
            &(*ctx).interrupt_callback,
            std::ptr::null_mut(),
        );
        if ret < 0 {
            ffi::avformat_free_context(ctx);
            return Err(PublishError::Connect {
                url: url.to_string(),
                source: ffmpeg::Error::from(ret),
            });
        }
        Ok(ffmpeg::format::context::Output::wrap(ctx))
    }
}

/// The publisher thread: `Ok` once `stop` is set, the reason otherwise.
fn publish(mut src: Source, url: &str, stop: &AtomicBool) -> Result<(), PublishError> {
    let mut out = match open_output(url, stop) {
        Ok(out) => out,
        // Stopped while it connected.
        Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
        Err(e) => return Err(e),
    };
    for &(index, _, kind) in &src.streams {
        let Some(stream) = src.input.stream(index) else {
            return Err(PublishError::Output {
                url: url.to_string(),
                what: format!("the input's {kind} stream {index} vanished"),
            });
        };
        let mut ost = out
            .add_stream(None::<ffmpeg::Codec>)
            .map_err(|e| PublishError::Output {
                url: url.to_string(),
                what: format!("adding the {kind} stream: {e}"),
            })?;
        ost.set_parameters(stream.parameters());
        // SAFETY: the new stream's parameters, allocated by avformat_new_stream
        // and owned by `out`. FLV writes its own tags: MP4's (avc1, mp4a) would
        // be refused, so 0 as `-c copy` leaves it for FLV.
        unsafe { (*(*ost.as_mut_ptr()).codecpar).codec_tag = 0 };
    }
    if let Err(source) = out.write_header() {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        return Err(PublishError::Header {
            url: url.to_string(),
            source,
        });
    }
    // The muxer picks its time bases (FLV: milliseconds) in write_header.
    let out_tb: Vec<Rational> = (0..src.streams.len())
        .map(|i| out.stream(i).map_or(Rational(1, 1000), |s| s.time_base()))
        .collect();

    let mut pass: u64 = 0;
    let mut sent: u64 = 0;
    // Packets read in this pass: a pass without one would loop for ever.
    let mut read: u64 = 0;
    // The file's duration, as `-stream_loop` takes it: the longest stream,
    // a stream's length being from its first to its last time + duration
    // (of pts and of dts apart, in microseconds, on the first pass). Pass k
    // is shifted by k times it, so no stream's dts ever goes back.
    let mut extent = vec![Extent::default(); src.streams.len()];
    let mut pass_us: i64 = 0;
    // The wall clock and the dts (microseconds, offset) of the first packet.
    let mut clock: Option<(Instant, i64)> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut src.input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => {
                if read == 0 {
                    return Err(PublishError::Empty {
                        path: src.path,
                        pass,
                    });
                }
                read = 0;
                if pass == 0 {
                    pass_us = extent.iter().map(Extent::len).max().unwrap_or(0);
                    if pass_us <= 0 {
                        return Err(PublishError::Untimed { path: src.path });
                    }
                }
                pass += 1;
                src.input
                    .seek(src.start_us, ..src.start_us)
                    .map_err(|source| PublishError::Rewind {
                        path: src.path.clone(),
                        pass,
                        source,
                    })?;
                continue;
            }
            Err(source) => {
                return Err(PublishError::Read {
                    path: src.path,
                    pass,
                    source,
                });
            }
        }
        read += 1;
        let Some(out_index) = src.streams.iter().position(|s| s.0 == packet.stream()) else {
            continue;
        };
        let (_, tb, kind) = src.streams[out_index];
        let Some(dts) = packet.dts().or(packet.pts()) else {
            // MP4 times every packet; one without a time cannot be paced.
            continue;
        };
        if pass == 0 {
            let dur = packet.duration().max(1);
            let e = &mut extent[out_index];
            for (first, end, t) in [
                (&mut e.dts_first, &mut e.dts_end, dts),
                (
                    &mut e.pts_first,
                    &mut e.pts_end,
                    packet.pts().unwrap_or(dts),
                ),
            ] {
                *first = (*first).min(t.rescale_with(tb, MICROS, Rounding::Down));
                *end = (*end).max((t + dur).rescale_with(tb, MICROS, Rounding::Up));
            }
        }
        // Shift the pass to start where the last ended, and the file to 0.
        let shift = (pass as i64 * pass_us - src.start_us).rescale(MICROS, tb);
        let dts_us = (dts + shift).rescale(tb, MICROS);
        let &mut (t0, dts0) = clock.get_or_insert((Instant::now(), dts_us));
        // `-re`: not before its dts on the wall clock started at the first packet.
        let due = t0 + Duration::from_micros(dts_us.saturating_sub(dts0).max(0) as u64);
        if !sleep_until(due, stop) {
            return Ok(());
        }
        packet.set_dts(Some(dts + shift));
        packet.set_pts(packet.pts().map(|p| p + shift));
        packet.rescale_ts(tb, out_tb[out_index]);
        packet.set_stream(out_index);
        packet.set_position(-1);
        if let Err(source) = packet.write_interleaved(&mut out) {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            return Err(PublishError::Write {
                url: url.to_string(),
                kind,
                dts_s: dts_us as f64 / 1e6,
                pass,
                sent,
                source,
            });
        }
        sent += 1;
    }
}

/// One stream's times on the first pass, in microseconds.
#[derive(Clone, Copy)]
struct Extent {
    dts_first: i64,
    dts_end: i64,
    pts_first: i64,
    pts_end: i64,
}

impl Default for Extent {
    fn default() -> Self {
        Extent {
            dts_first: i64::MAX,
            dts_end: i64::MIN,
            pts_first: i64::MAX,
            pts_end: i64::MIN,
        }
    }
}

impl Extent {
    /// Its length; 0 for a stream that had no timed packet.
    fn len(&self) -> i64 {
        let span = |first: i64, end: i64| if end > first { end - first } else { 0 };
        span(self.dts_first, self.dts_end).max(span(self.pts_first, self.pts_end))
    }
}

/// Sleeps until `due` unless `stop` is set first: whether it was not.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}
