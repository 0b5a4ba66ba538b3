//! Frame comparison the GPU tests share: GPU output against the CPU's.

use rungs::transcode::frame::{Frame, Plane};

/// Largest absolute difference of any sample of any plane.
pub fn max_difference(a: &Frame, b: &Frame) -> u8 {
    Plane::ALL
        .into_iter()
        .flat_map(|p| {
            let (_, h) = a.layout().plane_size(p);
            (0..h).flat_map(move |y| {
                a.row(p, y)
                    .iter()
                    .zip(b.row(p, y))
                    .map(|(x, z)| x.abs_diff(*z))
            })
        })
        .max()
        .unwrap_or(0)
}
