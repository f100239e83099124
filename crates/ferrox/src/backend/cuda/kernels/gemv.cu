// Matrix-vector products for decode: out[r, c] = alpha * sum_k x[r, k] * w[c, k] (+ beta *
// cadd[r, c] where an addend is given: a residual joined in, one rounding) for up to R rows of
// x (contiguous, xs elements apart) and the rows of w (contiguous, ws apart: a Linear layer's
// weight, read once for all rows).
//
// A block of GEMV_SPLIT warps takes GEMV_COLS output columns; warp p sums the p-th slice of
// k, its lanes taking 16-byte chunks of the slice in turn. Each lane loads U chunks of each
// column's weights before using any (U · GEMV_COLS loads in flight: memory latency, not
// bandwidth, bounds a product this small otherwise), multiplies them in f32 with the same
// chunk of each x row (read through L1; each serves every column), and the slices' sums are
// joined by shuffles and then through shared memory. The kernel is launched overlapped with
// the one before it (programmatic dependent launch): a small one moves its weights toward L2 first.
// Measured on an H100 with scripts/cuda-bench (Llama-3.2-1B shapes, one row): 1.3-1.5x the
// bandwidth of a warp a column, whole k to itself.
//
// Variants join the work of a kernel before or after the product (evaluation's plan,
// backend/cuda/prologue.rs), so that kernel and its round trip through memory go:
// - gemv_rms_*: x's rows rms-normalized first. The kernel multiplies x by the norm's weight
//   nw (or 1 where null) as it loads it, gathers the squares of x from the same loads (a block
//   reads every chunk of x once over its warps), and scales each row's sums by
//   1 / sqrt(mean(x²) + eps) at the end: the normalized row stays f32 where rms_norm's own
//   output is rounded to T. A first pass over x for the scale (every block summing its rows
//   before its products) measured slower than the two kernels (H100, session 15).
// - *_glu (a module of their own, GEMV_GLU defined): the product's two halves of columns
//   joined by glu_epilogue(lower, upper), which backend/cuda/prologue.rs generates from a
//   compile'd program (a SwiGLU block's silu(gate) · up over a joined gate/up projection):
//   a block's columns are j.. of each half (j and j + n / 2 paired), and it writes outputs j..
//   of n / 2, each half's sum rounded to T first as the product's own output is.
// - *_rope_*: a decode step's q/k/v product (one position) as heads of size d, its output
//   the leading heads rotated (rope, the two halves of each head paired) and its key and
//   value heads written into the KV caches at the position (Op::RopeWrite's work, GemvRope
//   below): a block's columns are j.. and j + d / 2.. of one head.
// Both cost the product a few percent (scripts/cuda-bench, "rms"); the host joins them only
// where the FMA kernels run (1 and 2 rows): the tensor-core kernel of more rows lost more
// with them (batch-8 decode 7 % slower) than the kernels they replace cost.
//
// A column's sum is taken in the same order whatever R and U are (lane by lane over its
// chunks, then the warps' slices in order). f16 / bf16 products of three or more rows run
// gemv_mma instead (below), whose sums go in the tensor cores' order. k, xs, ws and the
// addresses are multiples of a chunk (the host checks; gemv_mma's k, of 32).
// (GEMV_SPLIT and GEMV_U, the one-row kernels' chunks in flight a column, may be set before
// this file, as scripts/cuda-bench/gemv_bench.cu's sweeps do; the host launches the defaults.)
#ifndef GEMV_SPLIT
#define GEMV_SPLIT 4
#endif
#ifndef GEMV_U
#define GEMV_U 4
#endif
#define GEMV_COLS 2

// The columns of a block that normalizes x (gemv_rms_*): each block weighs and squares all of
// x, so more columns a block spread that work over more weights (H200, one row: the Llama 1B
// step's 65 products all normalized 898 µs with 2 columns, 791 with 4, 761 plain; gate/up
// 21.5 → 19.7 µs, lm head 150.2 → 135.0 against 133.9 plain; scripts/cuda-bench/gemv_bench.cu).
#define GEMV_RMS_COLS 4
#define CHUNK (16 / (int)sizeof(T))

// The generated join of a GEMV_GLU module (defined after this file).
__device__ T glu_epilogue(T lower, T upper);

// The addend of output (r, col), scaled: beta · c[r, col] through c's strides (0 without c).
__device__ __forceinline__ float addend(const T* __restrict__ c, i64 cs_r, i64 cs_c, float beta, int r, i64 col) {
  return c ? beta * (float)to_acc<T>(c[r * cs_r + col * cs_c]) : 0.0f;
}

