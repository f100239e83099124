// Scaled dot-product attention: softmax(q kᵀ · scale + mask) v, computed in f32 for f32, f16
// and bf16 inputs (T) and in f64 for f64 (ATTN_F64: that module holds only the backward pass
// and attn_rows, computing in F = double), never materializing the scores. Query heads of one key/value head are
// consecutive (grouped-query attention), so the rows of one (batch, kv head) — group · L of
// them, row r being head kvh · group + r / L and query r % L — share each pass over K and V.
//
// Masked keys (causal: key j > i + S - L, L <= S; a false in a bool mask) are skipped, as the
// CPU backend's lowest-value scores are; a row of a bool mask that keeps no key gets zeros.

struct Attn {
  u64 q, k, v, mask, out;
  i64 qs[3], ks[3], vs[3];  // element strides of axes 0-2 (the last axis is contiguous)
  i64 ms[4];                // the mask's strides broadcast to [B, Hq, L, S]
  i32 B, Hq, Hkv, L, S, D, Dv;
  i32 mkind;  // 0 none, 1 causal, 2 additive (T), 3 bool
  float scale;
  i32 vec;  // k and v rows load as 16-byte vectors (aligned, D = Dv = the kernel's head size)
};

#define NEG_INF (-1.0f / 0.0f)

// The compute type of masked_score and of the warp-a-row kernels (the backward pass, attn_rows).
#ifdef ATTN_F64
typedef double F;
#else
typedef float F;
#endif
__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }

// The score of key j for query i of head h in batch b after masking; -inf if masked.
__device__ __forceinline__ F masked_score(const Attn& p, F s, int b, int h, int i, int j) {
  s *= p.scale;
  if (p.mkind == 1) {
    if (j > i + p.S - p.L) return NEG_INF;
  } else if (p.mkind >= 2) {
    i64 o = b * p.ms[0] + h * p.ms[1] + i * p.ms[2] + j * p.ms[3];
    if (p.mkind == 3) {
      if (!((const bool*)p.mask)[o]) return NEG_INF;
    } else {
      s += to_acc<T>(((const T*)p.mask)[o]);
    }
  }
  return s;
}

// Max that ignores a NaN on the right (the CPU's row max skips NaN scores).
__device__ __forceinline__ float fmax_keep(float m, float s) { return s > m ? s : m; }

// masked_score in two steps, so that a kernel can read the mask before the score is ready (the
// load's round trip beside the keys', not after them): the mask's word on key j for query i
// of head h in batch b (mask_of), then the score s after it (with_mask).
struct KeyMask {
  bool dead;  // masked out: the score is -inf
  float add;  // an additive mask's value
};
__device__ __forceinline__ KeyMask mask_of(const Attn& p, int b, int h, int i, int j) {
  KeyMask km = {false, 0.0f};
  if (p.mkind == 1) {
    km.dead = j > i + p.S - p.L;
  } else if (p.mkind >= 2) {
    i64 o = b * p.ms[0] + h * p.ms[1] + i * p.ms[2] + j * p.ms[3];
    if (p.mkind == 3) km.dead = !((const bool*)p.mask)[o];
    else km.add = to_acc<T>(((const T*)p.mask)[o]);
  }
  return km;
}
__device__ __forceinline__ float with_mask(const Attn& p, float s, KeyMask km) {
  return km.dead ? NEG_INF : s * p.scale + km.add;
}

#ifndef ATTN_F64
// ---- decode: few rows per kv head, keys split across blocks ----
// Block (b, kvh, chunk of R rows) × split y; 4 warps take the split's keys in turn, each lane
// holding EPL dims (d = lane + 32 e) of each row's query and output, the next key's k and v
// loaded while the current one is scored. Each block leaves its unnormalized output in
// part[row, split, Dv] and its (max, sum) in the stats after it ([rows, split, 2], rows =
// B · Hq · L), or, with one split, the final output.
template <int EPL, int R>
__device__ __forceinline__ void decode_impl(const Attn& p, float* __restrict__ part, int nsplit, int chunk) {
  __shared__ float sm[4][R], sl[4][R];
  __shared__ float sacc[4][R][EPL * 32];
  OVERLAPPED_START();
  const int group = p.Hq / p.Hkv, rows = group * p.L;
  const int nchunks = (rows + R - 1) / R;
  const int rc = blockIdx.x % nchunks, bk = blockIdx.x / nchunks;
  const int kvh = bk % p.Hkv, b = bk / p.Hkv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int s0 = blockIdx.y * chunk, s1 = min(p.S, s0 + chunk);
  float q[R][EPL], acc[R][EPL], m[R], l[R];
  int hh[R], ii[R];
  bool valid[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    int row = rc * R + r;
    valid[r] = row < rows;
    hh[r] = kvh * group + (valid[r] ? row / p.L : 0);
    ii[r] = valid[r] ? row % p.L : 0;
    const T* qr = (const T*)p.q + b * p.qs[0] + hh[r] * p.qs[1] + ii[r] * p.qs[2];
#pragma unroll
    for (int e = 0; e < EPL; ++e) {
      int d = lane + 32 * e;
      q[r][e] = (valid[r] && d < p.D) ? to_acc<T>(qr[d]) : 0.0f;
      acc[r][e] = 0.0f;
    }
    m[r] = NEG_INF;
    l[r] = 0.0f;
  }
  const T* kb = (const T*)p.k + b * p.ks[0] + kvh * p.ks[1];
  const T* vb = (const T*)p.v + b * p.vs[0] + kvh * p.vs[1];
  float kn[EPL], vn[EPL];
  auto load = [&](int j) {
    const T* kr = kb + j * p.ks[2];
    const T* vr = vb + j * p.vs[2];
#pragma unroll
    for (int e = 0; e < EPL; ++e) {
      int d = lane + 32 * e;
      kn[e] = d < p.D ? to_acc<T>(kr[d]) : 0.0f;
      vn[e] = d < p.Dv ? to_acc<T>(vr[d]) : 0.0f;
    }
  };
  if (s0 + warp < s1) load(s0 + warp);
  for (int j = s0 + warp; j < s1; j += 4) {
    float kv[EPL], vv[EPL];
#pragma unroll
    for (int e = 0; e < EPL; ++e) {
      kv[e] = kn[e];
      vv[e] = vn[e];
    }
    if (j + 4 < s1) load(j + 4);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < EPL; ++e) s += q[r][e] * kv[e];
      s = warp_sum(s);
      if (!valid[r]) continue;
      s = masked_score(p, s, b, hh[r], ii[r], j);
      if (s == NEG_INF) continue;
      float mn = fmax_keep(m[r], s);
      float corr = expf(m[r] - mn), pj = expf(s - mn);
      l[r] = l[r] * corr + pj;
#pragma unroll
      for (int e = 0; e < EPL; ++e) acc[r][e] = acc[r][e] * corr + pj * vv[e];
      m[r] = mn;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (lane == 0) {
      sm[warp][r] = m[r];
      sl[warp][r] = l[r];
    }
#pragma unroll
    for (int e = 0; e < EPL; ++e) sacc[warp][r][lane + 32 * e] = acc[r][e];
  }
  __syncthreads();
  for (int r = 0; r < R; ++r) {
    int row = rc * R + r;
    if (row >= rows) break;
    int h = kvh * group + row / p.L, i = row % p.L;
    i64 orow = ((i64)(b * p.Hq + h) * p.L + i);
    float M = NEG_INF;
    for (int w = 0; w < 4; ++w) M = fmax_keep(M, sm[w][r]);
    float Ls = 0.0f, f[4];
    for (int w = 0; w < 4; ++w) {
      f[w] = sm[w][r] == NEG_INF ? 0.0f : expf(sm[w][r] - M);
      Ls += sl[w][r] * f[w];
    }
    for (int d = threadIdx.x; d < p.Dv; d += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < 4; ++w) a += f[w] == 0.0f ? 0.0f : sacc[w][r][d] * f[w];
      if (nsplit == 1) {
        ((T*)p.out)[orow * p.Dv + d] = from_acc<T>(Ls > 0.0f ? a / Ls : 0.0f);
      } else {
        part[(orow * nsplit + blockIdx.y) * p.Dv + d] = a;
      }
    }
    if (nsplit > 1 && threadIdx.x == 0) {
      float* st = part + (i64)p.B * p.Hq * p.L * nsplit * p.Dv + (orow * nsplit + blockIdx.y) * 2;
      st[0] = M;
      st[1] = Ls;
    }
  }
}

