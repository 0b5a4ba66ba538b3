//! rungs: a live-video edge node. RTMP in, low-latency HLS out.

pub mod av;
pub mod config;
pub mod fleet;
pub mod gpu;
pub mod hooks;
pub mod hub;
pub mod ingest;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod node;
pub mod package;
pub mod record;
pub mod registry;
pub mod serve;
pub mod transcode;