// Chunk xv of a row of x (at chunk ch) as f32 times the norm's weight (1 where nw is null),
// the squares of its elements added to ss.
__device__ __forceinline__ void rms_weigh(const uint4& xv, const T* __restrict__ nw, i64 ch, float* xg, float& ss) {
  uint4 wv = make_uint4(0, 0, 0, 0);
  if (nw) wv = __ldg((const uint4*)nw + ch);
  const T* e = (const T*)&xv;
  const T* we = (const T*)&wv;
#pragma unroll
  for (int u = 0; u < CHUNK; ++u) {
    const float a = (float)to_acc<T>(e[u]);
    ss = fmaf(a, a, ss);
    xg[u] = nw ? a * (float)to_acc<T>(we[u]) : a;
  }
}
__device__ __forceinline__ float rms_scale(float ss, i64 k, float eps) { return 1.0f / sqrtf(ss * (1.0f / (float)k) + eps); }

// COLS: output columns a block takes (GEMV_COLS, or GEMV_RMS_COLS where it normalizes x); with
// GLU, half of them from each half of the product's columns; with ROPE (rp), half from each
// half of one head.
template <int R, int U, bool RMS, bool GLU, int COLS = GEMV_COLS, bool ROPE = false>
__device__ __forceinline__ void gemv_impl(T* __restrict__ out, const T* __restrict__ x, i64 xs,
                                          const T* __restrict__ w, i64 ws, int rows, i64 n, i64 k, float alpha,
                                          const T* __restrict__ cadd, i64 cs_r, i64 cs_c, float beta,
                                          const T* __restrict__ nw, float eps, const GemvRope* rp = nullptr) {
  __shared__ float red[GEMV_SPLIT][COLS][R];
  __shared__ float red_ss[GEMV_SPLIT][R];
  allow_next_kernel();
  const int lane = threadIdx.x & 31, part = threadIdx.x >> 5;
  // The block's columns: col0 .. col0 + COLS - 1, or with GLU (ROPE), col0 .. col0 + COLS / 2 -
  // 1 of each half of the columns (of a head): column c of the block is col0 + c % HC + c / HC
  // · half, half being n / 2 (d / 2).
  constexpr int HC = GLU || ROPE ? COLS / 2 : COLS;
  const i64 half = ROPE ? rp->d / 2 : n / 2;
  const i64 slot0 = (i64)blockIdx.x * HC;
  const i64 col0 = ROPE ? rope_slot_column(slot0, half) : slot0;
  const i64 chunks = k / CHUNK;
  const i64 per = (chunks + GEMV_SPLIT - 1) / GEMV_SPLIT;
  const i64 c0 = part * per, c1 = min(chunks, c0 + per);
  const uint4* wr[COLS];
#pragma unroll
  for (int c = 0; c < COLS; ++c) {
    const i64 col = col0 + c % HC + (c / HC) * half;
    wr[c] = (const uint4*)(w + (col < n ? col : col0) * ws);
  }
  // Launched overlapped with the kernel before it (which x may come from, but never the
  // weights): a small product starts this lane's weights toward L2 while that kernel
  // finishes, then waits (prefetch_weights).
  if (prefetch_weights(n * k))
    for (i64 ch = c0 + lane; ch < c1; ch += 32)
#pragma unroll
      for (int c = 0; c < COLS; ++c) prefetch_l2(wr[c] + ch);
  wait_for_previous_kernel();
  // The rope epilogue's position and frequency, for the thread that finishes column slot
  // threadIdx.x / R (below).
  RopeAt rope_at;
  if constexpr (ROPE)
    if (threadIdx.x < HC * R) rope_at = rope_load(*rp, col0 % (2 * half) + threadIdx.x / R);
  float acc[COLS][R], ss[R];
#pragma unroll
  for (int r = 0; r < R; ++r) ss[r] = 0.f;
#pragma unroll
  for (int c = 0; c < COLS; ++c)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[c][r] = 0.f;
  for (i64 base = c0 + lane; base < c1; base += 32 * U) {
    uint4 wv[COLS][U];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int c = 0; c < COLS; ++c)
        if (base + 32 * u < c1) wv[c][u] = __ldg(wr[c] + base + 32 * u);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (base + 32 * u >= c1) break;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r < rows) {
          const uint4 xv = __ldg((const uint4*)(x + r * xs) + base + 32 * u);
          float xf[CHUNK];
          if constexpr (RMS) {
            rms_weigh(xv, nw, base + 32 * u, xf, ss[r]);
          } else {
            const T* xe = (const T*)&xv;
#pragma unroll
            for (int e = 0; e < CHUNK; ++e) xf[e] = (float)to_acc<T>(xe[e]);
          }
#pragma unroll
          for (int c = 0; c < COLS; ++c) {
            const T* we = (const T*)&wv[c][u];
#pragma unroll
            for (int e = 0; e < CHUNK; ++e) acc[c][r] = fmaf((float)to_acc<T>(we[e]), xf[e], acc[c][r]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < COLS; ++c)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[c][r]);
      if (lane == 0) red[part][c][r] = v;
    }
  if constexpr (RMS) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(ss[r]);
      if (lane == 0) red_ss[part][r] = v;
    }
  }
  __syncthreads();
  // Thread (c, r) finishes column slot c of row r; with GLU, slots c and c + HC.
  if (threadIdx.x < HC * R) {
    const int c = threadIdx.x / R, r = threadIdx.x % R;
    // Column slot c's sum and (GLU, ROPE) slot c + HC's.
    float v = 0.f, v1 = 0.f;
#pragma unroll
    for (int p = 0; p < GEMV_SPLIT; ++p) {
      v += red[p][c][r];
      if constexpr (GLU || ROPE) v1 += red[p][c + HC][r];
    }
    float scale = 1.0f;
    if constexpr (RMS) {
      float t = 0.f;
#pragma unroll
      for (int p = 0; p < GEMV_SPLIT; ++p) t += red_ss[p][r];
      scale = rms_scale(t, k, eps);
    }
    if constexpr (GLU) {
      if (r < rows && col0 + c < half)
        out[r * half + col0 + c] = glu_epilogue(from_acc<T>(v * scale * alpha), from_acc<T>(v1 * scale * alpha));
    } else if constexpr (ROPE) {
      if (r < rows && col0 + c < n)
        rope_epilogue(*rp, rope_at, out, r, col0 / (2 * half), col0 % (2 * half) + c, from_acc<T>(v * scale * alpha),
                      from_acc<T>(v1 * scale * alpha));
    } else {
      const i64 col = col0 + c;
      if (r < rows && col < n) out[r * n + col] = from_acc<T>(v * scale * alpha + addend(cadd, cs_r, cs_c, beta, r, col));
    }
  }
}

