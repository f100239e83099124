// CUDA built-ins as plain C++ for scripts/cuda-syntax/check.sh: enough for g++ to parse and
// instantiate the decode kernels' sources (no values are computed; nothing here runs).
#include <cmath>
#include <cstddef>
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
struct dim3v { unsigned x, y, z; };
extern dim3v threadIdx, blockIdx, blockDim, gridDim;
template <typename P> P __ldg(const P* p) { return *p; }
template <typename V> V __shfl_xor_sync(unsigned, V v, int, int = 32) { return v; }
template <typename V> V __shfl_sync(unsigned, V v, int, int = 32) { return v; }
template <typename V> V __shfl_down_sync(unsigned, V v, int, int = 32) { return v; }
inline void __syncthreads() {}
inline void __syncwarp(unsigned = 0xffffffffu) {}
inline void __threadfence() {}
inline unsigned __float_as_uint(float f) { unsigned u; __builtin_memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; __builtin_memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
inline void sincosf(float a, float* s, float* c) { *s = std::sin(a); *c = std::cos(a); }
inline void sincos(double a, double* s, double* c) { *s = std::sin(a); *c = std::cos(a); }
using std::min; using std::max;
inline long long clock64() { return 0; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(unsigned v) { return __builtin_clz(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return *p += v; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return *p += v; }
inline float atomicAdd(float* p, float v) { return *p += v; }
#define __CUDA_ARCH__ 900
inline long long __double_as_longlong(double d) { long long u; __builtin_memcpy(&u, &d, 8); return u; }
inline double __longlong_as_double(long long u) { double d; __builtin_memcpy(&d, &u, 8); return d; }
using std::signbit;
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
#define __align__(n) __attribute__((aligned(n)))
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
