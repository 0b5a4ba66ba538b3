//! A benchmark's numeric settings from the environment.

/// `name` from the environment as a number, else `default` (a window, a
/// round or channel count).
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
