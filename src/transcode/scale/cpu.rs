//! `CpuScaler`: our separable polyphase scaler, specified in integer
//! arithmetic so that the CUDA port can reproduce it exactly. Owns the filter
//! definition and the cascade plan; never allocates per frame.
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
//! `|j - c| < R * stretch`, where the kernel `K` is Lanczos-3
//! (`R = 3`, `K(x) = 3 sin(pi x) sin(pi x / 3) / (pi x)^2`, `K(0) = 1`),
//! libswscale's `lanczos`. A `j` outside the plane reads the nearest edge
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
//!   Lanczos-3's overshoot keeps it within -4510..=20830, so no clamp);
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
//! libswscale (testsrc2 / mandelbrot with grain, dB): 360p 60.3 / 54.1
//! direct, 59.9 / 53.9 cascaded; 160p 60.9 / 55.5 direct, 59.2 / 54.8
//! cascaded; 480p 67.0 / 58.1 direct but 62.3 / 55.5 from 720p. A cascaded
//! rung stays above 57 dB of the direct one: invisible after x264.

use rayon::prelude::*;

use crate::transcode::frame::{Frame, Layout, Plane, Size};
use crate::transcode::scale::{Result, ScaleError, Scaler, check_frames};

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
/// Longest padded horizontal filter with its own unrolled loop: 160p
/// straight from 1080p needs 44 taps.
const MAX_UNROLLED_TAPS: usize = 48;
/// Columns the vertical pass accumulates at once; strides are multiples.
const V_CHUNK: usize = 32;
/// Rows per rayon task: small enough to share 160p chroma across cores,
/// large enough that task overhead stays negligible on 1080p.
const ROWS_PER_TASK: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// Lanczos with 3 lobes: what libswscale's `lanczos` flag uses.
    #[default]
    Lanczos3,
    /// Keys cubic with a = -0.5: two thirds of Lanczos-3's taps, softer.
    CatmullRom,
}

impl Kernel {
    fn radius(self) -> f64 {
        match self {
            Kernel::Lanczos3 => 3.0,
            Kernel::CatmullRom => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        use std::f64::consts::PI;
        let x = x.abs();
        match self {
            Kernel::Lanczos3 if x == 0.0 => 1.0,
            Kernel::Lanczos3 if x < 3.0 => {
                3.0 * (PI * x).sin() * (PI * x / 3.0).sin() / (PI * PI * x * x)
            }
            Kernel::CatmullRom if x <= 1.0 => 1.5 * x * x * x - 2.5 * x * x + 1.0,
            Kernel::CatmullRom if x < 2.0 => -0.5 * x * x * x + 2.5 * x * x - 4.0 * x + 2.0,
            _ => 0.0,
        }
    }
}

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

/// The filter of one axis of one plane: for output sample `i`, `taps`
/// weights (`weights[i * taps..][..taps]`, Q14) applied to the input samples
/// from `starts[i]` on. Every window lies inside the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxisFilter {
    /// Input samples on this axis.
    input: usize,
    taps: usize,
    starts: Vec<u32>,
    weights: Vec<i16>,
}

