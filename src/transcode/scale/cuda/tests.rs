use super::jobs::TILE_H;
use super::*;

#[test]
fn job_layout_matches_the_kernel_struct() {
    // 6 pointers then 10 ints, as in kernels/scale.cu.
    assert_eq!(std::mem::size_of::<ScaleJob>(), 88);
    assert_eq!(std::mem::align_of::<ScaleJob>(), 8);
    assert_eq!(std::mem::offset_of!(ScaleJob, src_pitch), 48);
    assert_eq!(std::mem::offset_of!(ScaleJob, tile_h), 84);
}

/// `kernels/scale.cu`, line for line, over host memory: one launch of
/// `blocks` blocks over `jobs` (one rung's, as `launch` passes them). Checks
/// the job table (every output sample covered, every pointer and pitch
/// right) and the kernel's arithmetic against the CPU scaler, with no GPU.
fn emulate_launch(jobs: &[ScaleJob], blocks: u32) {
    const TILE_W: usize = BLOCK.0 as usize;
    let job_count = jobs.len();
    let mut mid = vec![[0i16; TILE_W]; MAX_ROWS];
    for block in 0..blocks as i32 {
        let mut j = 0;
        while j + 1 < job_count && block >= jobs[j + 1].first_block {
            j += 1;
        }
        let job = &jobs[j];
        let local = block - job.first_block;
        let y0 = (local / job.blocks_x) * job.tile_h;
        let y1 = (y0 + job.tile_h).min(job.dst_height);
        // SAFETY (here and below): the addresses are the test's live host buffers.
        let (r0, rows) = unsafe {
            let v_start = job.v_start as *const i32;
            let r0 = *v_start.add(y0 as usize);
            (r0, *v_start.add(y1 as usize - 1) + job.v_taps - r0)
        };
        assert!(rows as usize <= MAX_ROWS, "a tile needs {rows} rows");
        // Phase 1: every thread (tx, ty) of the block, horizontal pass.
        for ty in 0..BLOCK.1 as i32 {
            for tx in 0..TILE_W as i32 {
                let x = (local % job.blocks_x) * TILE_W as i32 + tx;
                if x >= job.dst_width {
                    continue;
                }
                unsafe {
                    let hw = (job.h_weight as *const i16).add(x as usize * job.h_taps as usize);
                    let hs = *(job.h_start as *const i32).add(x as usize);
                    let column = (job.src as *const u8).add(hs as usize * job.src_step as usize);
                    let mut r = ty;
                    while r < rows {
                        let p = column.add((r0 + r) as usize * job.src_pitch as usize);
                        let mut h = 0i32;
                        for t in 0..job.h_taps as usize {
                            h += i32::from(*hw.add(t))
                                * i32::from(*p.add(t * job.src_step as usize));
                        }
                        mid[r as usize][tx as usize] = ((h + (1 << 7)) >> 8) as i16;
                        r += BLOCK.1 as i32;
                    }
                }
            }
        }
        // __syncthreads(); phase 2: the vertical pass from the tile's rows.
        for ty in 0..BLOCK.1 as i32 {
            for tx in 0..TILE_W as i32 {
                let x = (local % job.blocks_x) * TILE_W as i32 + tx;
                if x >= job.dst_width {
                    continue;
                }
                let mut y = y0 + ty;
                while y < y1 {
                    unsafe {
                        let vw = (job.v_weight as *const i16).add(y as usize * job.v_taps as usize);
                        let first = *(job.v_start as *const i32).add(y as usize) - r0;
                        let mut acc = 0i32;
                        for k in 0..job.v_taps as usize {
                            acc += i32::from(*vw.add(k))
                                * i32::from(mid[first as usize + k][tx as usize]);
                        }
                        let out = ((acc + (1 << 19)) >> 20).clamp(0, 255) as u8;
                        *(job.dst as *mut u8)
                            .add(y as usize * job.dst_pitch as usize + x as usize) = out;
                    }
                    y += BLOCK.1 as i32;
                }
            }
        }
    }
}

/// The source and ladder the emulation tests scale: 64x36 is steep enough (21x) for
/// tiles shorter than TILE_H.
const SOURCE: Size = Size::new(1366, 768);
const RUNGS: [Size; 3] = [Size::new(854, 480), Size::new(284, 160), Size::new(64, 36)];

/// A deterministic texture with every frequency: a hash of the position.
fn texture(x: usize, y: usize, salt: u32) -> u32 {
    (x as u32).wrapping_mul(2_654_435_761) ^ (y as u32).wrapping_mul(40_503) ^ salt
}