#define DECODE(EPL, R)                                                                                   \
  extern "C" __global__ void __launch_bounds__(128) attn_decode_##EPL##_##R(Attn p, float* part, int nsplit, \
                                                                            int chunk) {                 \
    decode_impl<EPL, R>(p, part, nsplit, chunk);                                                         \
  }
DECODE(2, 1)
DECODE(2, 2)
DECODE(2, 4)
DECODE(2, 8)
DECODE(4, 1)
DECODE(4, 2)
DECODE(4, 4)
DECODE(4, 8)
DECODE(8, 1)
DECODE(8, 2)
DECODE(8, 4)

// ---- decode, keys across lanes: the fast path ----
// For head sizes D = Dv = HD (64 or 128) with K and V rows 16-byte aligned, any mask.
// Block (b, kvh, chunk of 4 rows) × split y: warp w takes row 4·chunk + w alone (no join
// inside the block), walking the split's keys in tiles of 32. Lane j scores key j of a tile
// (k as 16-byte loads against the row's q, in shared memory read as broadcasts; then scaled
// and masked); the tile's max updates the running softmax once per tile; then each lane,
// holding HD/32 dims of the tile's value rows (loaded with the key, before either is used:
// one memory latency a tile), sums them weighted by the tile's probabilities (shared through
// shared memory). A warp's chain of dependent instructions is short, so many warps in flight
// hide each other's latency. Leaves the partials attn_combine joins (as decode_impl does).
// The first tile's keys, mask words and values are requested before the query is moved to
// shared memory, so a warp of one tile waits for memory once, not three times (attn_bench,
// H200, 640 keys: 7.51 → 6.52 µs a layer with the combine pass, which now also loads its
// partials with its stats). Measured on an H100 and an H200 (scripts/cuda-bench/attn_bench.cu).
template <int BYTES> struct VecOf;
template <> struct VecOf<4> { typedef u32 type; };
template <> struct VecOf<8> { typedef uint2 type; };
template <> struct VecOf<16> { typedef uint4 type; };

template <int HD>
__device__ __forceinline__ void decode_rows_impl(const Attn& p, float* __restrict__ part, int nsplit, int chunk) {
  constexpr int EPL = HD / 32, PER16 = 16 / (int)sizeof(T);
  typedef typename VecOf<EPL * sizeof(T)>::type VChunk;
  // Value rows loaded at once: the whole tile's while that is at most 8 bytes a row a lane.
  constexpr int VB = EPL * sizeof(T) <= 8 ? 32 : 16;
  __shared__ float qs[4][HD];
  __shared__ float ps[4][32];
  OVERLAPPED_START();
  const int group = p.Hq / p.Hkv, rows = group * p.L;
  const int nchunks = (rows + 3) / 4;
  const int rc = blockIdx.x % nchunks, bk = blockIdx.x / nchunks;
  const int kvh = bk % p.Hkv, b = bk / p.Hkv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = rc * 4 + warp;
  if (row >= rows) return;  // whole warps; nothing below synchronizes the block
  const int h = kvh * group + row / p.L, i = row % p.L;
  const T* qr = (const T*)p.q + b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
  // The query's values as loaded: they go to shared memory once the first tile's keys, mask
  // and values are on their way (three round trips through memory would otherwise follow one
  // another before a warp of a decode step, one tile long, could score anything).
  T qraw[EPL];
#pragma unroll
  for (int e = 0; e < EPL; ++e) qraw[e] = qr[lane + 32 * e];
  bool q_ready = false;
  const int s0 = blockIdx.y * chunk, s1 = min(p.S, s0 + chunk);
  float m = NEG_INF, l = 0.0f, acc[EPL];
#pragma unroll
  for (int e = 0; e < EPL; ++e) acc[e] = 0.0f;
  const T* kb = (const T*)p.k + b * p.ks[0] + kvh * p.ks[1];
  const T* vb = (const T*)p.v + b * p.vs[0] + kvh * p.vs[1];
  for (int t0 = s0; t0 < s1; t0 += 32) {
    const int j = t0 + lane, nk = min(32, s1 - t0);
    uint4 kv[HD / PER16];
    if (j < s1) {
      const uint4* kr = (const uint4*)(kb + (i64)j * p.ks[2]);
#pragma unroll
      for (int c = 0; c < HD / PER16; ++c) kv[c] = __ldg(kr + c);
    }
    const KeyMask km = j < s1 ? mask_of(p, b, h, i, j) : KeyMask{true, 0.0f};
    VChunk vc[VB];
    const T* vr = vb + (i64)t0 * p.vs[2] + lane * EPL;
#pragma unroll
    for (int jj = 0; jj < VB; ++jj)
      if (jj < nk) vc[jj] = __ldg((const VChunk*)(vr + (i64)jj * p.vs[2]));
    if (!q_ready) {
#pragma unroll
      for (int e = 0; e < EPL; ++e) qs[warp][lane + 32 * e] = to_acc<T>(qraw[e]);
      __syncwarp();
      q_ready = true;
    }
    float sc = 0.0f;
    if (j < s1) {
#pragma unroll
      for (int c = 0; c < HD / PER16; ++c) {
        const T* ke = (const T*)&kv[c];
#pragma unroll
        for (int e = 0; e < PER16; ++e) sc = fmaf(qs[warp][c * PER16 + e], to_acc<T>(ke[e]), sc);
      }
    }
    const float sr = with_mask(p, sc, km);
    float tm = sr;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) tm = fmax_keep(tm, __shfl_xor_sync(0xffffffffu, tm, o));
    const float mn = fmax_keep(m, tm);
    const float corr = m == NEG_INF ? 0.0f : expf(m - mn);
    const float pj = sr == NEG_INF ? 0.0f : expf(sr - mn);
    l = l * corr + pj;
#pragma unroll
    for (int e = 0; e < EPL; ++e) acc[e] *= corr;
    if (mn != NEG_INF) m = mn;
    ps[warp][lane] = pj;
    __syncwarp();
    for (int j0 = 0; j0 < nk; j0 += VB) {
      if (j0 > 0) {
#pragma unroll
        for (int jj = 0; jj < VB; ++jj)
          if (j0 + jj < nk) vc[jj] = __ldg((const VChunk*)(vr + (i64)(j0 + jj) * p.vs[2]));
      }
#pragma unroll
      for (int jj = 0; jj < VB; ++jj) {
        if (j0 + jj < nk) {
          const T* ve = (const T*)&vc[jj];
          const float pr = ps[warp][j0 + jj];
#pragma unroll
          for (int e = 0; e < EPL; ++e) acc[e] = fmaf(pr, to_acc<T>(ve[e]), acc[e]);
        }
      }
    }
    __syncwarp();
  }
  l = warp_sum(l);
  const i64 orow = (i64)(b * p.Hq + h) * p.L + i;
  if (nsplit == 1) {
#pragma unroll
    for (int e = 0; e < EPL; ++e) ((T*)p.out)[orow * HD + lane * EPL + e] = from_acc<T>(l > 0.0f ? acc[e] / l : 0.0f);
  } else {
#pragma unroll
    for (int e = 0; e < EPL; ++e) part[(orow * nsplit + blockIdx.y) * HD + lane * EPL + e] = acc[e];
    if (lane == 0) {
      float* st = part + (i64)p.B * p.Hq * p.L * nsplit * HD + (orow * nsplit + blockIdx.y) * 2;
      st[0] = m;
      st[1] = l;
    }
  }
}

