// The ladder scaler on the GPU: a launch reads a decoded source frame
// (YUV420P, or NV12 as NVDEC writes it) and writes every plane of the rungs
// in its job table (the host launches once per rung, so that each rung can be
// copied out while the next is scaled). A 10-bit NVDEC surface (P010) is
// first reduced to NV12 by p010_to_nv12, at the end of this file.
//
// The filter is the CPU scaler's, exactly (src/transcode/scale/cpu.rs, "The
// filter, exactly"): the host builds the same Q14 tables (AxisFilter) and
// uploads them; this code only applies them with the same integer steps:
//
//   horizontal, per tap row:  mid = (sum(w[k] * src[start + k]) + (1 << 7)) >> 8
//   vertical, per output:     out = clamp((sum(w[k] * mid[start + k]) + (1 << 19)) >> 20, 0, 255)
//
// with `>>` an arithmetic shift on int, as on the CPU, and the intermediate
// stored as a 16-bit int (the spec bounds it). A block makes a tile of 32
// columns by `tile_h` rows of one output plane: first the horizontal pass of
// every source row the tile's vertical windows touch, into shared memory
// (each source sample is read once per tile), then the vertical pass from
// there. Every rung is scaled from the source (no cascade: the blocks of a
// launch have no order, and the rungs' launches need none).

#define TILE_W 32
// Source rows a tile may need; the host picks `tile_h` so that none needs
// more (kept in step with MAX_ROWS in src/transcode/scale/cuda.rs).
#define MAX_ROWS 512

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
    int blocks_x;              // tiles across this output plane
    int tile_h;                // output rows per tile
};

extern "C" __global__ void scale_ladder(const ScaleJob* __restrict__ jobs, int job_count)
{
    __shared__ short mid[MAX_ROWS][TILE_W];
    int block = blockIdx.x;
    int j = 0;
    while (j + 1 < job_count && block >= jobs[j + 1].first_block) {
        j++;
    }
    const ScaleJob& job = jobs[j];
    int local = block - job.first_block;
    int x = (local % job.blocks_x) * TILE_W + threadIdx.x;
    int y0 = (local / job.blocks_x) * job.tile_h;
    int y1 = min(y0 + job.tile_h, job.dst_height);
    int r0 = job.v_start[y0];
    int rows = job.v_start[y1 - 1] + job.v_taps - r0;
    if (x < job.dst_width) {
        const short* hw = job.h_weight + (size_t)x * job.h_taps;
        const unsigned char* column = job.src + (size_t)job.h_start[x] * job.src_step;
        for (int r = threadIdx.y; r < rows; r += blockDim.y) {
            const unsigned char* p = column + (size_t)(r0 + r) * job.src_pitch;
            int h = 0;
            for (int t = 0; t < job.h_taps; t++) {
                h += hw[t] * (int)p[t * job.src_step];
            }
            mid[r][threadIdx.x] = (short)((h + (1 << 7)) >> 8);
        }
    }
    __syncthreads();
    if (x >= job.dst_width) {
        return;
    }
    for (int y = y0 + threadIdx.y; y < y1; y += blockDim.y) {
        const short* vw = job.v_weight + (size_t)y * job.v_taps;
        int first = job.v_start[y] - r0;
        int acc = 0;
        for (int k = 0; k < job.v_taps; k++) {
            acc += vw[k] * (int)mid[first + k][threadIdx.x];
        }
        int out = (acc + (1 << 19)) >> 20;
        job.dst[(size_t)y * job.dst_pitch + x] = (unsigned char)min(max(out, 0), 255);
    }
}

// A 10-bit NVDEC picture (P010: 16-bit little-endian samples, the value in the high 10 bits)
// reduced to the 8-bit NV12 that scale_ladder reads, one plane per launch (Y, or the
// interleaved UV rows as `width` samples). The rule is the CPU's, exactly (ten_to_eight in
// src/transcode/frame.rs): v8 = min((v10 + 2) >> 2, 255) with v10 = p010 >> 6. It runs before
// the filter, as on the CPU, where a decoded 10-bit picture is reduced when it is copied in:
// rounding after filtering would differ in the last bit, and the GPU must agree with the CPU.
extern "C" __global__ void p010_to_nv12(
    const unsigned char* __restrict__ src, int src_pitch,
    unsigned char* __restrict__ dst, int dst_pitch,
    int width, int rows)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y;
    if (x >= width || y >= rows) {
        return;
    }
    // The host checks that the surface and its pitch are 2-byte aligned.
    const unsigned short* row = (const unsigned short*)(src + (size_t)y * src_pitch);
    unsigned int v10 = row[x] >> 6;
    dst[(size_t)y * dst_pitch + x] = (unsigned char)min((v10 + 2) >> 2, 255u);
}
