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

// The value of a code (affine: the integer, through the bits of 2^23 + c, which is cheaper
// than a conversion instruction and exact).
__device__ __forceinline__ float code_value(u32 c) {
#if FMT == 0
  return __uint_as_float(0x4B000000u | c) - 8388608.0f;
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

// The BITS words of one pack (16-byte loads when BITS is a multiple of 4, 8-byte when even).
__device__ __forceinline__ void load_pack(const u32* __restrict__ p, u32* words) {
#if BITS % 4 == 0
#pragma unroll
  for (int i = 0; i < BITS / 4; ++i) {
    const uint4 v = __ldg((const uint4*)p + i);
    words[4 * i] = v.x, words[4 * i + 1] = v.y, words[4 * i + 2] = v.z, words[4 * i + 3] = v.w;
  }
#elif BITS % 2 == 0
#pragma unroll
  for (int i = 0; i < BITS / 2; ++i) {
    const uint2 v = __ldg((const uint2*)p + i);
    words[2 * i] = v.x, words[2 * i + 1] = v.y;
  }
#else
#pragma unroll
  for (int i = 0; i < BITS; ++i) words[i] = __ldg(p + i);
#endif
}

// Code j of a pack's words.
__device__ __forceinline__ u32 code_at(const u32* words, int j) {
  const int pos = j * BITS, wi = pos >> 5, sh = pos & 31;
  u32 v = words[wi] >> sh;
  if (sh + BITS > 32) v |= words[wi + 1] << (32 - sh);
  return v & ((1u << BITS) - 1u);
}

// y [M, N] = x [M, K] @ Wᵀ for M rows (decode). A block of QMV_WARPS warps takes
// QMV_WARPS / QMV_SPLIT groups of QMV_COLS output features; the QMV_SPLIT warps of a group
// split the packs, each lane taking packs in turn. A lane loads the pack of each of its
// features (QMV_COLS loads in flight), then for each row of x reads the pack's 32 values
// (16-byte loads through L1), their half sums, and per feature and half pack adds
// scale · (x · codes) + bias · Σx. The warps' sums meet through shuffles and shared memory.
// Measured on an H100 (scripts/cuda-bench, Llama-3.2-1B shapes, 4 bits, one row): about 2x
// the bandwidth of a warp a feature over the whole of k.
// x rows are 16-byte aligned (the host checks).
// (Each may be set before this file, as scripts/cuda-bench/qmv_bench.cu's sweeps do; the host
// launches the defaults, quantized.rs's QMV_THREADS and QMV_FEATURES.)
#ifndef QMV_WARPS
#define QMV_WARPS 4
#endif
#ifndef QMV_SPLIT
#define QMV_SPLIT 2
#endif
#ifndef QMV_COLS
#define QMV_COLS 4
#endif

//
// Joined work (backend/cuda/join.rs): with cadd (not null), y = x · Wᵀ + cadd (cadd row-major
// like y), summed in f32 and rounded once; with RMS, x is rms_norm(x, nw, eps) (nw null: no
// weight): each lane multiplies the x values it loads by nw and gathers their squares, and
// each output's sum is scaled by 1 / sqrt(mean(x²) + eps) at the end (the product, scale and
// bias terms alike, are linear in x). The QMV_SPLIT warps of a group see every pack of x once.
// (WARPS, SPLIT, COLS: the block's shape, QMV_WARPS, QMV_SPLIT and QMV_COLS unless given.)
// With ROPE, y is a decode step's rotated heads (common.cuh's rope_epilogue, rp): a group's
// features are q.. and q + d / 2.. of one head, half of them from each half.
template <int M, bool RMS, bool ROPE = false, int WARPS = QMV_WARPS, int SPLIT = QMV_SPLIT, int COLS = QMV_COLS>
__device__ __forceinline__ void qmv_impl(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w,
                                         const S* __restrict__ scales, const S* __restrict__ biases, i64 n_out,
                                         i64 k, i64 gs, int rows, const T* __restrict__ cadd,
                                         const T* __restrict__ nw, float eps, const GemvRope* rp = nullptr) {
  constexpr int PER16 = 16 / (int)sizeof(T);
  __shared__ float red[WARPS][COLS][M];
  __shared__ float red_ss[WARPS][M];
  allow_next_kernel();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % SPLIT;
  // A group's features: row0 .. row0 + COLS - 1, or with ROPE, row0 + c % HC + c / HC · d / 2.
  constexpr int HC = ROPE ? COLS / 2 : COLS;
  const i64 half = ROPE ? rp->d / 2 : 0;
  const i64 slot0 = ((i64)blockIdx.x * (WARPS / SPLIT) + warp / SPLIT) * HC;
  const i64 row0 = ROPE ? rope_slot_column(slot0, half) : slot0;
  const i64 packs = k >> 5, groups = k / gs;
  const i64 per = (packs + SPLIT - 1) / SPLIT, p0 = part * per, p1 = min(packs, p0 + per);
  i64 row[COLS];
#pragma unroll
  for (int c = 0; c < COLS; ++c) row[c] = min(row0 + c % HC + (c / HC) * half, n_out - 1);
  // Launched overlapped with the kernel before it (which x may come from, but never the
  // matrix): a small product starts this lane's packs toward L2 while that kernel finishes,
  // then waits (prefetch_weights).
  if (prefetch_weights(n_out * k))
    for (i64 p = p0 + lane; p < p1; p += 32)
#pragma unroll
      for (int c = 0; c < COLS; ++c) prefetch_l2(w + (row[c] * packs + p) * BITS);
  wait_for_previous_kernel();
  // The rope epilogue's position and frequency, for the thread that finishes slot t / M % HC of
  // group t / (HC · M) (below).
  RopeAt rope_at;
  if constexpr (ROPE) {
    const int t = threadIdx.x;
    if (t < WARPS / SPLIT * HC * M) {
      const i64 s0 = ((i64)blockIdx.x * (WARPS / SPLIT) + t / (HC * M)) * HC;
      rope_at = rope_load(*rp, s0 % half + t / M % HC);
    }
  }
  float acc[COLS][M], ss[M];
#pragma unroll
  for (int m = 0; m < M; ++m) ss[m] = 0.0f;
#pragma unroll
  for (int c = 0; c < COLS; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
  for (i64 p = p0 + lane; p < p1; p += 32) {
    u32 words[COLS][BITS];
#pragma unroll
    for (int c = 0; c < COLS; ++c) load_pack(w + (row[c] * packs + p) * BITS, words[c]);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (m >= rows) break;
      float xf[32];
      const uint4* xv = (const uint4*)(x + m * k + (p << 5));
#pragma unroll
      for (int q = 0; q < 32 / PER16; ++q) {
        const uint4 v = __ldg(xv + q);
        const T* e = (const T*)&v;
#pragma unroll
        for (int i = 0; i < PER16; ++i) xf[q * PER16 + i] = to_acc<T>(e[i]);
      }
      if constexpr (RMS) {
#pragma unroll
        for (int j = 0; j < 32; ++j) ss[m] = fmaf(xf[j], xf[j], ss[m]);
        if (nw) {
          const uint4* gv = (const uint4*)(nw + (p << 5));
#pragma unroll
          for (int q = 0; q < 32 / PER16; ++q) {
            const uint4 v = __ldg(gv + q);
            const T* e = (const T*)&v;
#pragma unroll
            for (int i = 0; i < PER16; ++i) xf[q * PER16 + i] *= to_acc<T>(e[i]);
          }
        }
      }
      float sx[2] = {0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < 32; ++j) sx[j >> 4] += xf[j];
#pragma unroll
      for (int c = 0; c < COLS; ++c) {
        float d[2] = {0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < 32; ++j) d[j >> 4] = fmaf(xf[j], code_value(code_at(words[c], j)), d[j >> 4]);
        // The second half's scale is another only for groups of 16 (no second load otherwise).
        const i64 g0 = row[c] * groups + (p << 5) / gs, g1 = g0 + (gs == 16);
        const float s0 = scale_value(scales, g0), s1 = gs == 16 ? scale_value(scales, g1) : s0;
        const float b0 = bias_value(biases, g0), b1 = gs == 16 ? bias_value(biases, g1) : b0;
        acc[c][m] += s0 * d[0] + s1 * d[1] + b0 * sx[0] + b1 * sx[1];
      }
    }
  }
#pragma unroll
  for (int c = 0; c < COLS; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[c][m]);
      if (lane == 0) red[warp][c][m] = v;
    }
  if constexpr (RMS) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(ss[m]);
      if (lane == 0) red_ss[warp][m] = v;
    }
  }
  __syncthreads();
  const int t = threadIdx.x;
  // Thread (grp, c, m) finishes feature slot c of group grp for row m; with ROPE, slots c and c + HC.
  if (t < WARPS / SPLIT * HC * M) {
    const int grp = t / (HC * M), c = t / M % HC, m = t % M;
    // The sum of slot cc, normalized if RMS.
    auto sum = [&](int cc) {
      float v = 0.0f;
#pragma unroll
      for (int q = 0; q < SPLIT; ++q) v += red[grp * SPLIT + q][cc][m];
      if constexpr (RMS) {
        float t2 = 0.0f;
#pragma unroll
        for (int q = 0; q < SPLIT; ++q) t2 += red_ss[grp * SPLIT + q][m];
        v *= 1.0f / sqrtf(t2 * (1.0f / (float)k) + eps);
      }
      return v;
    };
    const i64 s0 = ((i64)blockIdx.x * (WARPS / SPLIT) + grp) * HC;
    if constexpr (ROPE) {
      const i64 r0 = rope_slot_column(s0, half);
      if (r0 < n_out && m < rows)
        rope_epilogue(*rp, rope_at, y, m, r0 / (2 * half), r0 % (2 * half) + c, from_acc<T>(sum(c)),
                      from_acc<T>(sum(c + HC)));
    } else {
      const i64 r = s0 + c;
      if (r < n_out && m < rows) {
        float v = sum(c);
        if (cadd) v += to_acc<T>(cadd[m * n_out + r]);
        y[m * n_out + r] = from_acc<T>(v);
      }
    }
  }
}

