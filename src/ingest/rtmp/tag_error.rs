//! Why an FLV tag body (legacy or Enhanced RTMP) did not parse: shared by
//! `flv.rs` and `enhanced.rs`, so a refusal reads the same from both.

use crate::media::TrackKind;

#[derive(Debug, thiserror::Error)]
pub enum FlvError {
    /// The body ends before a field it must contain.
    #[error("truncated {} tag: need {need} bytes, have {have}", kind(*.track))]
    Truncated {
        track: TrackKind,
        need: usize,
        have: usize,
    },
    /// A field holds a value the spec does not allow.
    #[error("invalid {} tag at byte {offset}: {why}", kind(*.track))]
    Invalid {
        track: TrackKind,
        offset: usize,
        why: String,
    },
    /// Well-formed as far as we can tell, but a codec or format this node does not ingest.
    #[error("unsupported {} codec: {codec}", kind(*.track))]
    Unsupported { track: TrackKind, codec: String },
}

fn kind(track: TrackKind) -> &'static str {
    match track {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
    }
}
