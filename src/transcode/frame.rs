//! `Frame`, one YUV 4:2:0 8-bit picture, and `FramePool`, which recycles
//! frame buffers. Owns the plane layout, the copies in from decoders' layouts
//! (planar, NV12, 10-bit planar and P010) and the one 10-to-8-bit rounding
//! rule; never allocates once a pool is warm.
//!
//! Layout: Y, then U, then V in one buffer. Every row starts on a 64-byte
//! boundary (the buffer base is aligned and each stride is a multiple of 64)
//! so SIMD loops can load whole vectors and a GPU copy can use pitched
//! transfers. Bytes between a row's width and its stride are unspecified.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

/// Row alignment in bytes: one AVX-512 vector, one cache line.
pub const ALIGN: usize = 64;

/// Largest side accepted: H.264 level 6.2 tops out at 8192, so 16384 leaves
/// room without letting a corrupt header ask for gigabytes.
pub const MAX_SIDE: u32 = 16384;

pub type Result<T, E = FrameError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {0} is invalid: each side must be 1..={MAX_SIDE}")]
    BadSize(Size),
    #[error("frame pool for {size} is exhausted: all {capacity} buffers are in use")]
    PoolExhausted { size: Size, capacity: usize },
    #[error(
        "{plane:?} plane input has {got} bytes, needs {need} ({rows} rows of {width} at stride {stride})"
    )]
    ShortPlane {
        plane: Plane,
        got: usize,
        need: usize,
        rows: usize,
        width: usize,
        stride: usize,
    },
}

/// Picture size in luma samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// Chroma plane size for 4:2:0; odd sides round up, as FFmpeg does.
    pub const fn chroma(self) -> Self {
        Self::new(self.width.div_ceil(2), self.height.div_ceil(2))
    }

    pub const fn area(self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    Y,
    U,
    V,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Y, Plane::U, Plane::V];

    fn index(self) -> usize {
        self as usize
    }
}