// The kernels for up to M rows of x (`rows` of them), M a power of two; a module holds those
// of one M (QMV_M; none without it), so a first use compiles only the kernels it needs.
// qmv_M takes x as it is, qmv_rms_M normalizes it (qmv_impl's RMS); either adds cadd if given.
// (WARPS, SPLIT, COLS: the block's shape, as qmv_impl takes it.)
#define QMV_KERNEL(NAME, M, RMS, WARPS, SPLIT, COLS)                                                            \
  extern "C" __global__ void __launch_bounds__(WARPS * 32)                                                     \
      NAME(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w, const S* __restrict__ scales,   \
           const S* __restrict__ biases, i64 n_out, i64 k, i64 gs, int rows, const T* __restrict__ cadd,          \
           const T* __restrict__ nw, float eps) {                                                               \
    qmv_impl<M, RMS, false, WARPS, SPLIT, COLS>(y, x, w, scales, biases, n_out, k, gs, rows, cadd, nw, eps);    \
  }
// qmv_rope_M and qmv_rms_rope_M: the same with the rope epilogue (GemvRope after the usual
// arguments; y is the rotated heads, cadd unused).
#define QMV_ROPE_KERNEL(NAME, M, RMS)                                                                           \
  extern "C" __global__ void __launch_bounds__(QMV_WARPS * 32)                                                 \
      NAME(T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w, const S* __restrict__ scales,   \
           const S* __restrict__ biases, i64 n_out, i64 k, i64 gs, int rows, const T* __restrict__ cadd,          \
           const T* __restrict__ nw, float eps, GemvRope rp) {                                                  \
    qmv_impl<M, RMS, true>(y, x, w, scales, biases, n_out, k, gs, rows, cadd, nw, eps, &rp);                    \
  }
