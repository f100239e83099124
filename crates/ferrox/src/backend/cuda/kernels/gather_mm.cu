// Products of gathered matrices, tiled (gather_mm, gather_qmm with many rows or without the
// transpose, batched quantized_matmul). Row R of the output (of pairs · M rows: pair
// p = R / M, row m = R % M) is x[xi(p)][m] @ B[wi(p)], B being [K, N]: a dense matrix of T
// read through strides, or — where the module defines BITS, after quantized.cu — a stored
// quantized matrix, [N, K] packed along K when `trans`, else [K, N] packed along N.
// (xi, wi) are the offsets of pair p in the layout li, through the lhs / rhs index arrays when
// given (an index past the matrices is clamped: the GPU cannot stop to report it).
//
// A block of 256 threads computes 64 rows × 64 features in f32, sweeping k 32 at a time
// through shared memory, each thread a 4 × 4 patch. The rows of a tile may route to different
// matrices: the sweep runs once per run of equal matrix indices, with the x rows of other runs
// zeroed — sorted indices (mlx-lm's MoE layers sort them for prompts) make that one or two runs.
#define GM_BM 64
#define GM_BN 64
#define GM_BK 32
#define GM_PITCH 65

#ifdef BITS
// The value of code c of a stored matrix (scale and bias of its group already read).
__device__ __forceinline__ float gm_value(u32 c, float s, float b) {
#if FMT == 0
  return fmaf(s, code_value(c), b);
#else
  return code_value(c) * s;
#endif
}

// The 32 × 64 tile of B at (k0, n0) of stored matrix wi, dequantized: a thread takes 8
// consecutive codes (BITS bytes) of one pack.
__device__ __forceinline__ void gm_load_b(float (*ws)[GM_PITCH], const u32* __restrict__ w, const S* __restrict__ scales,
                                          const S* __restrict__ biases, i64 wi, i64 k0, i64 n0, i64 k, i64 n, i64 gs,
                                          int trans) {
  const int t = threadIdx.x, pk = t >> 2, q = t & 3;
  // The stored matrix's row r and first column c of this thread's codes, and where they go.
  i64 r, c, rows, cols;
  int tk, tn;
  if (trans) {  // W [N, K]: pack k0 / 32 of row n0 + pk
    rows = n, cols = k, r = n0 + pk, c = k0 + q * 8, tk = q * 8, tn = pk;
  } else {  // W [K, N]: pack (n0 / 32 + pk % 2) of row k0 + pk / 2
    rows = k, cols = n, r = k0 + (pk >> 1), c = n0 + (pk & 1) * 32 + q * 8, tk = pk >> 1, tn = (pk & 1) * 32 + q * 8;
  }
  float v[8];
  if (r < rows && c < cols) {
    const i64 row = wi * rows + r;
    const u64 bits = codes8(w + (row * (cols >> 5) + (c >> 5)) * BITS, q);
    const i64 g = row * (cols / gs) + c / gs;
    const float s = scale_value(scales, g), b = bias_value(biases, g);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = gm_value(code8_at(bits, j), s, b);
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = 0.0f;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (trans)
      ws[tk + j][tn] = v[j];
    else
      ws[tk][tn + j] = v[j];
  }
}
typedef u32 BW;  // the stored words
#define GM_SCALES const S* __restrict__ scales, const S* __restrict__ biases
#else
// The 32 × 64 tile of B at (k0, n0) of dense matrix wi (strides b_mat, b_k, b_n): lanes run
// along whichever axis is unit-stride.
__device__ __forceinline__ void gm_load_b(float (*ws)[GM_PITCH], const T* __restrict__ b, i64 wi, i64 k0, i64 n0, i64 k,
                                          i64 n, i64 b_mat, i64 b_k, i64 b_n) {
  const int t = threadIdx.x;
  const T* bm = b + wi * b_mat;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int kk = b_n == 1 ? (t >> 6) + 4 * e : t & 31, nn = b_n == 1 ? t & 63 : (t >> 5) + 8 * e;
    const i64 kg = k0 + kk, ng = n0 + nn;
    ws[kk][nn] = kg < k && ng < n ? to_acc<T>(bm[kg * b_k + ng * b_n]) : 0.0f;
  }
}
typedef T BW;  // the dense matrix's elements
#define GM_SCALES const void* __restrict__ scales_, const void* __restrict__ biases_
#endif

extern "C" __global__ void __launch_bounds__(256)
    gather_mm_tiled(T* __restrict__ out, const T* __restrict__ x, const BW* __restrict__ b, GM_SCALES, i64 m_rows,
                    i64 n, i64 k, i64 pairs, const u32* __restrict__ lhs, const u32* __restrict__ rhs, Layout li, i64 nx,
                    i64 nw, i64 b_mat, i64 b_k, i64 b_n, i64 gs, int trans) {
  __shared__ float xs[GM_BK][GM_PITCH];
  __shared__ float ws[GM_BK][GM_PITCH];
  __shared__ i64 row_x[GM_BM];
  __shared__ i64 row_w[GM_BM];
  const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
  const i64 total = pairs * m_rows, r0 = (i64)blockIdx.x * GM_BM, n0 = (i64)blockIdx.y * GM_BN;
  if (t < GM_BM) {
    const i64 r = r0 + t;
    i64 xo = 0, wi = -1;  // rows past the end: matrix -1 (always at the tile's end)
    if (r < total) {
      const i64 p = r / m_rows, m = r - p * m_rows;
      i64 o[2];
      offsets<2>(li, p, o);
      const i64 xi = min(lhs ? (i64)lhs[o[0]] : o[0], nx - 1);
      wi = min(rhs ? (i64)rhs[o[1]] : o[1], nw - 1);
      xo = (xi * m_rows + m) * k;
    }
    row_x[t] = xo;
    row_w[t] = wi;
  }
  __syncthreads();
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  for (int start = 0; start < GM_BM && row_w[start] >= 0;) {
    const i64 wi = row_w[start];
    int end = start + 1;
    while (end < GM_BM && row_w[end] == wi) ++end;
    for (i64 k0 = 0; k0 < k; k0 += GM_BK) {
      const int kk = t & 31;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int r = (t >> 5) + 8 * e;
        xs[kk][r] = r >= start && r < end && k0 + kk < k ? to_acc<T>(x[row_x[r] + k0 + kk]) : 0.0f;
      }
#ifdef BITS
      gm_load_b(ws, b, scales, biases, wi, k0, n0, k, n, gs, trans);
#else
      gm_load_b(ws, b, wi, k0, n0, k, n, b_mat, b_k, b_n);
#endif
      __syncthreads();
#pragma unroll 8
      for (int q = 0; q < GM_BK; ++q) {
        float a[4], c[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = xs[q][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) c[j] = ws[q][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], c[j], acc[i][j]);
      }
      __syncthreads();
    }
    start = end;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const i64 r = r0 + ty + 16 * i;
    if (r >= total) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const i64 c = n0 + tx + 16 * j;
      if (c < n) out[r * n + c] = from_acc<T>(acc[i][j]);
    }
  }
}
