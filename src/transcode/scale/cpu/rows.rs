//! The row kernels: the integer horizontal and vertical passes that apply
//! the tables of [`super::filter`] to one plane, spread over rayon or on the
//! calling thread. They
//! read the tables as given and must never compute weights themselves.

use rayon::prelude::*;

use super::avx2::{self, Avx2};
use super::filter::AxisFilter;
use super::plane::PlaneFilter;
use super::vbmi::{self, Vbmi};
use super::{H_SHIFT, TAP_ALIGN, V_SHIFT};

/// Longest padded horizontal filter with its own unrolled loop: 160p
/// straight from 1080p needs 44 taps.
const MAX_UNROLLED_TAPS: usize = 48;
/// Columns the vertical pass accumulates at once; strides are multiples.
const V_CHUNK: usize = 32;
/// Rows per rayon task: small enough to share 160p chroma across cores,
/// large enough that task overhead stays negligible on 1080p.
const ROWS_PER_TASK: usize = 8;

/// Who runs the rows of a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// Spread over the current rayon pool: the lowest latency per frame.
    #[default]
    Rayon,
    /// All on the calling thread: no wake-ups and hand-overs (two per pass
    /// and plane with rayon), for callers that already keep every core busy
    /// with other threads, such as an offline transcode.
    Caller,
}

pub(super) fn scale_plane(
    f: &PlaneFilter,
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    mid: &mut [i16],
    threading: Threading,
) {
    let simd = Avx2::detect();
    let vbmi = Vbmi::detect();
    let mid = &mut mid[..f.scratch_len(dst_stride)];
    let horizontal = |(i, out): (usize, &mut [i16])| {
        let y = f.rows.start + i;
        let row = &src[y * src_stride..][..src_stride];
        match (vbmi, &f.h_vbmi, simd, &f.h_avx2) {
            (Some(vbmi), Some(h), _, _) => vbmi.horizontal_row(h, row, out),
            (_, _, Some(simd), Some(h)) => simd.horizontal_row(h, row, out),
            _ => horizontal_row(&f.h, row, out),
        }
    };
    match threading {
        Threading::Rayon => mid
            .par_chunks_exact_mut(dst_stride)
            .with_min_len(ROWS_PER_TASK)
            .enumerate()
            .for_each(horizontal),
        Threading::Caller => mid
            .chunks_exact_mut(dst_stride)
            .enumerate()
            .for_each(horizontal),
    }
    let mid = &*mid;
    let simd = simd.filter(|_| dst_stride.is_multiple_of(avx2::V_COLUMNS));
    let vbmi = vbmi.filter(|_| dst_stride.is_multiple_of(vbmi::V_COLUMNS));
    let vertical = |(y, out): (usize, &mut [u8])| {
        let (start, weights) = f.v.at(y);
        let mid = &mid[(start - f.rows.start) * dst_stride..];
        match (vbmi, simd) {
            (Some(vbmi), _) => vbmi.vertical_row(weights, mid, dst_stride, out),
            (_, Some(simd)) => simd.vertical_row(weights, mid, dst_stride, out),
            _ => vertical_row(weights, mid, dst_stride, out),
        }
    };
    match threading {
        Threading::Rayon => dst
            .par_chunks_exact_mut(dst_stride)
            .with_min_len(ROWS_PER_TASK)
            .enumerate()
            .for_each(vertical),
        Threading::Caller => dst
            .chunks_exact_mut(dst_stride)
            .enumerate()
            .for_each(vertical),
    }
}

/// One input row through the horizontal filter into the intermediate; the
/// columns past the output width are zeroed so the vertical pass can run
/// over whole strides.
pub(super) fn horizontal_row(h: &AxisFilter, src: &[u8], out: &mut [i16]) {
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
    match UNROLLED.get((h.taps() / TAP_ALIGN).wrapping_sub(1)) {
        Some(row) if h.taps().is_multiple_of(TAP_ALIGN) => row(h, src, out),
        _ => horizontal_row_any(h, src, out),
    }
}

fn horizontal_row_n<const N: usize>(h: &AxisFilter, src: &[u8], out: &mut [i16]) {
    let (out, padding) = out.split_at_mut(h.starts().len());
    let (weights, _) = h.weights().as_chunks::<N>();
    for ((o, &start), w) in out.iter_mut().zip(h.starts()).zip(weights) {
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
    let (out, padding) = out.split_at_mut(h.starts().len());
    for ((o, &start), w) in out
        .iter_mut()
        .zip(h.starts())
        .zip(h.weights().chunks_exact(h.taps()))
    {
        let window = &src[start as usize..][..h.taps()];
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
pub(super) fn vertical_row(weights: &[i16], mid: &[i16], mid_stride: usize, out: &mut [u8]) {
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
