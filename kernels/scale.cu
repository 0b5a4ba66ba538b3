// The ladder scaler on the GPU: one launch reads a decoded source frame
// (YUV420P, or NV12 as NVDEC writes it) and writes every plane of every rung.
//
// The filter is the CPU scaler's, exactly (src/transcode/scale/cpu.rs, "The
// filter, exactly"): the host builds the same Q14 tables (AxisFilter) and
// uploads them; this code only applies them with the same integer steps:
//
//   horizontal, per tap row:  mid = (sum(w[k] * src[start + k]) + (1 << 7)) >> 8
//   vertical, per output:     out = clamp((sum(w[k] * mid[start + k]) + (1 << 19)) >> 20, 0, 255)
//
// with `>>` an arithmetic shift on int, as on the CPU. Each thread computes
// one output sample from its v_taps x h_taps source window; the window's
// rows are shared by the neighbouring threads of a block, so the source is
// read from device memory about once and from L1/L2 otherwise. Every rung is
// scaled from the source (no cascade: a launch has no order between blocks).

// The host fills a table of these (repr(C) on the Rust side, same order).
struct ScaleJob {
    const unsigned char* src;  // first sample of the source plane
    unsigned char* dst;        // first sample of the output plane
    const int* h_start;        // per output column: first input column
    const short* h_weight;     // per output column: h_taps weights
    const int* v_start;        // per output row: first input row
    const short* v_weight;     // per output row: v_taps weights
    int src_pitch;             // bytes between source rows
    int src_step;              // bytes between source samples (2: NV12 chroma)
    int dst_pitch;
    int dst_width;
    int dst_height;
    int h_taps;
    int v_taps;
    int first_block;           // this job's first block in the launch
    int blocks_x;              // blocks across this output plane
    int pad;
};

extern "C" __global__ void scale_ladder(const ScaleJob* __restrict__ jobs, int job_count)
{
    int block = blockIdx.x;
    int j = 0;
    while (j + 1 < job_count && block >= jobs[j + 1].first_block) {
        j++;
    }
    const ScaleJob& job = jobs[j];
    int local = block - job.first_block;
    int x = (local % job.blocks_x) * blockDim.x + threadIdx.x;
    int y = (local / job.blocks_x) * blockDim.y + threadIdx.y;
    if (x >= job.dst_width || y >= job.dst_height) {
        return;
    }
    const short* hw = job.h_weight + (size_t)x * job.h_taps;
    const short* vw = job.v_weight + (size_t)y * job.v_taps;
    const unsigned char* first =
        job.src + (size_t)job.v_start[y] * job.src_pitch + (size_t)job.h_start[x] * job.src_step;
    int acc = 0;
    for (int k = 0; k < job.v_taps; k++) {
        const unsigned char* row = first + (size_t)k * job.src_pitch;
        int h = 0;
        for (int t = 0; t < job.h_taps; t++) {
            h += hw[t] * (int)row[t * job.src_step];
        }
        acc += vw[k] * ((h + (1 << 7)) >> 8);
    }
    int out = (acc + (1 << 19)) >> 20;
    job.dst[(size_t)y * job.dst_pitch + x] = (unsigned char)min(max(out, 0), 255);
}
