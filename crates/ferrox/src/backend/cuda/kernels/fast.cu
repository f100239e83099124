// Row kernels over the last axis of a row-major input: softmax, logsumexp, rms_norm,
// layer_norm and the norms' input gradient, each taking (out, x, rows, n, ...): one block of
// FBLOCK threads per row, computing in the compute type A (f32 for half types). And rope.
#define FBLOCK 256
typedef acc_t<T> A;

// Block-wide sum and max (NaN propagating) of one value a thread: warp shuffles (common.cuh's
// warp_sum), then the warps' results through shared memory (every thread of the block must
// call them).
template <typename V>
__device__ __forceinline__ V block_sum(V v) {
  __shared__ V sh[FBLOCK / 32];
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  V r = sh[0];
#pragma unroll
  for (int i = 1; i < FBLOCK / 32; ++i) r = r + sh[i];
  __syncthreads();
  return r;
}
template <typename V>
__device__ __forceinline__ V max_nan(V a, V b) {
  return (a != a || b != b) ? a + b : (a > b ? a : b);
}
template <typename V>
__device__ __forceinline__ V block_max(V v) {
  __shared__ V sh[FBLOCK / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  V r = sh[0];
#pragma unroll
  for (int i = 1; i < FBLOCK / 32; ++i) r = max_nan(r, sh[i]);
  __syncthreads();
  return r;
}
__device__ __forceinline__ float f_exp(float x) { return expf(x); }
__device__ __forceinline__ double f_exp(double x) { return exp(x); }
__device__ __forceinline__ float f_log(float x) { return logf(x); }
__device__ __forceinline__ double f_log(double x) { return log(x); }
__device__ __forceinline__ float f_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double f_sqrt(double x) { return sqrt(x); }

extern "C" __global__ void softmax(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n) {
  OVERLAPPED_START();
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* orow = out + r * n;
    A m = -1.0 / 0.0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A v = to_acc<T>(xr[i]);
      m = (m != m || v != v) ? m + v : (v > m ? v : m);
    }
    m = block_max(m);
    A s = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) s += f_exp(to_acc<T>(xr[i]) - m);
    A inv = (A)1 / block_sum(s);
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) orow[i] = from_acc<T>(f_exp(to_acc<T>(xr[i]) - m) * inv);
  }
}

// log(sum(exp(x))) of each row; a row whose max is not finite is summed directly in f64.
extern "C" __global__ void logsumexp(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n) {
  OVERLAPPED_START();
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    A m = -1.0 / 0.0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A v = to_acc<T>(xr[i]);
      m = (m != m || v != v) ? m + v : (v > m ? v : m);
    }
    m = block_max(m);
    if (m - m != 0) {
      double s = 0;
      for (i64 i = threadIdx.x; i < n; i += FBLOCK) s += exp((double)to_acc<T>(xr[i]));
      s = block_sum(s);
      if (threadIdx.x == 0) out[r] = from_acc<T>((A)log(s));
      continue;
    }
    A s = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) s += f_exp(to_acc<T>(xr[i]) - m);
    s = block_sum(s);
    if (threadIdx.x == 0) out[r] = from_acc<T>(f_log(s) + m);
  }
}

// logsumexp of a few long rows, split across blocks (grid: parts × rows): block p leaves the
// max of its slice of the row and the sum of exp(x - max) over it in part[row, p];
// logsumexp_join then weighs each part's sum by exp(its max - the row's max). A non-finite
// row max is the result itself (+inf, -inf when every x is -inf, or NaN).
extern "C" __global__ void logsumexp_part(A* __restrict__ part, const T* __restrict__ x, i64 n, i64 parts) {
  const i64 r = blockIdx.y, chunk = (n + parts - 1) / parts;
  const i64 i0 = blockIdx.x * chunk, i1 = min(n, i0 + chunk);
  const T* xr = x + r * n;
  A m = -1.0 / 0.0;
  for (i64 i = i0 + threadIdx.x; i < i1; i += FBLOCK) m = max_nan(m, to_acc<T>(xr[i]));
  m = block_max(m);
  A s = 0;
  if (m - m == 0)
    for (i64 i = i0 + threadIdx.x; i < i1; i += FBLOCK) s += f_exp(to_acc<T>(xr[i]) - m);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    part[2 * (r * parts + blockIdx.x)] = m;
    part[2 * (r * parts + blockIdx.x) + 1] = s;
  }
}
extern "C" __global__ void logsumexp_join(T* __restrict__ out, const A* __restrict__ part, i64 parts) {
  const A* pr = part + 2 * blockIdx.x * parts;
  A m = -1.0 / 0.0;
  for (i64 p = threadIdx.x; p < parts; p += FBLOCK) m = max_nan(m, pr[2 * p]);
  m = block_max(m);
  A s = 0;
  if (m - m == 0)
    for (i64 p = threadIdx.x; p < parts; p += FBLOCK) {
      const A mp = pr[2 * p];
      if (mp != (A)(-1.0 / 0.0)) s += pr[2 * p + 1] * f_exp(mp - m);
    }
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = from_acc<T>(m - m == 0 ? f_log(s) + m : m);
}

