// Shared by every ferrox kernel: element types, conversions with ferrox's (NumPy's) rules,
// and strided indexing. Self-contained: NVRTC compiles it without any CUDA header.
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char i8;
typedef short i16;
typedef int i32;
typedef long long i64;
struct f16 { u16 bits; };
struct bf16 { u16 bits; };

// Programmatic dependent launch (sm_90 and later): a kernel launched to overlap the one
// before it in the stream (layout.rs, launch_overlapped) waits here until that kernel has
// finished and its writes are visible; launched plainly, or on older GPUs, it returns at once.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the kernel after this one in the stream start, if it was launched overlapped: its blocks
// run what comes before their wait_for_previous_kernel (small products prefetch their weights)
// while this kernel finishes; the wait still returns only when this kernel has completed.
// Called first thing by the kernels that come before products in a decode step.
__device__ __forceinline__ void allow_next_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The first statement of a kernel launched overlapped (layout.rs, launch_overlapped) that has
// nothing to do before its inputs are ready.
#define OVERLAPPED_START()     \
  wait_for_previous_kernel(); \
  allow_next_kernel()
// The sum of v over the 32 lanes of a warp, in every lane (every lane must call it).
template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Starts moving the line holding p toward L2 (a hint: nothing waits for it).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
// Whether a decode product of `weights` elements moves them toward L2 before it waits for the
// kernel before it: worth it for the small ones, whose time is mostly that wait, and a loss for
// the large ones, where the extra requests slow the stream itself (H200, the Llama-3.2-1B
// step's 65 bf16 products as a graph: prefetching all 761 µs, none 700, the lm head 133.5 →
// 115.5 µs; q/o 3.8 → 4.3 µs; 4-bit likewise, 571 → 552 µs; scripts/cuda-bench, PERF
// session 20). The default of a benchmark may set it.
#ifndef PREFETCH_MAX_WEIGHTS
#define PREFETCH_MAX_WEIGHTS (1ll << 23)
#endif
__device__ __forceinline__ bool prefetch_weights(i64 weights) { return weights <= PREFETCH_MAX_WEIGHTS; }

#define MAXD 8
// A strided view of up to 4 operands over one logical shape of `nd` axes and `n` elements.
struct Layout {
  i64 n;
  i32 nd;
  i32 pad;
  i64 shape[MAXD];
  i64 st[4][MAXD];
};

// Element offsets of linear index i in the first K operands.
template <int K>
__device__ __forceinline__ void offsets(const Layout& l, i64 i, i64* o) {
#pragma unroll
  for (int k = 0; k < K; ++k) o[k] = 0;
  if (l.nd == 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) o[k] = i * l.st[k][0];
    return;
  }
  if (l.n <= 0x7fffffff) {
    // Index and shape fit 32 bits: 32-bit division and remainder, a fraction of the 64-bit
    // ones' instructions (which made strided elementwise kernels over a prompt's activations
    // several times slower than their bytes).
    u32 j = (u32)i;
    for (int d = l.nd - 1; d >= 0; --d) {
      const u32 s = (u32)l.shape[d], c = j % s;
      j /= s;
#pragma unroll
      for (int k = 0; k < K; ++k) o[k] += (i64)c * l.st[k][d];
    }
    return;
  }
  for (int d = l.nd - 1; d >= 0; --d) {
    i64 c = i % l.shape[d];
    i /= l.shape[d];
#pragma unroll
    for (int k = 0; k < K; ++k) o[k] += c * l.st[k][d];
  }
}

// Elements a thread of an elementwise kernel takes at once where the last axis is a multiple
// of ELEMS long and, in every operand, unit-stride or broadcast (rows_fit): one offset
// computation and one run of ELEMS elements an operand, moved 16 bytes at a time where aligned
// (load_run / store_run). One element a thread left a few bytes in flight, and a run moved by
// 2-byte accesses split every warp's store into partial sectors: both kept the kernels far
// under the memory's speed over a prompt's activations.
#define ELEMS 8
template <int K>
__device__ __forceinline__ bool rows_fit(const Layout& l) {
  if (l.nd < 1 || l.shape[l.nd - 1] % ELEMS != 0) return false;
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (l.st[k][l.nd - 1] != 1 && l.st[k][l.nd - 1] != 0) return false;
  return true;
}
// Operand k's stride along the last axis (1 or 0 where rows_fit).
__device__ __forceinline__ i64 last_stride(const Layout& l, int k) { return l.st[k][l.nd - 1]; }

