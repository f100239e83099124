// Elementwise kernels: unary, binary, select, astype and strided copies. The Rust side
// prepends common.cuh and `#define`s, then instantiates the kernels one module per dtype.

// ---- float math on the compute types float and double ----
#define FOP(name, ff, fd) \
  __device__ __forceinline__ float name(float x) { return ff; } \
  __device__ __forceinline__ double name(double x) { return fd; }
FOP(op_Exp, expf(x), exp(x))
FOP(op_Expm1, expm1f(x), expm1(x))
FOP(op_Log, logf(x), log(x))
FOP(op_Log1p, log1pf(x), log1p(x))
FOP(op_Log2, log2f(x), log2(x))
FOP(op_Log10, log10f(x), log10(x))
FOP(op_Sqrt, sqrtf(x), sqrt(x))
FOP(op_Rsqrt, 1.0f / sqrtf(x), 1.0 / sqrt(x))
FOP(op_Reciprocal, 1.0f / x, 1.0 / x)
FOP(op_Sin, sinf(x), sin(x))
FOP(op_Cos, cosf(x), cos(x))
FOP(op_Tan, tanf(x), tan(x))
FOP(op_ArcSin, asinf(x), asin(x))
FOP(op_ArcCos, acosf(x), acos(x))
FOP(op_ArcTan, atanf(x), atan(x))
FOP(op_Sinh, sinhf(x), sinh(x))
FOP(op_Cosh, coshf(x), cosh(x))
FOP(op_Tanh, tanhf(x), tanh(x))
FOP(op_ArcSinh, asinhf(x), asinh(x))
FOP(op_ArcCosh, acoshf(x), acosh(x))
FOP(op_ArcTanh, atanhf(x), atanh(x))
FOP(op_Erf, erff(x), erf(x))
FOP(op_ErfInv, (float)erfinv((double)x), erfinv(x))
FOP(op_Floor, floorf(x), floor(x))
FOP(op_Ceil, ceilf(x), ceil(x))
FOP(op_Round, rintf(x), rint(x))
FOP(op_Square, x * x, x * x)
__device__ __forceinline__ float f_fmod(float x, float y) { return fmodf(x, y); }
__device__ __forceinline__ double f_fmod(double x, double y) { return fmod(x, y); }
__device__ __forceinline__ float f_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double f_pow(double x, double y) { return pow(x, y); }
// The quotient's denominator lies in [1, 2]: for f32, the fast division (2 ulp) there, a
// fraction of the IEEE division's instructions (SwiGLU over a prompt is a sigmoid an element).
__device__ __forceinline__ float div_1_2(float n, float d) { return __fdividef(n, d); }
__device__ __forceinline__ double div_1_2(double n, double d) { return n / d; }
template <typename A> __device__ __forceinline__ A op_Sigmoid(A x) {
  A e = op_Exp(-(x < 0 ? -x : x));
  A num = x >= 0 ? (A)1 : e;
  return div_1_2(num, (A)1 + e);
}

// ---- ops valid on every compute type (float, i64, u64, bool) ----
template <typename A> __device__ __forceinline__ A op_Abs(A x) {
  if constexpr (Is<A>::bln) return x;
  else if constexpr (Is<A>::flt) return x < 0 ? -x : (x == 0 ? (A)0 : x);
  else if constexpr (Is<A>::sgn) return x < 0 ? (A)(0ull - (u64)x) : x;
  else return x;
}
template <typename A> __device__ __forceinline__ A op_Negative(A x) {
  if constexpr (Is<A>::bln) return x;
  else if constexpr (Is<A>::flt) return -x;
  else return (A)(0ull - (u64)x);
}
template <typename A> __device__ __forceinline__ A op_Sign(A x) {
  if constexpr (Is<A>::bln) return x;
  else if constexpr (Is<A>::flt) return x > 0 ? (A)1 : (x < 0 ? (A)-1 : x);
  else return x > 0 ? (A)1 : (x == 0 ? (A)0 : (A)(0ull - 1ull));
}
template <typename A> __device__ __forceinline__ A op_ISquare(A x) {
  if constexpr (Is<A>::bln) return x;
  else return (A)((u64)x * (u64)x);
}
template <typename A> __device__ __forceinline__ A op_BitwiseInvert(A x) {
  if constexpr (Is<A>::bln) return !x;
  else return ~x;
}

