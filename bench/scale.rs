//! Criterion benchmark of the CPU ladder scaler: one 1080p frame into
//! 720p/480p/360p/160p, with each kernel, cascaded (the default) and direct,
//! on the global rayon pool and on one thread.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rungs::transcode::frame::{Frame, FramePool, Size};
use rungs::transcode::scale::{Cascade, CpuScaler, Kernel, ScaleOptions, Scaler};

const SOURCE: Size = Size::new(1920, 1080);
const LADDER: [Size; 4] = [
    Size::new(1280, 720),
    Size::new(854, 480),
    Size::new(640, 360),
    Size::new(284, 160),
];

/// A textured picture; the scaler's work does not depend on content, but
/// real-looking output makes a broken build obvious under a profiler.
fn source_frame() -> Frame {
    let pool = FramePool::new(SOURCE, 1).expect("1080p is a valid size");
    let mut frame = pool.get().expect("fresh pool has a buffer");
    let len = frame.layout().packed_len();
    let data: Vec<u8> = (0..len as u32)
        .map(|i| {
            let hash = i.wrapping_mul(2_654_435_761) >> 27;
            ((i % 1920) / 8 + (i / 1920) / 5 + hash) as u8
        })
        .collect();
    frame
        .copy_from_packed(&data)
        .expect("buffer has the packed length");
    frame
}

fn ladder(c: &mut Criterion) {
    let src = source_frame();
    let mut dst: Vec<Frame> = LADDER
        .iter()
        .map(|&s| {
            FramePool::new(s, 1)
                .and_then(|p| p.get())
                .expect("ladder sizes are valid")
        })
        .collect();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one thread can start");
    let kinds = Kernel::ALL.into_iter().flat_map(|kernel| {
        [("auto", Cascade::Auto), ("direct", Cascade::Direct)]
            .map(|(how, cascade)| (format!("{kernel:?}_{how}").to_lowercase(), cascade, kernel))
    });
    for (name, cascade, kernel) in kinds {
        let options = ScaleOptions { kernel, cascade };
        let mut scaler = CpuScaler::with_options(SOURCE, &LADDER, options).expect("valid ladder");
        c.bench_function(&format!("ladder_1080p_{name}"), |b| {
            b.iter(|| {
                scaler
                    .scale(black_box(&src), &mut dst)
                    .expect("sizes match")
            })
        });
        c.bench_function(&format!("ladder_1080p_{name}_1thread"), |b| {
            b.iter(|| {
                one_thread.install(|| {
                    scaler
                        .scale(black_box(&src), &mut dst)
                        .expect("sizes match")
                })
            })
        });
    }
}

criterion_group!(benches, ladder);
criterion_main!(benches);