/// Where each plane of a frame of one size lives in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    size: Size,
    /// Per plane: width, height, stride, offset from the aligned base.
    planes: [PlaneLayout; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PlaneLayout {
    width: usize,
    height: usize,
    stride: usize,
    offset: usize,
}

impl Layout {
    pub fn new(size: Size) -> Result<Self> {
        let ok = |side| (1..=MAX_SIDE).contains(&side);
        if !ok(size.width) || !ok(size.height) {
            return Err(FrameError::BadSize(size));
        }
        let mut offset = 0;
        let planes = [size, size.chroma(), size.chroma()].map(|s| {
            let (width, height) = (s.width as usize, s.height as usize);
            let stride = width.next_multiple_of(ALIGN);
            let plane = PlaneLayout {
                width,
                height,
                stride,
                offset,
            };
            offset += stride * height;
            plane
        });
        Ok(Self { size, planes })
    }

    pub fn size(&self) -> Size {
        self.size
    }

    /// Width and height of `plane` in samples.
    pub fn plane_size(&self, plane: Plane) -> (usize, usize) {
        let p = &self.planes[plane.index()];
        (p.width, p.height)
    }

    /// Bytes from one row of `plane` to the next: a multiple of [`ALIGN`].
    pub fn stride(&self, plane: Plane) -> usize {
        self.planes[plane.index()].stride
    }

    /// Bytes of pixel data, padding included, without the alignment slack:
    /// the three planes back to back, as [`Frame::pixels`] holds them.
    pub fn buffer_len(&self) -> usize {
        let v = &self.planes[2];
        v.offset + v.stride * v.height
    }

    /// Bytes of the same picture packed with no padding (FFmpeg `rawvideo`).
    pub fn packed_len(&self) -> usize {
        self.planes.iter().map(|p| p.width * p.height).sum()
    }

    /// Where `plane` starts in [`Frame::pixels`].
    pub fn offset(&self, plane: Plane) -> usize {
        self.planes[plane.index()].offset
    }

    fn range(&self, plane: Plane) -> std::ops::Range<usize> {
        let p = &self.planes[plane.index()];
        p.offset..p.offset + p.stride * p.height
    }
}

/// One decoded picture. Dropping it hands its buffer back to its pool.
pub struct Frame {
    /// Never empty while the frame is alive; emptied only by `drop`.
    buf: Vec<u8>,
    /// Offset of the 64-byte aligned base inside `buf`.
    base: usize,
    layout: Layout,
    pts: i64,
    pool: Arc<PoolShared>,
}

impl Frame {
    pub fn size(&self) -> Size {
        self.layout.size
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn stride(&self, plane: Plane) -> usize {
        self.layout.stride(plane)
    }

    /// Presentation time in the node's timebase.
    pub fn pts(&self) -> i64 {
        self.pts
    }

    pub fn set_pts(&mut self, pts: i64) {
        self.pts = pts;
    }

    /// The three planes back to back, padding included
    /// ([`Layout::buffer_len`] bytes): what a device copy moves in one go.
    pub fn pixels(&self) -> &[u8] {
        &self.buf[self.base..self.base + self.layout.buffer_len()]
    }

    pub fn pixels_mut(&mut self) -> &mut [u8] {
        let len = self.layout.buffer_len();
        &mut self.buf[self.base..self.base + len]
    }

    /// All rows of `plane`, padding included: `stride * height` bytes.
    pub fn plane(&self, plane: Plane) -> &[u8] {
        let r = self.layout.range(plane);
        &self.buf[self.base + r.start..self.base + r.end]
    }

    pub fn plane_mut(&mut self, plane: Plane) -> &mut [u8] {
        let r = self.layout.range(plane);
        &mut self.buf[self.base + r.start..self.base + r.end]
    }

    /// The visible samples of row `y` of `plane`.
    pub fn row(&self, plane: Plane, y: usize) -> &[u8] {
        let (width, _) = self.layout.plane_size(plane);
        let stride = self.stride(plane);
        &self.plane(plane)[y * stride..][..width]
    }

    /// Copies three strided planes in, e.g. an `AVFrame`'s `data`/`linesize`.
    /// Each source must hold `(rows - 1) * stride + width` bytes: the last
    /// row need not be padded.
    pub fn copy_from_planes(&mut self, planes: [(&[u8], usize); 3]) -> Result<()> {
        for (plane, (src, src_stride)) in Plane::ALL.into_iter().zip(planes) {
            let (width, height) = self.layout.plane_size(plane);
            check_plane(plane, src, src_stride, width, height)?;
            let stride = self.stride(plane);
            let dst = self.plane_mut(plane);
            for (d, s) in dst.chunks_exact_mut(stride).zip(src.chunks(src_stride)) {
                d[..width].copy_from_slice(&s[..width]);
            }
        }
        Ok(())
    }

    /// Copies three strided planes of 10-bit samples in, each a little-endian u16 (FFmpeg's
    /// `yuv420p10le`, what H.264 High 10 and HEVC Main 10 decode to), reduced to 8 bits with
    /// rounding. `stride`s and the plane lengths are in bytes. The ladder is 8-bit, and
    /// reducing here, once per picture, is cheaper than carrying 16-bit samples through every
    /// rung's filter.
    pub fn copy_from_planes_10le(&mut self, planes: [(&[u8], usize); 3]) -> Result<()> {
        for (plane, (src, src_stride)) in Plane::ALL.into_iter().zip(planes) {
            let (width, height) = self.layout.plane_size(plane);
            check_plane(plane, src, src_stride, 2 * width, height)?;
            let stride = self.stride(plane);
            let dst = self.plane_mut(plane);
            for (d, s) in dst.chunks_exact_mut(stride).zip(src.chunks(src_stride)) {
                for (out, le) in d[..width].iter_mut().zip(s.chunks_exact(2)) {
                    *out = ten_to_eight(u16::from_le_bytes([le[0], le[1]]));
                }
            }
        }
        Ok(())
    }

    /// Copies a P010 picture in (NVDEC's 10-bit output, [`SemiPlanar::P010`]): Y, then
    /// interleaved UV rows, each sample a little-endian u16 with the value in its high 10 bits.
    /// Those 10 bits are reduced to 8 exactly as [`Frame::copy_from_planes_10le`] reduces the
    /// same picture decoded in software, so a stream reads the same whichever decoder ran.
    /// `stride`s and plane lengths are in bytes.
    pub fn copy_from_p010(&mut self, y: (&[u8], usize), uv: (&[u8], usize)) -> Result<()> {
        self.copy_semi_planar(y, uv, 2, |le| {
            ten_to_eight(u16::from_le_bytes([le[0], le[1]]) >> 6)
        })
    }

    /// Copies a packed I420 picture in (FFmpeg `-pix_fmt yuv420p -f rawvideo`).
    pub fn copy_from_packed(&mut self, data: &[u8]) -> Result<()> {
        let [y, u, _] = Plane::ALL.map(|p| {
            let (w, h) = self.layout.plane_size(p);
            w * h
        });
        let (yw, _) = self.layout.plane_size(Plane::Y);
        let (cw, _) = self.layout.plane_size(Plane::U);
        // Short input makes one of these slices short; check_plane reports it.
        let at =
            |start: usize, len: usize| &data[start.min(data.len())..(start + len).min(data.len())];
        self.copy_from_planes([(at(0, y), yw), (at(y, u), cw), (at(y + u, u), cw)])
    }

    /// Copies an NV12 picture in (a hardware decoder's usual output): the
    /// interleaved UV plane is split into U and V so the scaler sees I420.
    pub fn copy_from_nv12(&mut self, y: (&[u8], usize), uv: (&[u8], usize)) -> Result<()> {
        self.copy_semi_planar(y, uv, 1, |b| b[0])
    }

    /// A Y plane and an interleaved UV plane of `bytes`-wide samples, each made a byte by
    /// `sample`, into the three planes the scaler reads.
    fn copy_semi_planar(
        &mut self,
        y: (&[u8], usize),
        uv: (&[u8], usize),
        bytes: usize,
        sample: impl Fn(&[u8]) -> u8,
    ) -> Result<()> {
        let (width, height) = self.layout.plane_size(Plane::Y);
        check_plane(Plane::Y, y.0, y.1, bytes * width, height)?;
        let (cw, ch) = self.layout.plane_size(Plane::U);
        check_plane(Plane::U, uv.0, uv.1, 2 * bytes * cw, ch)?;
        let stride = self.stride(Plane::Y);
        for (d, s) in self
            .plane_mut(Plane::Y)
            .chunks_exact_mut(stride)
            .zip(y.0.chunks(y.1))
        {
            if bytes == 1 {
                d[..width].copy_from_slice(&s[..width]);
                continue;
            }
            for (out, one) in d[..width].iter_mut().zip(s.chunks_exact(bytes)) {
                *out = sample(one);
            }
        }
        let cstride = self.stride(Plane::U);
        let (u_range, v_range) = (self.layout.range(Plane::U), self.layout.range(Plane::V));
        let pixels = &mut self.buf[self.base..];
        let (head, v_plane) = pixels.split_at_mut(v_range.start);
        let u_plane = &mut head[u_range];
        let rows = u_plane
            .chunks_exact_mut(cstride)
            .zip(v_plane.chunks_exact_mut(cstride));
        for ((u_row, v_row), s) in rows.zip(uv.0.chunks(uv.1)) {
            for ((u, v), pair) in u_row[..cw]
                .iter_mut()
                .zip(&mut v_row[..cw])
                .zip(s.chunks_exact(2 * bytes))
            {
                *u = sample(&pair[..bytes]);
                *v = sample(&pair[bytes..]);
            }
        }
        Ok(())
    }

    /// Replaces `out` with the picture packed as I420, FFmpeg `rawvideo`
    /// style. Reusing `out` keeps this allocation-free after the first call.
    pub fn copy_to_packed(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.layout.packed_len());
        for plane in Plane::ALL {
            let (_, height) = self.layout.plane_size(plane);
            for y in 0..height {
                out.extend_from_slice(self.row(plane, y));
            }
        }
    }
}

/// A 10-bit sample reduced to 8 bits, rounding half up: `(v + 2) >> 2`. A value above 1021
/// (or stray bits above the tenth) saturates at 255. The one rule for every 10-bit source: the
/// software decoder's planes, NVDEC's P010 here and in `p010_to_nv12` (kernels/scale.cu).
pub fn ten_to_eight(v: u16) -> u8 {
    ((u32::from(v) + 2) >> 2).min(255) as u8
}

/// How a hardware decoder lays out a 4:2:0 picture: the Y plane, then one plane of
/// interleaved U and V samples (U first), each with a pitch of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemiPlanar {
    /// 8-bit samples: NVDEC's output for 8-bit streams.
    Nv12,
    /// 16-bit little-endian samples, the value in the high bits: NVDEC's output for 10-bit
    /// streams (FFmpeg's P010LE; its P016LE, for 12-bit ones, is read the same way).
    P010,
}

