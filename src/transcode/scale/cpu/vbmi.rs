//! The horizontal pass with AVX-512 VBMI: the same integer arithmetic as
//! [`super::rows`], so the same samples, without a reduction per output.
//!
//! Sixteen neighbouring outputs of a downscale by at most about 3 read
//! windows that all lie within 64 input bytes. One 64-byte load holds them
//! all; for each pair of taps `vpermb` gathers, into each output's 32-bit
//! lane, its two input samples as zero-extended i16, and one `vpmaddwd`
//! multiplies them by that output's two weights and adds them. The gather
//! indices and the weights are laid out per block of 16 outputs when the
//! scaler is built. A filter whose blocks do not fit (stronger downscales)
//! keeps the AVX2 or portable pass.
//!
//! The vertical pass is [`super::avx2`]'s on 512-bit registers: 64 columns
//! a step, two tap rows interleaved per `vpmaddwd`.
//!
//! Sums are exact in i32 in any order (see [`super::avx2`]), so the result
//! equals the portable pass byte for byte.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::filter::AxisFilter;
use super::{H_SHIFT, V_SHIFT};

/// Outputs per block: one i32 lane each in a 512-bit register.
const BLOCK: usize = 16;
/// Input bytes one load brings.
const SPAN: usize = 64;
/// Columns per vertical step; strides are multiples of it.
pub(super) const V_COLUMNS: usize = 64;

/// Proof that the CPU has AVX-512 F, BW and VBMI.
#[derive(Clone, Copy, Debug)]
pub(super) struct Vbmi(());

impl Vbmi {
    pub(super) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
        {
            return Some(Vbmi(()));
        }
        None
    }
}

/// A horizontal filter laid out in blocks of 16 outputs.
#[derive(Debug)]
pub(super) struct VbmiFilter {
    outputs: usize,
    /// Tap pairs per output (odd tap counts end with a zero weight).
    pairs: usize,
    /// Per block: the first window's start in the input row.
    bases: Vec<u32>,
    /// Per block: for output lane `j`, bytes `4j` and `4j + 2` index its
    /// first tap pair's samples relative to the block's base (the odd bytes
    /// are zeroed by the gather's mask). Each next pair adds 2.
    indices: Vec<[u8; SPAN]>,
    /// Per block and pair: lane `j` holds output `j`'s two weights.
    weights: Vec<[i16; 2 * BLOCK]>,
}

impl VbmiFilter {
    /// `None` when there are fewer than 16 outputs or some block's windows
    /// span more than 64 input samples.
    pub(super) fn new(h: &AxisFilter) -> Option<Self> {
        let (taps, starts) = (h.taps(), h.starts());
        let outputs = starts.len();
        if outputs < BLOCK {
            return None;
        }
        let pairs = taps.div_ceil(2);
        let blocks = outputs.div_ceil(BLOCK);
        let mut filter = VbmiFilter {
            outputs,
            pairs,
            bases: Vec::with_capacity(blocks),
            indices: Vec::with_capacity(blocks),
            weights: Vec::with_capacity(blocks * pairs),
        };
        for b in 0..blocks {
            // The last block overlaps the one before rather than run short.
            let first = (b * BLOCK).min(outputs - BLOCK);
            let base = starts[first] as usize;
            let mut indices = [0u8; SPAN];
            let mut weights = vec![[0i16; 2 * BLOCK]; pairs];
            for j in 0..BLOCK {
                let (start, w) = h.at(first + j);
                let start = start.checked_sub(base)?;
                // The highest index read is start + 2 * pairs - 1 (from base);
                // past `taps` its weight is zero, but it must stay in the load.
                if start + 2 * pairs > SPAN {
                    return None;
                }
                indices[4 * j] = start as u8;
                indices[4 * j + 2] = start as u8 + 1;
                for (k, &w) in w.iter().enumerate() {
                    weights[k / 2][2 * j + k % 2] = w;
                }
            }
            filter.bases.push(base as u32);
            filter.indices.push(indices);
            filter.weights.extend(weights);
        }
        Some(filter)
    }
}