impl AxisFilter {
    /// Builds the tables as the module documentation specifies.
    pub fn new(kernel: Kernel, src: usize, dst: usize) -> Self {
        assert!(src > 0 && dst > 0, "axis sizes are validated by Layout");
        let scale = src as f64 / dst as f64;
        let stretch = scale.max(1.0);
        let reach = kernel.radius() * stretch;
        let needed = ((2.0 * reach).ceil() as usize).max(1);
        let taps = needed.min(src);
        let one = f64::from(1u32 << WEIGHT_BITS);

        let mut starts = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst * taps);
        let mut raw = vec![0.0f64; taps];
        for i in 0..dst {
            let centre = (i as f64 + 0.5) * scale - 0.5;
            let first = (centre - reach).floor() as i64 + 1;
            let start = first.clamp(0, (src - taps) as i64);
            raw.fill(0.0);
            for j in first..first + needed as i64 {
                let folded = j.clamp(0, src as i64 - 1);
                raw[(folded - start) as usize] += kernel.eval((j as f64 - centre) / stretch);
            }
            let total: f64 = raw.iter().sum();
            let (mut running, mut prev) = (0.0, 0i64);
            for r in &raw {
                running += r;
                let q = (running / total * one).round() as i64;
                weights.push((q - prev) as i16);
                prev = q;
            }
            starts.push(start as u32);
        }
        Self {
            input: src,
            taps,
            starts,
            weights,
        }
    }

    pub fn taps(&self) -> usize {
        self.taps
    }

    /// The same filter with zero weights added up to a multiple of `align`
    /// taps, windows shifted left where they would pass the edge: identical
    /// results, loops of a length known at compile time.
    fn padded(&self, align: usize) -> Self {
        let taps = self.taps.next_multiple_of(align).min(self.input);
        let mut starts = Vec::with_capacity(self.starts.len());
        let mut weights = Vec::with_capacity(self.starts.len() * taps);
        for i in 0..self.starts.len() {
            let (start, w) = self.at(i);
            let shifted = start.min(self.input - taps);
            let lead = start - shifted;
            weights.extend(std::iter::repeat_n(0, lead));
            weights.extend_from_slice(w);
            weights.extend(std::iter::repeat_n(0, taps - self.taps - lead));
            starts.push(shifted as u32);
        }
        Self {
            input: self.input,
            taps,
            starts,
            weights,
        }
    }

    pub fn starts(&self) -> &[u32] {
        &self.starts
    }

    pub fn weights(&self) -> &[i16] {
        &self.weights
    }

    fn at(&self, i: usize) -> (usize, &[i16]) {
        (
            self.starts[i] as usize,
            &self.weights[i * self.taps..][..self.taps],
        )
    }

    /// Largest sum of positive weights: bounds the intermediate's range.
    fn max_gain(&self) -> i32 {
        let gains = self.weights.chunks_exact(self.taps);
        gains
            .map(|w| w.iter().map(|&x| i32::from(x.max(0))).sum())
            .max()
            .unwrap_or(0)
    }
}

/// Both passes for one plane of one rung.
#[derive(Debug)]
struct PlaneFilter {
    /// Padded to a multiple of [`TAP_ALIGN`] taps.
    h: AxisFilter,
    v: AxisFilter,
    /// Input rows the vertical pass reads, hence the rows the horizontal
    /// pass must produce.
    rows: std::ops::Range<usize>,
}

impl PlaneFilter {
    fn new(kernel: Kernel, src: (usize, usize), dst: (usize, usize)) -> Self {
        let h = AxisFilter::new(kernel, src.0, dst.0);
        let v = AxisFilter::new(kernel, src.1, dst.1);
        // The i16 intermediate holds 255 * gain / 256; Lanczos-3's gain is <= 1.28.
        assert!(
            (255 * h.max_gain()) >> H_SHIFT <= i32::from(i16::MAX),
            "kernel overshoot overflows i16"
        );
        let h = h.padded(TAP_ALIGN);
        let first = v.starts[0] as usize;
        let last = *v.starts.last().expect("dst > 0") as usize + v.taps;
        Self {
            h,
            v,
            rows: first..last,
        }
    }

    fn scratch_len(&self, dst_stride: usize) -> usize {
        self.rows.len() * dst_stride
    }
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
/// (run `scale` inside `ThreadPool::install` to pick one).
#[derive(Debug)]
pub struct CpuScaler {
    source: Size,
    rungs: Vec<Size>,
    /// In execution order: a rung comes after the rung it reads.
    steps: Vec<Step>,
    /// The horizontal pass's output, sized for the largest plane.
    mid: Vec<i16>,
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
        })
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

fn scale_plane(
    f: &PlaneFilter,
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    mid: &mut [i16],
) {
    let mid = &mut mid[..f.scratch_len(dst_stride)];
    mid.par_chunks_exact_mut(dst_stride)
        .with_min_len(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(i, out)| {
            let y = f.rows.start + i;
            horizontal_row(&f.h, &src[y * src_stride..][..src_stride], out);
        });
    let mid = &*mid;
    dst.par_chunks_exact_mut(dst_stride)
        .with_min_len(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(y, out)| {
            let (start, weights) = f.v.at(y);
            vertical_row(
                weights,
                &mid[(start - f.rows.start) * dst_stride..],
                dst_stride,
                out,
            );
        });
}

