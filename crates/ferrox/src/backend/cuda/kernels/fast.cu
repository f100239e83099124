// Row kernels over the last axis of a row-major input: softmax, logsumexp, rms_norm,
// layer_norm and the norms' input gradient, each taking (out, x, rows, n, ...): one block of
// FBLOCK threads per row, computing in the compute type A (f32 for half types). And rope.
#define FBLOCK 256
typedef acc_t<T> A;

template <typename V>
__device__ __forceinline__ V block_sum(V v) {
  __shared__ V sh[FBLOCK];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = FBLOCK / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] = sh[threadIdx.x] + sh[threadIdx.x + w];
    __syncthreads();
  }
  V r = sh[0];
  __syncthreads();
  return r;
}
template <typename V>
__device__ __forceinline__ V block_max(V v) {
  __shared__ V sh[FBLOCK];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = FBLOCK / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
      V a = sh[threadIdx.x], b = sh[threadIdx.x + w];
      sh[threadIdx.x] = (a != a || b != b) ? a + b : (a > b ? a : b);
    }
    __syncthreads();
  }
  V r = sh[0];
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

// w: the weight (stride ws; null for none).
extern "C" __global__ void rms_norm(T* __restrict__ out, const T* __restrict__ x, i64 rows, i64 n,
                                    const T* __restrict__ w, i64 ws, float eps) {
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

// x [rows, d] row-major, rows cycling through l positions; the first `dims` features rotate.
// The offset is an integer scalar on the device (i64 if off64 is 1, i32 if 0), or, when
// off64 is 2, the value off_value (an offset still on the host needs no upload). Angles in f64.
// freqs: custom frequencies (f32, stride fs; the inverse frequency is 1 / freqs[i]), or null.
// x's rows (all axes but the last) are at the offsets `rows_l` gives; each row is contiguous.
extern "C" __global__ void rope(T* __restrict__ out, const T* __restrict__ x, Layout rows_l, const void* offset, int off64,
                                i64 off_value, i64 rows, i64 l, i64 d, i64 dims, int traditional, float base, float scale,
                                const float* __restrict__ freqs, i64 fs) {
  i64 half = dims / 2;
  double off = off64 == 2 ? (double)off_value : off64 ? (double)*(const i64*)offset : (double)*(const i32*)offset;
  GRID_LOOP(t, rows * d) {
    i64 r = t / d, j = t % d, xo;
    offsets<1>(rows_l, r, &xo);
    const T* xr = x + xo;
    if (j >= 2 * half) {
      out[t] = xr[j];
      continue;
    }
    i64 i, ia, ib;  // frequency index, the pair's two features
    bool first;
    if (traditional) {
      i = j / 2;
      ia = 2 * i;
      ib = ia + 1;
      first = (j % 2) == 0;
    } else {
      i = j < half ? j : j - half;
      ia = i;
      ib = i + half;
      first = j < half;
    }
    double inv_freq = freqs ? 1.0 / (double)freqs[i * fs] : pow((double)base, -(2.0 * (double)i) / (double)dims);
    double ang = (off + (double)(r % l)) * (double)scale * inv_freq;
    A c = (A)cos(ang), s = (A)sin(ang);
    A a = to_acc<T>(xr[ia]), b = to_acc<T>(xr[ib]);
    out[t] = from_acc<T>(first ? a * c - b * s : a * s + b * c);
  }
}
