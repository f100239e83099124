// Affine quantized matrices (MLX's layout): row n of W [N, K] is a little-endian bit stream
// of K codes of BITS bits in uint32 words; group g of gs consecutive codes has a scale and a
// bias (T), w = scale * code + bias. T is the element type of x, scales, biases and output;
// BITS is a #define of the module.
//
// A "pack" is 32 consecutive codes: exactly BITS words, inside one group (gs >= 32).

__device__ __forceinline__ void unpack32(const u32* __restrict__ w, float* c) {
  u32 words[BITS];
#pragma unroll
  for (int i = 0; i < BITS; ++i) words[i] = w[i];
  const u32 mask = (1u << BITS) - 1u;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int pos = j * BITS, wi = pos >> 5, sh = pos & 31;
    u32 v = words[wi] >> sh;
    if (sh + BITS > 32) v |= words[wi + 1] << (32 - sh);
    c[j] = (float)(v & mask);
  }
}

// y [M, N] = x [M, K] @ Wᵀ for M rows (decode): one warp per output feature, lanes taking
// packs in turn; per pack, scale · (x · codes) + bias · Σx. With `staged`, the block first
// copies x into shared memory as f32 with one pad word per 32 (lane p then reads words
// 33 p + j: no bank conflicts), instead of each lane reading its own 64-byte run of x.
extern __shared__ float qmv_x[];
template <int M>
__device__ __forceinline__ void qmv_impl(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w,
                                         const T* __restrict__ scales, const T* __restrict__ biases, i64 n_out,
                                         i64 k, i64 gs, int staged) {
  const int lane = threadIdx.x & 31;
  const i64 kp = k + (k >> 5);
  if (staged) {
    for (i64 e = threadIdx.x; e < M * k; e += blockDim.x) {
      i64 m = e / k, kk = e - m * k;
      qmv_x[m * kp + kk + (kk >> 5)] = to_acc<T>(x[e]);
    }
    __syncthreads();
  }
  const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
  const i64 packs = k >> 5, groups = k / gs;
  for (i64 n = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); n < n_out; n += warps) {
    const u32* wr = w + n * packs * BITS;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f;
    for (i64 p = lane; p < packs; p += 32) {
      float c[32];
      unpack32(wr + p * BITS, c);
      const i64 g = (p << 5) / gs;
      const float s = to_acc<T>(scales[n * groups + g]), b = to_acc<T>(biases[n * groups + g]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const T* xr = x + m * k + (p << 5);
        const float* xs = qmv_x + m * kp + (p << 5) + p;
        float d = 0.0f, sx = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          float xv = staged ? xs[j] : to_acc<T>(xr[j]);
          d += xv * c[j];
          sx += xv;
        }
        acc[m] += s * d + b * sx;
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = acc[m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) y[m * n_out + n] = from_acc<T>(v);
    }
  }
}

#define QMV(M)                                                                                               \
  extern "C" __global__ void qmv_##M(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w,     \
                                     const T* __restrict__ scales, const T* __restrict__ biases, i64 n_out, i64 k, \
                                     i64 gs, int staged) {                                                   \
    qmv_impl<M>(y, x, w, scales, biases, n_out, k, gs, staged);                                              \
  }
// gather_qmm for few rows: blockIdx.y is the index pair; li is the index shape with the lhs
// (st[0]) and rhs (st[1]) index arrays' strides; x holds nx matrices of M × k, W nw of
// n_out × k (an index past them is clamped: the GPU cannot stop to report it).
#define GATHER_QMV(M)                                                                                   \
  extern "C" __global__ void gather_qmv_##M(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w, \
                                            const T* __restrict__ scales, const T* __restrict__ biases,      \
                                            i64 n_out, i64 k, i64 gs, const u32* __restrict__ lhs,          \
                                            const u32* __restrict__ rhs, Layout li, i64 nx, i64 nw) {       \
    i64 o[2];                                                                                           \
    offsets<2>(li, blockIdx.y, o);                                                                      \
    const i64 xi = min((i64)lhs[o[0]], nx - 1), wi = min((i64)rhs[o[1]], nw - 1);                       \
    const i64 groups = n_out * (k / gs);                                                                \
    qmv_impl<M>(y + (i64)blockIdx.y * M * n_out, x + xi * M * k, w + wi * n_out * (k / 32) * BITS,      \
                scales + wi * groups, biases + wi * groups, n_out, k, gs, 0);                           \
  }
QMV(1)
QMV(2)
QMV(3)
QMV(4)
QMV(5)
QMV(6)
QMV(7)
QMV(8)
GATHER_QMV(1)
GATHER_QMV(2)
GATHER_QMV(3)
GATHER_QMV(4)
GATHER_QMV(5)
GATHER_QMV(6)
GATHER_QMV(7)
GATHER_QMV(8)

// out [rows, cols] (T) = dequantized W: one thread per pack of 32 codes.
extern "C" __global__ void dequantize(T* __restrict__ out, const u32* __restrict__ w, const T* __restrict__ scales,
                                      const T* __restrict__ biases, i64 rows, i64 cols, i64 gs) {
  const i64 packs = cols >> 5, groups = cols / gs;
  GRID_LOOP(t, rows * packs) {
    const i64 r = t / packs, p = t - r * packs;
    float c[32];
    unpack32(w + t * BITS, c);
    const i64 g = (p << 5) / gs;
    const float s = to_acc<T>(scales[r * groups + g]), b = to_acc<T>(biases[r * groups + g]);
    T* o = out + r * cols + (p << 5);
#pragma unroll
    for (int j = 0; j < 32; ++j) o[j] = from_acc<T>(s * c[j] + b);
  }
}