extern "C" __global__ void __launch_bounds__(128) attn_decode_rows_64(Attn p, float* part, int nsplit, int chunk) {
  decode_rows_impl<64>(p, part, nsplit, chunk);
}
extern "C" __global__ void __launch_bounds__(128) attn_decode_rows_128(Attn p, float* part, int nsplit, int chunk) {
  decode_rows_impl<128>(p, part, nsplit, chunk);
}

// Joins the splits of each row: a block of COMBINE threads per row (B · Hq · L of them),
// nsplit ≤ COMBINE. Thread s takes split s's (max, sum) and the block reduces them to the row's
// max and sum, leaving each split's weight exp(max_s − max) in shared memory; then the
// threads tile (dims as W-float vectors) × (splits): each sums its vector over every
// slice-th split, and the slices' sums meet in shared memory. A thread loads its vectors of
// the first COMBINE_PRE such splits with the stats, before the reductions (one round trip
// through memory, not two).
#define COMBINE 256
#define COMBINE_PRE 4
// Split s's W-float vector vi of a row's partials acc.
template <int W>
__device__ __forceinline__ void combine_load(const float* __restrict__ acc, int dv, int s, int vi, float* x) {
  if constexpr (W == 4) {
    float4 v = *(const float4*)(acc + (i64)s * dv + 4 * vi);
    x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
  } else {
    x[0] = acc[(i64)s * dv + vi];
  }
}
template <int W>
__device__ __forceinline__ void combine_impl(const Attn& p, const float* __restrict__ part, int nsplit) {
  __shared__ float w[COMBINE], rmax[COMBINE / 32], rsum[COMBINE / 32];
  __shared__ float sacc[COMBINE * W];
  OVERLAPPED_START();
  const i64 row = blockIdx.x;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const float* st = part + (i64)p.B * p.Hq * p.L * nsplit * p.Dv + row * nsplit * 2;
  const float ms = t < nsplit ? st[2 * t] : NEG_INF;
  const float ls = t < nsplit ? st[2 * t + 1] : 0.0f;
  const int nv = p.Dv / W, slices = COMBINE / nv;
  const int vi = t % nv, slice = t / nv;
  const float* acc = part + row * nsplit * p.Dv;
  float pre[COMBINE_PRE][W];
#pragma unroll
  for (int u = 0; u < COMBINE_PRE; ++u)
    if (slice < slices && slice + u * slices < nsplit) combine_load<W>(acc, p.Dv, slice + u * slices, vi, pre[u]);
  float M = ms;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) M = fmax_keep(M, __shfl_xor_sync(0xffffffffu, M, o));
  if (lane == 0) rmax[warp] = M;
  __syncthreads();
#pragma unroll
  for (int i = 0; i < COMBINE / 32; ++i) M = fmax_keep(M, rmax[i]);
  const float ws = ms == NEG_INF ? 0.0f : expf(ms - M);
  w[t] = ws;
  float lw = ls * ws;
  lw = warp_sum(lw);
  if (lane == 0) rsum[warp] = lw;
  __syncthreads();
  float Ls = 0.0f;
#pragma unroll
  for (int i = 0; i < COMBINE / 32; ++i) Ls += rsum[i];
  float a[W];
#pragma unroll
  for (int u = 0; u < W; ++u) a[u] = 0.0f;
  if (slice < slices) {
    // The splits slice, slice + slices, ... in order: the first COMBINE_PRE from pre.
#pragma unroll
    for (int u = 0; u < COMBINE_PRE; ++u) {
      const int s = slice + u * slices;
      if (s < nsplit) {
        const float f = w[s];
#pragma unroll
        for (int e = 0; e < W; ++e) a[e] += f == 0.0f ? 0.0f : f * pre[u][e];
      }
    }
#pragma unroll 4
    for (int s = slice + COMBINE_PRE * slices; s < nsplit; s += slices) {
      const float f = w[s];
      float x[W];
      combine_load<W>(acc, p.Dv, s, vi, x);
#pragma unroll
      for (int u = 0; u < W; ++u) a[u] += f == 0.0f ? 0.0f : f * x[u];
    }
  }