// ---- binary arithmetic on the compute type ----
template <typename A> __device__ __forceinline__ A op_Add(A x, A y) {
  if constexpr (Is<A>::bln) return x | y;
  else if constexpr (Is<A>::flt) return x + y;
  else return (A)((u64)x + (u64)y);
}
template <typename A> __device__ __forceinline__ A op_Subtract(A x, A y) {
  if constexpr (Is<A>::bln) return x ^ y;
  else if constexpr (Is<A>::flt) return x - y;
  else return (A)((u64)x - (u64)y);
}
template <typename A> __device__ __forceinline__ A op_Multiply(A x, A y) {
  if constexpr (Is<A>::bln) return x & y;
  else if constexpr (Is<A>::flt) return x * y;
  else return (A)((u64)x * (u64)y);
}
template <typename A> __device__ __forceinline__ A op_Divide(A x, A y) {
  if constexpr (Is<A>::bln) return x & y;
  else if constexpr (Is<A>::flt) return x / y;
  else if constexpr (Is<A>::sgn) return y == 0 ? (A)0 : (y == -1 ? (A)(0ull - (u64)x) : x / y);
  else return y == 0 ? (A)0 : x / y;
}
template <typename A> __device__ __forceinline__ A op_FloorDivide(A x, A y) {
  if constexpr (Is<A>::bln) return x & y;
  else if constexpr (Is<A>::flt) return op_Floor(x / y);
  else if constexpr (Is<A>::sgn) {
    if (y == 0) return 0;
    if (y == -1) return (A)(0ull - (u64)x);
    A q = x / y;
    return ((x % y != 0) && ((x < 0) != (y < 0))) ? q - 1 : q;
  } else return y == 0 ? (A)0 : x / y;
}
template <typename A> __device__ __forceinline__ A op_Remainder(A x, A y) {
  if constexpr (Is<A>::bln) return false;
  else if constexpr (Is<A>::flt) {
    A r = f_fmod(x, y);
    return (r != 0 && ((r < 0) != (y < 0))) ? r + y : r;
  } else if constexpr (Is<A>::sgn) {
    if (y == 0 || y == -1) return 0;
    A r = x % y;
    return (r != 0 && ((r < 0) != (y < 0))) ? r + y : r;
  } else return y == 0 ? (A)0 : x % y;
}
template <typename A> __device__ __forceinline__ A op_Power(A x, A y) {
  if constexpr (Is<A>::bln) return x | !y;
  else if constexpr (Is<A>::flt) {
    if (y == 2) return x * x;
    if (y == 3) return x * x * x;
    if (y == 4) { A s = x * x; return s * s; }
    if (y == 1) return x;
    if (y == 0) return 1;
    if (y == -1) return 1 / x;
    return f_pow(x, y);
  } else {
    if constexpr (Is<A>::sgn) {
      if (y < 0) return x == 1 ? (A)1 : (A)0;
    }
    u64 base = (u64)x, acc = 1;
    A e = y;
    while (e > 0) {
      if (e & 1) acc *= base;
      base *= base;
      e >>= 1;
    }
    return (A)acc;
  }
}
template <typename A> __device__ __forceinline__ A op_Maximum(A x, A y) {
  if constexpr (Is<A>::bln) return x | y;
  else if constexpr (Is<A>::flt) return (x != x || y != y) ? (x + y) : (x > y ? x : y);
  else return x > y ? x : y;
}
template <typename A> __device__ __forceinline__ A op_Minimum(A x, A y) {
  if constexpr (Is<A>::bln) return x & y;
  else if constexpr (Is<A>::flt) return (x != x || y != y) ? (x + y) : (x < y ? x : y);
  else return x < y ? x : y;
}
template <typename A> __device__ __forceinline__ double as_f64(A x) { return (double)x; }
template <typename A> __device__ __forceinline__ A of_f64(double v) {
  if constexpr (Is<A>::bln) return v != 0.0;
  else return (A)v;
}
template <typename A> __device__ __forceinline__ A op_LogAddExp(A a, A b) {
  double x = as_f64(a), y = as_f64(b);
  if (x != x || y != y) return of_f64<A>(x + y);
  double hi = x >= y ? x : y, lo = x >= y ? y : x;
  if (lo == -1.0 / 0.0 || hi == 1.0 / 0.0) return of_f64<A>(hi);
  return of_f64<A>(hi + log1p(exp(lo - hi)));
}
template <typename A> __device__ __forceinline__ A op_ArcTan2(A x, A y) { return of_f64<A>(atan2(as_f64(x), as_f64(y))); }
template <typename A> __device__ __forceinline__ A op_BitwiseAnd(A x, A y) { return x & y; }
template <typename A> __device__ __forceinline__ A op_BitwiseOr(A x, A y) { return x | y; }
template <typename A> __device__ __forceinline__ A op_BitwiseXor(A x, A y) { return x ^ y; }
template <typename A> __device__ __forceinline__ A op_LeftShift(A x, A y) {
  if constexpr (Is<A>::bln) return x & !y;
  else return ((u64)y >= 64) ? (A)0 : (A)((u64)x << (u64)y);
}
template <typename A> __device__ __forceinline__ A op_RightShift(A x, A y) {
  if constexpr (Is<A>::bln) return x & !y;
  else if constexpr (Is<A>::sgn) return ((u64)y >= 64) ? (x < 0 ? (A)-1 : (A)0) : (x >> y);
  else return ((u64)y >= 64) ? (A)0 : (x >> y);
}
template <typename A> __device__ __forceinline__ bool op_Equal(A x, A y) { return x == y; }
template <typename A> __device__ __forceinline__ bool op_NotEqual(A x, A y) { return x != y; }
template <typename A> __device__ __forceinline__ bool op_Less(A x, A y) { return x < y; }
template <typename A> __device__ __forceinline__ bool op_LessEqual(A x, A y) { return x <= y; }
template <typename A> __device__ __forceinline__ bool op_Greater(A x, A y) { return x > y; }
template <typename A> __device__ __forceinline__ bool op_GreaterEqual(A x, A y) { return x >= y; }
template <typename A> __device__ __forceinline__ bool op_LogicalAnd(A x, A y) { return x != (A)0 && y != (A)0; }
template <typename A> __device__ __forceinline__ bool op_LogicalOr(A x, A y) { return x != (A)0 || y != (A)0; }