#define QMV(M)                                                     \
  QMV_KERNEL(qmv_##M, M, false, QMV_WARPS, QMV_SPLIT, QMV_COLS) \
  QMV_KERNEL(qmv_rms_##M, M, true, QMV_WARPS, QMV_SPLIT, QMV_COLS)
#define QMV_ROPE(M)                        \
  QMV_ROPE_KERNEL(qmv_rope_##M, M, false) \
  QMV_ROPE_KERNEL(qmv_rms_rope_##M, M, true)
// qmv_long_M: qmv_M (cadd too) in blocks of QMV_LONG_WARPS warps, QMV_LONG_SPLIT of them
// splitting k for each QMV_LONG_COLS features: more packs in flight a feature, for products
// whose k is long beside their few features (a layer's o and down projections: at k = 8192 a
// lane of the default shape waits for memory four times in turn). H200, 4-bit, one row
// (qmv_bench.cu): down 2 048 × 8 192 14.4 → 7.3 µs, o 2 048 × 2 048 5.0 → 4.0, the step's 65
// products as a graph 554 → 525 µs; 4-bit generation of the 1B shape ~1 150 → ~1 162 tok/s. With
// many features (q/k/v, gate/up, the head) it is slower, too few blocks for k / v.
#define QMV_LONG_WARPS 8
#define QMV_LONG_SPLIT 4
#define QMV_LONG_COLS 8
#define QMV_LONG(M) QMV_KERNEL(qmv_long_##M, M, false, QMV_LONG_WARPS, QMV_LONG_SPLIT, QMV_LONG_COLS)
// gather_qmm for few rows: blockIdx.y is the index pair; li is the index shape with the lhs
// (st[0]) and rhs (st[1]) index arrays' strides; x holds nx matrices of rows × k, W nw of
// n_out × k (an index past them is clamped: the GPU cannot stop to report it).
#define GATHER_QMV(M)                                                                                   \
  extern "C" __global__ void __launch_bounds__(QMV_WARPS * 32) gather_qmv_##M(                         \
      T* __restrict__ y, const T* __restrict__ x, const u32* __restrict__ w, const S* __restrict__ scales, \
      const S* __restrict__ biases, i64 n_out, i64 k, i64 gs, const u32* __restrict__ lhs,              \
      const u32* __restrict__ rhs, Layout li, i64 nx, i64 nw, int rows) {                               \
    i64 o[2];                                                                                           \
    offsets<2>(li, blockIdx.y, o);                                                                      \
    const i64 xi = min((i64)lhs[o[0]], nx - 1), wi = min((i64)rhs[o[1]], nw - 1);                       \
    const i64 groups = n_out * (k / gs);                                                                \
    qmv_impl<M, false>(y + (i64)blockIdx.y * rows * n_out, x + xi * rows * k,                          \
                       w + wi * n_out * (k / 32) * BITS, scales + wi * groups,                          \
                       biases ? biases + wi * groups : biases, n_out, k, gs, rows, nullptr, nullptr, 0.0f); \
  }
// (Through one more macro, so QMV_M is replaced by its value before ## pastes it.)
#define QMV_KERNELS(M) QMV(M) GATHER_QMV(M)
#define QMV_FEW_ROWS_KERNELS(M) QMV_ROPE(M) QMV_LONG(M)
#ifdef QMV_M
QMV_KERNELS(QMV_M)
// The rope's and the long shape's only for the joins' rows (1 and 2).
#if QMV_M <= 2
QMV_FEW_ROWS_KERNELS(QMV_M)
#endif
#endif

// The bits of codes 8q .. 8q + 7 of the pack at p (BITS bytes of it, little-endian).
__device__ __forceinline__ u64 codes8(const u32* __restrict__ p, int q) {
  const u8* b = (const u8*)p + q * BITS;
  u64 bits = 0;
#pragma unroll
  for (int i = 0; i < BITS; ++i) bits |= (u64)__ldg(b + i) << (8 * i);
  return bits;
}

// Code j of the eight in `bits` (codes8).
__device__ __forceinline__ u32 code8_at(u64 bits, int j) { return (u32)(bits >> (j * BITS)) & ((1u << BITS) - 1u); }

// out [rows, cols] (T) = dequantized W: a thread per 8 codes (a quarter of a pack), so a warp
// writes 32 consecutive 16-byte (f32: 32-byte) runs. Affine computes scale · code + bias in
// f32; the floating-point formats multiply the code's value and the scale each rounded to T
// first, as the CPU does.
__device__ __forceinline__ float in_t(float v) { return to_acc<T>(from_acc<T>(v)); }
extern "C" __global__ void dequantize(T* __restrict__ out, const u32* __restrict__ w, const S* __restrict__ scales,
                                      const S* __restrict__ biases, i64 rows, i64 cols, i64 gs) {
  const i64 packs = cols >> 5, groups = cols / gs;
  GRID_LOOP(t, rows * packs * 4) {
    const i64 pk = t >> 2, r = pk / packs, c0 = ((pk - r * packs) << 5) + (t & 3) * 8;
    const u64 bits = codes8(w + pk * BITS, (int)(t & 3));
    const i64 g = r * groups + c0 / gs;
    const float s = scale_value(scales, g), b = bias_value(biases, g);
    T v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#if FMT == 0
      v[j] = from_acc<T>(s * code_value(code8_at(bits, j)) + b);
#else
      v[j] = from_acc<T>(in_t(code_value(code8_at(bits, j))) * in_t(s));
#endif
    }
    uint4* o = (uint4*)(out + r * cols + c0);
#pragma unroll
    for (int i = 0; i < (int)sizeof(v) / 16; ++i) o[i] = ((const uint4*)v)[i];
  }
}

// ---- Quantization: W [groups · gs] (row-major, T) a group a thread, with the CPU's
// arithmetic (IEEE divisions and roundings, ties to even) so that packed words, scales and
// biases match it bit for bit.

// The FP8 E4M3 code of x, rounded to nearest, ties to even (saturating at 448).
__device__ __forceinline__ u32 fp8_code(float x) {
  const u32 bits = __float_as_uint(x), sign = (bits >> 24) & 0x80u, a = bits & 0x7FFFFFFFu;
  u32 code;
  if (a >= 0x43E00000u) {  // 448 and above (and NaN)
    code = 0x7Eu;
  } else if (a < 0x3C800000u) {  // below 2^-6: subnormal codes, multiples of 2^-9
    code = (u32)rintf(__uint_as_float(a) * 512.0f);
  } else {  // rebias the exponent (127 -> 7) and round the mantissa to 3 bits
    code = ((a - (120u << 23) + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) & 0xFFu;
  }
  return code | sign;
}

// The FP4 E2M1 code of x, rounded to nearest, ties to even (saturating at 6).
__device__ __forceinline__ u32 fp4_code(float x) {
  const float a = fabsf(x);
  const u32 mag = a > 5.0f ? 7 : a >= 3.5f ? 6 : a > 2.5f ? 5 : a >= 1.75f ? 4 : a > 1.25f ? 3 : a >= 0.75f ? 2 : a > 0.25f ? 1 : 0;
  return mag != 0 && signbit(x) ? (mag | 8u) : mag;
}

// Group g's codes packed into its gs · BITS / 32 words (a little-endian bit stream).
template <typename Code>
__device__ __forceinline__ void pack_group(u32* __restrict__ out, i64 g, int gs, Code code) {
  u32* o = out + g * (gs * BITS / 32);
  u64 acc = 0;
  int filled = 0;
  for (int i = 0; i < gs; ++i) {
    acc |= (u64)code(i) << filled;
    filled += BITS;
    if (filled >= 32) {
      *o++ = (u32)acc;
      acc >>= 32;
      filled -= 32;
    }
  }
}

// One output of quantizing W: part 0 the packed words (u32), 1 the scales (T for affine,
// u8 scale codes otherwise), 2 the biases (T; affine only).
extern "C" __global__ void quantize(void* __restrict__ out, const T* __restrict__ w, i64 groups, int gs, int part) {
  GRID_LOOP(g, groups) {
    const T* v = w + g * gs;
#if FMT == 0
    // The scale spans min..max over 2^BITS - 1 steps; from 2 bits on it is nudged so the edge
    // of larger magnitude is exact (it becomes the bias, and the scale takes its sign).
    const float n_bins = (float)((1u << BITS) - 1u);
    float lo = __int_as_float(0x7F800000), hi = -lo;
    for (int i = 0; i < gs; ++i) {
      const float x = to_acc<T>(v[i]);
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    float scale, bias;
    if (BITS == 1) {
      scale = fmaxf(__fsub_rn(hi, lo), 1e-7f);
      bias = lo;
    } else {
      const bool from_min = fabsf(lo) > fabsf(hi);
      scale = fmaxf(__fdiv_rn(__fsub_rn(hi, lo), n_bins), 1e-7f);
      if (!from_min) scale = -scale;
      const float edge = from_min ? lo : hi;
      const float q0 = rintf(__fdiv_rn(edge, scale));
      bias = 0.0f;
      if (q0 != 0.0f) {
        scale = __fdiv_rn(edge, q0);
        bias = edge;
      }
    }
    if (part == 1) {
      ((T*)out)[g] = from_acc<T>(scale);
    } else if (part == 2) {
      ((T*)out)[g] = from_acc<T>(bias);
    } else {
      pack_group((u32*)out, g, gs, [&](int i) {
        const float q = rintf(__fdiv_rn(__fsub_rn(to_acc<T>(v[i]), bias), scale));
        return (u32)fminf(fmaxf(q, 0.0f), n_bins);
      });
    }
#else
    // The scale is max|w| / (6 or 448), rounded up to a power of two (E8M0, mx formats; the
    // exponent through a double log2 rounded to float, as a correctly rounded log2f gives it)
    // or to the nearest E4M3 value (nvfp4).
    float amax = 0.0f;
    for (int i = 0; i < gs; ++i) amax = fmaxf(amax, fabsf(to_acc<T>(v[i])));
    const float scale = __fdiv_rn(amax, FMT == 3 ? 448.0f : 6.0f);
#if FMT == 2
    const u32 code = fp8_code(scale);
    const float divisor = fp8_value(code);
#else
    const int e = scale == 0.0f ? 0 : max(-127, min(127, (int)ceilf((float)log2((double)scale))));
    const u32 code = (u32)(e + 127);
    const float divisor = ldexpf(1.0f, e);
#endif
    if (part == 1) {
      ((u8*)out)[g] = (u8)code;
    } else {
      pack_group((u32*)out, g, gs, [&](int i) {
        // A scale that rounded to zero zeroes the group.
        const float q = divisor == 0.0f ? 0.0f : __fdiv_rn(to_acc<T>(v[i]), divisor);
        return FMT == 3 ? fp8_code(q) : fp4_code(q);
      });
    }
#endif
  }
}