// rms_norm's vector steps, shared by its kernels: ss += each element of v squared, in order;
// v's elements times scale and (with a weight) w's.
__device__ __forceinline__ void add_squares(A& ss, const uint4& v) {
  const T* e = (const T*)&v;
#pragma unroll
  for (int u = 0; u < 16 / (int)sizeof(T); ++u) {
    const A a = to_acc<T>(e[u]);
    ss += a * a;
  }
}
__device__ __forceinline__ uint4 rms_scaled(const uint4& v, const uint4& wv, bool has_w, A scale) {
  const T* e = (const T*)&v;
  const T* we = (const T*)&wv;
  uint4 o;
  T* oe = (T*)&o;
#pragma unroll
  for (int u = 0; u < 16 / (int)sizeof(T); ++u) oe[u] = from_acc<T>(to_acc<T>(e[u]) * scale * (has_w ? to_acc<T>(we[u]) : (A)1));
  return o;
}

// Many rows (a prompt's): a warp a row, each lane keeping its RMS_WARP_VECS 16-byte vectors of
// the row for the scaling, summed by shuffles alone. A block a row leaves most of each row's
// time to the block-wide reduction's barriers, with a few bytes in flight a thread.
#define RMS_WARP_VECS 8
extern "C" __global__ void rms_norm_rows(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n,
                                         const T* __restrict__ w, i64 ws, float eps) {
  constexpr int CH = 16 / (int)sizeof(T);
  const int lane = threadIdx.x & 31;
  const i64 warps = (i64)gridDim.x * (FBLOCK / 32), nv = n / CH;
  const bool vec = n % CH == 0 && nv <= RMS_WARP_VECS * 32 && (!w || ws == 1) && ((u64)out | (u64)x | (u64)w) % 16 == 0;
  OVERLAPPED_START();
  for (i64 r = (i64)blockIdx.x * (FBLOCK / 32) + (threadIdx.x >> 5); r < rows; r += warps) {
    const T* xr = x + r * n;
    T* orow = out + r * n;
    A ss = 0;
    if (vec) {
      uint4 xv[RMS_WARP_VECS];
#pragma unroll
      for (int j = 0; j < RMS_WARP_VECS; ++j)
        if (lane + 32 * j < nv) xv[j] = *((const uint4*)xr + lane + 32 * j);
#pragma unroll
      for (int j = 0; j < RMS_WARP_VECS; ++j)
        if (lane + 32 * j < nv) add_squares(ss, xv[j]);
      const A scale = (A)1 / f_sqrt(warp_sum(ss) * ((A)1 / (A)n) + (A)eps);
#pragma unroll
      for (int j = 0; j < RMS_WARP_VECS; ++j) {
        const i64 v = lane + 32 * j;
        if (v < nv) {
          uint4 wv;
          if (w) wv = *((const uint4*)w + v);
          *((uint4*)orow + v) = rms_scaled(xv[j], wv, w, scale);
        }
      }
      continue;
    }
    for (i64 i = lane; i < n; i += 32) {
      const A v = to_acc<T>(xr[i]);
      ss += v * v;
    }
    const A scale = (A)1 / f_sqrt(warp_sum(ss) * ((A)1 / (A)n) + (A)eps);
    for (i64 i = lane; i < n; i += 32) orow[i] = from_acc<T>(to_acc<T>(xr[i]) * scale * (w ? to_acc<T>(w[i * ws]) : (A)1));
  }
}

