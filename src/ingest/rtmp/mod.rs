//! RTMP ingest: sans-IO session and FLV tag parsing; `io` is the only part that touches sockets.
