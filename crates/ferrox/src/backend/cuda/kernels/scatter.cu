// Scatters: scatter (index arrays on some axes, a slice per index position) and
// put_along_axis (one index per position along an axis), into a copy of the input made
// beforehand. T is the element type, I the index type.
//
// The CPU applies the updates in order. Assign keeps that result exactly: a first pass
// claims each destination for the last update position writing it (atomicMax of pos + 1 in
// `win`), a second writes only the winners. The other modes combine atomically (a
// compare-and-swap loop on the aligned word holding the element, so every dtype works):
// integer and bool results and max / min are exact, float sums and products differ from the
// CPU's only by their order of rounding.
//
// A single pass (combining, or plain writes) is launched overlapped with the kernel before
// (a decode step's KV-cache writes follow rope), hence OVERLAPPED_START; the claiming pair
// follows a memset and launches plainly, where the wait is a no-op.

// Step of a scatter kernel: claim destinations, write the winners, or combine atomically.
#define STEP_CLAIM 0
#define STEP_WRITE 1
#define STEP_COMBINE 2
// Destinations known to be distinct (one update per output element): write directly.
#define STEP_PLAIN 3

// ScatterMode's order: assign, add, prod, max, min.
template <typename V> __device__ __forceinline__ V combine(int mode, V old, V v) {
  typedef acc_t<V> A;
  A a = to_acc<V>(old), b = to_acc<V>(v);
  A r = mode == 1 ? r_add<A>(a, b) : mode == 2 ? r_mul<A>(a, b) : mode == 3 ? r_max<A>(a, b) : r_min<A>(a, b);
  return from_acc<V>(r);
}

// *p = combine(mode, *p, v), atomically (a template so that only one size's branch exists).
template <typename V> __device__ __forceinline__ void atomic_combine(V* p, V v, int mode) {
  if constexpr (sizeof(V) == 8) {
    u64* w = (u64*)p;
    u64 old = *(volatile u64*)w;
    while (true) {
      V cur = *(V*)&old;
      V nv = combine(mode, cur, v);
      u64 nb = *(u64*)&nv;
      u64 prev = atomicCAS((unsigned long long*)w, (unsigned long long)old, (unsigned long long)nb);
      if (prev == old) break;
      old = prev;
    }
  } else {
    u64 addr = (u64)p;
    u32* w = (u32*)(addr & ~(u64)3);
    u32 shift = (u32)(addr & 3) * 8;
    u32 low = sizeof(V) == 4 ? 0xFFFFFFFFu : ((1u << (8 * sizeof(V))) - 1u);
    u32 old = *(volatile u32*)w;
    while (true) {
      u32 bits = (old >> shift) & low;
      V cur;
      if constexpr (sizeof(V) == 1) *(u8*)&cur = (u8)bits;
      else if constexpr (sizeof(V) == 2) *(u16*)&cur = (u16)bits;
      else *(u32*)&cur = bits;
      V nv = combine(mode, cur, v);
      u32 nb;
      if constexpr (sizeof(V) == 1) nb = *(u8*)&nv;
      else if constexpr (sizeof(V) == 2) nb = *(u16*)&nv;
      else nb = *(u32*)&nv;
      u32 next = (old & ~(low << shift)) | (nb << shift);
      u32 prev = atomicCAS(w, old, next);
      if (prev == old) break;
      old = prev;
    }
  }
}

// Update `pos` (0-based, in the CPU's order) of value v at out[o].
__device__ __forceinline__ void apply(T* out, i64 o, T v, i64 pos, u64* win, int mode, int step) {
  if (step == STEP_CLAIM)
    atomicMax((unsigned long long*)&win[o], (unsigned long long)(pos + 1));
  else if (step == STEP_WRITE) {
    if (win[o] == (u64)(pos + 1)) out[o] = v;
  } else if (step == STEP_PLAIN)
    out[o] = v;
  else
    atomic_combine<T>(out + o, v, mode);
}

// out (row-major) at the index arrays' positions plus the slice: li is the index shape
// (st[k], k < ix.n <= 3: index array k's strides; st[3]: the updates' index-axis strides),
// ls the slice shape (st[0]: the updates' strides, st[1]: the output's).
extern "C" __global__ void scatter(T* __restrict__ out, const T* __restrict__ upd, Indices ix, Layout li, Layout ls,
                                   u64* __restrict__ win, int mode, int step) {
  OVERLAPPED_START();
  i64 slice_n = ls.n;
  GRID_LOOP(i, li.n * slice_n) {
    i64 pos = i / slice_n, j = i - pos * slice_n;
    i64 oi[4];
    offsets<4>(li, pos, oi);
    i64 base = indexed_offset<I>(ix, oi);
    i64 os[2];
    offsets<2>(ls, j, os);
    apply(out, base + os[1], upd[oi[3] + os[0]], pos, win, mode, step);
  }
}

// put_along_axis over the updates' shape l (st[0]: the values', st[1]: the output's with the
// axis stride 0, st[2]: the indices'); the output's axis has n elements at stride s.
extern "C" __global__ void put_along_axis(T* __restrict__ out, const T* __restrict__ vals, const I* __restrict__ idx,
                                          Layout l, i64 n, i64 s, u64* __restrict__ win, int mode, int step) {
  OVERLAPPED_START();
  GRID_LOOP(i, l.n) {
    i64 o[3];
    offsets<3>(l, i, o);
    apply(out, o[1] + wrap_index((i64)idx[o[2]], n) * s, vals[o[0]], i, win, mode, step);
  }
}
