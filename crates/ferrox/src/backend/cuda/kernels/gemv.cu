// Matrix-vector products for decode: out[r, c] = alpha * sum_k x[r, k] * w[c, k] for up to
// GEMV_ROWS rows of x (contiguous, xs elements apart) and the rows of w (contiguous, ws apart:
// a Linear layer's weight, read once for all rows). A warp per COLS output columns; its lanes
// take 16-byte chunks of the weight rows in turn (several loads in flight), multiply them with
// the same chunk of each x row (shared by the block's warps through L1) in f32, and sum with
// shuffles. With several rows, each x chunk a lane reads serves COLS columns (`gemv_cols4`):
// reading x through L1, not the weights, bounds the one-column kernel there.
// Each column's sum is taken in the same order whatever COLS is. k, xs, ws and the addresses
// are multiples of a chunk (the host checks).
#define GEMV_ROWS 8
#define CHUNK (16 / (int)sizeof(T))

template <int COLS>
__device__ __forceinline__ void gemv_impl(T* __restrict__ out, const T* __restrict__ x, i64 xs,
                                          const T* __restrict__ w, i64 ws, int rows, i64 n, i64 k, float alpha) {
  const int lane = threadIdx.x & 31;
  const i64 col0 = ((i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * COLS;
  if (col0 >= n) return;  // whole warps leave together
  const uint4* wr[COLS];
#pragma unroll
  for (int c = 0; c < COLS; ++c) wr[c] = (const uint4*)(w + (col0 + c < n ? col0 + c : col0) * ws);
  float acc[COLS][GEMV_ROWS];
#pragma unroll
  for (int c = 0; c < COLS; ++c)
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) acc[c][r] = 0.f;
  const i64 chunks = k / CHUNK;
#pragma unroll(COLS == 1 ? 4 : 1)
  for (i64 ch = lane; ch < chunks; ch += 32) {
    float wf[COLS][CHUNK];
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
      uint4 wv = __ldg(wr[c] + ch);
      const T* we = (const T*)&wv;
#pragma unroll
      for (int e = 0; e < CHUNK; ++e) wf[c][e] = (float)to_acc<T>(we[e]);
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) {
      if (r < rows) {
        uint4 xv = __ldg((const uint4*)(x + r * xs) + ch);
        const T* xe = (const T*)&xv;
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) {
          float xf = (float)to_acc<T>(xe[e]);
#pragma unroll
          for (int c = 0; c < COLS; ++c) acc[c][r] = fmaf(wf[c][e], xf, acc[c][r]);
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < COLS; ++c)
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) {
      float v = acc[c][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0 && r < rows && col0 + c < n) out[r * n + col0 + c] = from_acc<T>(v * alpha);
    }
}

extern "C" __global__ void gemv(T* __restrict__ out, const T* __restrict__ x, i64 xs, const T* __restrict__ w, i64 ws,
                                int rows, i64 n, i64 k, float alpha) {
  gemv_impl<1>(out, x, xs, w, ws, rows, n, k, alpha);
}

extern "C" __global__ void gemv_cols4(T* __restrict__ out, const T* __restrict__ x, i64 xs,
                                      const T* __restrict__ w, i64 ws, int rows, i64 n, i64 k, float alpha) {
  gemv_impl<4>(out, x, xs, w, ws, rows, n, k, alpha);
}
