//! AAC helpers: AudioSpecificConfig parsing.
