//! PSNR and SSIM between two pictures, computed the way FFmpeg 5.1's `psnr`
//! and `ssim` filters compute them, so a dashboard number can be checked with
//! the CLI. Owns only the arithmetic: which frames to sample is the caller's
//! choice. Runs on the calling thread: callers are per-rung encoder threads,
//! already one per core or more.
//!
//! PSNR agrees with FFmpeg to all six printed decimals. SSIM agrees with
//! FFmpeg's C code exactly (`ffmpeg -cpuflags 0`); its x86 SIMD path differs
//! from that C code by ~4e-5 on some plane widths (seen on the 427-wide
//! chroma of 854x480; every other width we tested matches exactly).

pub mod cuda;

use crate::transcode::frame::{Frame, Layout, Plane, Size};

pub type Result<T, E = QualityError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("pictures differ in size: {0} vs {1}")]
    SizeMismatch(Size, Size),
    #[error("plane of {width}x{height} at stride {stride} needs {need} bytes, got {got}")]
    ShortPlane {
        width: usize,
        height: usize,
        stride: usize,
        need: usize,
        got: usize,
    },
    #[error("SSIM needs planes of at least 8x8 samples, got {width}x{height}")]
    TooSmallForSsim { width: usize, height: usize },
}

/// A borrowed plane: `height` rows of `width` samples, `stride` bytes apart.
#[derive(Clone, Copy, Debug)]
pub struct PlaneView<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl<'a> PlaneView<'a> {
    /// The last row need not be padded to `stride`.
    pub fn new(data: &'a [u8], width: usize, height: usize, stride: usize) -> Result<Self> {
        let need = if stride < width {
            usize::MAX
        } else {
            height.saturating_sub(1) * stride + width
        };
        if data.len() < need {
            return Err(QualityError::ShortPlane {
                width,
                height,
                stride,
                need,
                got: data.len(),
            });
        }
        Ok(Self {
            data,
            width,
            height,
            stride,
        })
    }

    pub fn of(frame: &'a Frame, plane: Plane) -> Self {
        let (width, height) = frame.layout().plane_size(plane);
        Self {
            data: frame.plane(plane),
            width,
            height,
            stride: frame.stride(plane),
        }
    }

    fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.stride..][..self.width]
    }

    fn same_size(&self, other: &Self) -> Result<()> {
        if (self.width, self.height) != (other.width, other.height) {
            let size = |p: &Self| Size::new(p.width as u32, p.height as u32);
            return Err(QualityError::SizeMismatch(size(self), size(other)));
        }
        Ok(())
    }
}

/// Sum of squared differences over a plane.
pub fn sse(a: PlaneView<'_>, b: PlaneView<'_>) -> Result<u64> {
    a.same_size(&b)?;
    Ok((0..a.height)
        .map(|y| {
            // A row of 16384 samples sums to at most 16384 * 255^2 < 2^32.
            let row: u32 = a
                .row(y)
                .iter()
                .zip(b.row(y))
                .map(|(&p, &q)| u32::from(p.abs_diff(q)).pow(2))
                .sum();
            u64::from(row)
        })
        .sum())
}

/// Per-plane and combined mean squared error of one frame pair: the
/// quantity FFmpeg's `psnr` filter averages over frames. `average` weighs
/// each plane by its sample count (it is the MSE over all samples).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameMse {
    pub y: f64,
    pub u: f64,
    pub v: f64,
    pub average: f64,
}

impl FrameMse {
    pub fn new(a: &Frame, b: &Frame) -> Result<Self> {
        if a.size() != b.size() {
            return Err(QualityError::SizeMismatch(a.size(), b.size()));
        }
        let mut sums = [0; 3];
        for (sum, plane) in sums.iter_mut().zip(Plane::ALL) {
            *sum = sse(PlaneView::of(a, plane), PlaneView::of(b, plane))?;
        }
        Ok(Self::from_sse(sums, a.layout()))
    }

    /// From each plane's sum of squared differences (the GPU meter's output).
    pub fn from_sse(sse: [u64; 3], layout: &Layout) -> Self {
        let samples = plane_samples(layout);
        let mse: [f64; 3] = std::array::from_fn(|i| sse[i] as f64 / samples[i]);
        let total: f64 = samples.iter().sum();
        let average = mse.iter().zip(samples).map(|(m, s)| m * s / total).sum();
        Self {
            y: mse[0],
            u: mse[1],
            v: mse[2],
            average,
        }
    }

