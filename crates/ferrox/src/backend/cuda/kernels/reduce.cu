// Reductions over axes and arg-reductions: one block of RBLOCK threads per output element.
// T is the module's input dtype; the Rust side defines it and instantiates the kernels.
#define RBLOCK 256

// Block-wide combination of one value per thread; thread 0 gets the result.
template <typename V, typename F>
__device__ __forceinline__ V block_combine(V v, F f) {
  __shared__ V sh[RBLOCK];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = RBLOCK / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] = f(sh[threadIdx.x], sh[threadIdx.x + w]);
    __syncthreads();
  }
  V r = sh[0];
  __syncthreads();
  return r;
}

typedef acc_t<T> A;

// The identities of max and min: -inf / +inf for floats, the element type's extremes for
// integers (not the compute type's), false / true for bool.
__device__ __forceinline__ A lowest() {
  if constexpr (Is<T>::bln) return false;
  else return to_acc<T>(from_f64<T>(-1.0 / 0.0));
}
__device__ __forceinline__ A highest() {
  if constexpr (Is<T>::bln) return true;
  else return to_acc<T>(from_f64<T>(1.0 / 0.0));
}

// lo: the kept axes (n outputs, st[0] the input's strides); lr: the reduced axes. Three
// kernels per reduction: reduce_NAME (one block per output), and for few outputs with long
// rows, reduce_part_NAME (block j * parts + p folds part p of row j into part[], in the
// compute type) then reduce_join_NAME (one block per output folds its parts).
#define REDUCE(NAME, V, INIT, MAP, F, OUT_T, FINISH)                                                 \
  extern "C" __global__ void reduce_##NAME(OUT_T* __restrict__ out, const T* __restrict__ in, Layout lo,  \
                                           Layout lr) {                                              \
    for (i64 j = blockIdx.x; j < lo.n; j += gridDim.x) {                                              \
      i64 base[1];                                                                                    \
      offsets<1>(lo, j, base);                                                                        \
      V acc = INIT;                                                                                   \
      for (i64 r = threadIdx.x; r < lr.n; r += RBLOCK) {                                              \
        i64 o[1];                                                                                     \
        offsets<1>(lr, r, o);                                                                         \
        T x = in[base[0] + o[0]];                                                                     \
        acc = F(acc, (MAP));                                                                          \
      }                                                                                               \
      acc = block_combine(acc, [](V a, V b) { return F(a, b); });                                      \
      if (threadIdx.x == 0) out[j] = FINISH;                                                          \
    }                                                                                                 \
  }                                                                                                   \
  extern "C" __global__ void reduce_part_##NAME(V* __restrict__ part, const T* __restrict__ in, Layout lo, \
                                                Layout lr, i64 parts) {                               \
    i64 j = blockIdx.x / parts, p = blockIdx.x % parts;                                               \
    i64 chunk = (lr.n + parts - 1) / parts;                                                           \
    i64 r0 = p * chunk, r1 = r0 + chunk < lr.n ? r0 + chunk : lr.n;                                   \
    i64 base[1];                                                                                      \
    offsets<1>(lo, j, base);                                                                          \
    V acc = INIT;                                                                                     \
    for (i64 r = r0 + threadIdx.x; r < r1; r += RBLOCK) {                                             \
      i64 o[1];                                                                                       \
      offsets<1>(lr, r, o);                                                                           \
      T x = in[base[0] + o[0]];                                                                       \
      acc = F(acc, (MAP));                                                                            \
    }                                                                                                 \
    acc = block_combine(acc, [](V a, V b) { return F(a, b); });                                        \
    if (threadIdx.x == 0) part[blockIdx.x] = acc;                                                     \
  }                                                                                                   \
  extern "C" __global__ void reduce_join_##NAME(OUT_T* __restrict__ out, const V* __restrict__ part, i64 n, \
                                                i64 parts) {                                          \
    for (i64 j = blockIdx.x; j < n; j += gridDim.x) {                                                 \
      V acc = INIT;                                                                                   \
      for (i64 p = threadIdx.x; p < parts; p += RBLOCK) acc = F(acc, part[j * parts + p]);            \
      acc = block_combine(acc, [](V a, V b) { return F(a, b); });                                      \
      if (threadIdx.x == 0) out[j] = FINISH;                                                          \
    }                                                                                                 \
  }

