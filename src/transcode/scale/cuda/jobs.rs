//! The scale kernel's job table: one job per plane per rung, blocks counted
//! per rung's launch, the source planes as the device holds them (our I420
//! layout or NV12), and the order the rungs are launched and taken out in.
//! Pure arithmetic on addresses: the emulation tests run it on the host.

use cudarc::driver::DeviceRepr;

use super::super::AxisFilter;
use crate::transcode::frame::{Layout, Plane, Size};

/// Threads per block: 32 columns (one warp reads a row segment) by 8 rows.
pub(super) const BLOCK: (u32, u32) = (32, 8);
/// Output rows per tile at most: the more, the fewer source rows each tile
/// filters horizontally for its neighbours' windows too.
pub(super) const TILE_H: usize = 32;
/// Source rows a tile's intermediate holds (`MAX_ROWS` in kernels/scale.cu:
/// 512 x 32 x 2 bytes of shared memory).
pub(super) const MAX_ROWS: usize = 512;
/// Row pitch alignment of the NV12 source on the device, as for our frames.
pub(super) const PITCH_ALIGN: usize = 64;
/// Jobs of one rung's launch: its Y, U and V planes.
pub(super) const JOBS_PER_RUNG: usize = 3;

/// One output plane of one rung; `kernels/scale.cu`'s `ScaleJob`, field for
/// field (6 pointers, then 10 ints: 88 bytes, 8-aligned on both sides).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ScaleJob {
    pub(super) src: u64,
    pub(super) dst: u64,
    pub(super) h_start: u64,
    pub(super) h_weight: u64,
    pub(super) v_start: u64,
    pub(super) v_weight: u64,
    pub(super) src_pitch: i32,
    pub(super) src_step: i32,
    pub(super) dst_pitch: i32,
    pub(super) dst_width: i32,
    pub(super) dst_height: i32,
    pub(super) h_taps: i32,
    pub(super) v_taps: i32,
    pub(super) first_block: i32,
    pub(super) blocks_x: i32,
    pub(super) tile_h: i32,
}

// SAFETY: plain old data of integers, laid out as the kernel's struct.
unsafe impl DeviceRepr for ScaleJob {}

/// One rung's launch: where its jobs start in the table, and its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RungLaunch {
    pub(super) first_job: usize,
    pub(super) blocks: u32,
}

/// Where the source planes are in the device's source buffer.
#[derive(Clone, Copy)]
pub(super) struct SourcePlane {
    pub(super) offset: usize,
    pub(super) pitch: usize,
    pub(super) step: usize,
}

/// NV12 as the device holds it: Y rows, then interleaved UV rows.
#[derive(Clone, Copy, Debug)]
pub(super) struct Nv12Layout {
    pub(super) y_pitch: usize,
    pub(super) uv_offset: usize,
    pub(super) uv_pitch: usize,
    pub(super) len: usize,
}

/// Where Y, U and V are in our own frame layout.
pub(super) fn i420_planes(layout: &Layout) -> [SourcePlane; 3] {
    Plane::ALL.map(|p| SourcePlane {
        offset: layout.offset(p),
        pitch: layout.stride(p),
        step: 1,
    })
}

impl Nv12Layout {
    /// Y, then U and V read from the interleaved rows, every other byte.
    pub(super) fn planes(&self) -> [SourcePlane; 3] {
        let chroma = |first| SourcePlane {
            offset: self.uv_offset + first,
            pitch: self.uv_pitch,
            step: 2,
        };
        [
            SourcePlane {
                offset: 0,
                pitch: self.y_pitch,
                step: 1,
            },
            chroma(0),
            chroma(1),
        ]
    }

    pub(super) fn new(size: Size) -> Self {
        let (w, h) = (size.width as usize, size.height as usize);
        let c = size.chroma();
        let y_pitch = w.next_multiple_of(PITCH_ALIGN);
        let uv_pitch = (2 * c.width as usize).next_multiple_of(PITCH_ALIGN);
        let uv_offset = y_pitch * h;
        Self {
            y_pitch,
            uv_offset,
            uv_pitch,
            len: uv_offset + uv_pitch * c.height as usize,
        }
    }
}

/// Rung indices smallest first (ties in ladder order): the order of the
/// launches and of the copies out.
pub(super) fn smallest_first(rungs: &[Size]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rungs.len()).collect();
    order.sort_by_key(|&r| rungs[r].area());
    order
}

/// One axis's table by address (device, or host in the emulation test).
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    pub(super) starts: u64,
    pub(super) weights: u64,
    pub(super) taps: i32,
    pub(super) tile_h: i32,
}

/// The job table of every rung's launch: for each rung, its Y, U and V planes, their
/// blocks counted from the start of the rung's own launch; `filters[2 * rung]` is the
/// rung's luma (horizontal, vertical) pair, `filters[2 * rung + 1]` its chroma pair.
pub(super) fn build_jobs(
    src: u64,
    planes: [SourcePlane; 3],
    dst: u64,
    layouts: &[Layout],
    dst_offsets: &[usize],
    filters: &[(Axis, Axis)],
) -> (Vec<ScaleJob>, Vec<RungLaunch>) {
    let mut jobs = Vec::with_capacity(JOBS_PER_RUNG * layouts.len());
    let mut launches = Vec::with_capacity(layouts.len());
    for (r, layout) in layouts.iter().enumerate() {
        let first_job = jobs.len();
        let mut blocks = 0u32;
        for (i, plane) in Plane::ALL.into_iter().enumerate() {
            let (h, v) = filters[2 * r + usize::from(plane != Plane::Y)];
            let (w, ht) = layout.plane_size(plane);
            let blocks_x = w.div_ceil(BLOCK.0 as usize) as u32;
            let blocks_y = ht.div_ceil(v.tile_h as usize) as u32;
            let s = planes[i];
            jobs.push(ScaleJob {
                src: src + s.offset as u64,
                dst: dst + (dst_offsets[r] + layout.offset(plane)) as u64,
                h_start: h.starts,
                h_weight: h.weights,
                v_start: v.starts,
                v_weight: v.weights,
                src_pitch: s.pitch as i32,
                src_step: s.step as i32,
                dst_pitch: layout.stride(plane) as i32,
                dst_width: w as i32,
                dst_height: ht as i32,
                h_taps: h.taps,
                v_taps: v.taps,
                first_block: blocks as i32,
                blocks_x: blocks_x as i32,
                tile_h: v.tile_h,
            });
            blocks += blocks_x * blocks_y;
        }
        launches.push(RungLaunch { first_job, blocks });
    }
    (jobs, launches)
}

/// Output rows per tile for a vertical filter: the most (up to [`TILE_H`])
/// for which no tile's windows span more than [`MAX_ROWS`] source rows;
/// `None` for a downscale so steep that one row's window does not fit.
pub(super) fn tile_height(v: &AxisFilter) -> Option<usize> {
    let (starts, taps) = (v.starts(), v.taps());
    let fits = |th: usize| {
        (0..starts.len()).step_by(th).all(|y0| {
            let last = (y0 + th).min(starts.len()) - 1;
            (starts[last] - starts[y0]) as usize + taps <= MAX_ROWS
        })
    };
    (1..=TILE_H).rev().find(|&th| fits(th))
}