// ELEMS consecutive elements of one operand, aligned for 16-byte moves.
template <typename T>
struct alignas(16) Run {
  T v[ELEMS];
};
// The run at p: consecutive elements (stride 1) or p's element repeated (stride 0).
template <typename T>
__device__ __forceinline__ Run<T> load_run(const T* __restrict__ p, i64 stride) {
  Run<T> r;
  constexpr int B = (int)sizeof(T) * ELEMS;
  if (stride == 0) {
    const T x = *p;
#pragma unroll
    for (int u = 0; u < ELEMS; ++u) r.v[u] = x;
  } else if (B % 16 == 0 && (u64)p % 16 == 0) {
#pragma unroll
    for (int c = 0; c < B / 16; ++c) ((uint4*)&r)[c] = ((const uint4*)p)[c];
  } else if (B == 8 && (u64)p % 8 == 0) {
    *(uint2*)&r = *(const uint2*)p;
  } else {
#pragma unroll
    for (int u = 0; u < ELEMS; ++u) r.v[u] = p[u];
  }
  return r;
}
// Writes run r to the ELEMS consecutive elements at p.
template <typename T>
__device__ __forceinline__ void store_run(T* __restrict__ p, const Run<T>& r) {
  constexpr int B = (int)sizeof(T) * ELEMS;
  if (B % 16 == 0 && (u64)p % 16 == 0) {
#pragma unroll
    for (int c = 0; c < B / 16; ++c) ((uint4*)p)[c] = ((const uint4*)&r)[c];
  } else if (B == 8 && (u64)p % 8 == 0) {
    *(uint2*)p = *(const uint2*)&r;
  } else {
#pragma unroll
    for (int u = 0; u < ELEMS; ++u) p[u] = r.v[u];
  }
}

#define GRID_LOOP(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// The compute ("accumulator") type of each element type, as in ferrox's element.rs.
template <typename T> struct AccT { typedef T type; };
template <> struct AccT<f16> { typedef float type; };
template <> struct AccT<bf16> { typedef float type; };
template <> struct AccT<i8> { typedef i64 type; };
template <> struct AccT<i16> { typedef i64 type; };
template <> struct AccT<i32> { typedef i64 type; };
template <> struct AccT<u8> { typedef u64 type; };
template <> struct AccT<u16> { typedef u64 type; };
template <> struct AccT<u32> { typedef u64 type; };
template <typename T> using acc_t = typename AccT<T>::type;

template <typename T> struct Is { static const bool flt = false, sgn = false, bln = false; };
template <> struct Is<float> { static const bool flt = true, sgn = true, bln = false; };
template <> struct Is<double> { static const bool flt = true, sgn = true, bln = false; };
template <> struct Is<f16> { static const bool flt = true, sgn = true, bln = false; };
template <> struct Is<bf16> { static const bool flt = true, sgn = true, bln = false; };
template <> struct Is<i8> { static const bool flt = false, sgn = true, bln = false; };
template <> struct Is<i16> { static const bool flt = false, sgn = true, bln = false; };
template <> struct Is<i32> { static const bool flt = false, sgn = true, bln = false; };
template <> struct Is<i64> { static const bool flt = false, sgn = true, bln = false; };
template <> struct Is<bool> { static const bool flt = false, sgn = false, bln = true; };

