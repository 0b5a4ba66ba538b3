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
//! Sums are exact in i32 in any order (see [`super::avx2`]), so the result
//! equals the portable pass byte for byte.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::H_SHIFT;
use super::filter::AxisFilter;

/// Outputs per block: one i32 lane each in a 512-bit register.
const BLOCK: usize = 16;
/// Input bytes one load brings.
const SPAN: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::super::filter::Kernel;
    use super::super::{TAP_ALIGN, rows};
    use super::*;

    #[test]
    fn pass_equals_the_portable_one() {
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
        for kernel in [Kernel::Lanczos3, Kernel::CatmullRom] {
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
        // Too strong a downscale for one load per 16 outputs.
        assert!(VbmiFilter::new(&AxisFilter::new(Kernel::Lanczos3, 1920, 284)).is_none());
    }
}
