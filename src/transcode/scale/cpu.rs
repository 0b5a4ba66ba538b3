//! `CpuScaler`: our separable polyphase scaler, specified in integer
//! arithmetic so that the CUDA port can reproduce it exactly. Owns the filter
//! definition and the cascade plan; never allocates per frame.
//!
//! This file plans the cascade and drives the passes; the tables are built
//! in `cpu/filter.rs`, the integer row passes live in `cpu/rows.rs`, and the
//! tests (against the written spec and libswscale) in `cpu/tests.rs`.
//!
//! # The filter, exactly
//!
//! Each plane is scaled on its own, horizontal pass first. For an axis of
//! `src` input and `dst` output samples, `scale = src / dst` and
//! `stretch = max(scale, 1)` (a shrinking filter widens to low-pass).
//! Output sample `i` is centred on input coordinate
//! `c = (i + 0.5) * scale - 0.5`: pixel centres align, as in libswscale
//! (which rounds `scale` to 16.16 fixed point; we do not).
//! Its raw weights are `K((j - c) / stretch)` for the integers `j` with
//! `|j - c| < R * stretch`, where the kernel `K` ([`Kernel`]) is either
//! Keys' cubic with `a = -0.6` (`R = 2`, `K(x) = 1.4|x|^3 - 2.4|x|^2 + 1`
//! within one sample, `-0.6|x|^3 + 3|x|^2 - 4.8|x| + 2.4` beyond),
//! libswscale's `bicubic` and the default, or Lanczos-3 (`R = 3`,
//! `K(x) = 3 sin(pi x) sin(pi x / 3) / (pi x)^2`, `K(0) = 1`), libswscale's
//! `lanczos`. A `j` outside the plane reads the nearest edge
//! sample (its weight is added to the edge tap). The window holds
//! `taps = min(ceil(2 R stretch), src)` samples from
//! `start = clamp(floor(c - R stretch) + 1, 0, src - taps)`. The weights of
//! each output sample are divided by their sum and quantised to Q14 by
//! rounding the running sum: `w[k] = round(16384 S[k]) - round(16384 S[k-1])`
//! where `S[k]` is the normalised sum of weights `0..=k`. They are `i16` and
//! add up to exactly `1 << 14`.
//!
//! These tables ([`AxisFilter`]) are computed once, in `f64`, on the host;
//! the GPU kernel must consume the same tables, not recompute them. Given the
//! tables, the arithmetic is integer and identical everywhere:
//!
//! - horizontal, per input row: `acc = sum(w[k] * src[start + k])` in `i32`,
//!   `mid = (acc + (1 << 7)) >> 8` stored as `i16` (the sample times 64;
//!   the kernels' overshoot (Lanczos-3's is the larger) keeps it within
//!   -4510..=20830, so no clamp);
//! - vertical, per output sample: `acc = sum(w[k] * mid[start + k])` in `i32`
//!   (below 2^30 in magnitude), `out = clamp((acc + (1 << 19)) >> 20, 0, 255)`.
//!
//! `>>` is an arithmetic shift (floor), as Rust's and CUDA's are on `i32`.
//!
//! # Chroma siting
//!
//! FFmpeg 5.1's `scale` filter leaves `src_h_chr_pos`/`dst_h_chr_pos` at their
//! defaults and sets the vertical ones to 128 for progressive YUV420P, and
//! libswscale's `get_local_pos` turns both into "centred between the luma
//! samples" (MPEG-1/JPEG siting). With the same siting on both sides a
//! chroma plane scales exactly like a luma plane of its own size, which is
//! what we do. (MPEG-2 "left" siting would move chroma by `(scale - 1) / 4`
//! of a chroma sample, 1/8 for 1080p to 720p.) The tests confirm it: our
//! U and V planes agree with libswscale as closely as Y does.
//!
//! # Cascades
//!
//! A rung may be scaled from a larger rung's output instead of from the
//! source: 360p from 720p reads 44% of the samples 1080p would, through a
//! kernel two thirds as wide. [`Cascade::Auto`] does so when the larger rung
//! is at least [`CASCADE_MIN_RATIO`] times the target on both axes. On the
//! standard ladder from 1080p that means 360p from 720p and 160p from 360p;
//! 480p stays direct, because from 720p (ratio 1.5) the two filters'
//! transition bands overlap inside its pass band. Measured against
//! libswscale's filter of the same kernel (testsrc2 / mandelbrot with grain,
//! dB), Lanczos-3: 360p 60.3 / 54.1 direct, 59.9 / 53.9 cascaded; 160p
//! 60.9 / 55.5 direct, 59.2 / 54.8 cascaded; 480p 67.0 / 58.1 direct but
//! 62.3 / 55.5 from 720p. Bicubic: 360p 65.7 / 56.9 direct, 62.4 / 55.8
//! cascaded; 160p 62.2 / 56.1 direct, 61.0 / 55.3 cascaded. A cascaded rung
//! stays above 57 dB of the direct one with either kernel: invisible after
//! x264 (the ladder benchmark scores both within 0.03 dB after encoding).