// Rows of at most RMS_VECS 16-byte vectors a thread, all aligned, a contiguous weight (or
// none): each thread loads its vectors of x and w at once and keeps x for the scaling (a
// decode step's rms_norm is one row: one round trip to memory instead of a loop of 2-byte
// loads, and the weight's lines start toward L2 before the wait).
#define RMS_VECS 4
template <int NV>
__device__ __forceinline__ void rms_norm_vec(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n,
                                             const T* __restrict__ w, float eps) {
  constexpr int CH = 16 / (int)sizeof(T);
  const i64 nv = n / CH;
  if (w)
    for (i64 v = threadIdx.x; v < nv; v += FBLOCK) prefetch_l2((const uint4*)w + v);
  OVERLAPPED_START();
  uint4 wv[NV];
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const i64 v = threadIdx.x + (i64)j * FBLOCK;
    if (w && v < nv) wv[j] = *((const uint4*)w + v);
  }
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    uint4 xv[NV];
    A ss = 0;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const i64 v = threadIdx.x + (i64)j * FBLOCK;
      if (v < nv) {
        xv[j] = *((const uint4*)(x + r * n) + v);
        add_squares(ss, xv[j]);
      }
    }
    ss = block_sum(ss);
    const A scale = (A)1 / f_sqrt(ss * ((A)1 / (A)n) + (A)eps);
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const i64 v = threadIdx.x + (i64)j * FBLOCK;
      if (v < nv) *((uint4*)(out + r * n) + v) = rms_scaled(xv[j], wv[j], w, scale);
    }
  }
}

// w: the weight (stride ws; null for none).
extern "C" __global__ void rms_norm(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n,
                                    const T* __restrict__ w, i64 ws, float eps) {
  constexpr int CH = 16 / (int)sizeof(T);
  if (n % CH == 0 && n <= (i64)RMS_VECS * FBLOCK * CH && (!w || ws == 1) && ((u64)out | (u64)x | (u64)w) % 16 == 0) {
    rms_norm_vec<RMS_VECS>(out, x, rows, n, w, eps);
    return;
  }
  OVERLAPPED_START();
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    A ss = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A v = to_acc<T>(xr[i]);
      ss += v * v;
    }
    ss = block_sum(ss);
    A scale = (A)1 / f_sqrt(ss * ((A)1 / (A)n) + (A)eps);
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A wv = w ? to_acc<T>(w[i * ws]) : (A)1;
      out[r * n + i] = from_acc<T>(to_acc<T>(xr[i]) * scale * wv);
    }
  }
}

// w, b: weight and bias (strides ws, bs; null for none).
extern "C" __global__ void layer_norm(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n,
                                      const T* __restrict__ w, i64 ws, const T* __restrict__ b, i64 bs, float eps) {
  OVERLAPPED_START();
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    A s = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) s += to_acc<T>(xr[i]);
    A inv_n = (A)1 / (A)n;
    A mean = block_sum(s) * inv_n;
    A ss = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A c = to_acc<T>(xr[i]) - mean;
      ss += c * c;
    }
    ss = block_sum(ss);
    A scale = (A)1 / f_sqrt(ss * inv_n + (A)eps);
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A wv = w ? to_acc<T>(w[i * ws]) : (A)1;
      A v = (to_acc<T>(xr[i]) - mean) * scale * wv;
      if (b) v = v + to_acc<T>(b[i * bs]);
      out[r * n + i] = from_acc<T>(v);
    }
  }
}