// At least 4 blocks a multiprocessor: without the bound ptxas held gemv_rms_1 to 64 registers
// and spilled.
#define GEMV_KERNEL(NAME, R, U, RMS, GLU)                                                              \
  extern "C" __global__ void __launch_bounds__(GEMV_SPLIT * 32, 4)                                    \
      NAME(T* __restrict__ out, const T* __restrict__ x, i64 xs, const T* __restrict__ w, i64 ws, int rows, \
           i64 n, i64 k, float alpha, const T* __restrict__ cadd, i64 cs_r, i64 cs_c, float beta,          \
           const T* __restrict__ nw, float eps) {                                                       \
    gemv_impl<R, U, RMS, GLU, RMS ? GEMV_RMS_COLS : GEMV_COLS>(out, x, xs, w, ws, rows, n, k, alpha, cadd, cs_r, \
                                                              cs_c, beta, nw, eps);                          \
  }
#ifdef GEMV_GLU
#define GEMV(R, U)                                \
  GEMV_KERNEL(gemv_glu_##R, R, U, false, true)    \
  GEMV_KERNEL(gemv_rms_glu_##R, R, U, true, true)
#else
#define GEMV(R, U)                             \
  GEMV_KERNEL(gemv_##R, R, U, false, false)    \
  GEMV_KERNEL(gemv_rms_##R, R, U, true, false)
#endif
GEMV(1, GEMV_U)
GEMV(2, 4)
GEMV(4, 2)
GEMV(8, 2)

// The rope epilogue's kernels (1 and 2 rows: the joins' rows), with GemvRope after the usual
// arguments (out is the rotated heads).
#ifndef GEMV_GLU
#define GEMV_ROPE_KERNEL(NAME, R, U, RMS)                                                                    \
  extern "C" __global__ void __launch_bounds__(GEMV_SPLIT * 32, 4)                                          \
      NAME(T* __restrict__ out, const T* __restrict__ x, i64 xs, const T* __restrict__ w, i64 ws, int rows,       \
           i64 n, i64 k, float alpha, const T* __restrict__ cadd, i64 cs_r, i64 cs_c, float beta,                \
           const T* __restrict__ nw, float eps, GemvRope rp) {                                                 \
    gemv_impl<R, U, RMS, false, RMS ? GEMV_RMS_COLS : GEMV_COLS, true>(out, x, xs, w, ws, rows, n, k, alpha, cadd, \
                                                                       cs_r, cs_c, beta, nw, eps, &rp);         \
  }
GEMV_ROPE_KERNEL(gemv_rope_1, 1, 4, false)
GEMV_ROPE_KERNEL(gemv_rms_rope_1, 1, 4, true)
GEMV_ROPE_KERNEL(gemv_rope_2, 2, 4, false)
GEMV_ROPE_KERNEL(gemv_rms_rope_2, 2, 4, true)
#endif

// ---- several rows of x on the tensor cores (f16 / bf16): mma.sync m16n8k16, f32 sums ----
// out[r, c] for up to 8 rows as a 16 × 8 tile product per 16 output columns: A = the 16 weight
// rows, B = the x rows (columns of the tile), K along k. A dot product does not care in which
// order k is taken, as long as A and B take the same one, so lane (g, t) loads 16 bytes of
// weight rows g and g + 8 and of x row g at k + 8 t of each 32-wide block, and the four
// 32-bit words of each serve as the fragments of two mma k-steps as they are. A block of
// GEMV_MMA_SPLIT warps splits k for the same 16 columns (joined through shared memory); each lane
// loads GEMV_MMA_U blocks before using any. Launched overlapped like gemv_impl.
#if defined(MMA_KIND) && !defined(GEMV_GLU)
#define GEMV_MMA_U 4
// Warps a block (splitting k): more than the FMA kernel's, since a block takes 16 columns and
// the narrow products (k / v, 512 columns) would otherwise have few blocks in flight.
#ifndef GEMV_MMA_SPLIT
#define GEMV_MMA_SPLIT 8
#endif
__device__ __forceinline__ void gemv_mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_KIND "." MMA_KIND ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

extern "C" __global__ void __launch_bounds__(GEMV_MMA_SPLIT * 32)
    gemv_mma(T* __restrict__ out, const T* __restrict__ x, i64 xs, const T* __restrict__ w, i64 ws, int rows, i64 n,
             i64 k, float alpha, const T* __restrict__ cadd, i64 cs_r, i64 cs_c, float beta) {
  __shared__ float red[GEMV_MMA_SPLIT][32][4];
  allow_next_kernel();
  const int lane = threadIdx.x & 31, part = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const i64 col0 = (i64)blockIdx.x * 16;
  const i64 blocks = k / 32, per = (blocks + GEMV_MMA_SPLIT - 1) / GEMV_MMA_SPLIT;
  const i64 b0 = part * per, b1 = min(blocks, b0 + per);
  const uint4* wa = (const uint4*)(w + min(col0 + g, n - 1) * ws) + t;
  const uint4* wb = (const uint4*)(w + min(col0 + g + 8, n - 1) * ws) + t;
  const uint4* xr = (const uint4*)(x + min(g, rows - 1) * xs) + t;
  for (i64 b = b0; b < b1; ++b) {
    prefetch_l2(wa + 4 * b);
    prefetch_l2(wb + 4 * b);
  }
  wait_for_previous_kernel();
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (i64 b = b0; b < b1; b += GEMV_MMA_U) {
    uint4 va[GEMV_MMA_U], vb[GEMV_MMA_U], vx[GEMV_MMA_U];
#pragma unroll
    for (int u = 0; u < GEMV_MMA_U; ++u) {
      if (b + u < b1) {
        va[u] = __ldg(wa + 4 * (b + u));
        vb[u] = __ldg(wb + 4 * (b + u));
        vx[u] = g < rows ? __ldg(xr + 4 * (b + u)) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < GEMV_MMA_U; ++u) {
      if (b + u < b1) {
        gemv_mma16816(c, va[u].x, vb[u].x, va[u].y, vb[u].y, vx[u].x, vx[u].y);
        gemv_mma16816(c, va[u].z, vb[u].z, va[u].w, vb[u].w, vx[u].z, vx[u].w);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) red[part][lane][i] = c[i];
  __syncthreads();
  if (part == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = 0.0f;
#pragma unroll
      for (int q = 0; q < GEMV_MMA_SPLIT; ++q) v += red[q][lane][i];
      // C element i of lane (g, t): column g (+ 8 for i ≥ 2), row 2 t (+ 1 for odd i).
      const i64 col = col0 + g + 8 * (i >> 1);
      const int r = 2 * t + (i & 1);
      if (r < rows && col < n) out[r * n + col] = from_acc<T>(v * alpha + addend(cadd, cs_r, cs_c, beta, r, col));
    }
  }
}
#endif
