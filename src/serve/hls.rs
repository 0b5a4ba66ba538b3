//! HLS routes: playlists with blocking reload and skip, init segments, parts and segments.
