// Quantized matrices (MLX's layouts): row n of W [N, K] is a little-endian bit stream of K
// codes of BITS bits in uint32 words, in groups of gs consecutive codes. FMT (a #define of
// the module) is the format: 0 affine (w = scale · code + bias, scales and biases of T), 1
// mxfp4 (FP4 E2M1 codes, E8M0 power-of-two scale codes), 2 nvfp4 (FP4 codes, FP8 E4M3 scale
// codes), 3 mxfp8 (FP8 E4M3 codes, E8M0 scale codes). T is the element type of x and the
// output.
//
// A "pack" is 32 consecutive codes: exactly BITS words. Its halves of 16 codes each lie in
// one group (gs is 16 or a multiple of 32), so a pack takes the scales of its two halves.

#if FMT == 0
typedef T S;  // scales (and biases)
#else
typedef u8 S;  // scale codes
#endif

// The value of an FP8 E4M3 code (NaN codes read as ±480, as the CPU does).
__device__ __forceinline__ float fp8_value(u32 b) {
  const int e = (b >> 3) & 15;
  const float m = (float)(b & 7);
  const float mag = e == 0 ? m * (1.0f / 512.0f) : (1.0f + m * 0.125f) * __int_as_float((e - 7 + 127) << 23);
  return (b & 0x80) ? -mag : mag;
}

// The value of a code.
__device__ __forceinline__ float code_value(u32 c) {
#if FMT == 0
  return (float)c;
#elif FMT == 3
  return fp8_value(c);
#else
  const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return (c & 8) ? -mag[c & 7] : mag[c & 7];
#endif
}

// The scale of group `i`.
__device__ __forceinline__ float scale_value(const S* __restrict__ s, i64 i) {
#if FMT == 0
  return to_acc<T>(s[i]);
#elif FMT == 2
  return fp8_value(s[i]);
#else
  const u32 b = s[i];
  return __int_as_float(b == 0 ? 0x00400000 : (int)(b << 23));
#endif
}

// The bias of group `i` (0 for the floating-point formats, which have none).
__device__ __forceinline__ float bias_value(const S* __restrict__ b, i64 i) {
#if FMT == 0
  return to_acc<T>(b[i]);
#else
  return 0.0f;
#endif
}

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
    c[j] = code_value(v & mask);
  }
}

// y [M, N] = x [M, K] @ Wᵀ for M rows (decode): one warp per output feature, lanes taking
// packs in turn; per half pack, scale · (x · codes) + bias · Σx. With `staged`, the block first
// copies x into shared memory as f32 with one pad word per 32 (lane p then reads words
// 33 p + j: no bank conflicts), instead of each lane reading its own 64-byte run of x.
extern __shared__ float qmv_x[];
template <int M>
__device__ __forceinline__ void qmv_impl(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w,
                                         const S* __restrict__ scales, const S* __restrict__ biases, i64 n_out,
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
      // The second half's scale is another only for groups of 16 (no second load otherwise).
      const i64 g0 = n * groups + (p << 5) / gs, g1 = g0 + (gs == 16);
      const float s0 = scale_value(scales, g0), s1 = gs == 16 ? scale_value(scales, g1) : s0;
      const float b0 = bias_value(biases, g0), b1 = gs == 16 ? bias_value(biases, g1) : b0;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const T* xr = x + m * k + (p << 5);
        const float* xs = qmv_x + m * kp + (p << 5) + p;
        float d[2] = {0.0f, 0.0f}, sx[2] = {0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          float xv = staged ? xs[j] : to_acc<T>(xr[j]);
          d[j >> 4] += xv * c[j];
          sx[j >> 4] += xv;
        }
        acc[m] += s0 * d[0] + s1 * d[1] + b0 * sx[0] + b1 * sx[1];
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
                                     const S* __restrict__ scales, const S* __restrict__ biases, i64 n_out, i64 k, \
                                     i64 gs, int staged) {                                                   \
    qmv_impl<M>(y, x, w, scales, biases, n_out, k, gs, staged);                                              \
  }
// gather_qmm for few rows: blockIdx.y is the index pair; li is the index shape with the lhs
// (st[0]) and rhs (st[1]) index arrays' strides; x holds nx matrices of M × k, W nw of
// n_out × k (an index past them is clamped: the GPU cannot stop to report it).
#define GATHER_QMV(M)                                                                                   \
  extern "C" __global__ void gather_qmv_##M(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w, \
                                            const S* __restrict__ scales, const S* __restrict__ biases,      \
                                            i64 n_out, i64 k, i64 gs, const u32* __restrict__ lhs,          \
                                            const u32* __restrict__ rhs, Layout li, i64 nx, i64 nw) {       \
    i64 o[2];                                                                                           \
    offsets<2>(li, blockIdx.y, o);                                                                      \
    const i64 xi = min((i64)lhs[o[0]], nx - 1), wi = min((i64)rhs[o[1]], nw - 1);                       \
    const i64 groups = n_out * (k / gs);                                                                \
    qmv_impl<M>(y + (i64)blockIdx.y * M * n_out, x + xi * M * k, w + wi * n_out * (k / 32) * BITS,      \
                scales + wi * groups, biases ? biases + wi * groups : biases, n_out, k, gs, 0);       \
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

// out [rows, cols] (T) = dequantized W: one thread per pack of 32 codes. Affine computes
// scale · code + bias in f32; the floating-point formats multiply the code's value and the
// scale each rounded to T first, as the CPU does.
__device__ __forceinline__ float in_t(float v) { return to_acc<T>(from_acc<T>(v)); }
extern "C" __global__ void dequantize(T* __restrict__ out, const u32* __restrict__ w, const S* __restrict__ scales,
                                      const S* __restrict__ biases, i64 rows, i64 cols, i64 gs) {
  const i64 packs = cols >> 5, groups = cols / gs;
  GRID_LOOP(t, rows * packs) {
    const i64 r = t / packs, p = t - r * packs;
    float c[32];
    unpack32(w + t * BITS, c);
    const i64 g0 = r * groups + (p << 5) / gs, g1 = r * groups + ((p << 5) + 16) / gs;
    const float s[2] = {scale_value(scales, g0), scale_value(scales, g1)};
    const float b[2] = {bias_value(biases, g0), bias_value(biases, g1)};
    T* o = out + r * cols + (p << 5);
#pragma unroll
    for (int j = 0; j < 32; ++j) {
#if FMT == 0
      o[j] = from_acc<T>(s[j >> 4] * c[j] + b[j >> 4]);
#else
      o[j] = from_acc<T>(in_t(c[j]) * in_t(s[j >> 4]));
#endif
    }
  }
}
