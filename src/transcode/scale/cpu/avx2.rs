//! AVX2 versions of the two row passes of [`super::rows`]: the same integer
//! arithmetic, so the same bytes, several times faster. Chosen at run time
//! (the binary targets baseline x86-64); a CPU without AVX2, or another
//! architecture, keeps the portable loops.
//!
//! Integer sums do not depend on their order as long as nothing overflows,
//! and nothing does: a horizontal dot product stays below 2^24 in magnitude
//! and a vertical one below 2^30 (see the module documentation of `cpu`),
//! and so does every partial sum, since the sum of the absolute weights is
//! below 2^15 on each axis.
//!
//! - Horizontal: eight outputs at a time. Each output's window of 16 (or 32,
//!   48) samples is widened to i16 and multiplied by its weights with
//!   `pmaddwd`; a `phaddd` tree reduces the eight products to eight sums.
//!   Needs the filter padded to a multiple of 16 taps
//!   ([`HorizontalFilter`]).
//! - Vertical: 32 columns at a time; two tap rows interleaved so that one
//!   `pmaddwd` applies two taps to eight columns.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::filter::AxisFilter;
use super::{H_SHIFT, V_SHIFT};

/// Taps per `pmaddwd` group of the horizontal pass.
pub(super) const H_GROUP: usize = 16;
/// Longest padded horizontal filter handled here.
const H_MAX_TAPS: usize = 48;
/// Outputs per horizontal step.
const H_OUTPUTS: usize = 8;
/// Columns per vertical step; strides are multiples of it.
pub(super) const V_COLUMNS: usize = 32;

/// Proof that the CPU has AVX2: the only way to reach the kernels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

impl Avx2 {
    pub(super) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Avx2(()));
        }
        None
    }
}

/// A horizontal filter in the shape the AVX2 pass wants: taps padded with
/// zero weights to a multiple of [`H_GROUP`] (windows shifted left where
/// they would pass the edge, as [`AxisFilter`] pads), and at least
/// [`H_OUTPUTS`] outputs.
#[derive(Debug)]
pub(super) struct HorizontalFilter(AxisFilter);

impl HorizontalFilter {
    /// `None` when the plane is too small or the filter too long.
    pub(super) fn new(unpadded: &AxisFilter) -> Option<Self> {
        let padded = unpadded.padded(H_GROUP);
        let fits = padded.taps().is_multiple_of(H_GROUP)
            && padded.taps() <= H_MAX_TAPS
            && padded.starts().len() >= H_OUTPUTS;
        fits.then_some(Self(padded))
    }
}

