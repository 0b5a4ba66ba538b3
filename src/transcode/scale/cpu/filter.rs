//! The filter tables: the kernels and one axis's Q14 weights and windows
//! ([`AxisFilter`]). Built once, in `f64`, when a scaler is made; never
//! touched per frame. The SIMD passes reshape these tables; they never
//! shape them.

use super::WEIGHT_BITS;

/// The interpolation kernel of every pass (`[transcode] scaler`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// Keys cubic with a = -0.6: libswscale's `bicubic` (B = 0, C = 0.6),
    /// the FFmpeg `scale` filter's default. Two thirds of Lanczos-3's taps.
    /// The default because it gives more quality per bit where it counts:
    /// Lanczos-3 keeps grain and fine texture that a 360p rung at 700 kb/s
    /// cannot afford to code, and scored up to 0.7 dB PSNR lower there after
    /// x264 (against the same source scaled with Lanczos-3 itself); on clean
    /// synthetic edges it scored higher.
    #[default]
    Bicubic,
    /// Lanczos with 3 lobes: what libswscale's `lanczos` flag uses. Sharper;
    /// for high bitrates and clean sources.
    #[serde(rename = "lanczos")]
    Lanczos3,
}

impl Kernel {
    pub const ALL: [Kernel; 2] = [Kernel::Bicubic, Kernel::Lanczos3];

    fn radius(self) -> f64 {
        match self {
            Kernel::Lanczos3 => 3.0,
            Kernel::Bicubic => 2.0,
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
            // Keys (1981) with a = -0.6: (a + 2)|x|^3 - (a + 3)|x|^2 + 1 inside
            // one sample, a|x|^3 - 5a|x|^2 + 8a|x| - 4a out to two.
            Kernel::Bicubic if x <= 1.0 => 1.4 * x * x * x - 2.4 * x * x + 1.0,
            Kernel::Bicubic if x < 2.0 => -0.6 * x * x * x + 3.0 * x * x - 4.8 * x + 2.4,
            _ => 0.0,
        }
    }
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
    pub(super) fn padded(&self, align: usize) -> Self {
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

    /// Samples in an input line: every window ends at or before it.
    pub(super) fn input(&self) -> usize {
        self.input
    }

    pub fn starts(&self) -> &[u32] {
        &self.starts
    }

    pub fn weights(&self) -> &[i16] {
        &self.weights
    }

    pub(super) fn at(&self, i: usize) -> (usize, &[i16]) {
        (
            self.starts[i] as usize,
            &self.weights[i * self.taps..][..self.taps],
        )
    }

    /// Largest sum of positive weights: bounds the intermediate's range.
    pub(super) fn max_gain(&self) -> i32 {
        let gains = self.weights.chunks_exact(self.taps);
        gains
            .map(|w| w.iter().map(|&x| i32::from(x.max(0))).sum())
            .max()
            .unwrap_or(0)
    }
}
