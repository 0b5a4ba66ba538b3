//! Node configuration from TOML; every field has a working default.