impl SemiPlanar {
    /// Bytes per sample.
    pub fn sample_bytes(self) -> usize {
        match self {
            SemiPlanar::Nv12 => 1,
            SemiPlanar::P010 => 2,
        }
    }
}

impl fmt::Display for SemiPlanar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SemiPlanar::Nv12 => "NV12",
            SemiPlanar::P010 => "P010",
        })
    }
}

fn check_plane(plane: Plane, src: &[u8], stride: usize, width: usize, height: usize) -> Result<()> {
    let need = if stride < width {
        usize::MAX
    } else {
        (height - 1) * stride + width
    };
    if src.len() < need {
        return Err(FrameError::ShortPlane {
            plane,
            got: src.len(),
            need,
            rows: height,
            width,
            stride,
        });
    }
    Ok(())
}

impl Drop for Frame {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // The pool never holds more buffers than it created, so this push
        // cannot find the queue full; if it somehow did, freeing is correct.
        let _ = self.pool.free.push(buf);
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("size", &self.layout.size)
            .field("pts", &self.pts)
            .finish_non_exhaustive()
    }
}

/// A bounded set of frame buffers of one size. Cloning shares the pool.
///
/// `get` reuses a returned buffer, or allocates while fewer than `capacity`
/// exist; past that it fails, so a stuck consumer shows up as an error
/// instead of as unbounded memory.
#[derive(Clone)]
pub struct FramePool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    layout: Layout,
    capacity: usize,
    free: ArrayQueue<Vec<u8>>,
    created: AtomicUsize,
}

