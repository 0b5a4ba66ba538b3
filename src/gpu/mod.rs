//! The GPU side of the node: what the machine offers (`probe`) and the CUDA
//! kernels (`kernels`: PTX compiled at build time, NVRTC at start only for a
//! GPU the build did not cover). libcuda and libnvrtc are loaded at run time,
//! so the same binary runs, CPU only, where they are missing.
//! Owns the `[gpu]` section of the config file.

pub mod device;
pub mod kernels;
pub mod probe;

use serde::Deserialize;

/// Whether the GPU stages are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Where a usable GPU is found; the CPU otherwise.
    #[default]
    Auto,
    /// Required: no usable GPU is a startup error that says why.
    On,
    /// CPU backends only.
    Off,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    pub enabled: GpuMode,
    /// GPU indices (as `rungs probe` lists them) the node may use; empty: all.
    pub devices: Vec<usize>,
}