/// One input row through the horizontal filter into the intermediate; the
/// columns past the output width are zeroed so the vertical pass can run
/// over whole strides.
fn horizontal_row(h: &AxisFilter, src: &[u8], out: &mut [i16]) {
    // One monomorphised loop per padded tap count, so LLVM sees the dot
    // product's length and unrolls it into whole vectors.
    type RowFn = fn(&AxisFilter, &[u8], &mut [i16]);
    const UNROLLED: [RowFn; MAX_UNROLLED_TAPS / TAP_ALIGN] = [
        horizontal_row_n::<4>,
        horizontal_row_n::<8>,
        horizontal_row_n::<12>,
        horizontal_row_n::<16>,
        horizontal_row_n::<20>,
        horizontal_row_n::<24>,
        horizontal_row_n::<28>,
        horizontal_row_n::<32>,
        horizontal_row_n::<36>,
        horizontal_row_n::<40>,
        horizontal_row_n::<44>,
        horizontal_row_n::<48>,
    ];
    match UNROLLED.get((h.taps / TAP_ALIGN).wrapping_sub(1)) {
        Some(row) if h.taps.is_multiple_of(TAP_ALIGN) => row(h, src, out),
        _ => horizontal_row_any(h, src, out),
    }
}

fn horizontal_row_n<const N: usize>(h: &AxisFilter, src: &[u8], out: &mut [i16]) {
    let (out, padding) = out.split_at_mut(h.starts.len());
    let (weights, _) = h.weights.as_chunks::<N>();
    for ((o, &start), w) in out.iter_mut().zip(&h.starts).zip(weights) {
        let window = src[start as usize..]
            .first_chunk::<N>()
            .expect("windows lie inside the row");
        let mut acc = 1 << (H_SHIFT - 1);
        for k in 0..N {
            acc += i32::from(window[k]) * i32::from(w[k]);
        }
        *o = (acc >> H_SHIFT) as i16;
    }
    padding.fill(0);
}

/// The same for tap counts without an unrolled loop (tiny planes, extreme
/// downscales).
fn horizontal_row_any(h: &AxisFilter, src: &[u8], out: &mut [i16]) {
    let (out, padding) = out.split_at_mut(h.starts.len());
    for ((o, &start), w) in out
        .iter_mut()
        .zip(&h.starts)
        .zip(h.weights.chunks_exact(h.taps))
    {
        let window = &src[start as usize..][..h.taps];
        let acc: i32 = window
            .iter()
            .zip(w)
            .map(|(&s, &w)| i32::from(s) * i32::from(w))
            .sum();
        *o = ((acc + (1 << (H_SHIFT - 1))) >> H_SHIFT) as i16;
    }
    padding.fill(0);
}

