// PSNR and SSIM on the GPU for a batch of plane pairs (a rung's output
// against its input, three planes per frame, several frames per launch).
// The arithmetic is src/transcode/quality.rs's, which is FFmpeg 5.1's psnr
// and ssim filters': the host turns the sums below into dB and scores.

// The host fills a table of these (repr(C) on the Rust side, same order).
struct PlanePair {
    const unsigned char* a;
    const unsigned char* b;
    int pitch_a;
    int pitch_b;
    int width;
    int height;
};

template <typename T> __device__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, o);
    }
    return v;
}

// Adds every thread's `v` of the block into `*total` (one atomic per block).
template <typename T> __device__ void block_add(T v, T* total)
{
    __shared__ T warps[32];
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) {
        warps[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        int n = (blockDim.x + 31) >> 5;
        v = warp_sum(threadIdx.x < n ? warps[threadIdx.x] : T(0));
        if (threadIdx.x == 0) {
            atomicAdd(total, v);
        }
    }
}

// Sum of squared differences per pair: grid.y indexes the pair, the blocks
// along x split its rows. Blocks of 256 threads.
extern "C" __global__ void sse_planes(const PlanePair* __restrict__ pairs,
                                      unsigned long long* __restrict__ sums)
{
    const PlanePair& p = pairs[blockIdx.y];
    unsigned long long local = 0;
    for (int y = blockIdx.x; y < p.height; y += gridDim.x) {
        const unsigned char* ra = p.a + (size_t)y * p.pitch_a;
        const unsigned char* rb = p.b + (size_t)y * p.pitch_b;
        for (int x = threadIdx.x; x < p.width; x += blockDim.x) {
            int d = (int)ra[x] - (int)rb[x];
            local += (unsigned long long)(d * d);
        }
    }
    block_add(local, &sums[blockIdx.y]);
}

// One 8x8 window as FFmpeg's ssim_end1 scores it: integer moments, the ratio
// in float.
__device__ float window_ssim(long long s1, long long s2, long long ss, long long s12)
{
    const long long c1 = 416;      // (0.01 * 255)^2 * 64, rounded
    const long long c2 = 235963;   // (0.03 * 255)^2 * 64 * 63, rounded
    long long vars = ss * 64 - s1 * s1 - s2 * s2;
    long long covar = s12 * 64 - s1 * s2;
    return ((float)(2 * s1 * s2 + c1) * (float)(2 * covar + c2))
         / ((float)(s1 * s1 + s2 * s2 + c1) * (float)(vars + c2));
}

// Sum of window SSIM per pair: windows are 8x8 samples stepped by 4 (2x2
// blocks of 4x4), over the whole 4x4 blocks of the plane; the mean is the
// sum over (blocks_x - 1) * (blocks_y - 1) windows. One thread per window;
// grid.y indexes the pair.
extern "C" __global__ void ssim_planes(const PlanePair* __restrict__ pairs,
                                       double* __restrict__ sums)
{
    const PlanePair& p = pairs[blockIdx.y];
    int windows_x = p.width / 4 - 1;
    int windows_y = p.height / 4 - 1;
    double local = 0.0;
    for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < windows_x * windows_y;
         w += gridDim.x * blockDim.x) {
        int x0 = (w % windows_x) * 4;
        int y0 = (w / windows_x) * 4;
        long long s1 = 0, s2 = 0, ss = 0, s12 = 0;
        for (int dy = 0; dy < 8; dy++) {
            const unsigned char* ra = p.a + (size_t)(y0 + dy) * p.pitch_a + x0;
            const unsigned char* rb = p.b + (size_t)(y0 + dy) * p.pitch_b + x0;
            for (int dx = 0; dx < 8; dx++) {
                int u = ra[dx], v = rb[dx];
                s1 += u;
                s2 += v;
                ss += u * u + v * v;
                s12 += u * v;
            }
        }
        local += (double)window_ssim(s1, s2, ss, s12);
    }
    block_add(local, &sums[blockIdx.y]);
}