__device__ __forceinline__ float f16_to_f32(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
// Round to nearest even; NaN stays a quiet NaN with its payload's upper bits (bit for bit as
// ferrox's f32_to_bf16). From sm_80 the rounding is one instruction (the integer form took
// several a value in every bf16 kernel), NaN's bits fixed up after.
__device__ __forceinline__ u16 f32_to_bf16(float v) {
  u32 b = __float_as_uint(v);
  u16 nan = (u16)((b >> 16) | 0x0040u);
#if __CUDA_ARCH__ >= 800
  u16 rounded;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(rounded) : "f"(v));
#else
  u16 rounded = (u16)((b + (0x7FFFu + ((b >> 16) & 1u))) >> 16);
#endif
  return (b & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded;
}
// f64 to f32 rounded toward zero with a sticky last bit ("round to odd"): rounding that once
// more to f16 or bf16 gives the correctly rounded result of the f64.
__device__ __forceinline__ float f64_to_f32_odd(double d) {
  float f;
  asm("cvt.rz.f32.f64 %0, %1;" : "=f"(f) : "d"(d));
  if ((double)f != d && d == d) f = __uint_as_float(__float_as_uint(f) | 1u);
  return f;
}

template <typename T> __device__ __forceinline__ acc_t<T> to_acc(T v) { return (acc_t<T>)v; }
template <> __device__ __forceinline__ float to_acc<f16>(f16 v) { return f16_to_f32(v.bits); }
template <> __device__ __forceinline__ float to_acc<bf16>(bf16 v) { return bf16_to_f32(v.bits); }

template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> a) { return (T)a; }
template <> __device__ __forceinline__ f16 from_acc<f16>(float a) { f16 r; r.bits = f32_to_f16(a); return r; }
template <> __device__ __forceinline__ bf16 from_acc<bf16>(float a) { bf16 r; r.bits = f32_to_bf16(a); return r; }

template <typename T> __device__ __forceinline__ double to_f64(T v) { return (double)to_acc<T>(v); }

// From f64: rounds for floats, truncates toward zero and saturates for integers (NaN to 0),
// != 0 for bool.
template <typename T> __device__ __forceinline__ T sat_int(double d, T lo, T hi) {
  if (d != d) return (T)0;
  if (d <= (double)lo) return lo;
  if (d >= (double)hi) return hi;
  return (T)d;
}
template <typename T> __device__ __forceinline__ T from_f64(double d);
template <> __device__ __forceinline__ float from_f64<float>(double d) { return (float)d; }
template <> __device__ __forceinline__ double from_f64<double>(double d) { return d; }
// f64 to f16 and bf16 exactly as the CPU backend converts (the `half` crate): f16 through
// f32 (its x86 F16C path: two roundings), bf16 from the f64's upper 32 bits rounded once (its
// portable path drops the lower 32 bits). So both devices agree bit for bit.
template <> __device__ __forceinline__ f16 from_f64<f16>(double d) { return from_acc<f16>((float)d); }
template <> __device__ __forceinline__ bf16 from_f64<bf16>(double d) {
  double hi = __longlong_as_double(__double_as_longlong(d) & (long long)0xFFFFFFFF00000000ull);
  return from_acc<bf16>(f64_to_f32_odd(hi));
}
template <> __device__ __forceinline__ bool from_f64<bool>(double d) { return d != 0.0; }
template <> __device__ __forceinline__ i8 from_f64<i8>(double d) { return sat_int<i8>(d, -128, 127); }
template <> __device__ __forceinline__ i16 from_f64<i16>(double d) { return sat_int<i16>(d, -32768, 32767); }
template <> __device__ __forceinline__ i32 from_f64<i32>(double d) { return sat_int<i32>(d, (i32)0x80000000, 0x7FFFFFFF); }
template <> __device__ __forceinline__ i64 from_f64<i64>(double d) {
  if (d != d) return 0;
  if (d <= -9223372036854775808.0) return (i64)0x8000000000000000ull;
  if (d >= 9223372036854775808.0) return 0x7FFFFFFFFFFFFFFFll;
  return (i64)d;
}
template <> __device__ __forceinline__ u8 from_f64<u8>(double d) { return sat_int<u8>(d, 0, 255); }
template <> __device__ __forceinline__ u16 from_f64<u16>(double d) { return sat_int<u16>(d, 0, 65535); }
template <> __device__ __forceinline__ u32 from_f64<u32>(double d) { return sat_int<u32>(d, 0, 0xFFFFFFFFu); }
template <> __device__ __forceinline__ u64 from_f64<u64>(double d) {
  if (d != d || d <= 0.0) return 0;
  if (d >= 18446744073709551616.0) return 0xFFFFFFFFFFFFFFFFull;
  return (u64)d;
}

// Types whose every value f32 holds exactly (f32, f16, bf16).
template <typename T> struct InF32 { static const bool v = false; };
template <> struct InF32<float> { static const bool v = true; };
template <> struct InF32<f16> { static const bool v = true; };
template <> struct InF32<bf16> { static const bool v = true; };