/// One output row (whole stride) from the intermediate rows starting at
/// `mid[0]`, [`V_CHUNK`] columns at a time so the accumulators stay in
/// registers or L1 while every tap row streams past.
fn vertical_row(weights: &[i16], mid: &[i16], mid_stride: usize, out: &mut [u8]) {
    for (c, out) in out.as_chunks_mut::<V_CHUNK>().0.iter_mut().enumerate() {
        let mut acc = [1i32 << (V_SHIFT - 1); V_CHUNK];
        for (k, &w) in weights.iter().enumerate() {
            let (row, _) = mid[k * mid_stride + c * V_CHUNK..].as_chunks::<V_CHUNK>();
            for (a, &m) in acc.iter_mut().zip(&row[0]) {
                *a += i32::from(w) * i32::from(m);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = (a >> V_SHIFT).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::ffmpeg_cli;
    use crate::transcode::frame::FramePool;
    use crate::transcode::quality::{FrameMse, Psnr, PsnrMean};

    /// Deterministic noise: scaling must be exact on any content.
    fn noise_frame(size: Size, seed: u32) -> Frame {
        let mut frame = FramePool::new(size, 1).unwrap().get().unwrap();
        let mut state = seed.wrapping_mul(747_796_405).wrapping_add(1);
        let data: Vec<u8> = (0..frame.layout().packed_len())
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        frame.copy_from_packed(&data).unwrap();
        frame
    }

    fn frames(sizes: &[Size]) -> Vec<Frame> {
        sizes
            .iter()
            .map(|&s| FramePool::new(s, 1).unwrap().get().unwrap())
            .collect()
    }

    /// The module documentation's arithmetic, one sample at a time, with no
    /// chunking, padding or parallelism: the reference a GPU port must match.
    fn reference_plane(kernel: Kernel, src: &Frame, plane: Plane, dst: (usize, usize)) -> Vec<u8> {
        let (sw, sh) = src.layout().plane_size(plane);
        let h = AxisFilter::new(kernel, sw, dst.0);
        let v = AxisFilter::new(kernel, sh, dst.1);
        let mid: Vec<Vec<i32>> = (0..sh)
            .map(|y| {
                let row = src.row(plane, y);
                (0..dst.0)
                    .map(|x| {
                        let (start, w) = h.at(x);
                        let acc: i32 = w
                            .iter()
                            .enumerate()
                            .map(|(k, &w)| i32::from(w) * i32::from(row[start + k]))
                            .sum();
                        (acc + (1 << 7)) >> 8
                    })
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity(dst.0 * dst.1);
        for y in 0..dst.1 {
            let (start, w) = v.at(y);
            out.extend((0..dst.0).map(|x| {
                let acc: i32 = w
                    .iter()
                    .enumerate()
                    .map(|(k, &w)| i32::from(w) * mid[start + k][x])
                    .sum();
                ((acc + (1 << 19)) >> 20).clamp(0, 255) as u8
            }));
        }
        out
    }

    #[test]
    fn weights_are_q14_and_windows_stay_inside() {
        for (src, dst) in [
            (1920, 1280),
            (1920, 284),
            (960, 427),
            (683, 640),
            (10, 23),
            (3, 1),
            (1, 5),
        ] {
            for kernel in [Kernel::Lanczos3, Kernel::CatmullRom] {
                let f = AxisFilter::new(kernel, src, dst);
                assert_eq!(f.starts().len(), dst);
                for i in 0..dst {
                    let (start, w) = f.at(i);
                    assert!(
                        start + f.taps() <= src,
                        "{src}->{dst} output {i} reads past the edge"
                    );
                    assert_eq!(
                        w.iter().map(|&x| i32::from(x)).sum::<i32>(),
                        1 << WEIGHT_BITS
                    );
                }
            }
        }
        let same = AxisFilter::new(Kernel::Lanczos3, 50, 50);
        for i in 0..50 {
            let (start, w) = same.at(i);
            assert_eq!(w[i - start], 1 << WEIGHT_BITS, "equal sizes must copy");
        }
    }

    #[test]
    fn optimised_passes_equal_the_written_spec() {
        let source = Size::new(75, 47);
        let rungs = [
            Size::new(40, 22),
            Size::new(17, 9),
            Size::new(3, 3),
            Size::new(160, 90),
            Size::new(75, 47),
        ];
        let src = noise_frame(source, 7);
        for kernel in [Kernel::Lanczos3, Kernel::CatmullRom] {
            let options = ScaleOptions {
                kernel,
                cascade: Cascade::Direct,
            };
            let mut scaler = CpuScaler::with_options(source, &rungs, options).unwrap();
            let mut dst = frames(&rungs);
            scaler.scale(&src, &mut dst).unwrap();
            for (out, rung) in dst.iter().zip(rungs) {
                for plane in Plane::ALL {
                    let size = out.layout().plane_size(plane);
                    let want = reference_plane(kernel, &src, plane, size);
                    let got: Vec<u8> = (0..size.1)
                        .flat_map(|y| out.row(plane, y).to_vec())
                        .collect();
                    assert!(
                        got == want,
                        "{kernel:?} {source}->{rung} {plane:?} differs from the spec"
                    );
                }
            }
            // Equal size is an exact copy: weights are a unit impulse.
            assert_eq!(FrameMse::new(&src, &dst[4]).unwrap().average, 0.0);
        }
    }

    #[test]
    fn rejects_mismatched_frames() {
        let ladder = [Size::new(64, 36), Size::new(32, 18)];
        let mut scaler = CpuScaler::new(Size::new(128, 72), &ladder).unwrap();
        let src = noise_frame(Size::new(128, 72), 1);
        let err = scaler
            .scale(&src, &mut frames(&[Size::new(64, 36)]))
            .unwrap_err();
        assert!(matches!(err, ScaleError::RungCount { want: 2, got: 1 }));
        let err = scaler
            .scale(&src, &mut frames(&[Size::new(64, 36), Size::new(30, 18)]))
            .unwrap_err();
        assert!(matches!(err, ScaleError::RungSize { index: 1, .. }));
        let err = scaler
            .scale(&noise_frame(Size::new(64, 36), 1), &mut frames(&ladder))
            .unwrap_err();
        assert!(matches!(err, ScaleError::SourceSize { .. }));
        assert!(matches!(
            CpuScaler::new(Size::new(128, 72), &[]),
            Err(ScaleError::NoRungs)
        ));
        assert!(matches!(
            CpuScaler::new(Size::new(128, 72), &[Size::new(0, 2)]),
            Err(ScaleError::Size(_))
        ));
    }

    #[test]
    fn steady_state_reuses_pool_buffers() {
        let source = Size::new(320, 180);
        let rungs = [Size::new(160, 90), Size::new(64, 36)];
        let mut scaler = CpuScaler::new(source, &rungs).unwrap();
        assert_eq!(scaler.input_of(1), Some(0), "64x36 cascades from 160x90");
        let src_pool = FramePool::new(source, 4).unwrap();
        let pools: Vec<FramePool> = rungs
            .iter()
            .map(|&s| FramePool::new(s, 4).unwrap())
            .collect();
        // A little pipelining: the encoder still holds the previous outputs.
        let mut held = Vec::new();
        for pts in 0..300 {
            let mut src = src_pool.get().unwrap();
            src.set_pts(pts);
            let mut out: Vec<Frame> = pools.iter().map(|p| p.get().unwrap()).collect();
            scaler.scale(&src, &mut out).unwrap();
            assert!(out.iter().all(|f| f.pts() == pts));
            held.push(out);
            if held.len() > 2 {
                held.remove(0);
            }
        }
        assert_eq!(src_pool.buffers_created(), 1);
        assert!(pools.iter().all(|p| p.buffers_created() == 3), "{pools:?}");
    }

    const LADDER_1080: [Size; 4] = [
        Size::new(1280, 720),
        Size::new(854, 480),
        Size::new(640, 360),
        Size::new(284, 160),
    ];
    // 1366x768 keeps the rung heights; widths round to even (1280.6, 853.75, 640.3, 284.6).
    const LADDER_768: [Size; 4] = [
        Size::new(1280, 720),
        Size::new(854, 480),
        Size::new(640, 360),
        Size::new(284, 160),
    ];
    const FRAMES: usize = 2;

    struct Clip {
        _dir: tempfile::TempDir,
        size: Size,
        frames: Vec<Frame>,
        /// libswscale lanczos output per rung.
        references: Vec<Vec<Frame>>,
    }

    fn clip(name: &str, graph: &str, size: Size, ladder: &[Size]) -> Clip {
        let dir = tempfile::tempdir().unwrap();
        let raw = ffmpeg_cli::generate(dir.path(), name, graph, FRAMES);
        let references = ladder
            .iter()
            .map(|&r| ffmpeg_cli::read_frames(&ffmpeg_cli::swscale(&raw, size, r), r))
            .collect();
        Clip {
            frames: ffmpeg_cli::read_frames(&raw, size),
            _dir: dir,
            size,
            references,
        }
    }

    fn testsrc2_1080() -> Clip {
        clip(
            "testsrc2",
            "testsrc2=size=1920x1080:rate=30",
            Size::new(1920, 1080),
            &LADDER_1080,
        )
    }

    /// Fractal edges plus film-grain-like noise: detail at every frequency.
    fn mandelbrot_1080() -> Clip {
        let graph = "mandelbrot=size=1920x1080:rate=30,noise=alls=12:allf=t+u";
        clip("mandelbrot", graph, Size::new(1920, 1080), &LADDER_1080)
    }

    fn testsrc2_768() -> Clip {
        clip(
            "testsrc2_768",
            "testsrc2=size=1366x768:rate=30",
            Size::new(1366, 768),
            &LADDER_768,
        )
    }

    /// Our ladder for every frame of `clip`: `[frame][rung]`.
    fn scale_clip(clip: &Clip, options: ScaleOptions) -> Vec<Vec<Frame>> {
        let ladder: Vec<Size> = clip.references.iter().map(|r| r[0].size()).collect();
        let mut scaler = CpuScaler::with_options(clip.size, &ladder, options).unwrap();
        let outputs = clip.frames.iter().map(|src| {
            let mut dst = frames(&ladder);
            scaler.scale(src, &mut dst).unwrap();
            dst
        });
        outputs.collect()
    }

    /// PSNR per rung between two `[frame][rung]` sets, FFmpeg-averaged.
    fn ours_vs(ours: &[Vec<Frame>], other: &[Vec<Frame>]) -> Vec<Psnr> {
        let other: Vec<Vec<&Frame>> = other.iter().map(|f| f.iter().collect()).collect();
        ours_vs_refs(ours, &other)
    }

    fn ours_vs_refs(ours: &[Vec<Frame>], other: &[Vec<&Frame>]) -> Vec<Psnr> {
        let rungs = ours[0].len();
        let per_rung = (0..rungs).map(|r| {
            let mut mean = PsnrMean::default();
            for (a, b) in ours.iter().zip(other) {
                mean.add(FrameMse::new(&a[r], b[r]).unwrap());
            }
            mean.psnr().unwrap()
        });
        per_rung.collect()
    }

    /// libswscale's output regrouped as `[frame][rung]`.
    fn swscale_outputs(clip: &Clip) -> Vec<Vec<&Frame>> {
        (0..clip.frames.len())
            .map(|n| clip.references.iter().map(|r| &r[n]).collect())
            .collect()
    }

    fn report(what: &str, ladder: &[Size], psnr: &[Psnr]) {
        for (size, p) in ladder.iter().zip(psnr) {
            let size = size.to_string();
            eprintln!(
                "{what:<36} {size:>9}: avg {:6.2} dB (y {:6.2} u {:6.2} v {:6.2})",
                p.average, p.y, p.u, p.v
            );
        }
    }

    fn lanczos(cascade: Cascade) -> ScaleOptions {
        ScaleOptions {
            kernel: Kernel::Lanczos3,
            cascade,
        }
    }

    /// The bound: the lowest plane PSNR measured over these clips is 53.9 dB
    /// (mandelbrot+grain, 640x360, cascaded from 720p).
    #[test]
    fn ladder_matches_swscale_lanczos() {
        for (name, clip) in [
            ("testsrc2 1080p", testsrc2_1080()),
            ("mandelbrot+grain 1080p", mandelbrot_1080()),
            ("testsrc2 1366x768", testsrc2_768()),
        ] {
            let ours = scale_clip(&clip, ScaleOptions::default());
            let psnr = ours_vs_refs(&ours, &swscale_outputs(&clip));
            report(&format!("{name} vs swscale"), &LADDER_1080, &psnr);
            for p in psnr {
                assert!(p.y >= 50.0 && p.u >= 50.0 && p.v >= 50.0, "{name}: {p:?}");
            }
        }
    }

    /// Why `Cascade::Auto` and Lanczos-3: numbers printed with --nocapture.
    #[test]
    fn auto_cascade_is_lossless_in_practice_and_lanczos_tracks_swscale() {
        for (name, clip) in [
            ("testsrc2", testsrc2_1080()),
            ("mandelbrot+grain", mandelbrot_1080()),
        ] {
            let swscale = swscale_outputs(&clip);
            let direct = scale_clip(&clip, lanczos(Cascade::Direct));
            let direct_vs_swscale = ours_vs_refs(&direct, &swscale);
            report(
                &format!("{name} direct vs swscale"),
                &LADDER_1080,
                &direct_vs_swscale,
            );
            for cascade in [Cascade::Auto, Cascade::Nearest] {
                let cascaded = scale_clip(&clip, lanczos(cascade));
                let vs_swscale = ours_vs_refs(&cascaded, &swscale);
                let vs_direct = ours_vs(&cascaded, &direct);
                report(
                    &format!("{name} {cascade:?} vs swscale"),
                    &LADDER_1080,
                    &vs_swscale,
                );
                report(
                    &format!("{name} {cascade:?} vs our direct"),
                    &LADDER_1080,
                    &vs_direct,
                );
                if cascade == Cascade::Auto {
                    for (p, d) in vs_swscale.iter().zip(&direct_vs_swscale) {
                        assert!(
                            p.average >= d.average - 2.0,
                            "{name}: {p:?} vs direct {d:?}"
                        );
                    }
                    assert!(
                        vs_direct.iter().all(|p| p.average >= 55.0),
                        "{name}: {vs_direct:?}"
                    );
                }
            }
            let cubic = ScaleOptions {
                kernel: Kernel::CatmullRom,
                cascade: Cascade::Direct,
            };
            let cubic_vs_swscale = ours_vs_refs(&scale_clip(&clip, cubic), &swscale);
            report(
                &format!("{name} Catmull-Rom vs swscale"),
                &LADDER_1080,
                &cubic_vs_swscale,
            );
            for (c, l) in cubic_vs_swscale.iter().zip(&direct_vs_swscale) {
                assert!(
                    c.average + 2.0 < l.average,
                    "{name}: cubic {c:?} vs lanczos {l:?}"
                );
            }
        }
    }
}
