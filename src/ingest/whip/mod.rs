//! WHIP ingest (RFC 9725): WebRTC publishers into the same hub as RTMP.
//!
//! `http` answers the WHIP endpoint and session URLs; `udp` is the one task
//! that owns the UDP socket every session shares and drives each session's
//! sans-IO `session::Session`; `media` is a thread per session that turns
//! WebRTC frames into the hub's ingest events. Nothing here decodes video,
//! and no stream key reaches a log line or a metric.

mod http;
mod media;
mod offer;
mod session;
mod timing;
mod udp;

pub use http::routes;
pub use media::{AnnexBVideo, VideoAu, VideoSample};
pub use offer::{OfferError, Offered, check as check_offer};
pub use session::{SessionTiming, negotiate};
pub use udp::{Demux, Whip, WhipSettings};