impl Vbmi {
    /// [`super::rows`]' horizontal pass for one row: `out` gets one sample per
    /// output and zeros past them.
    pub(super) fn horizontal_row(self, h: &VbmiFilter, src: &[u8], out: &mut [i16]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Vbmi` exists only where AVX-512 F, BW and VBMI were detected.
        unsafe {
            horizontal_row(h, src, out)
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
        // SAFETY: `Vbmi` exists only where AVX-512 F and BW were detected.
        unsafe {
            vertical_row(weights, mid, mid_stride, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (weights, mid, mid_stride, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn horizontal_row(h: &VbmiFilter, src: &[u8], out: &mut [i16]) {
    let (out, padding) = out.split_at_mut(h.outputs);
    let round = _mm512_set1_epi32(1 << (H_SHIFT - 1));
    let two = _mm512_set1_epi8(2);
    // Even bytes: the low byte of each i16 sample; odd bytes become zero.
    const LOW_BYTES: u64 = 0x5555_5555_5555_5555;
    let blocks = h.bases.iter().zip(&h.indices);
    for (b, (&base, indices)) in blocks.enumerate() {
        let first = (b * BLOCK).min(h.outputs - BLOCK);
        let row = &src[base as usize..];
        // Bytes past the row are not loaded (masked), and never indexed.
        let mask = match row.len() {
            n if n >= SPAN => u64::MAX,
            n => (1u64 << n) - 1,
        };
        // SAFETY: the masked load touches only the first min(64, len) bytes
        // of `row`; `indices` is 64 bytes.
        let (samples, mut index) = unsafe {
            (
                _mm512_maskz_loadu_epi8(mask, row.as_ptr().cast()),
                _mm512_loadu_si512(indices.as_ptr().cast()),
            )
        };
        let mut acc = round;
        for w in &h.weights[b * h.pairs..][..h.pairs] {
            let pair = _mm512_maskz_permutexvar_epi8(LOW_BYTES, index, samples);
            // SAFETY: `w` is 32 i16, 64 bytes.
            let w = unsafe { _mm512_loadu_si512(w.as_ptr().cast()) };
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(pair, w));
            index = _mm512_add_epi8(index, two);
        }
        // Within i16 (filters are checked for overshoot): narrowing is exact.
        let samples = _mm512_cvtepi32_epi16(_mm512_srai_epi32::<{ H_SHIFT }>(acc));
        let dst = &mut out[first..first + BLOCK];
        // SAFETY: `dst` is 16 i16, 32 bytes.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), samples) };
    }
    padding.fill(0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn vertical_row(weights: &[i16], mid: &[i16], mid_stride: usize, out: &mut [u8]) {
    let round = _mm512_set1_epi32(1 << (V_SHIFT - 1));
    // (weight pair, first row, second row): an odd last tap pairs with a
    // zero weight on its own row.
    let pair = |k: usize| {
        let (b, row_b) = match weights.get(k + 1) {
            Some(&b) => (b, k + 1),
            None => (0, k),
        };
        let w = (i32::from(b) << 16) | i32::from(weights[k] as u16);
        (_mm512_set1_epi32(w), k * mid_stride, row_b * mid_stride)
    };
    // After the final pack, the 64-bit words hold columns 0-7, 32-39, 8-15,
    // 40-47, ...: this permutation puts them back in order.
    let order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
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
                // SAFETY: each slice holds 64 i16; this reads 32 at 32 * half.
                let (a, b) = unsafe {
                    (
                        _mm512_loadu_si512(a[32 * half..].as_ptr().cast()),
                        _mm512_loadu_si512(b[32 * half..].as_ptr().cast()),
                    )
                };
                // Within each 128-bit lane: its columns 0-3 and 4-7.
                let lo = _mm512_madd_epi16(_mm512_unpacklo_epi16(a, b), w);
                let hi = _mm512_madd_epi16(_mm512_unpackhi_epi16(a, b), w);
                acc[2 * half] = _mm512_add_epi32(acc[2 * half], lo);
                acc[2 * half + 1] = _mm512_add_epi32(acc[2 * half + 1], hi);
            }
        }
        let shift = |v| _mm512_srai_epi32::<{ V_SHIFT }>(v);
        // packs undoes the unpack interleave within each lane (columns 0-31
        // and 32-63 in lane order); packus clamps to 0..=255 as the spec does
        // and interleaves the two halves per lane, which `order` undoes.
        let first = _mm512_packs_epi32(shift(acc[0]), shift(acc[1]));
        let second = _mm512_packs_epi32(shift(acc[2]), shift(acc[3]));
        let bytes = _mm512_permutexvar_epi64(order, _mm512_packus_epi16(first, second));
        // SAFETY: `out` holds 64 bytes.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::Kernel;
    use super::super::{TAP_ALIGN, rows};
    use super::*;

    #[test]
    fn passes_equal_the_portable_ones() {
        let Some(vbmi) = Vbmi::detect() else {
            eprintln!("no AVX-512 VBMI here: nothing to compare");
            return;
        };
        // The ladder's axes, odd widths, upscales, a last block overlapping
        // the one before, and rows that end inside the last 64-byte load.
        let axes = [
            (1920, 1280),
            (1920, 854),
            (1280, 640),
            (640, 284),
            (960, 427),
            (320, 142),
            (1366, 1280),
            (683, 640),
            (1920, 640),
            (75, 40),
            (40, 160),
            (17, 16),
        ];
        let mut state = 12_345u32;
        for kernel in Kernel::ALL {
            for (src, dst) in axes {
                let axis = AxisFilter::new(kernel, src, dst);
                let h = VbmiFilter::new(&axis).expect("fits the VBMI pass");
                // Unpadded rows: the last load must stop at the row's end.
                let row: Vec<u8> = (0..src)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (state >> 24) as u8
                    })
                    .collect();
                let stride = dst.next_multiple_of(64);
                let (mut want, mut got) = (vec![1i16; stride], vec![2i16; stride]);
                rows::horizontal_row(&axis.padded(TAP_ALIGN), &row, &mut want);
                vbmi.horizontal_row(&h, &row, &mut got);
                assert_eq!(got, want, "{kernel:?} {src}->{dst}");
            }
        }
        // The vertical pass: the same weights over rows of intermediate values
        // spanning the whole range the horizontal pass can produce.
        for kernel in Kernel::ALL {
            for (src, dst) in axes.into_iter().chain([(1080, 160), (9, 9)]) {
                let axis = AxisFilter::new(kernel, src, dst);
                let stride = 192;
                let mid: Vec<i16> = (0..src * stride)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        ((state >> 16) % 25_341) as i16 - 4_510
                    })
                    .collect();
                for y in 0..dst {
                    let (start, weights) = axis.at(y);
                    let mid = &mid[start * stride..];
                    let (mut want, mut got) = (vec![1u8; stride], vec![2u8; stride]);
                    rows::vertical_row(weights, mid, stride, &mut want);
                    vbmi.vertical_row(weights, mid, stride, &mut got);
                    assert_eq!(got, want, "{kernel:?} vertical {src}->{dst} row {y}");
                }
            }
        }
        // Too strong a downscale for one load per 16 outputs.
        assert!(VbmiFilter::new(&AxisFilter::new(Kernel::Lanczos3, 1920, 284)).is_none());
    }
}
