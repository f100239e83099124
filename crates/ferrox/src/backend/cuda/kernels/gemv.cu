// Matrix-vector products for decode: out[r, c] = alpha * sum_k x[r, k] * w[c, k] for up to
// GEMV_ROWS rows of x (contiguous, xs elements apart) and the rows of w (contiguous, ws apart:
// a Linear layer's weight, read once for all rows). A warp per output column; its lanes take
// 16-byte chunks of the weight row in turn (several loads in flight), multiply them with the
// same chunk of each x row (shared by the block's warps through L1) in f32, and sum with
// shuffles. k, xs, ws and the addresses are multiples of a chunk (the host checks).
#define GEMV_ROWS 8
#define CHUNK (16 / (int)sizeof(T))

extern "C" __global__ void gemv(T* __restrict__ out, const T* __restrict__ x, i64 xs, const T* __restrict__ w, i64 ws,
                                int rows, i64 n, i64 k, float alpha) {
  const int lane = threadIdx.x & 31;
  const i64 col = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (col >= n) return;  // whole warps leave together
  const uint4* wr = (const uint4*)(w + col * ws);
  float acc[GEMV_ROWS];
#pragma unroll
  for (int r = 0; r < GEMV_ROWS; ++r) acc[r] = 0.f;
  const i64 chunks = k / CHUNK;
#pragma unroll 4
  for (i64 c = lane; c < chunks; c += 32) {
    uint4 wv = __ldg(wr + c);
    const T* we = (const T*)&wv;
    float wf[CHUNK];
#pragma unroll
    for (int e = 0; e < CHUNK; ++e) wf[e] = (float)to_acc<T>(we[e]);
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) {
      if (r < rows) {
        uint4 xv = __ldg((const uint4*)(x + r * xs) + c);
        const T* xe = (const T*)&xv;
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) acc[r] = fmaf(wf[e], (float)to_acc<T>(xe[e]), acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < GEMV_ROWS; ++r) {
    float v = acc[r];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0 && r < rows) out[r * n + col] = from_acc<T>(v * alpha);
  }
}
