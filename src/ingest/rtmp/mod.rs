//! RTMP ingest: sans-IO session and FLV tag parsing; `io` is the only part that touches sockets.

pub mod connect;
pub mod enhanced;
pub mod flv;
pub mod guard;
pub mod io;
pub mod reconnect;
pub mod session;
mod tag_error;

pub use io::serve;
