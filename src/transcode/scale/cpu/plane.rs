//! Both passes of one plane of one rung ([`PlaneFilter`]): the axis tables
//! of [`super::filter`] with their AVX2 and VBMI forms where they fit. Built
//! once when a scaler is made.

use super::avx2::HorizontalFilter;
use super::filter::{AxisFilter, Kernel};
use super::vbmi::VbmiFilter;
use super::{H_SHIFT, TAP_ALIGN};

/// Both passes for one plane of one rung.
#[derive(Debug)]
pub(super) struct PlaneFilter {
    /// Padded to a multiple of [`TAP_ALIGN`] taps.
    pub(super) h: AxisFilter,
    /// The same filter for the AVX2 pass, where it fits one.
    pub(super) h_avx2: Option<HorizontalFilter>,
    /// And for the AVX-512 VBMI pass.
    pub(super) h_vbmi: Option<VbmiFilter>,
    pub(super) v: AxisFilter,
    /// Input rows the vertical pass reads, hence the rows the horizontal
    /// pass must produce.
    pub(super) rows: std::ops::Range<usize>,
}

impl PlaneFilter {
    pub(super) fn new(kernel: Kernel, src: (usize, usize), dst: (usize, usize)) -> Self {
        let h = AxisFilter::new(kernel, src.0, dst.0);
        let v = AxisFilter::new(kernel, src.1, dst.1);
        // The i16 intermediate holds 255 * gain / 256; Lanczos-3's gain is <= 1.28.
        assert!(
            (255 * h.max_gain()) >> H_SHIFT <= i32::from(i16::MAX),
            "kernel overshoot overflows i16"
        );
        let h_avx2 = HorizontalFilter::new(&h);
        let h_vbmi = VbmiFilter::new(&h);
        let h = h.padded(TAP_ALIGN);
        let first = v.starts()[0] as usize;
        let last = *v.starts().last().expect("dst > 0") as usize + v.taps();
        Self {
            h,
            h_avx2,
            h_vbmi,
            v,
            rows: first..last,
        }
    }

    pub(super) fn scratch_len(&self, dst_stride: usize) -> usize {
        self.rows.len() * dst_stride
    }
}
