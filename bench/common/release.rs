//! The release node the end-to-end benchmarks measure.

use std::path::PathBuf;
use std::process::Command;

/// `target/release/rungs`, built first if it is missing: a benchmark of a
/// debug build measures the optimiser settings, not the node.
pub fn release_binary() -> PathBuf {
    let from_cargo = PathBuf::from(env!("CARGO_BIN_EXE_rungs"));
    if from_cargo.exists() && from_cargo.to_string_lossy().contains("/release/") {
        return from_cargo;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = root.join("target/release/rungs");
    if !p.exists() {
        eprintln!("building the release node (cargo build --release)...");
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "rungs"])
            .current_dir(&root)
            .status()
            .expect("run cargo");
        assert!(st.success(), "cargo build --release failed");
    }
    p
}