#pragma unroll
  for (int u = 0; u < W; ++u) sacc[t * W + u] = a[u];
  __syncthreads();
  const float inv = Ls > 0.0f ? 1.0f / Ls : 0.0f;
  for (int d = t; d < p.Dv; d += COMBINE) {
    const int v = d / W, u = d % W;
    float sum = 0.0f;
    for (int sl = 0; sl < slices; ++sl) sum += sacc[(sl * nv + v) * W + u];
    ((T*)p.out)[row * p.Dv + d] = from_acc<T>(sum * inv);
  }
}

// W = 4 (float4 loads) when Dv is a multiple of 4, else 1.
extern "C" __global__ void __launch_bounds__(COMBINE) attn_combine_4(Attn p, const float* part, int nsplit) {
  combine_impl<4>(p, part, nsplit);
}
extern "C" __global__ void __launch_bounds__(COMBINE) attn_combine_1(Attn p, const float* part, int nsplit) {
  combine_impl<1>(p, part, nsplit);
}

// ---- prefill: flash attention over tiles of 32 query rows and BK keys ----
// Block of 128 threads per (b, kvh, 32 rows); 4 threads per row, thread tp holding dims
// d = 16 c + 4 tp + u (u < 4) of its row's query and output. K and V tiles sit in shared
// memory as f32; scores go through a small shared tile; softmax is online across tiles.
template <int DMAX>
__device__ __forceinline__ void flash_impl(const Attn& p) {
  constexpr int BK = 32 * 128 / DMAX;
  constexpr int C = DMAX / 16;
  __shared__ __align__(16) float ks[BK][DMAX];
  __shared__ __align__(16) float vs[BK][DMAX];
  __shared__ float ps[32][BK + 1];
  const int group = p.Hq / p.Hkv, rows = group * p.L;
  const int nq = (rows + 31) / 32;
  const int qb = blockIdx.x % nq, bk = blockIdx.x / nq;
  const int kvh = bk % p.Hkv, b = bk / p.Hkv;
  const int tid = threadIdx.x, rl = tid >> 2, tp = tid & 3;
  const int row = qb * 32 + rl;
  const bool valid = row < rows;
  const int h = kvh * group + (valid ? row / p.L : 0), i = valid ? row % p.L : 0;
  float4 q[C], acc[C];
  const T* qr = (const T*)p.q + b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    float t[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      int d = 16 * c + 4 * tp + u;
      t[u] = (valid && d < p.D) ? to_acc<T>(qr[d]) : 0.0f;
    }
    q[c] = make_float4(t[0], t[1], t[2], t[3]);
    acc[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  float m = NEG_INF, l = 0.0f;
  // Keys any row of this block can see.
  int kend = p.S;
  if (p.mkind == 1) {
    int first = qb * 32, last = min(rows, first + 32) - 1;
    int maxi = (first / p.L != last / p.L) ? p.L - 1 : last % p.L;
    kend = max(0, min(p.S, maxi + p.S - p.L + 1));
  }
  const T* kb = (const T*)p.k + b * p.ks[0] + kvh * p.ks[1];
  const T* vb = (const T*)p.v + b * p.vs[0] + kvh * p.vs[1];
  for (int j0 = 0; j0 < kend; j0 += BK) {
    const int nk = min(BK, kend - j0);
    __syncthreads();
    for (int t = tid; t < BK * DMAX; t += 128) {
      int jj = t / DMAX, d = t % DMAX;
      bool in = jj < nk;
      ks[jj][d] = (in && d < p.D) ? to_acc<T>(kb[(i64)(j0 + jj) * p.ks[2] + d]) : 0.0f;
      vs[jj][d] = (in && d < p.Dv) ? to_acc<T>(vb[(i64)(j0 + jj) * p.vs[2] + d]) : 0.0f;
    }
    __syncthreads();
    float mt = NEG_INF;
    for (int jj = 0; jj < nk; ++jj) {
      float s = 0.0f;
#pragma unroll
      for (int c = 0; c < C; ++c) {
        float4 k4 = *(const float4*)&ks[jj][16 * c + 4 * tp];
        s += q[c].x * k4.x + q[c].y * k4.y + q[c].z * k4.z + q[c].w * k4.w;
      }
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      s = valid ? masked_score(p, s, b, h, i, j0 + jj) : NEG_INF;
      if ((jj & 3) == tp) ps[rl][jj] = s;
      mt = fmax_keep(mt, s);
    }
    const float mn = fmax_keep(m, mt);
    __syncwarp();
    float lp = 0.0f;
    for (int jj = tp; jj < nk; jj += 4) {
      float s = ps[rl][jj];
      float e = (s == NEG_INF) ? 0.0f : expf(s - mn);
      ps[rl][jj] = e;
      lp += e;
    }
    lp += __shfl_xor_sync(0xffffffffu, lp, 1);
    lp += __shfl_xor_sync(0xffffffffu, lp, 2);
    __syncwarp();
    if (mn == NEG_INF) continue;  // nothing seen yet
    const float corr = expf(m - mn);
    l = l * corr + lp;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      acc[c].x *= corr;
      acc[c].y *= corr;
      acc[c].z *= corr;
      acc[c].w *= corr;
    }
    for (int jj = 0; jj < nk; ++jj) {
      float e = ps[rl][jj];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        float4 v4 = *(const float4*)&vs[jj][16 * c + 4 * tp];
        acc[c].x += e * v4.x;
        acc[c].y += e * v4.y;
        acc[c].z += e * v4.z;
        acc[c].w += e * v4.w;
      }
    }
    m = mn;
  }
  if (!valid) return;
  T* orow = (T*)p.out + ((i64)(b * p.Hq + h) * p.L + i) * p.Dv;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    float t[4] = {acc[c].x, acc[c].y, acc[c].z, acc[c].w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      int d = 16 * c + 4 * tp + u;
      if (d < p.Dv) orow[d] = from_acc<T>(t[u] * inv);
    }
  }
}

extern "C" __global__ void __launch_bounds__(128) attn_flash_64(Attn p) { flash_impl<64>(p); }
extern "C" __global__ void __launch_bounds__(128) attn_flash_128(Attn p) { flash_impl<128>(p); }
extern "C" __global__ void __launch_bounds__(128) attn_flash_256(Attn p) { flash_impl<256>(p); }