// The input gradient of rms_norm (centered 0) or layer_norm (centered 1) for the cotangent
// gr (row-major like x) and the weight w (stride ws; null for none). With h = gr * w,
// x̂ = (x - mean) r and r = 1 / sqrt(var + eps): dx = r (h - mean(h) - x̂ mean(h x̂)), where
// the first mean is left out for rms_norm (whose mean is 0).
extern "C" __global__ void norm_vjp(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n,
                                    const T* __restrict__ gr, const T* __restrict__ w, i64 ws, float eps, int centered) {
  OVERLAPPED_START();
  A inv_n = (A)1 / (A)n;
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    const T* gw = gr + r * n;
    A mean = 0;
    if (centered) {
      A s = 0;
      for (i64 i = threadIdx.x; i < n; i += FBLOCK) s += to_acc<T>(xr[i]);
      mean = block_sum(s) * inv_n;
    }
    A ss = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A c = to_acc<T>(xr[i]) - mean;
      ss += c * c;
    }
    ss = block_sum(ss);
    A rs = (A)1 / f_sqrt(ss * inv_n + (A)eps);
    A sh = 0, shx = 0;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A h = to_acc<T>(gw[i]) * (w ? to_acc<T>(w[i * ws]) : (A)1);
      sh += h;
      shx += h * ((to_acc<T>(xr[i]) - mean) * rs);
    }
    A m1 = centered ? block_sum(sh) * inv_n : (A)0;
    A m2 = block_sum(shx) * inv_n;
    for (i64 i = threadIdx.x; i < n; i += FBLOCK) {
      A h = to_acc<T>(gw[i]) * (w ? to_acc<T>(w[i * ws]) : (A)1);
      A xhat = (to_acc<T>(xr[i]) - mean) * rs;
      out[r * n + i] = from_acc<T>(rs * (h - m1 - xhat * m2));
    }
  }
}

// x [rows, d], row r at rows_l's offset of r (each row contiguous), rows cycling through l
// positions (position off + r % l); out row-major. The first `dims` features rotate: one angle,
// its sine and cosine once, in f64. The offset is an integer scalar on the device (i64 if off64
// is 1, i32 if 0), or, when off64 is 2, the value off_value (an offset still on the host needs
// no upload). freqs: custom frequencies (f32, stride fs; the inverse frequency is 1 / freqs[i]),
// or null. rope: a thread per rotated pair or unrotated feature of a row (a decode step: its few
// thousand threads spread over many multiprocessors, and the kernel's code stays small — a
// decode step's kernels start with cold instruction caches).
#define ROPE_ARGS                                                                                                  \
  T *__restrict__ out, const T *__restrict__ x, Layout rows_l, const void *offset, int off64, i64 off_value, i64 rows, \
      i64 l, i64 d, i64 dims, int traditional, float base, float scale, const float *__restrict__ freqs, i64 fs
#define ROPE_PASS out, x, rows_l, offset, off64, off_value, rows, l, d, dims, traditional, base, scale, freqs, fs
// Where rope_write also puts a decode step's keys and values (Op::RopeWrite; l is 1, so row r
// is head r % heads of batch row r / heads): rotated heads keys_from .. keys_from + kv_heads go
// to kc, and source heads vsrc (element (b, h, e) at b · vs_b + h · vs_h + e · vs_e) to vc, both
// row-major [B, kv_heads, len, d] caches, at the offset's position wrapped into 0 .. len.
#define CACHE_ARGS                                                                                  \
  T *__restrict__ kc, i64 keys_from, T *__restrict__ vc, const T *__restrict__ vsrc, i64 vs_b, i64 vs_h, \
      i64 vs_e, i64 kv_heads, i64 len, i64 heads