    pub fn psnr(&self) -> Psnr {
        Psnr {
            y: psnr_db(self.y),
            u: psnr_db(self.u),
            v: psnr_db(self.v),
            average: psnr_db(self.average),
        }
    }
}

/// PSNR in dB; infinite for identical pictures, as FFmpeg prints `inf`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Psnr {
    pub y: f64,
    pub u: f64,
    pub v: f64,
    /// FFmpeg's `average`: from the MSE over all samples of all planes.
    pub average: f64,
}

fn psnr_db(mse: f64) -> f64 {
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// PSNR of one frame pair.
pub fn psnr(a: &Frame, b: &Frame) -> Result<Psnr> {
    Ok(FrameMse::new(a, b)?.psnr())
}

/// Samples in each plane: the weights of the planes in a frame's average.
fn plane_samples(layout: &Layout) -> [f64; 3] {
    Plane::ALL.map(|p| {
        let (w, h) = layout.plane_size(p);
        (w * h) as f64
    })
}

/// PSNR over several frame pairs as FFmpeg reports it at the end of a run:
/// from the mean of the per-frame MSEs, not the mean of per-frame PSNRs.
#[derive(Clone, Debug, Default)]
pub struct PsnrMean {
    sum: FrameMse,
    frames: u64,
}

impl PsnrMean {
    pub fn add(&mut self, mse: FrameMse) {
        self.sum.y += mse.y;
        self.sum.u += mse.u;
        self.sum.v += mse.v;
        self.sum.average += mse.average;
        self.frames += 1;
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// `None` before the first frame.
    pub fn psnr(&self) -> Option<Psnr> {
        let n = self.frames as f64;
        (self.frames > 0).then(|| {
            FrameMse {
                y: self.sum.y / n,
                u: self.sum.u / n,
                v: self.sum.v / n,
                average: self.sum.average / n,
            }
            .psnr()
        })
    }
}

/// SSIM per plane and `all`, the planes weighted by sample count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ssim {
    pub y: f64,
    pub u: f64,
    pub v: f64,
    pub all: f64,
}

/// SSIM of one frame pair, as FFmpeg's `ssim` filter computes each frame.
pub fn ssim(a: &Frame, b: &Frame) -> Result<Ssim> {
    if a.size() != b.size() {
        return Err(QualityError::SizeMismatch(a.size(), b.size()));
    }
    let mut score = [0.0; 3];
    for (s, plane) in score.iter_mut().zip(Plane::ALL) {
        *s = plane_ssim(PlaneView::of(a, plane), PlaneView::of(b, plane))?;
    }
    Ok(Ssim::from_planes(score, a.layout()))
}

impl Ssim {
    /// From each plane's score: `all` weighs them by sample count, as FFmpeg does.
    pub fn from_planes(score: [f64; 3], layout: &Layout) -> Self {
        let samples = plane_samples(layout);
        let total: f64 = samples.iter().sum();
        let all = score.iter().zip(samples).map(|(s, n)| s * n / total).sum();
        Ssim {
            y: score[0],
            u: score[1],
            v: score[2],
            all,
        }
    }
}

/// SSIM over several frame pairs as FFmpeg reports it: plain means of the
/// per-frame values.
#[derive(Clone, Debug, Default)]
pub struct SsimMean {
    sum: Ssim,
    frames: u64,
}

impl SsimMean {
    pub fn add(&mut self, s: Ssim) {
        self.sum.y += s.y;
        self.sum.u += s.u;
        self.sum.v += s.v;
        self.sum.all += s.all;
        self.frames += 1;
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// `None` before the first frame.
    pub fn ssim(&self) -> Option<Ssim> {
        let n = self.frames as f64;
        (self.frames > 0).then(|| Ssim {
            y: self.sum.y / n,
            u: self.sum.u / n,
            v: self.sum.v / n,
            all: self.sum.all / n,
        })
    }
}

/// Sums over a 4x4 block: both means, the sum of both squares, the cross term
/// (at most 16 * 2 * 255^2, so `u32` holds them and the loop vectorises).
type BlockSums = [u32; 4];

/// SSIM of one plane, x264's formulation that FFmpeg uses: statistics of
/// 8x8 windows stepped by 4 samples (each window is 2x2 blocks of 4x4), the
/// constants scaled to integer sums, averaged over all windows. Samples past
/// the last whole block on each axis are ignored.
pub fn plane_ssim(a: PlaneView<'_>, b: PlaneView<'_>) -> Result<f64> {
    a.same_size(&b)?;
    let (blocks_x, blocks_y) = (a.width / 4, a.height / 4);
    if blocks_x < 2 || blocks_y < 2 {
        return Err(QualityError::TooSmallForSsim {
            width: a.width,
            height: a.height,
        });
    }
    let mut columns = ColumnSums::new(blocks_x * 4);
    let mut block_row = |by: usize, out: &mut Vec<BlockSums>| {
        columns.add_rows(&a, &b, by * 4);
        out.clear();
        out.extend(columns.blocks());
    };
    let windows_y = blocks_y - 1;
    let (mut upper, mut lower) = (Vec::with_capacity(blocks_x), Vec::with_capacity(blocks_x));
    block_row(0, &mut lower);
    let mut total = 0.0;
    for wy in 0..windows_y {
        std::mem::swap(&mut upper, &mut lower);
        block_row(wy + 1, &mut lower);
        // FFmpeg sums a row of windows in f32, then rows in f64.
        let row: f32 = (0..blocks_x - 1)
            .map(|wx| {
                let mut s = [0; 4];
                for block in [upper[wx], upper[wx + 1], lower[wx], lower[wx + 1]] {
                    for (s, x) in s.iter_mut().zip(block) {
                        *s += i64::from(x);
                    }
                }
                window_ssim(s)
            })
            .sum();
        total += f64::from(row);
    }
    Ok(total / ((blocks_x - 1) * windows_y) as f64)
}

/// Per-column sums over the four rows of a block row, kept as four plain
/// arrays so that the loop over a row vectorises; a block's sums are then
/// four neighbouring columns'.
struct ColumnSums {
    s1: Vec<u32>,
    s2: Vec<u32>,
    ss: Vec<u32>,
    s12: Vec<u32>,
}

impl ColumnSums {
    fn new(width: usize) -> Self {
        let zeros = vec![0; width];
        Self {
            s1: zeros.clone(),
            s2: zeros.clone(),
            ss: zeros.clone(),
            s12: zeros,
        }
    }

    fn add_rows(&mut self, a: &PlaneView<'_>, b: &PlaneView<'_>, y: usize) {
        let width = self.s1.len();
        for v in [&mut self.s1, &mut self.s2, &mut self.ss, &mut self.s12] {
            v.fill(0);
        }
        for row in y..y + 4 {
            let (ra, rb) = (&a.row(row)[..width], &b.row(row)[..width]);
            let columns = self.s1.iter_mut().zip(&mut self.s2).zip(&mut self.ss);
            for ((((s1, s2), ss), s12), (&p, &q)) in
                columns.zip(&mut self.s12).zip(ra.iter().zip(rb))
            {
                let (p, q) = (u32::from(p), u32::from(q));
                *s1 += p;
                *s2 += q;
                *ss += p * p + q * q;
                *s12 += p * q;
            }
        }
    }

    fn blocks(&self) -> impl Iterator<Item = BlockSums> + '_ {
        let sum4 = |v: &[u32]| v.iter().sum::<u32>();
        (self.s1.chunks_exact(4))
            .zip(self.s2.chunks_exact(4))
            .zip(self.ss.chunks_exact(4))
            .zip(self.s12.chunks_exact(4))
            .map(move |(((s1, s2), ss), s12)| [sum4(s1), sum4(s2), sum4(ss), sum4(s12)])
    }
}

/// One 8x8 window from its sums, FFmpeg's `ssim_end1` for 8-bit samples:
/// integer moments, then the ratio in `f32`.
fn window_ssim([s1, s2, ss, s12]: [i64; 4]) -> f32 {
    // The usual (0.01 * 255)^2 and (0.03 * 255)^2, scaled to sums over 64
    // samples; truncated to integers exactly as FFmpeg does.
    const C1: i64 = (0.01 * 0.01 * 255.0 * 255.0 * 64.0 + 0.5) as i64;
    const C2: i64 = (0.03 * 0.03 * 255.0 * 255.0 * 64.0 * 63.0 + 0.5) as i64;
    let vars = ss * 64 - s1 * s1 - s2 * s2;
    let covar = s12 * 64 - s1 * s2;
    ((2 * s1 * s2 + C1) as f32 * (2 * covar + C2) as f32)
        / ((s1 * s1 + s2 * s2 + C1) as f32 * (vars + C2) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::ffmpeg_cli;
    use crate::transcode::frame::FramePool;

    fn frame(size: Size, fill: impl Fn(usize) -> u8) -> Frame {
        let mut f = FramePool::new(size, 1).unwrap().get().unwrap();
        let data: Vec<u8> = (0..f.layout().packed_len()).map(fill).collect();
        f.copy_from_packed(&data).unwrap();
        f
    }

    #[test]
    fn identical_and_off_by_one() {
        let size = Size::new(33, 17);
        let a = frame(size, |i| (i % 251) as u8);
        let b = frame(size, |i| (i % 251) as u8 + 1);
        let same = psnr(&a, &a).unwrap();
        assert!(same.average.is_infinite() && same.y.is_infinite());
        assert_eq!(ssim(&a, &a).unwrap().all, 1.0);
        // MSE 1 everywhere: 10 log10(255^2).
        let p = psnr(&a, &b).unwrap();
        assert!(
            (p.average - 48.1308).abs() < 1e-4 && (p.v - p.y).abs() < 1e-12,
            "{p:?}"
        );
        let other = frame(Size::new(32, 17), |_| 0);
        assert!(matches!(
            psnr(&a, &other),
            Err(QualityError::SizeMismatch(..))
        ));
        let tiny = frame(Size::new(8, 8), |_| 0);
        assert!(matches!(
            ssim(&tiny, &tiny),
            Err(QualityError::TooSmallForSsim { .. })
        ));
    }

    #[test]
    fn plane_views_check_their_length() {
        let data = [0u8; 20];
        assert!(PlaneView::new(&data, 4, 3, 8).is_ok());
        assert!(matches!(
            PlaneView::new(&data[..19], 4, 3, 8),
            Err(QualityError::ShortPlane { need: 20, .. })
        ));
        let view = PlaneView::new(&data, 4, 3, 8).unwrap();
        assert_eq!(sse(view, view).unwrap(), 0);
    }

    /// Our PSNR and SSIM against FFmpeg's filters on pairs of clips with
    /// realistic differences (grain, blur), odd chroma widths included.
    #[test]
    fn psnr_and_ssim_match_ffmpeg() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = [
            (
                "testsrc2=size=1920x1080:rate=30",
                "noise=alls=10:allf=t",
                Size::new(1920, 1080),
            ),
            (
                "mandelbrot=size=854x480:rate=30",
                "boxblur=2",
                Size::new(854, 480),
            ),
            (
                "testsrc2=size=284x160:rate=30",
                "noise=alls=30:allf=t+u",
                Size::new(284, 160),
            ),
        ];
        for (n, (graph, distortion, size)) in pairs.into_iter().enumerate() {
            let a = ffmpeg_cli::generate(dir.path(), &format!("a{n}"), graph, 3);
            let b = ffmpeg_cli::generate(
                dir.path(),
                &format!("b{n}"),
                &format!("{graph},{distortion}"),
                3,
            );
            let (fa, fb) = (
                ffmpeg_cli::read_frames(&a, size),
                ffmpeg_cli::read_frames(&b, size),
            );
            let (mut p, mut s) = (PsnrMean::default(), SsimMean::default());
            for (x, y) in fa.iter().zip(&fb) {
                p.add(FrameMse::new(x, y).unwrap());
                s.add(ssim(x, y).unwrap());
            }
            let (p, s) = (p.psnr().unwrap(), s.ssim().unwrap());

            let line = ffmpeg_cli::metric("psnr", &a, &b, size);
            eprintln!("{size} ours: {p:?}\n  ffmpeg: {line}");
            for (ours, key) in [
                (p.y, "y:"),
                (p.u, "u:"),
                (p.v, "v:"),
                (p.average, "average:"),
            ] {
                let theirs = ffmpeg_cli::field(&line, key);
                assert!(
                    (ours - theirs).abs() < 0.01,
                    "{size} PSNR {key} {ours} vs ffmpeg {theirs}"
                );
            }
            let line = ffmpeg_cli::metric("ssim", &a, &b, size);
            eprintln!("{size} ours: {s:?}\n  ffmpeg: {line}");
            for (ours, key) in [(s.y, "Y:"), (s.u, "U:"), (s.v, "V:"), (s.all, "All:")] {
                let theirs = ffmpeg_cli::field(&line, key);
                assert!(
                    (ours - theirs).abs() < 1e-4,
                    "{size} SSIM {key} {ours} vs ffmpeg {theirs}"
                );
            }
        }
    }
}