// ---- kernels; T is the dtype of the module ----
typedef acc_t<T> A;

// out = from_acc(op(to_acc(x))), same dtype.
#define UNARY(OP, FN)                                                                          \
  extern "C" __global__ void unary_##OP(T* __restrict__ out, const T* __restrict__ in, Layout l) { \
    OVERLAPPED_START(); \
    if (rows_fit<1>(l)) { \
      GRID_LOOP(q, l.n / ELEMS) { \
        i64 o[1]; \
        offsets<1>(l, q * ELEMS, o); \
        const Run<T> x = load_run(in + o[0], last_stride(l, 0)); \
        Run<T> y; \
        _Pragma("unroll") for (int u = 0; u < ELEMS; ++u) y.v[u] = from_acc<T>((A)FN(to_acc<T>(x.v[u]))); \
        store_run(out + q * ELEMS, y); \
      } \
      return; \
    } \
    GRID_LOOP(i, l.n) {                                                                          \
      i64 o[1];                                                                                  \
      offsets<1>(l, i, o);                                                                       \
      out[i] = from_acc<T>((A)FN(to_acc<T>(in[o[0]])));                                          \
    }                                                                                            \
  }
// Predicates of any dtype, to bool.
#define PREDICATE(OP, EXPR)                                                                         \
  extern "C" __global__ void unary_##OP(bool* __restrict__ out, const T* __restrict__ in, Layout l) { \
    OVERLAPPED_START(); \
    GRID_LOOP(i, l.n) {                                                                             \
      i64 o[1];                                                                                     \
      offsets<1>(l, i, o);                                                                          \
      double x = to_f64<T>(in[o[0]]);                                                               \
      out[i] = (EXPR);                                                                              \
    }                                                                                               \
  }