// astype: between f32, f16 and bf16 through f32 (rounded once, as the CPU does); else
// through f64 when either side is a float, else integer wrapping (bool: != 0).
template <typename S, typename D> __device__ __forceinline__ D cast(S v) {
  if constexpr (InF32<S>::v && InF32<D>::v) {
    return from_acc<D>((float)to_acc<S>(v));
  } else if constexpr (Is<S>::flt || Is<D>::flt) {
    return from_f64<D>(to_f64<S>(v));
  } else if constexpr (Is<D>::bln) {
    return (D)(to_acc<S>(v) != 0);
  } else {
    return (D)to_acc<S>(v);
  }
}

// The combiners of reductions, scans and scatters in the compute type A (ferrox's Acc rules:
// integers wrap, bool adds with `or` and multiplies with `and`, float max/min propagate NaN).
template <typename A> __device__ __forceinline__ A r_add(A x, A y) {
  if constexpr (Is<A>::bln) return x | y;
  else if constexpr (Is<A>::flt) return x + y;
  else return (A)((u64)x + (u64)y);
}
template <typename A> __device__ __forceinline__ A r_mul(A x, A y) {
  if constexpr (Is<A>::bln) return x & y;
  else if constexpr (Is<A>::flt) return x * y;
  else return (A)((u64)x * (u64)y);
}
template <typename A> __device__ __forceinline__ A r_max(A x, A y) {
  if constexpr (Is<A>::bln) return x | y;
  else if constexpr (Is<A>::flt) return (x != x || y != y) ? x + y : (x > y ? x : y);
  else return x > y ? x : y;
}
template <typename A> __device__ __forceinline__ A r_min(A x, A y) {
  if constexpr (Is<A>::bln) return x & y;
  else if constexpr (Is<A>::flt) return (x != x || y != y) ? x + y : (x < y ? x : y);
  else return x < y ? x : y;
}

// Index arrays (gather, scatter): up to 4, each with the stride and size of the axis it
// indexes. A negative index counts from the end; one out of range is clamped into it (the
// GPU cannot stop to raise an error; the CPU backend, which can, reports one instead).
struct Indices {
  u64 ptr[4];
  i64 stride[4];
  i64 size[4];
  i32 n;
  i32 pad;
};

__device__ __forceinline__ i64 wrap_index(i64 v, i64 n) {
  if (v < 0) v += n;
  return v < 0 ? 0 : (v >= n ? n - 1 : v);
}

// The element offset the index arrays select at one index position: oi[k] is index array k's
// element offset there (IT: the index arrays' type).
template <typename IT>
__device__ __forceinline__ i64 indexed_offset(const Indices& ix, const i64* oi) {
  i64 base = 0;
  for (int k = 0; k < ix.n; ++k) {
    i64 v = (i64)((const IT*)ix.ptr[k])[oi[k]];
    base += wrap_index(v, ix.size[k]) * ix.stride[k];
  }
  return base;
}

// Rotary position embedding's shared pieces (rope of fast.cu, and the rotated heads a decode
// step's q/k/v product writes itself in gemv.cu and quantized.cu). The position is an integer
// scalar on the device (i64 if off64 is 1, i32 if 0), or, when off64 is 2, the value off_value.
__device__ __forceinline__ i64 rope_position(const void* offset, int off64, i64 off_value) {
  return off64 == 2 ? off_value : off64 ? *(const i64*)offset : (i64)(*(const i32*)offset);
}
// The inverse frequency of pair q and the sine and cosine of an angle, accurate to f64 for f64
// data. For the types computed in f32 the f64 work is cut to what keeps their precision at
// any position: the frequency by exp2 / log2 (not pow), and the angle reduced to [-pi, pi] in
// f64 before f32's sine and cosine (whose error there is an ulp or two).
template <typename C>
__device__ __forceinline__ double rope_inv_freq(const float* __restrict__ freqs, i64 fs, float base, i64 q, i64 dims) {
  if (freqs) return 1.0 / (double)freqs[q * fs];
  const double e = -(2.0 * (double)q) / (double)dims;
  if constexpr (sizeof(C) == 8) return pow((double)base, e);
  else return exp2(e * log2((double)base));
}
template <typename C> __device__ __forceinline__ void rope_sincos(double ang, C* s, C* c) { sincos(ang, s, c); }
template <> __device__ __forceinline__ void rope_sincos<float>(double ang, float* s, float* c) {
  const double turns = rint(ang * 0.15915494309189535);  // 1 / (2 pi)
  // 2 pi in two parts (Cody and Waite): the reduction is exact to ~1e-16 radians a turn.
  const double r = fma(-turns, 2.4492935982947064e-16, fma(-turns, 6.283185307179586, ang));
  sincosf((float)r, s, c);
}