impl Avx2 {
    /// [`super::rows`]' horizontal pass for one row: `out` gets one sample per
    /// output and zeros past them.
    pub(super) fn horizontal_row(self, h: &HorizontalFilter, src: &[u8], out: &mut [i16]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` exists only where AVX2 was detected.
        unsafe {
            horizontal_row(&h.0, src, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (h, src, out);
    }

    /// [`super::rows`]' vertical pass for one output row: `mid` holds the tap
    /// rows `mid_stride` apart, `out` is a whole stride (a multiple of
    /// [`V_COLUMNS`]).
    pub(super) fn vertical_row(
        self,
        weights: &[i16],
        mid: &[i16],
        mid_stride: usize,
        out: &mut [u8],
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` exists only where AVX2 was detected.
        unsafe {
            vertical_row(weights, mid, mid_stride, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (weights, mid, mid_stride, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_row(h: &AxisFilter, src: &[u8], out: &mut [i16]) {
    let (taps, starts, weights) = (h.taps(), h.starts(), h.weights());
    let n = starts.len();
    // The bounds of every window checked once per row, not per output: the
    // loop below reads through raw pointers, so that a test build (debug
    // assertions check every slice made in a loop) scales as fast as a
    // release build, and live tests see the node's real speed.
    assert!(
        src.len() >= h.input() && weights.len() == n * taps && n >= H_OUTPUTS,
        "a row of {} samples for a filter over {}",
        src.len(),
        h.input()
    );
    let (out, padding) = out.split_at_mut(n);
    let groups = taps / H_GROUP;
    let round = _mm256_set1_epi32(1 << (H_SHIFT - 1));
    let mut first = 0;
    while first < n {
        // The last step overlaps the one before rather than run short; it
        // writes the same values again.
        let base = first.min(n - H_OUTPUTS);
        // A macro, not a closure: a closure does not inherit AVX2, so it
        // would be called (its vector result through memory) per output.
        macro_rules! dot {
            ($o:expr) => {{
                let o = $o;
                // SAFETY: o < n; the filter's windows end at or before
                // `input` <= src.len(), and its weights hold n * taps.
                unsafe {
                    dot(
                        src.as_ptr().wrapping_add(starts[o] as usize),
                        weights.as_ptr().wrapping_add(o * taps),
                        groups,
                    )
                }
            }};
        }
        let pairs = [
            _mm256_hadd_epi32(dot!(base), dot!(base + 1)),
            _mm256_hadd_epi32(dot!(base + 2), dot!(base + 3)),
            _mm256_hadd_epi32(dot!(base + 4), dot!(base + 5)),
            _mm256_hadd_epi32(dot!(base + 6), dot!(base + 7)),
        ];
        // Lane 0: the first half of outputs 0-3, lane 1 their second half.
        let low = _mm256_hadd_epi32(pairs[0], pairs[1]);
        let high = _mm256_hadd_epi32(pairs[2], pairs[3]);
        let sums = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(low, high),
            _mm256_permute2x128_si256::<0x31>(low, high),
        );
        let shifted = _mm256_srai_epi32::<{ H_SHIFT as i32 }>(_mm256_add_epi32(sums, round));
        // In range for i16 (the caller's filters are checked for overshoot),
        // so the saturating pack only narrows.
        let packed = _mm_packs_epi32(
            _mm256_castsi256_si128(shifted),
            _mm256_extracti128_si256::<1>(shifted),
        );
        // SAFETY: base + 8 <= n = out.len(): 8 i16, 16 bytes.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().wrapping_add(base).cast(), packed) };
        first = base + H_OUTPUTS;
    }
    padding.fill(0);
}

/// One output's dot product of `groups` x 16 samples from `src` with as many
/// weights, in eight i32 partial sums.
///
/// # Safety
/// `src` must be readable for `16 * groups` bytes and `weights` for as many
/// i16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot(src: *const u8, weights: *const i16, groups: usize) -> __m256i {
    let mut acc = _mm256_setzero_si256();
    for g in 0..groups {
        // SAFETY: group g lies inside what the caller vouched for. `lddqu`
        // is an unaligned load like `loadu`, but not built on
        // `ptr::read_unaligned`, whose checks a test build runs per load.
        let (s, w) = unsafe {
            (
                _mm_lddqu_si128(src.wrapping_add(g * H_GROUP).cast()),
                _mm256_lddqu_si256(weights.wrapping_add(g * H_GROUP).cast()),
            )
        };
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(s), w));
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_row(weights: &[i16], mid: &[i16], mid_stride: usize, out: &mut [u8]) {
    let round = _mm256_set1_epi32(1 << (V_SHIFT - 1));
    // (weight pair, first row, second row): an odd last tap pairs with a
    // zero weight on its own row.
    let pair = |k: usize| {
        let (b, row_b) = match weights.get(k + 1) {
            Some(&b) => (b, k + 1),
            None => (0, k),
        };
        let w = (i32::from(b) << 16) | i32::from(weights[k] as u16);
        (_mm256_set1_epi32(w), k * mid_stride, row_b * mid_stride)
    };
    let (chunks, rest) = out.as_chunks_mut::<V_COLUMNS>();
    debug_assert!(rest.is_empty(), "strides are multiples of {V_COLUMNS}");
    for (c, out) in chunks.iter_mut().enumerate() {
        let column = c * V_COLUMNS;
        let mut acc = [round; 4];
        for k in (0..weights.len()).step_by(2) {
            let (w, a, b) = pair(k);
            let a = &mid[a + column..][..V_COLUMNS];
            let b = &mid[b + column..][..V_COLUMNS];
            for half in 0..2 {
                // SAFETY: each slice holds 32 i16; this reads 16 at 16 * half.
                let (a, b) = unsafe {
                    (
                        _mm256_lddqu_si256(a[16 * half..].as_ptr().cast()),
                        _mm256_lddqu_si256(b[16 * half..].as_ptr().cast()),
                    )
                };
                // Within each 128-bit lane: columns 0-3 and 4-7 of the lane.
                let lo = _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), w);
                let hi = _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), w);
                acc[2 * half] = _mm256_add_epi32(acc[2 * half], lo);
                acc[2 * half + 1] = _mm256_add_epi32(acc[2 * half + 1], hi);
            }
        }
        let shift = |v| _mm256_srai_epi32::<{ V_SHIFT as i32 }>(v);
        // packs undoes the lane interleave of unpacklo/hi: columns 0-15 and
        // 16-31 in order. packus clamps to 0..=255, as the spec does.
        let first = _mm256_packs_epi32(shift(acc[0]), shift(acc[1]));
        let second = _mm256_packs_epi32(shift(acc[2]), shift(acc[3]));
        let bytes = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi16(first, second));
        // SAFETY: `out` holds 32 bytes.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::Kernel;
    use super::super::{TAP_ALIGN, rows};
    use super::*;

    fn noise(len: usize, seed: u32) -> impl Iterator<Item = u32> {
        let mut state = seed.wrapping_mul(747_796_405).wrapping_add(1);
        (0..len).map(move |_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 16
        })
    }

    /// The ladder's axes (1080p down, cascades, chroma, odd widths), a long
    /// direct downscale and upscales: every padded width from 16 to 48 taps
    /// and a last step that overlaps the one before.
    const AXES: [(usize, usize); 12] = [
        (1920, 1280),
        (1920, 854),
        (1280, 640),
        (640, 284),
        (960, 427),
        (320, 142),
        (1920, 284),
        (1366, 1280),
        (75, 40),
        (75, 17),
        (40, 160),
        (16, 9),
    ];

    #[test]
    fn passes_equal_the_portable_ones() {
        let Some(simd) = Avx2::detect() else {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        };
        for kernel in Kernel::ALL {
            for (seed, (src, dst)) in AXES.into_iter().enumerate() {
                let stride = dst.next_multiple_of(64);
                let axis = AxisFilter::new(kernel, src, dst);
                let h = HorizontalFilter::new(&axis).expect("fits the AVX2 pass");
                let row: Vec<u8> = noise(src, seed as u32).map(|x| x as u8).collect();
                let (mut want, mut got) = (vec![1i16; stride], vec![2i16; stride]);
                rows::horizontal_row(&axis.padded(TAP_ALIGN), &row, &mut want);
                simd.horizontal_row(&h, &row, &mut got);
                assert_eq!(got, want, "{kernel:?} horizontal {src}->{dst}");

                // Vertical: the same weights over rows of intermediate values
                // spanning the whole range the horizontal pass can produce.
                let mid: Vec<i16> = noise(src * stride, seed as u32)
                    .map(|x| (x % 25_341) as i16 - 4_510)
                    .collect();
                for y in [0, dst / 2, dst - 1] {
                    let (start, weights) = axis.at(y);
                    let mid = &mid[start * stride..];
                    let (mut want, mut got) = (vec![1u8; stride], vec![2u8; stride]);
                    rows::vertical_row(weights, mid, stride, &mut want);
                    simd.vertical_row(weights, mid, stride, &mut got);
                    assert_eq!(got, want, "{kernel:?} vertical {src}->{dst} row {y}");
                }
            }
        }
    }
}
