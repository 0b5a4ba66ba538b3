//! What the CUDA scaler refuses, and the checks of a surface or target it
//! makes before anything is queued.

use super::MAX_ROWS;
use crate::gpu::device::GpuError;
use crate::transcode::frame::{SemiPlanar, Size};
use crate::transcode::scale::ScaleError;

#[derive(Debug, thiserror::Error)]
pub enum GpuScaleError {
    #[error(transparent)]
    Scale(#[from] ScaleError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(
        "a downscale from {from} to {to} rows needs windows taller than the GPU kernel holds \
         ({MAX_ROWS} rows)"
    )]
    TooSteep { from: usize, to: usize },
    #[error("{format} {what} plane: {why}")]
    BadSurface {
        format: SemiPlanar,
        what: &'static str,
        why: String,
    },
    #[error("device target of rung {rung}: {why}")]
    BadTarget { rung: Size, why: String },
}

pub(super) fn bad_surface(format: SemiPlanar, what: &'static str, why: String) -> GpuScaleError {
    GpuScaleError::BadSurface { format, what, why }
}

/// A plane's pitch must hold its `row` bytes and fit the kernels' ints; 16-bit samples must
/// sit on even addresses (a misaligned load would fault the whole CUDA context).
pub(super) fn check_pitch(
    format: SemiPlanar,
    what: &'static str,
    address: u64,
    pitch: usize,
    row: usize,
) -> Result<(), GpuScaleError> {
    if pitch < row || i32::try_from(pitch).is_err() {
        let why = format!("pitch {pitch} does not fit its {row}-byte rows");
        return Err(bad_surface(format, what, why));
    }
    if format.sample_bytes() == 2 && (address | pitch as u64) & 1 != 0 {
        let why = format!("16-bit samples at address {address:#x}, pitch {pitch}");
        return Err(bad_surface(format, what, why));
    }
    Ok(())
}
