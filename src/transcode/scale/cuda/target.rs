//! Where the CUDA scaler leaves a rung: a host frame (downloaded through
//! pinned memory) or planes in device memory that stay on the GPU (an NVENC
//! input picture), and the promise a device target makes.

use crate::transcode::frame::{Frame, Size};

/// Where [`GpuScaler`] leaves one rung's picture.
pub enum Target<'a> {
    /// Downloaded, through pinned memory, into this host frame.
    Host(&'a mut Frame),
    /// Copied on the device into the Y, U and V planes at these (device
    /// address, pitch) pairs: a picture that stays on the GPU.
    Device([(u64, usize); 3]),
}

/// One rung's output picture, in host or in device memory.
///
/// # Safety
///
/// The planes of a [`Target::Device`] must be device memory of the scaler's
/// GPU in its primary context (where FFmpeg's CUDA devices allocate, opened
/// with `primary_ctx`), writable, each holding its plane's rows of
/// [`RungOutput::picture_size`] at its pitch, and used by nothing else until
/// the scaler's call returns.
pub unsafe trait RungOutput {
    /// The picture's size; the scaler refuses one that is not its rung's.
    fn picture_size(&self) -> Size;

    /// Where the scaler writes the picture.
    fn target(&mut self) -> Target<'_>;

    /// Stamps the source picture's pts on it.
    fn set_picture_pts(&mut self, pts: i64);
}

// SAFETY: a host frame is never a device target.
unsafe impl RungOutput for Frame {
    fn picture_size(&self) -> Size {
        self.size()
    }

    fn target(&mut self) -> Target<'_> {
        Target::Host(self)
    }

    fn set_picture_pts(&mut self, pts: i64) {
        self.set_pts(pts);
    }
}
