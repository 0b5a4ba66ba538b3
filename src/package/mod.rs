//! LL-HLS packaging: fMP4 writer, segmenter, playlists and the part store.

pub mod fmp4;
