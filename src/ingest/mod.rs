//! Ways into the node: each ingest protocol turns a publisher's stream into `IngestEvent`s for the hub.

pub mod rtmp;
pub mod whip;