// ---- prefill on tensor cores (f16 / bf16): mma.sync m16n8k16, f32 accumulation ----
// Block of 4 warps per 64 rows of one (b, kvh); warp w owns rows 16 w..16 w + 15, holding its
// query tile as A fragments. Key / value tiles of BK rows stream through shared memory, two
// buffers deep: the next tile's copies (cp.async, 16 bytes a thread) are in flight while the
// current one is used. Fragments of K (for S = Q Kᵀ) and of V (for O += P V, transposed on
// the way) come out of shared memory with ldmatrix; rows are padded by 8 halves so the eight
// row addresses of an 8 × 8 matrix fall in different banks. S lands in C fragments, which
// after the online softmax (in base 2: exp2 of scores pre-multiplied by scale · log2 e) are,
// as half pairs, exactly the A fragments of P for P V. Lane = 4 g + t: C element (g, 2t),
// (g, 2t+1), (g+8, 2t), (g+8, 2t+1) of each 16 × 8 tile. Masks are applied only to tiles that
// need them (the causal diagonal, the last partial tile, additive and boolean masks). Blocks
// run last rows first, so the longest causal rows start first.
#if defined(MMA_KIND)
// a and b rounded to T (to nearest even) as one pair, a in the low half: one instruction,
// where the portable conversion (from_acc) took several a value on every probability.
__device__ __forceinline__ u32 pack2(float a, float b) {
  u32 r;
  asm("cvt.rn." MMA_KIND "x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
  return r;
}
// 2^x, flushing subnormal results to zero; 2^-inf = 0.
__device__ __forceinline__ float exp2_fast(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void mma16816(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_KIND "." MMA_KIND ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ u32 shared_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
// 16 bytes from global to shared without passing through registers; `bytes` < 16 fills the
// rest with zeros (0: all zeros, src unread).
__device__ __forceinline__ void copy16_async(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void copies_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
// Four 8 × 8 matrices of halves; lane 8 i + r gives row r's address of matrix i.
__device__ __forceinline__ void ldmatrix4(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix4_trans(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

#define LOG2E 1.4426950408889634f

// A block of the HD kernel: 4 warps of MT m-tiles of 16 rows (attention.rs launches grids to
// match), key tiles of BK. Two m-tiles a warp (each K / V fragment read from shared memory
// feeding two products) measured slower at head size 64: 238 registers or spills, and fewer
// blocks resident (scripts/cuda-bench/prefill_bench.cu, H200).
template <int HD> struct MmaTiles { static const int MT = 1, BK = HD <= 64 ? 64 : 32; };

template <int HD>
__device__ __forceinline__ void flash_mma_impl(const Attn& p) {
  constexpr int MT = MmaTiles<HD>::MT, BK = MmaTiles<HD>::BK, BR = 64 * MT;
  constexpr int LD = HD + 8, KS = HD / 16, NS = HD / 8;
  __shared__ __align__(16) u16 ks[2][BK * LD];
  __shared__ __align__(16) u16 vs[2][BK * LD];
  const int group = p.Hq / p.Hkv, nbk = p.B * p.Hkv;
  const int rank = blockIdx.x / nbk, bk = blockIdx.x % nbk;
  const int kvh = bk % p.Hkv, b = bk / p.Hkv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // This thread's rows: g and g + 8 of each of its warp's m-tiles. With L >= BR a block takes
  // BR queries of one head (ranks: last queries first, heads of the group side by side);
  // shorter prompts pack the group's heads, rows kvh·group·L + (head − kvh·group)·L + i.
  int hh[MT][2], ii[MT][2], mini, maxi;
  bool ok[MT][2];
  if (p.L >= BR) {
    const int ni = (p.L + BR - 1) / BR, ib = ni - 1 - rank / group, head = kvh * group + rank % group;
#pragma unroll
    for (int u = 0; u < MT; ++u)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        ii[u][h] = ib * BR + warp * 16 * MT + 16 * u + g + 8 * h;
        ok[u][h] = ii[u][h] < p.L;
        hh[u][h] = head;
      }
    mini = ib * BR;
    maxi = min(p.L, mini + BR) - 1;
  } else {
    const int rows = group * p.L, first = ((rows + BR - 1) / BR - 1 - rank) * BR;
#pragma unroll
    for (int u = 0; u < MT; ++u)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = first + warp * 16 * MT + 16 * u + g + 8 * h;
        ok[u][h] = r < rows;
        hh[u][h] = kvh * group + (ok[u][h] ? r / p.L : 0);
        ii[u][h] = ok[u][h] ? r % p.L : 0;
      }
    const int last = min(rows, first + BR) - 1;
    const bool one_head = first / p.L == last / p.L;
    mini = one_head ? first % p.L : 0;
    maxi = one_head ? last % p.L : p.L - 1;
  }
  // Query A fragments, scaled by nothing (the scale goes on the scores).
  u32 qa[MT][KS][4];
#pragma unroll
  for (int u = 0; u < MT; ++u)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const u16* qr = (const u16*)((const T*)p.q + b * p.qs[0] + hh[u][h] * p.qs[1] + ii[u][h] * p.qs[2]);
#pragma unroll
      for (int s = 0; s < KS; ++s) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          int d = 16 * s + 8 * half + 2 * t;
          u32 v = 0;
          if (ok[u][h] && d < p.D) v = (u32)qr[d] | ((d + 1 < p.D ? (u32)qr[d + 1] : 0u) << 16);
          qa[u][s][h + 2 * half] = v;
        }
      }
    }
  float o[MT][NS][4];
#pragma unroll
  for (int u = 0; u < MT; ++u)
#pragma unroll
    for (int n = 0; n < NS; ++n) o[u][n][0] = o[u][n][1] = o[u][n][2] = o[u][n][3] = 0.0f;
  float m[MT][2], l[MT][2];
  int lim[MT][2];  // the last key each row sees (causal)
#pragma unroll
  for (int u = 0; u < MT; ++u)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      m[u][h] = NEG_INF;
      l[u][h] = 0.0f;
      lim[u][h] = ii[u][h] + p.S - p.L;
    }
  // Keys any row of the block sees (kend), and the keys every row sees (kall: tiles below it
  // need no mask).
  int kend = p.S, kall = p.S;
  if (p.mkind == 1) {
    kend = max(0, min(p.S, maxi + p.S - p.L + 1));
    kall = max(0, min(p.S, mini + p.S - p.L + 1));
  } else if (p.mkind >= 2) {
    kall = 0;
  }
  const float sl2 = p.scale * LOG2E;
  // With no mask or the causal one and a positive scale, scores stay as Q Kᵀ gives them (the
  // row maxima are the same) and the scale joins the exponent's subtraction: exp2(s · sl2 −
  // m · sl2), one FFMA a score. Otherwise they are scaled (and masked) in place: sm = 1.
  const bool raw = p.mkind <= 1 && p.scale > 0.0f;
  const float sm = raw ? sl2 : 1.0f;
  const u16* kb = (const u16*)((const T*)p.k + b * p.ks[0] + kvh * p.ks[1]);
  const u16* vb = (const u16*)((const T*)p.v + b * p.vs[0] + kvh * p.vs[1]);
  // Tile j0's keys and values into buffer `buf` (rows past the keys as zeros).
  auto load = [&](int j0, int buf) {
    const int nk = min(BK, kend - j0);
    if (p.vec) {
      const u32 kd = shared_addr(ks[buf]), vd = shared_addr(vs[buf]);
#pragma unroll
      for (int e = threadIdx.x; e < BK * HD / 8; e += 128) {
        const int jj = e / (HD / 8), c = 8 * (e % (HD / 8));
        const bool in = jj < nk;
        const i64 j = in ? j0 + jj : 0;
        copy16_async(kd + 2 * (jj * LD + c), kb + j * p.ks[2] + c, in ? 16 : 0);
        copy16_async(vd + 2 * (jj * LD + c), vb + j * p.vs[2] + c, in ? 16 : 0);
      }
    } else {
      for (int e = threadIdx.x; e < BK * HD; e += 128) {
        const int jj = e / HD, d = e % HD;
        const bool in = jj < nk;
        ks[buf][jj * LD + d] = (in && d < p.D) ? kb[(i64)(j0 + jj) * p.ks[2] + d] : (u16)0;
        vs[buf][jj * LD + d] = (in && d < p.Dv) ? vb[(i64)(j0 + jj) * p.vs[2] + d] : (u16)0;
      }
    }
    copies_commit();
  };
  // ldmatrix row addresses of this lane: matrix i = lane / 8, row r = lane % 8.
  const int mi = lane >> 3, mr = lane & 7;
  const int koff = 2 * (mr * LD + 8 * mi);                           // + 2·(8 n·LD + 16 s)
  const int voff = 2 * ((8 * (mi & 1) + mr) * LD + 8 * (mi >> 1));  // + 2·(16 s·LD + 8 n)
  if (kend > 0) load(0, 0);
  for (int j0 = 0, it = 0; j0 < kend; j0 += BK, ++it) {
    const int buf = it & 1;
    if (j0 + BK < kend) {
      load(j0 + BK, buf ^ 1);
      copies_wait<1>();
    } else {
      copies_wait<0>();
    }
    __syncthreads();
    const u32 kbase = shared_addr(ks[buf]) + koff, vbase = shared_addr(vs[buf]) + voff;
    float sc[MT][BK / 8][4];
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
      for (int u = 0; u < MT; ++u) sc[u][n][0] = sc[u][n][1] = sc[u][n][2] = sc[u][n][3] = 0.0f;
#pragma unroll
      for (int s = 0; s < KS; s += 2) {
        u32 kf[4];
        ldmatrix4(kf, kbase + 2 * (8 * n * LD + 16 * s));
#pragma unroll
        for (int u = 0; u < MT; ++u) {
          mma16816(sc[u][n], qa[u][s], kf[0], kf[1]);
          mma16816(sc[u][n], qa[u][s + 1], kf[2], kf[3]);
        }
      }
    }
    // Scores in base-2 units, masked where this tile needs it.
    if (j0 + BK <= kall) {
      if (!raw) {
#pragma unroll
        for (int u = 0; u < MT; ++u)
#pragma unroll
          for (int n = 0; n < BK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) sc[u][n][e] *= sl2;
      }
    } else if (p.mkind <= 1) {
      const int nk = min(BK, kend - j0);
#pragma unroll
      for (int u = 0; u < MT; ++u)
#pragma unroll
        for (int n = 0; n < BK / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int jj = 8 * n + 2 * t + (e & 1);
            const bool seen = jj < nk && (p.mkind == 0 || j0 + jj <= lim[u][e >> 1]);
            sc[u][n][e] = seen ? sc[u][n][e] * (raw ? 1.0f : sl2) : NEG_INF;
          }
    } else {
      const int nk = min(BK, kend - j0);
#pragma unroll
      for (int u = 0; u < MT; ++u)
#pragma unroll
        for (int n = 0; n < BK / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int h = e >> 1, jj = 8 * n + 2 * t + (e & 1);
            sc[u][n][e] = (ok[u][h] && jj < nk)
                              ? masked_score(p, sc[u][n][e], b, hh[u][h], ii[u][h], j0 + jj) * LOG2E
                              : NEG_INF;
          }
    }
#pragma unroll
    for (int u = 0; u < MT; ++u) {
      // Each row's max over the tile (a quad holds a row), the online softmax update.
      float mt[2] = {NEG_INF, NEG_INF};
#pragma unroll
      for (int n = 0; n < BK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) mt[e >> 1] = fmaxf(mt[e >> 1], sc[u][n][e]);
      float corr[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mt[h] = fmaxf(mt[h], __shfl_xor_sync(0xffffffffu, mt[h], 1));
        mt[h] = fmaxf(mt[h], __shfl_xor_sync(0xffffffffu, mt[h], 2));
        const float mn = fmaxf(m[u][h], mt[h]);
        corr[h] = mn == NEG_INF ? 1.0f : exp2_fast((m[u][h] - mn) * sm);
        m[u][h] = mn;
      }
      // exp2(s · sm − mu): a row that has seen no key yet subtracts 0, so its -inf scores
      // still give 0, not NaN.
      const float mu[2] = {m[u][0] == NEG_INF ? 0.0f : m[u][0] * sm, m[u][1] == NEG_INF ? 0.0f : m[u][1] * sm};
      float ls[2] = {0.0f, 0.0f};
#pragma unroll
      for (int n = 0; n < BK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float x = exp2_fast(fmaf(sc[u][n][e], sm, -mu[e >> 1]));
          sc[u][n][e] = x;
          ls[e >> 1] += x;
        }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        ls[h] += __shfl_xor_sync(0xffffffffu, ls[h], 1);
        ls[h] += __shfl_xor_sync(0xffffffffu, ls[h], 2);
        l[u][h] = l[u][h] * corr[h] + ls[h];
      }
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        o[u][n][0] *= corr[0];
        o[u][n][1] *= corr[0];
        o[u][n][2] *= corr[1];
        o[u][n][3] *= corr[1];
      }
    }
    // O += P V, 16 keys a step, two 8-dim tiles of V a ldmatrix.
