// Sorting along an axis (sort, argsort, partition, argpartition): a bitonic sort of each line
// padded to a power of two P, on (key, index) pairs. The key is the element mapped to a u64
// whose unsigned order is the CPU's order (NaN last, -0 tied with +0); ties go to the lower
// index, so the order is total and the result is the CPU's stable sort exactly. Padding
// (key ~0, index ~0) sorts after every element. The output's values are read back from the
// input by index, so they are the input's own bits.
//
// A block sorts chunks of C <= 2048 pairs in shared memory; longer lines merge across chunks
// with one global pass per distance >= C, then finish each merge stage in shared memory.

template <typename V> __device__ __forceinline__ u64 sort_key(V v) {
  if constexpr (Is<V>::flt) {
    double d = to_f64<V>(v);
    if (d != d) return ~0ull;
    if (d == 0.0) d = 0.0;
    u64 b = (u64)__double_as_longlong(d);
    return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
  } else if constexpr (Is<V>::bln) {
    return (u64)v;
  } else if constexpr (Is<V>::sgn) {
    return (u64)(i64)v ^ 0x8000000000000000ull;
  } else {
    return (u64)v;
  }
}

// (ka, ia) after (kb, ib) in the total order.
__device__ __forceinline__ bool sort_after(u64 ka, u32 ia, u64 kb, u32 ib) { return ka > kb || (ka == kb && ia > ib); }

// keys / idx [lines, P] from x: l holds the lines (the sorted axis as size 1; st[0]: x's
// strides); the axis has n elements at stride s.
extern "C" __global__ void sort_init(u64* __restrict__ keys, u32* __restrict__ idx, const T* __restrict__ x, Layout l,
                                     i64 n, i64 s, i64 P) {
  GRID_LOOP(i, l.n * P) {
    i64 line = i / P, j = i - line * P;
    if (j < n) {
      i64 o[1];
      offsets<1>(l, line, o);
      keys[i] = sort_key<T>(x[o[0] + j * s]);
      idx[i] = (u32)j;
    } else {
      keys[i] = ~0ull;
      idx[i] = 0xFFFFFFFFu;
    }
  }
}

// The compare-exchange of the pair (i, i + j) of one line for merge stage k.
__device__ __forceinline__ void sort_step(u64* k_, u32* i_, i64 i, i64 gi, i64 j, i64 k) {
  i64 m = i + j;
  bool up = (gi & k) == 0;
  u64 ka = k_[i], kb = k_[m];
  u32 ia = i_[i], ib = i_[m];
  if (up == sort_after(ka, ia, kb, ib)) {
    k_[i] = kb;
    k_[m] = ka;
    i_[i] = ib;
    i_[m] = ia;
  }
}

// Stages k_first..k_last (distances from j_first down to 1 in the first, k/2 down in the
// others) on chunks of C pairs: a block of C/2 threads per chunk, grid lines * P / C.
extern "C" __global__ void sort_shared(u64* __restrict__ keys, u32* __restrict__ idx, i64 P, i64 C, i64 k_first,
                                       i64 k_last, i64 j_first) {
  extern __shared__ u64 sk[];
  u32* si = (u32*)(sk + C);
  i64 chunks = P / C;
  i64 line = blockIdx.x / chunks, c = blockIdx.x - line * chunks;
  i64 base = line * P + c * C;
  for (i64 t = threadIdx.x; t < C; t += blockDim.x) {
    sk[t] = keys[base + t];
    si[t] = idx[base + t];
  }
  __syncthreads();
  for (i64 k = k_first; k <= k_last; k <<= 1) {
    for (i64 j = (k == k_first ? j_first : k >> 1); j > 0; j >>= 1) {
      for (i64 t = threadIdx.x; t < C / 2; t += blockDim.x) {
        i64 i = 2 * j * (t / j) + (t % j);
        sort_step(sk, si, i, c * C + i, j, k);
      }
      __syncthreads();
    }
  }
  for (i64 t = threadIdx.x; t < C; t += blockDim.x) {
    keys[base + t] = sk[t];
    idx[base + t] = si[t];
  }
}

// One distance j (>= C) of merge stage k over every line, in global memory.
extern "C" __global__ void sort_global(u64* __restrict__ keys, u32* __restrict__ idx, i64 lines, i64 P, i64 k, i64 j) {
  i64 half = P / 2;
  GRID_LOOP(t, lines * half) {
    i64 line = t / half, tt = t - line * half;
    i64 i = 2 * j * (tt / j) + (tt % j);
    sort_step(keys + line * P, idx + line * P, i, i, j, k);
  }
}

// The first n pairs of each line to the output: indices (u32) when want_idx, else the input
// elements they name. l: the lines (st[0]: x's strides, st[1]: the output's); the axis has
// stride s in x and os in the output.
extern "C" __global__ void sort_finish(void* __restrict__ out, const T* __restrict__ x, const u32* __restrict__ idx,
                                       Layout l, i64 n, i64 s, i64 os, i64 P, int want_idx) {
  GRID_LOOP(i, l.n * n) {
    i64 line = i / n, j = i - line * n;
    i64 o[2];
    offsets<2>(l, line, o);
    u32 id = idx[line * P + j];
    if (want_idx)
      ((u32*)out)[o[1] + j * os] = id;
    else
      ((T*)out)[o[1] + j * os] = x[o[0] + (i64)id * s];
  }
}
