//! The GPU side of the node: what the machine offers (`probe`) and the CUDA
//! kernels compiled at start (`kernels`). libcuda and libnvrtc are loaded at
//! run time, so the same binary runs, CPU only, where they are missing.

pub mod device;
pub mod kernels;
pub mod probe;
pub mod quality;