// The rotated heads of a decode step's q/k/v product (gemv.cu's *_rope_* kernels, quantized.cu's
// qmv_*rope_*; struct GemvRope of matmul.rs): the product's output is [rows, n / d, d] heads,
// one position of each batch row; heads 0 .. heads rotate by the position's angles (rope_*
// above: built-in frequencies from base, or 1 / freqs[q · fs]) into the kernel's output [rows,
// heads, d]; heads keys_from .. + kv_heads, rotated, and values_from .. + kv_heads
// (values_from < 0: none), as they are, go to row-major caches kc and vc [rows, kv_heads, len,
// d] at the position wrapped into 0 .. len.
struct GemvRope {
  u64 offset, freqs, kc, vc;
  i64 off_value, fs, len;
  i32 off64, d, heads, keys_from, values_from, kv_heads;
  float base, scale;
};

// The first column of pair slot `slot` of heads of 2 · half columns: slot j of a head pairs
// its columns j and j + half (the kernels' blocks take consecutive slots).
__device__ __forceinline__ i64 rope_slot_column(i64 slot, i64 half) { return slot / half * 2 * half + slot % half; }

// What a rope epilogue reads from memory for feature pair q: the position and the custom
// frequency (if any), loaded by rope_load before a kernel's main loop (after its wait for the
// kernel before) so that the loads' round trip hides behind the loop's instead of adding to
// the kernel's tail.
struct RopeAt {
  i64 off;
  float freq;
};
__device__ __forceinline__ RopeAt rope_load(const GemvRope& rp, i64 q) {
  RopeAt at;
  at.off = rope_position((const void*)rp.offset, rp.off64, rp.off_value);
  at.freq = rp.freqs ? ((const float*)rp.freqs)[q * rp.fs] : 0.0f;
  return at;
}

// The rope epilogue of batch row r's features q and q + d / 2 of head h (at: rope_load's of
// q): their sums ya and yb, already rounded to the element type E as the product's own output
// is, rotated (if h < heads) and written.
template <typename E>
__device__ __forceinline__ void rope_epilogue(const GemvRope& rp, RopeAt at, E* __restrict__ out, int r, i64 h, i64 q,
                                              E ya, E yb) {
  const i64 d = rp.d, half = d / 2;
  const i64 pos = wrap_index(at.off, rp.len);
  const i64 kh = h - rp.keys_from, vh = h - rp.values_from;
  if (rp.values_from >= 0 && vh >= 0 && vh < rp.kv_heads) {
    E* vrow = (E*)rp.vc + ((r * rp.kv_heads + vh) * rp.len + pos) * d;
    vrow[q] = ya;
    vrow[q + half] = yb;
  }
  if (h >= rp.heads) return;
  // rope_inv_freq's value, from the frequency loaded.
  const double inv = rp.freqs ? 1.0 / (double)at.freq : rope_inv_freq<float>(nullptr, 0, rp.base, q, d);
  float s, c;
  rope_sincos<float>((double)at.off * (double)rp.scale * inv, &s, &c);
  const float a = to_acc<E>(ya), b = to_acc<E>(yb);
  const E ra = from_acc<E>(a * c - b * s), rb = from_acc<E>(a * s + b * c);
  E* orow = out + (r * rp.heads + h) * d;
  orow[q] = ra;
  orow[q + half] = rb;
  if (kh >= 0 && kh < rp.kv_heads) {
    E* krow = (E*)rp.kc + ((r * rp.kv_heads + kh) * rp.len + pos) * d;
    krow[q] = ra;
    krow[q + half] = rb;
  }
}