/// The CPU scaler's ladder of `src`: what the kernel must give.
fn cpu_ladder(src: &Frame) -> Vec<Frame> {
    use crate::transcode::frame::FramePool;
    use crate::transcode::scale::{Cascade, CpuScaler, ScaleOptions};
    let direct = ScaleOptions {
        cascade: Cascade::Direct,
        ..ScaleOptions::default()
    };
    let mut cpu = CpuScaler::with_options(SOURCE, &RUNGS, direct).unwrap();
    let mut want: Vec<Frame> = RUNGS
        .iter()
        .map(|&r| FramePool::new(r, 1).unwrap().get().unwrap())
        .collect();
    cpu.scale(src, &mut want).unwrap();
    want
}

/// Emulates a frame's launches (one per rung, smallest first) over a source at `base` read
/// through `planes` and checks every rung against `want`, sample for sample.
fn assert_emulated_ladder(name: &str, base: u64, planes: [SourcePlane; 3], want: &[Frame]) {
    let src_layout = Layout::new(SOURCE).unwrap();
    let layouts: Vec<Layout> = RUNGS.iter().map(|&r| Layout::new(r).unwrap()).collect();
    // Per rung and plane kind: (starts, weights, taps) horizontally, then vertically,
    // then the tile height; the jobs point into these.
    let mut tables = Vec::new();
    for l in &layouts {
        for plane in [Plane::Y, Plane::U] {
            let (sw, sh) = src_layout.plane_size(plane);
            let (dw, dh) = l.plane_size(plane);
            let h = AxisFilter::new(Kernel::default(), sw, dw);
            let v = AxisFilter::new(Kernel::default(), sh, dh);
            let starts = |f: &AxisFilter| f.starts().iter().map(|&s| s as i32).collect::<Vec<_>>();
            tables.push((
                starts(&h),
                h.weights().to_vec(),
                h.taps(),
                starts(&v),
                v.weights().to_vec(),
                v.taps(),
                tile_height(&v).expect("fits"),
            ));
        }
    }
    let filters: Vec<(Axis, Axis)> = tables
        .iter()
        .map(|(hs, hw, ht, vs, vw, vt, th)| {
            (
                Axis {
                    starts: hs.as_ptr() as u64,
                    weights: hw.as_ptr() as u64,
                    taps: *ht as i32,
                    tile_h: 0,
                },
                Axis {
                    starts: vs.as_ptr() as u64,
                    weights: vw.as_ptr() as u64,
                    taps: *vt as i32,
                    tile_h: *th as i32,
                },
            )
        })
        .collect();
    let mut dst_offsets = Vec::new();
    let mut len = 0;
    for l in &layouts {
        dst_offsets.push(len);
        len += l.buffer_len().next_multiple_of(PITCH_ALIGN);
    }
    let mut out = vec![0xA5u8; len];
    let (jobs, launches) = build_jobs(
        base,
        planes,
        out.as_mut_ptr() as u64,
        &layouts,
        &dst_offsets,
        &filters,
    );
    assert_eq!(jobs.len(), JOBS_PER_RUNG * RUNGS.len());
    // One launch per rung, in the order the scaler queues them.
    for r in smallest_first(&RUNGS) {
        let l = launches[r];
        assert_eq!(l.first_job, JOBS_PER_RUNG * r);
        emulate_launch(&jobs[l.first_job..][..JOBS_PER_RUNG], l.blocks);
    }
    for (r, l) in layouts.iter().enumerate() {
        for p in Plane::ALL {
            let (pw, ph) = l.plane_size(p);
            for y in 0..ph {
                let at = dst_offsets[r] + l.offset(p) + y * l.stride(p);
                assert_eq!(
                    &out[at..at + pw],
                    want[r].row(p, y),
                    "{name} rung {} {p:?} row {y}",
                    RUNGS[r]
                );
            }
        }
    }
}

#[test]
fn kernel_emulation_matches_the_cpu_scaler_for_i420_and_nv12() {
    use crate::transcode::frame::FramePool;

    let mut src = FramePool::new(SOURCE, 1).unwrap().get().unwrap();
    for p in Plane::ALL {
        let stride = src.stride(p);
        for (i, b) in src.plane_mut(p).iter_mut().enumerate() {
            *b = texture(i % stride, i / stride, 0).to_le_bytes()[1];
        }
    }
    let want = cpu_ladder(&src);

    // I420 straight from our frame; NV12 interleaved into its own layout.
    let src_layout = Layout::new(SOURCE).unwrap();
    assert_emulated_ladder(
        "i420",
        src.pixels().as_ptr() as u64,
        i420_planes(&src_layout),
        &want,
    );
    let nv = Nv12Layout::new(SOURCE);
    let mut nv12 = vec![0u8; nv.len];
    let (w, h) = src_layout.plane_size(Plane::Y);
    let (cw, ch) = src_layout.plane_size(Plane::U);
    for y in 0..h {
        nv12[y * nv.y_pitch..][..w].copy_from_slice(src.row(Plane::Y, y));
    }
    for y in 0..ch {
        for x in 0..cw {
            nv12[nv.uv_offset + y * nv.uv_pitch + 2 * x] = src.row(Plane::U, y)[x];
            nv12[nv.uv_offset + y * nv.uv_pitch + 2 * x + 1] = src.row(Plane::V, y)[x];
        }
    }
    assert_emulated_ladder("nv12", nv12.as_ptr() as u64, nv.planes(), &want);
}

