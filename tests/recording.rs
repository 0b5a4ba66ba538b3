//! Recording live streams as HLS VOD, end to end with real peers: ffmpeg
//! publishes over RTMP, the node records into its local store or into an S3
//! server (s3s-fs), ffprobe decodes every recorded segment, hls.js in
//! headless Chromium plays a recording back.
//!
//! - `local_recording_survives_a_reconnect_and_plays_in_hlsjs`: a `standard`
//!   channel whose publisher leaves and comes back within the reconnect grace
//!   period, with timed metadata inserted while live: one recording, every
//!   rendition a VOD playlist with one discontinuity and the date range, every
//!   segment decodable and starting on a keyframe, the durations those of what
//!   was published, thumbnails, `recording-ended.json`, the API's entry, the
//!   upload metrics; hls.js plays it to the end, fires the metadata's ID3 cue
//!   and places its date range at the same time.
//! - `s3_outage_is_spooled_without_touching_the_live_stream`: the S3 store
//!   goes away mid-stream for eight seconds: the live playlists keep advancing
//!   and drop nothing while the spool grows and uploads fail; once the store
//!   is back, the whole recording is read back through the S3 API and the
//!   spool is empty.
//! - `sigkill_mid_stream_recovers_the_recording_at_the_next_start`: a node
//!   killed with SIGKILL while recording (after a reconnect) completes the
//!   recording at its next start ("recovered": true), holding the
//!   discontinuity and every segment the live playlists had listed as
//!   complete before the kill, byte for byte.
//!
//! Publishers are cheap (`ultrafast`, no B-frames) and small, so that the 2-core
//! CI machine spends its time on the node's transcoder, and they stop by
//! themselves (`-t`): what was published is then known exactly (N seconds of
//! 30 fps video and 48 kHz audio), which is what the recorded durations are
//! held to.
//!
//! (`#[path]` keeps cargo from taking the files under `tests/recording/` for
//! test targets of their own.)

mod common;
#[path = "recording/local.rs"]
mod local;
#[path = "recording/s3.rs"]
mod s3;
#[path = "recording/sigkill.rs"]
mod sigkill;
#[path = "recording/support.rs"]
mod support;