// Arg-reductions: the first best element, a NaN winning (the first NaN).
struct Cand {
  A v;
  i64 i;  // -1: no element yet
  bool nan;
};
template <bool MAX>
__device__ __forceinline__ Cand arg_pick(Cand a, Cand b) {
  if (a.i < 0) return b;
  if (b.i < 0) return a;
  if (a.nan || b.nan) {
    if (a.nan && b.nan) return a.i < b.i ? a : b;
    return a.nan ? a : b;
  }
  bool b_better = MAX ? (b.v > a.v) : (b.v < a.v);
  bool a_better = MAX ? (a.v > b.v) : (a.v < b.v);
  if (b_better) return b;
  if (a_better) return a;
  return a.i < b.i ? a : b;
}
// No element yet.
__device__ __forceinline__ Cand no_cand() {
  Cand c;
  c.i = -1;
  c.nan = false;
  c.v = (A)0;
  return c;
}
// The block's pick among elements [r0, r1) of the line at `base` (stride s), in thread 0.
template <bool MAX>
__device__ __forceinline__ Cand arg_scan(const T* __restrict__ in, i64 base, i64 s, i64 r0, i64 r1) {
  Cand best = no_cand();
  for (i64 r = r0 + threadIdx.x; r < r1; r += RBLOCK) {
    Cand c;
    c.v = to_acc<T>(in[base + r * s]);
    c.i = r;
    c.nan = c.v != c.v;
    best = arg_pick<MAX>(best, c);
  }
  return block_combine(best, [](Cand a, Cand b) { return arg_pick<MAX>(a, b); });
}
// lo: outputs (st[0] the input's strides over the kept axes); the axis has n elements, stride s.
#define ARGREDUCE(NAME, MAX)                                                                          \
  extern "C" __global__ void argreduce_##NAME(u32* __restrict__ out, const T* __restrict__ in, Layout lo, \
                                              i64 n, i64 s) {                                          \
    for (i64 j = blockIdx.x; j < lo.n; j += gridDim.x) {                                                \
      i64 base[1];                                                                                      \
      offsets<1>(lo, j, base);                                                                          \
      Cand best = arg_scan<MAX>(in, base[0], s, 0, n);                                                  \
      if (threadIdx.x == 0) out[j] = (u32)best.i;                                                       \
    }                                                                                                   \
  }

// Arg-reductions of few long lines, split: block (p, j) picks among elements [p * chunk,
// (p + 1) * chunk) of line j into part[j * parts + p], then argreduce_join_NAME picks among a
// line's parts. arg_pick is a total order (ties to the lower index), so the split picks what
// one pass would.
#define ARGREDUCE_SPLIT(NAME, MAX)                                                                    \
  extern "C" __global__ void argreduce_part_##NAME(Cand* __restrict__ part, const T* __restrict__ in, \
                                                   Layout lo, i64 n, i64 s, i64 chunk) {             \
    const i64 j = blockIdx.y, p = blockIdx.x;                                                         \
    i64 base[1];                                                                                      \
    offsets<1>(lo, j, base);                                                                          \
    const i64 r1 = (p + 1) * chunk < n ? (p + 1) * chunk : n;                                         \
    Cand best = arg_scan<MAX>(in, base[0], s, p * chunk, r1);                                         \
    if (threadIdx.x == 0) part[j * gridDim.x + p] = best;                                             \
  }                                                                                                   \
  extern "C" __global__ void argreduce_join_##NAME(u32* __restrict__ out, const Cand* __restrict__ part, \
                                                   i64 parts) {                                       \
    const i64 j = blockIdx.x;                                                                         \
    Cand best = no_cand();                                                                            \
    for (i64 p = threadIdx.x; p < parts; p += RBLOCK) best = arg_pick<MAX>(best, part[j * parts + p]); \
    best = block_combine(best, [](Cand a, Cand b) { return arg_pick<MAX>(a, b); });                   \
    if (threadIdx.x == 0) out[j] = (u32)best.i;                                                       \
  }

// Scans: one block per line (lo: the lines, st[0] the input's and st[1] the output's strides);
// the line of n elements (strides si, so) is taken in chunks of RBLOCK, each scanned in
// shared memory and joined to the running total. `reverse` runs from the end; `inclusive`
// includes each element in its own output.
#define SCAN(NAME, INIT, F)                                                                           \
  extern "C" __global__ void scan_##NAME(T* __restrict__ out, const T* __restrict__ in, Layout lo, i64 n, \
                                         i64 si, i64 so, int reverse, int inclusive) {               \
    __shared__ A sh[RBLOCK];                                                                          \
    for (i64 line = blockIdx.x; line < lo.n; line += gridDim.x) {                                     \
      i64 base[2];                                                                                    \
      offsets<2>(lo, line, base);                                                                     \
      A carry = INIT;                                                                                 \
      for (i64 c0 = 0; c0 < n; c0 += RBLOCK) {                                                        \
        i64 k = c0 + threadIdx.x;                                                                     \
        i64 pos = reverse ? n - 1 - k : k;                                                            \
        A v = k < n ? to_acc<T>(in[base[0] + pos * si]) : (A)(INIT);                                  \
        sh[threadIdx.x] = v;                                                                          \
        __syncthreads();                                                                              \
        for (int w = 1; w < RBLOCK; w <<= 1) {                                                        \
          A add = threadIdx.x >= w ? sh[threadIdx.x - w] : (A)(INIT);                                 \
          __syncthreads();                                                                            \
          if (threadIdx.x >= w) sh[threadIdx.x] = F(add, sh[threadIdx.x]);                            \
          __syncthreads();                                                                            \
        }                                                                                             \
        A incl = F(carry, sh[threadIdx.x]);                                                           \
        A excl = threadIdx.x == 0 ? carry : F(carry, sh[threadIdx.x - 1]);                            \
        if (k < n) out[base[1] + pos * so] = from_acc<T>(inclusive ? incl : excl);                    \
        i64 last = (n - c0 < RBLOCK ? n - c0 : RBLOCK) - 1;                                           \
        carry = F(carry, sh[last]);                                                                   \
        __syncthreads();                                                                              \
      }                                                                                               \
    }                                                                                                 \
  }