/// `p010_to_nv12` in kernels/scale.cu, line for line over host memory: every thread
/// (x of the row segment, y the block's row) of one launch.
fn emulate_p010_to_nv12(
    src: &[u8],
    src_pitch: usize,
    dst: &mut [u8],
    dst_pitch: usize,
    width: usize,
    rows: usize,
) {
    for y in 0..rows {
        for x in 0..width {
            let at = y * src_pitch + 2 * x;
            let v10 = u32::from(u16::from_le_bytes([src[at], src[at + 1]])) >> 6;
            dst[y * dst_pitch + x] = ((v10 + 2) >> 2).min(255) as u8;
        }
    }
}

/// A 10-bit picture reduced by `p010_to_nv12` (as `reduce_p010` launches it) and then
/// scaled by the NV12 jobs gives the CPU's ladder of the same picture decoded in
/// software: reduced when copied in (`Frame::copy_from_planes_10le`), then scaled.
#[test]
fn p010_reduction_then_the_kernel_matches_the_cpu_on_a_10_bit_picture() {
    use crate::transcode::frame::FramePool;

    let src_layout = Layout::new(SOURCE).unwrap();
    let (w, h) = src_layout.plane_size(Plane::Y);
    let (cw, ch) = src_layout.plane_size(Plane::U);
    let plane = |pw: usize, ph: usize, salt| -> Vec<u16> {
        (0..pw * ph)
            .map(|i| (texture(i % pw, i / pw, salt) >> 8) as u16 % 1024)
            .collect()
    };
    let (y10, u10, v10) = (plane(w, h, 0), plane(cw, ch, 1), plane(cw, ch, 2));
    let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut src = FramePool::new(SOURCE, 1).unwrap().get().unwrap();
    src.copy_from_planes_10le([(&le(&y10), 2 * w), (&le(&u10), 2 * cw), (&le(&v10), 2 * cw)])
        .unwrap();
    let want = cpu_ladder(&src);

    // P010 with pitches unlike ours, as NVDEC's surfaces have them.
    let (y_pitch, uv_pitch) = (
        (2 * w).next_multiple_of(512),
        (4 * cw).next_multiple_of(512),
    );
    let mut y = vec![0u8; y_pitch * h];
    let mut uv = vec![0u8; uv_pitch * ch];
    for row in 0..h {
        for x in 0..w {
            let at = row * y_pitch + 2 * x;
            y[at..at + 2].copy_from_slice(&(y10[row * w + x] << 6).to_le_bytes());
        }
    }
    for row in 0..ch {
        for x in 0..cw {
            let (at, i) = (row * uv_pitch + 4 * x, row * cw + x);
            uv[at..at + 2].copy_from_slice(&(u10[i] << 6).to_le_bytes());
            uv[at + 2..at + 4].copy_from_slice(&(v10[i] << 6).to_le_bytes());
        }
    }
    let nv = Nv12Layout::new(SOURCE);
    let mut nv12 = vec![0u8; nv.len];
    let (luma, chroma) = nv12.split_at_mut(nv.uv_offset);
    emulate_p010_to_nv12(&y, y_pitch, luma, nv.y_pitch, w, h);
    emulate_p010_to_nv12(&uv, uv_pitch, chroma, nv.uv_pitch, 2 * cw, ch);
    assert_emulated_ladder("p010", nv12.as_ptr() as u64, nv.planes(), &want);
}

#[test]
fn tiles_shrink_for_steep_downscales_and_refuse_impossible_ones() {
    // Lanczos-3, the wider kernel, needs the most rows per tile.
    let v = |from, to| AxisFilter::new(Kernel::Lanczos3, from, to);
    assert_eq!(tile_height(&v(1080, 720)), Some(TILE_H));
    let steep = tile_height(&v(768, 36)).expect("fits");
    assert!(steep < TILE_H, "{steep}");
    assert_eq!(tile_height(&v(16384, 16)), None);
}

#[test]
fn nv12_layout_pitches_rows_like_our_frames() {
    let l = Nv12Layout::new(Size::new(1366, 768));
    assert_eq!(l.y_pitch, 1408);
    assert_eq!(l.uv_pitch, 1408);
    assert_eq!(l.uv_offset, 1408 * 768);
    assert_eq!(l.len, 1408 * 768 + 1408 * 384);
}

#[test]
fn rungs_are_scaled_and_taken_out_smallest_first() {
    let ladder = [
        Size::new(854, 480),
        Size::new(1280, 720),
        Size::new(284, 160),
        Size::new(640, 360),
        Size::new(284, 160),
    ];
    assert_eq!(smallest_first(&ladder), [2, 4, 3, 0, 1]);
}
