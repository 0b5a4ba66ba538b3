//! Scaling one decoded frame into every rung of a ladder: the `Scaler` trait
//! the pipeline drives, and its CPU and CUDA backends. Never allocates per frame.

pub mod cpu;
pub mod cuda;

pub use cpu::{AxisFilter, Cascade, CpuScaler, Kernel, ScaleOptions, Threading};
pub use cuda::{GpuScaleError, GpuScaler};

use crate::transcode::frame::{Frame, FrameError, Size};

pub type Result<T, E = ScaleError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("a scaler needs at least one rung")]
    NoRungs,
    #[error("bad size: {0}")]
    Size(#[from] FrameError),
    #[error("source frame is {got}, the scaler was built for {want}")]
    SourceSize { want: Size, got: Size },
    #[error("{got} output frames for {want} rungs")]
    RungCount { want: usize, got: usize },
    #[error("output frame {index} is {got}, rung {index} is {want}")]
    RungSize { index: usize, want: Size, got: Size },
    #[error("GPU: {0}")]
    Device(#[source] Box<cuda::GpuScaleError>),
}

/// One input frame in, one output frame per rung out.
///
/// Built for one source size and one list of rung sizes; a source that
/// changes resolution mid-stream (WHIP publishers do) needs a new scaler.
pub trait Scaler: Send {
    /// Fills `dst[i]` with rung `i` of [`Scaler::rungs`] and copies the pts.
    /// `dst` frames must have the rung sizes; their previous pixels are ignored.
    fn scale(&mut self, src: &Frame, dst: &mut [Frame]) -> Result<()>;

    /// Output sizes, in the order `scale` expects its `dst` frames.
    fn rungs(&self) -> &[Size];
}

/// Checks the frames handed to [`Scaler::scale`] against what it was built for.
fn check_frames(source: Size, rungs: &[Size], src: &Frame, dst: &[Frame]) -> Result<()> {
    if src.size() != source {
        return Err(ScaleError::SourceSize {
            want: source,
            got: src.size(),
        });
    }
    check_outputs(rungs, dst)
}

/// Checks the output frames alone (a source handed over in another form).
fn check_outputs(rungs: &[Size], dst: &[Frame]) -> Result<()> {
    if dst.len() != rungs.len() {
        return Err(ScaleError::RungCount {
            want: rungs.len(),
            got: dst.len(),
        });
    }
    for (index, (frame, &want)) in dst.iter().zip(rungs).enumerate() {
        if frame.size() != want {
            return Err(ScaleError::RungSize {
                index,
                want,
                got: frame.size(),
            });
        }
    }
    Ok(())
}