mod avx2;
mod filter;
mod plane;
mod rows;
#[cfg(test)]
mod tests;
mod vbmi;

pub use filter::{AxisFilter, Kernel};
pub use rows::Threading;

use crate::transcode::frame::{Frame, Layout, Plane, Size};
use crate::transcode::scale::{Result, ScaleError, Scaler, check_frames};
use plane::PlaneFilter;
use rows::scale_plane;

/// Weight precision: 1.0 is `1 << WEIGHT_BITS`.
pub const WEIGHT_BITS: u32 = 14;
/// Fractional bits kept in the intermediate between the two passes.
pub const MID_BITS: u32 = 6;
const H_SHIFT: u32 = WEIGHT_BITS - MID_BITS;
const V_SHIFT: u32 = WEIGHT_BITS + MID_BITS;

/// Smallest size ratio (larger rung / target, per axis) at which
/// [`Cascade::Auto`] scales from a larger rung instead of from the source.
pub const CASCADE_MIN_RATIO: f64 = 2.0;

/// Horizontal tap counts are padded with zero weights to a multiple of this
/// so each output's dot product has a length known at compile time.
const TAP_ALIGN: usize = 4;

/// Where each rung reads from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cascade {
    /// From the smallest larger rung at least [`CASCADE_MIN_RATIO`] times
    /// the target on both axes, else from the source.
    #[default]
    Auto,
    /// Every rung from the source.
    Direct,
    /// From the smallest larger rung whatever the ratio (for measurements).
    Nearest,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleOptions {
    pub kernel: Kernel,
    pub cascade: Cascade,
}

#[derive(Debug)]
struct Step {
    rung: usize,
    /// `None`: the source frame; `Some(j)`: rung `j`'s output.
    from: Option<usize>,
    luma: PlaneFilter,
    chroma: PlaneFilter,
}

/// The CPU backend of [`Scaler`]: rows spread over the current rayon pool
/// (run `scale` inside `ThreadPool::install` to pick one), or all on the
/// calling thread ([`CpuScaler::with_threading`]).
#[derive(Debug)]
pub struct CpuScaler {
    source: Size,
    rungs: Vec<Size>,
    /// In execution order: a rung comes after the rung it reads.
    steps: Vec<Step>,
    /// The horizontal pass's output, sized for the largest plane.
    mid: Vec<i16>,
    threading: Threading,
}

impl CpuScaler {
    pub fn new(source: Size, rungs: &[Size]) -> Result<Self> {
        Self::with_options(source, rungs, ScaleOptions::default())
    }

