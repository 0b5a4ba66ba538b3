//! SQLite channel store: channels and their stream keys survive restarts.