impl FramePool {
    pub fn new(size: Size, capacity: usize) -> Result<Self> {
        let layout = Layout::new(size)?;
        let capacity = capacity.max(1);
        Ok(Self {
            shared: Arc::new(PoolShared {
                layout,
                capacity,
                free: ArrayQueue::new(capacity),
                created: AtomicUsize::new(0),
            }),
        })
    }

    /// A frame with pts 0 and unspecified pixels (usually an older picture).
    pub fn get(&self) -> Result<Frame> {
        let shared = &self.shared;
        let buf = match shared.free.pop() {
            Some(buf) => buf,
            None => {
                let claimed =
                    shared
                        .created
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < shared.capacity).then_some(n + 1)
                        });
                if claimed.is_err() {
                    return Err(FrameError::PoolExhausted {
                        size: shared.layout.size,
                        capacity: shared.capacity,
                    });
                }
                vec![0; shared.layout.buffer_len() + ALIGN - 1]
            }
        };
        // A Vec's heap block never moves, so the offset stays valid for the
        // buffer's whole life; recomputing it is one instruction.
        let base = buf.as_ptr().align_offset(ALIGN);
        Ok(Frame {
            buf,
            base,
            layout: shared.layout,
            pts: 0,
            pool: Arc::clone(shared),
        })
    }

    pub fn size(&self) -> Size {
        self.shared.layout.size
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Buffers allocated so far; flat in steady state.
    pub fn buffers_created(&self) -> usize {
        self.shared.created.load(Ordering::Acquire)
    }
}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("size", &self.size())
            .field("capacity", &self.capacity())
            .field("created", &self.buffers_created())
            .field("free", &self.shared.free.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn layout_pads_rows_and_rounds_chroma_up() {
        let l = Layout::new(Size::new(1366, 767)).unwrap();
        assert_eq!(l.plane_size(Plane::Y), (1366, 767));
        assert_eq!(l.plane_size(Plane::U), (683, 384));
        assert_eq!(l.stride(Plane::Y), 1408);
        assert_eq!(l.stride(Plane::V), 704);
        assert_eq!(l.packed_len(), 1366 * 767 + 2 * 683 * 384);
        assert!(Layout::new(Size::new(0, 10)).is_err());
    }

    #[test]
    fn packed_round_trip_and_aligned_rows() {
        let pool = FramePool::new(Size::new(35, 17), 2).unwrap();
        let mut f = pool.get().unwrap();
        let data = ramp(f.layout().packed_len(), 3);
        f.copy_from_packed(&data).unwrap();
        for plane in Plane::ALL {
            assert_eq!(f.plane(plane).as_ptr() as usize % ALIGN, 0);
        }
        let mut out = Vec::new();
        f.copy_to_packed(&mut out);
        assert_eq!(out, data);
        assert!(matches!(
            f.copy_from_packed(&data[1..]),
            Err(FrameError::ShortPlane {
                plane: Plane::V,
                ..
            })
        ));
    }

    #[test]
    fn nv12_is_split_into_u_and_v() {
        let pool = FramePool::new(Size::new(6, 4), 1).unwrap();
        let mut f = pool.get().unwrap();
        let y = ramp(8 * 4, 0);
        // UV rows of 3 pairs at stride 8, last row unpadded.
        let uv: Vec<u8> = [10, 20, 11, 21, 12, 22, 0, 0, 13, 23, 14, 24, 15, 25].to_vec();
        f.copy_from_nv12((&y, 8), (&uv, 8)).unwrap();
        assert_eq!(f.row(Plane::Y, 1), &y[8..14]);
        assert_eq!(f.row(Plane::U, 0), &[10, 11, 12]);
        assert_eq!(f.row(Plane::V, 1), &[23, 24, 25]);
    }

    #[test]
    fn ten_bit_planes_round_to_eight() {
        let pool = FramePool::new(Size::new(4, 2), 1).unwrap();
        let mut f = pool.get().unwrap();
        let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        // Y rows at a 10-byte stride (one pad sample), the last row unpadded.
        let y = le(&[0, 1, 2, 1023, 0xffff, 64, 940, 513, 514]);
        let c = le(&[512, 1022]);
        f.copy_from_planes_10le([(&y, 10), (&c, 4), (&c, 4)])
            .unwrap();
        assert_eq!(f.row(Plane::Y, 0), &[0, 0, 1, 255]);
        assert_eq!(f.row(Plane::Y, 1), &[16, 235, 128, 129]);
        assert_eq!(f.row(Plane::U, 0), &[128, 255]);
        // A plane one byte short is refused, not read past.
        assert!(matches!(
            f.copy_from_planes_10le([(&y[..y.len() - 1], 10), (&c, 4), (&c, 4)]),
            Err(FrameError::ShortPlane { .. })
        ));
    }

    /// NVDEC's P010 and the software decoder's yuv420p10le of one picture give the same
    /// 8-bit frame: whichever decoder ran, the ladder starts from the same samples.
    #[test]
    fn p010_reduces_to_eight_bits_as_the_software_planes_do() {
        let size = Size::new(13, 7);
        let pool = FramePool::new(size, 2).unwrap();
        let (w, h) = (13, 7);
        let (cw, ch) = (7, 4);
        // Scrambled 10-bit values, the first row starting with the extremes.
        let value = |i: usize| ((i * 389 + 17) % 1024) as u16;
        let mut luma: Vec<u16> = (0..w * h).map(value).collect();
        luma[..4].copy_from_slice(&[0, 1023, 1021, 2]);
        let (u, v): (Vec<u16>, Vec<u16>) = (0..cw * ch)
            .map(|i| (value(i + 1000), value(i + 2000)))
            .unzip();
        let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut want = pool.get().unwrap();
        want.copy_from_planes_10le([(&le(&luma), 2 * w), (&le(&u), 2 * cw), (&le(&v), 2 * cw)])
            .unwrap();
        // P010 at pitches with padding, the last rows unpadded; the 6 low bits, zero in
        // P010, carry noise that must be ignored (P016 fills them).
        let (y_pitch, uv_pitch) = (2 * w + 6, 4 * cw + 10);
        let mut y = vec![0xEEu8; y_pitch * (h - 1) + 2 * w];
        let mut uv = vec![0xEEu8; uv_pitch * (ch - 1) + 4 * cw];
        let p010 = |v: u16, i: usize| ((v << 6) | (i as u16 % 64)).to_le_bytes();
        for row in 0..h {
            for x in 0..w {
                let i = row * w + x;
                y[row * y_pitch + 2 * x..][..2].copy_from_slice(&p010(luma[i], i));
            }
        }
        for row in 0..ch {
            for x in 0..cw {
                let i = row * cw + x;
                let at = row * uv_pitch + 4 * x;
                uv[at..][..2].copy_from_slice(&p010(u[i], i));
                uv[at + 2..][..2].copy_from_slice(&p010(v[i], i + 7));
            }
        }
        let mut got = pool.get().unwrap();
        got.copy_from_p010((&y, y_pitch), (&uv, uv_pitch)).unwrap();
        for p in Plane::ALL {
            let (_, rows) = got.layout().plane_size(p);
            for r in 0..rows {
                assert_eq!(got.row(p, r), want.row(p, r), "{p:?} row {r}");
            }
        }
        assert_eq!(got.row(Plane::Y, 0)[..4], [0, 255, 255, 1]);
        // A UV plane one byte short is refused, not read past.
        assert!(matches!(
            got.copy_from_p010((&y, y_pitch), (&uv[..uv.len() - 1], uv_pitch)),
            Err(FrameError::ShortPlane {
                plane: Plane::U,
                ..
            })
        ));
    }

    #[test]
    fn pool_recycles_and_is_bounded() {
        let pool = FramePool::new(Size::new(64, 64), 2).unwrap();
        for _ in 0..100 {
            let a = pool.get().unwrap();
            let b = pool.get().unwrap();
            assert!(matches!(
                pool.get(),
                Err(FrameError::PoolExhausted { capacity: 2, .. })
            ));
            drop((a, b));
        }
        assert_eq!(pool.buffers_created(), 2);
    }
}