    pub fn with_options(source: Size, rungs: &[Size], options: ScaleOptions) -> Result<Self> {
        if rungs.is_empty() {
            return Err(ScaleError::NoRungs);
        }
        let src_layout = Layout::new(source)?;
        let layouts = rungs
            .iter()
            .map(|&r| Layout::new(r))
            .collect::<Result<Vec<_>, _>>()?;

        let mut order: Vec<usize> = (0..rungs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rungs[i].area()));
        let mut steps = Vec::with_capacity(rungs.len());
        let mut mid_len = 0;
        for rung in order {
            let from = cascade_source(source, rungs, rung, options.cascade);
            let input = from.map_or(&src_layout, |j| &layouts[j]);
            let output = &layouts[rung];
            let [luma, chroma] = [Plane::Y, Plane::U].map(|p| {
                let filter =
                    PlaneFilter::new(options.kernel, input.plane_size(p), output.plane_size(p));
                mid_len = mid_len.max(filter.scratch_len(output.stride(p)));
                filter
            });
            steps.push(Step {
                rung,
                from,
                luma,
                chroma,
            });
        }
        Ok(Self {
            source,
            rungs: rungs.to_vec(),
            steps,
            mid: vec![0; mid_len],
            threading: Threading::default(),
        })
    }

    /// Where the rows are computed; rayon unless told otherwise.
    pub fn with_threading(mut self, threading: Threading) -> Self {
        self.threading = threading;
        self
    }

    /// What rung `rung` is scaled from: `None` for the source frame,
    /// `Some(j)` for rung `j`'s output.
    pub fn input_of(&self, rung: usize) -> Option<usize> {
        self.steps
            .iter()
            .find(|s| s.rung == rung)
            .and_then(|s| s.from)
    }
}

/// Picks the rung that `target` is scaled from, if any.
fn cascade_source(source: Size, rungs: &[Size], target: usize, cascade: Cascade) -> Option<usize> {
    let t = rungs[target];
    let min_ratio = match cascade {
        Cascade::Direct => return None,
        Cascade::Auto => CASCADE_MIN_RATIO,
        Cascade::Nearest => 1.0,
    };
    let covers = |r: Size| {
        f64::from(r.width) >= min_ratio * f64::from(t.width)
            && f64::from(r.height) >= min_ratio * f64::from(t.height)
    };
    // Strictly between target and source, so a cascade always saves work
    // and the chain of reads cannot loop.
    (0..rungs.len())
        .filter(|&j| {
            let r = rungs[j];
            r.area() > t.area() && r.area() < source.area() && covers(r)
        })
        .min_by_key(|&j| rungs[j].area())
}

impl Scaler for CpuScaler {
    fn scale(&mut self, src: &Frame, dst: &mut [Frame]) -> Result<()> {
        check_frames(self.source, &self.rungs, src, dst)?;
        for step in &self.steps {
            let (input, output) = match step.from {
                None => (src, &mut dst[step.rung]),
                Some(j) => read_write(dst, j, step.rung),
            };
            for plane in Plane::ALL {
                let filter = if plane == Plane::Y {
                    &step.luma
                } else {
                    &step.chroma
                };
                let (src_plane, src_stride) = (input.plane(plane), input.stride(plane));
                let dst_stride = output.stride(plane);
                scale_plane(
                    filter,
                    src_plane,
                    src_stride,
                    output.plane_mut(plane),
                    dst_stride,
                    &mut self.mid,
                    self.threading,
                );
            }
            output.set_pts(src.pts());
        }
        Ok(())
    }

    fn rungs(&self) -> &[Size] {
        &self.rungs
    }
}

/// Borrows `frames[read]` shared and `frames[write]` exclusively.
fn read_write(frames: &mut [Frame], read: usize, write: usize) -> (&Frame, &mut Frame) {
    assert_ne!(
        read, write,
        "a rung never reads itself: cascade sources are strictly larger"
    );
    if read < write {
        let (head, tail) = frames.split_at_mut(write);
        (&head[read], &mut tail[0])
    } else {
        let (head, tail) = frames.split_at_mut(read);
        (&tail[0], &mut head[write])
    }
}