#pragma unroll
    for (int s = 0; s < BK / 16; ++s) {
      u32 pa[MT][4];
#pragma unroll
      for (int u = 0; u < MT; ++u) {
        pa[u][0] = pack2(sc[u][2 * s][0], sc[u][2 * s][1]);
        pa[u][1] = pack2(sc[u][2 * s][2], sc[u][2 * s][3]);
        pa[u][2] = pack2(sc[u][2 * s + 1][0], sc[u][2 * s + 1][1]);
        pa[u][3] = pack2(sc[u][2 * s + 1][2], sc[u][2 * s + 1][3]);
      }
#pragma unroll
      for (int n = 0; n < NS; n += 2) {
        u32 vf[4];
        ldmatrix4_trans(vf, vbase + 2 * (16 * s * LD + 8 * n));
#pragma unroll
        for (int u = 0; u < MT; ++u) {
          mma16816(o[u][n], pa[u], vf[0], vf[1]);
          mma16816(o[u][n + 1], pa[u], vf[2], vf[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this buffer
  }
#pragma unroll
  for (int u = 0; u < MT; ++u)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (!ok[u][h]) continue;
      // The output [B, Hq, L, Dv] in [B, L, Hq, Dv] memory (attention.rs returns that view):
      // the model's transpose to [B, L, Hq * Dv] is then free.
      T* orow = (T*)p.out + ((i64)(b * p.L + ii[u][h]) * p.Hq + hh[u][h]) * p.Dv;
      const float inv = l[u][h] > 0.0f ? 1.0f / l[u][h] : 0.0f;
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        const int d = 8 * n + 2 * t;
        if (d + 1 < p.Dv && (p.Dv & 1) == 0) {
          *(u32*)&orow[d] = pack2(o[u][n][2 * h] * inv, o[u][n][2 * h + 1] * inv);
        } else {
          if (d < p.Dv) orow[d] = from_acc<T>(o[u][n][2 * h] * inv);
          if (d + 1 < p.Dv) orow[d + 1] = from_acc<T>(o[u][n][2 * h + 1] * inv);
        }
      }
    }
}

// Head size 64 held to 128 registers (a few spill) so 4 blocks share a multiprocessor, not 2:
// at L = 2047 causal 140 -> 127 us, at 4096 467 -> 412, at 512 24 -> 28 (H200, prefill_bench;
// 3 blocks: 132, 419, 26).
#ifndef MMA_MIN_BLOCKS
#define MMA_MIN_BLOCKS 4
#endif
extern "C" __global__ void __launch_bounds__(128, MMA_MIN_BLOCKS) attn_mma_64(Attn p) { flash_mma_impl<64>(p); }
extern "C" __global__ void __launch_bounds__(128) attn_mma_128(Attn p) { flash_mma_impl<128>(p); }
#endif
#endif  // ATTN_F64

// ---- The backward pass (Op::AttentionVjp): with P = softmax(S), S the masked scores, and g
// the cotangent of the output: dv = Pᵀ g, dS = P ⊙ (g vᵀ − δ) with δ_i = Σ_j P_ij (g_i · v_j),
// dq = dS k · scale, dk = dSᵀ q · scale. A warp per row, lanes holding head dims lane + 32 e,
// computing in F: attn_vjp_rows finds each query row's max, 1 / sum and δ (online, one sweep
// over the keys); attn_vjp_dq then sweeps the keys again for dq, and attn_vjp_dkv, a warp per
// key row, sweeps the query rows of its kv head's group for dk and dv. g is row-major
// [B, Hq, L, Dv]; the output holds dq, dk and dv row-major one after the other (p.out, then
// + B·Hq·L·D, then + B·Hkv·S·D). A row whose every key is masked gets zero probabilities.
#define VJP_E 8
#define VJP_WARPS 4

// r[e] = row[lane + 32 e] (0 past n).
__device__ __forceinline__ void vjp_load(F* r, const T* row, int n, int lane) {
#pragma unroll
  for (int e = 0; e < VJP_E; ++e) {
    int d = lane + 32 * e;
    r[e] = d < n ? (F)to_acc<T>(row[d]) : (F)0;
  }
}

__device__ __forceinline__ F vjp_dot(const F* a, const T* row, int n, int lane) {
  F s = 0;
#pragma unroll
  for (int e = 0; e < VJP_E; ++e) {
    int d = lane + 32 * e;
    if (d < n) s += a[e] * to_acc<T>(row[d]);
  }
  return warp_sum(s);
}

// The keys query i may see: all, or with the causal mask those up to i + S - L.
__device__ __forceinline__ int vjp_key_end(const Attn& p, int i) {
  return p.mkind == 1 ? min(p.S, max(0, i + p.S - p.L + 1)) : p.S;
}

// Query row `row` of [B, Hq, L] as (b, h, i), its kv head, its q row and the first k and v
// rows of its (batch, kv head).
struct VjpRow {
  int b, h, i, kh;
  const T* q;
  const T* k;
  const T* v;
};
__device__ __forceinline__ VjpRow vjp_row(const Attn& p, i64 row) {
  VjpRow r;
  r.i = (int)(row % p.L);
  i64 bh = row / p.L;
  r.h = (int)(bh % p.Hq);
  r.b = (int)(bh / p.Hq);
  r.kh = r.h / (p.Hq / p.Hkv);
  r.q = (const T*)p.q + r.b * p.qs[0] + r.h * p.qs[1] + r.i * p.qs[2];
  r.k = (const T*)p.k + r.b * p.ks[0] + r.kh * p.ks[1];
  r.v = (const T*)p.v + r.b * p.vs[0] + r.kh * p.vs[1];
  return r;
}

extern "C" __global__ void attn_vjp_rows(Attn p, const T* __restrict__ g, F* __restrict__ stat) {
  int lane = threadIdx.x % 32;
  i64 rows = (i64)p.B * p.Hq * p.L;
  for (i64 row = (i64)blockIdx.x * VJP_WARPS + threadIdx.x / 32; row < rows; row += (i64)gridDim.x * VJP_WARPS) {
    VjpRow r = vjp_row(p, row);
    F qr[VJP_E], gr[VJP_E];
    vjp_load(qr, r.q, p.D, lane);
    vjp_load(gr, g + row * p.Dv, p.Dv, lane);
    const T *k = r.k, *v = r.v;
    F m = NEG_INF, l = 0, dsum = 0;
    for (int j = 0, end = vjp_key_end(p, r.i); j < end; ++j) {
      F s = masked_score(p, vjp_dot(qr, k + j * p.ks[2], p.D, lane), r.b, r.h, r.i, j);
      if (!(s > NEG_INF)) continue;
      F dp = vjp_dot(gr, v + j * p.vs[2], p.Dv, lane);
      if (s > m) {
        F c = ex(m - s);
        l = l * c + 1;
        dsum = dsum * c + dp;
        m = s;
      } else {
        F w = ex(s - m);
        l += w;
        dsum += w * dp;
      }
    }
    if (lane == 0) {
      stat[3 * row] = m;
      stat[3 * row + 1] = l > 0 ? 1 / l : 0;
      stat[3 * row + 2] = l > 0 ? dsum / l : 0;
    }
  }
}

extern "C" __global__ void attn_vjp_dq(Attn p, const T* __restrict__ g, const F* __restrict__ stat) {
  int lane = threadIdx.x % 32;
  i64 rows = (i64)p.B * p.Hq * p.L;
  for (i64 row = (i64)blockIdx.x * VJP_WARPS + threadIdx.x / 32; row < rows; row += (i64)gridDim.x * VJP_WARPS) {
    VjpRow r = vjp_row(p, row);
    F qr[VJP_E], gr[VJP_E], dq[VJP_E];
    vjp_load(qr, r.q, p.D, lane);
    vjp_load(gr, g + row * p.Dv, p.Dv, lane);
#pragma unroll
    for (int e = 0; e < VJP_E; ++e) dq[e] = 0;
    F m = stat[3 * row], inv = stat[3 * row + 1], delta = stat[3 * row + 2];
    const T *k = r.k, *v = r.v;
    for (int j = 0, end = inv > 0 ? vjp_key_end(p, r.i) : 0; j < end; ++j) {
      const T* kj = k + j * p.ks[2];
      F s = masked_score(p, vjp_dot(qr, kj, p.D, lane), r.b, r.h, r.i, j);
      if (!(s > NEG_INF)) continue;
      F pr = ex(s - m) * inv;
      F ds = pr * (vjp_dot(gr, v + j * p.vs[2], p.Dv, lane) - delta);
#pragma unroll
      for (int e = 0; e < VJP_E; ++e) {
        int d = lane + 32 * e;
        if (d < p.D) dq[e] += ds * to_acc<T>(kj[d]);
      }
    }
    T* out = (T*)p.out + row * p.D;
#pragma unroll
    for (int e = 0; e < VJP_E; ++e) {
      int d = lane + 32 * e;
      if (d < p.D) out[d] = from_acc<T>(dq[e] * p.scale);
    }
  }
}

extern "C" __global__ void attn_vjp_dkv(Attn p, const T* __restrict__ g, const F* __restrict__ stat) {
  int lane = threadIdx.x % 32;
  i64 keys = (i64)p.B * p.Hkv * p.S;
  int group = p.Hq / p.Hkv;
  T* dk_out = (T*)p.out + (i64)p.B * p.Hq * p.L * p.D;
  T* dv_out = dk_out + keys * p.D;
  for (i64 key = (i64)blockIdx.x * VJP_WARPS + threadIdx.x / 32; key < keys; key += (i64)gridDim.x * VJP_WARPS) {
    int j = (int)(key % p.S);
    i64 bk = key / p.S;
    int kh = (int)(bk % p.Hkv), b = (int)(bk / p.Hkv);
    F kr[VJP_E], vr[VJP_E], dk[VJP_E], dv[VJP_E];
    vjp_load(kr, (const T*)p.k + b * p.ks[0] + kh * p.ks[1] + j * p.ks[2], p.D, lane);
    vjp_load(vr, (const T*)p.v + b * p.vs[0] + kh * p.vs[1] + j * p.vs[2], p.Dv, lane);
#pragma unroll
    for (int e = 0; e < VJP_E; ++e) dk[e] = dv[e] = 0;
    for (int h = kh * group; h < (kh + 1) * group; ++h) {
      for (int i = p.mkind == 1 ? max(0, j - p.S + p.L) : 0; i < p.L; ++i) {
        i64 row = ((i64)b * p.Hq + h) * p.L + i;
        F inv = stat[3 * row + 1];
        if (!(inv > 0)) continue;
        const T* q = (const T*)p.q + b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
        const T* gr = g + row * p.Dv;
        F s = masked_score(p, vjp_dot(kr, q, p.D, lane), b, h, i, j);
        if (!(s > NEG_INF)) continue;
        F pr = ex(s - stat[3 * row]) * inv;
        F ds = pr * (vjp_dot(vr, gr, p.Dv, lane) - stat[3 * row + 2]);
#pragma unroll
        for (int e = 0; e < VJP_E; ++e) {
          int d = lane + 32 * e;
          if (d < p.D) dk[e] += ds * to_acc<T>(q[d]);
          if (d < p.Dv) dv[e] += pr * to_acc<T>(gr[d]);
        }
      }
    }
#pragma unroll
    for (int e = 0; e < VJP_E; ++e) {
      int d = lane + 32 * e;
      if (d < p.D) dk_out[key * p.D + d] = from_acc<T>(dk[e] * p.scale);
      if (d < p.Dv) dv_out[key * p.Dv + d] = from_acc<T>(dv[e]);
    }
  }
}

#ifdef ATTN_F64
// ---- The forward pass in f64: a warp per query row (VJP_WARPS rows a block), lanes holding
// head dims lane + 32 e of q and of the output, one sweep over the row's visible keys with an
// online softmax in double. Masked keys are skipped (a row that sees none gets zeros); a NaN
// score makes the row NaN, as on the CPU. The output is row-major [B, Hq, L, Dv].
extern "C" __global__ void attn_rows(Attn p) {
  int lane = threadIdx.x % 32;
  i64 rows = (i64)p.B * p.Hq * p.L;
  for (i64 row = (i64)blockIdx.x * VJP_WARPS + threadIdx.x / 32; row < rows; row += (i64)gridDim.x * VJP_WARPS) {
    VjpRow r = vjp_row(p, row);
    F qr[VJP_E], acc[VJP_E];
    vjp_load(qr, r.q, p.D, lane);
#pragma unroll
    for (int e = 0; e < VJP_E; ++e) acc[e] = 0;
    const T *k = r.k, *v = r.v;
    F m = NEG_INF, l = 0;
    for (int j = 0, end = vjp_key_end(p, r.i); j < end; ++j) {
      F s = masked_score(p, vjp_dot(qr, k + j * p.ks[2], p.D, lane), r.b, r.h, r.i, j);
      if (s == NEG_INF) continue;
      const T* vj = v + j * p.vs[2];
      // The first visible key, and any larger score, rescales what came before.
      F c = 1, w = 1;
      if (s > m) {
        c = ex(m - s);
        m = s;
      } else {
        w = ex(s - m);
      }
      l = l * c + w;
#pragma unroll
      for (int e = 0; e < VJP_E; ++e) {
        int d = lane + 32 * e;
        if (d < p.Dv) acc[e] = acc[e] * c + w * to_acc<T>(vj[d]);
      }
    }
    T* out = (T*)p.out + row * p.Dv;
#pragma unroll
    for (int e = 0; e < VJP_E; ++e) {
      int d = lane + 32 * e;
      if (d < p.Dv) out[d] = from_acc<T>(l > 0 ? acc[e] / l : (F)0);
    }
  }
}
#endif
