//! A benchmark's settings from the environment.

/// `name` from the environment parsed as a `T`; `None` when unset or not a `T`.
pub fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}