__device__ __forceinline__ void rope_impl(ROPE_ARGS, CACHE_ARGS) {
  OVERLAPPED_START();
  const i64 half = dims / 2, per = d - half;
  const double off = (double)rope_position(offset, off64, off_value);
  const i64 pos = wrap_index((i64)off, len), values = vc ? rows / heads * kv_heads * d : 0;
  GRID_LOOP(t, rows * per + values) {
    if (t >= rows * per) {
      const i64 e = t - rows * per, b = e / (kv_heads * d), h = e / d % kv_heads, j = e % d;
      vc[((b * kv_heads + h) * len + pos) * d + j] = vsrc[b * vs_b + h * vs_h + j * vs_e];
      continue;
    }
    i64 r = t / per, q = t % per, xo;
    offsets<1>(rows_l, r, &xo);
    const T* xr = x + xo;
    T* orow = out + r * d;
    T* krow = nullptr;
    if (kc) {
      const i64 h = r % heads - keys_from;
      if (h >= 0 && h < kv_heads) krow = kc + ((r / heads * kv_heads + h) * len + pos) * d;
    }
    if (q >= half) {
      const i64 j = 2 * half + (q - half);
      orow[j] = xr[j];
      if (krow) krow[j] = xr[j];
      continue;
    }
    // Frequency q rotates features (ia, ib): neighbours, or the two halves.
    const i64 ia = traditional ? 2 * q : q, ib = traditional ? 2 * q + 1 : q + half;
    A c, s;
    rope_sincos<A>((off + (double)(r % l)) * (double)scale * rope_inv_freq<A>(freqs, fs, base, q, dims), &s, &c);
    A a = to_acc<T>(xr[ia]), b = to_acc<T>(xr[ib]);
    const T ra = from_acc<T>(a * c - b * s), rb = from_acc<T>(a * s + b * c);
    orow[ia] = ra;
    orow[ib] = rb;
    if (krow) {
      krow[ia] = ra;
      krow[ib] = rb;
    }
  }
}
extern "C" __global__ void rope(ROPE_ARGS) { rope_impl(ROPE_PASS, nullptr, 0, nullptr, nullptr, 0, 0, 0, 0, 1, 1); }
extern "C" __global__ void rope_write(ROPE_ARGS, CACHE_ARGS) {
  rope_impl(ROPE_PASS, kc, keys_from, vc, vsrc, vs_b, vs_h, vs_e, kv_heads, len, heads);
}
// rope over a prompt: a thread per (ROPE_HEADS heads, position, rotated pair or unrotated
// feature), its heads' values loaded at once and one angle for all (the f64 sine and cosine
// cost more than the bytes a head moves: 2047 positions of Llama-3.2-1B's 40 q / k heads
// 61 -> 31 us, scripts/cuda-bench/rope_bench.cu, H200).
#define ROPE_HEADS 8
extern "C" __global__ void rope_heads(ROPE_ARGS) {
  OVERLAPPED_START();
  const i64 half = dims / 2, per = d - half, heads = rows / l;
  const i64 items = (heads + ROPE_HEADS - 1) / ROPE_HEADS * l * per;
  const double off = (double)rope_position(offset, off64, off_value);
  GRID_LOOP(t, items) {
    i64 q, pos, h0;
    if (items <= 0x7fffffff) {  // 32-bit division where it fits
      const u32 tt = (u32)t, rest = tt / (u32)per;
      q = tt % (u32)per, pos = rest % (u32)l, h0 = (i64)(rest / (u32)l) * ROPE_HEADS;
    } else {
      const i64 rest = t / per;
      q = t % per, pos = rest % l, h0 = rest / l * ROPE_HEADS;
    }
    const int nh = (int)min((i64)ROPE_HEADS, heads - h0);
    i64 xo[ROPE_HEADS];
    if (per % 32 == 0) {
      // A warp's lanes share the position and the heads (whole warps run each pass, since
      // items is a multiple of 32): lane k finds head k's row, and every lane reads them all.
      i64 mine = 0;
      const int lane = threadIdx.x & 31;
      if (lane < nh) offsets<1>(rows_l, (h0 + lane) * l + pos, &mine);
#pragma unroll
      for (int k = 0; k < ROPE_HEADS; ++k) xo[k] = __shfl_sync(0xffffffffu, mine, k);
    } else {
#pragma unroll
      for (int k = 0; k < ROPE_HEADS; ++k)
        if (k < nh) offsets<1>(rows_l, (h0 + k) * l + pos, &xo[k]);
    }
    if (q >= half) {
      const i64 j = 2 * half + (q - half);
#pragma unroll
      for (int k = 0; k < ROPE_HEADS; ++k)
        if (k < nh) out[((h0 + k) * l + pos) * d + j] = x[xo[k] + j];
      continue;
    }
    const i64 ia = traditional ? 2 * q : q, ib = traditional ? 2 * q + 1 : q + half;
    A xa[ROPE_HEADS], xb[ROPE_HEADS];
#pragma unroll
    for (int k = 0; k < ROPE_HEADS; ++k)
      if (k < nh) xa[k] = to_acc<T>(x[xo[k] + ia]), xb[k] = to_acc<T>(x[xo[k] + ib]);
    A c, s;
    rope_sincos<A>((off + (double)pos) * (double)scale * rope_inv_freq<A>(freqs, fs, base, q, dims), &s, &c);
#pragma unroll
    for (int k = 0; k < ROPE_HEADS; ++k)
      if (k < nh) {
        T* orow = out + ((h0 + k) * l + pos) * d;
        orow[ia] = from_acc<T>(xa[k] * c - xb[k] * s);
        orow[ib] = from_acc<T>(xa[k] * s + xb[k] * c);
      }
  }
}
