//! HTTP serving: HLS, the control API, metrics and the player page.
pub mod hls;
