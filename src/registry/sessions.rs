//! Stream sessions: one row per publish (start, end, end reason) and its
//! events, so an operator can answer "what happened at 21:14 last night".

/// Tables this module owns, created with the rest of the registry.
pub(super) const SCHEMA: &str = "";