// Integer floor / ceil / round: the identity.
#define IDENTITY(OP)                                                                           \
  extern "C" __global__ void unary_##OP(T* __restrict__ out, const T* __restrict__ in, Layout l) { \
    OVERLAPPED_START(); \
    GRID_LOOP(i, l.n) {                                                                          \
      i64 o[1];                                                                                  \
      offsets<1>(l, i, o);                                                                       \
      out[i] = in[o[0]];                                                                         \
    }                                                                                            \
  }
#define ARITH(OP)                                                                                            \
  extern "C" __global__ void binary_##OP(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, \
                                         Layout l) {                                                          \
    OVERLAPPED_START(); \
    if (rows_fit<2>(l)) { \
      GRID_LOOP(q, l.n / ELEMS) { \
        i64 o[2]; \
        offsets<2>(l, q * ELEMS, o); \
        const Run<T> x = load_run(a + o[0], last_stride(l, 0)), y = load_run(b + o[1], last_stride(l, 1)); \
        Run<T> z; \
        _Pragma("unroll") for (int u = 0; u < ELEMS; ++u) z.v[u] = from_acc<T>(op_##OP<A>(to_acc<T>(x.v[u]), to_acc<T>(y.v[u]))); \
        store_run(out + q * ELEMS, z); \
      } \
      return; \
    } \
    GRID_LOOP(i, l.n) {                                                                                        \
      i64 o[2];                                                                                                \
      offsets<2>(l, i, o);                                                                                     \
      out[i] = from_acc<T>(op_##OP<A>(to_acc<T>(a[o[0]]), to_acc<T>(b[o[1]])));                                \
    }                                                                                                          \
  }
#define COMPARE(OP)                                                                                              \
  extern "C" __global__ void binary_##OP(bool* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, \
                                         Layout l) {                                                             \
    OVERLAPPED_START(); \
    GRID_LOOP(i, l.n) {                                                                                           \
      i64 o[2];                                                                                                   \
      offsets<2>(l, i, o);                                                                                        \
      out[i] = op_##OP<A>(to_acc<T>(a[o[0]]), to_acc<T>(b[o[1]]));                                                \
    }                                                                                                             \
  }

extern "C" __global__ void select(T* __restrict__ out, const bool* __restrict__ c, const T* __restrict__ x,
                                  const T* __restrict__ y, Layout l) {
  OVERLAPPED_START();
  GRID_LOOP(i, l.n) {
    i64 o[3];
    offsets<3>(l, i, o);
    out[i] = c[o[0]] ? x[o[1]] : y[o[2]];
  }
}

extern "C" __global__ void copy(T* __restrict__ out, const T* __restrict__ in, Layout l) {
  OVERLAPPED_START();
  // (The destination's elements are distinct: its last-axis stride is 1 where rows_fit.)
  if (rows_fit<2>(l)) {
    GRID_LOOP(q, l.n / ELEMS) {
      i64 o[2];
      offsets<2>(l, q * ELEMS, o);
      store_run(out + o[1], load_run(in + o[0], last_stride(l, 0)));
    }
    return;
  }
  GRID_LOOP(i, l.n) {
    i64 o[2];
    offsets<2>(l, i, o);
    out[o[1]] = in[o[0]];
  }
}

#define CAST(D)                                                                                  \
  extern "C" __global__ void cast_##D(D* __restrict__ out, const T* __restrict__ in, Layout l) { \
    OVERLAPPED_START(); \
    GRID_LOOP(i, l.n) {                                                                            \
      i64 o[1];                                                                                    \
      offsets<1>(l, i, o);                                                                         \
      out[i] = cast<T, D>(in[o[0]]);                                                               \
    }                                                                                              \
  }

// arange: start + i * step in f64 (no fused multiply-add: the CPU rounds the product first).
extern "C" __global__ void arange(T* __restrict__ out, i64 n, double start, double step) {
  GRID_LOOP(i, n) out[i] = from_f64<T>(__dadd_rn(start, __dmul_rn((double)i, step)));
}
