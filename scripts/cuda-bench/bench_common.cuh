// What the benchmarks of this folder share: ferrox's common.cuh, error checks, random fills,
// bf16 on the host, and launch configurations overlapped with the kernel before (as
// layout.rs's launch_overlapped makes them).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#include "../../crates/ferrox/src/backend/cuda/kernels/common.cuh"

#define CK(x)                                                                         \
  do {                                                                                \
    cudaError_t e = (x);                                                              \
    if (e != cudaSuccess) {                                                           \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

__device__ __forceinline__ u32 bench_hash(size_t i, u32 seed) {
  u32 h = (u32)i * 2654435761u ^ seed;
  h ^= h >> 15;
  h *= 2246822519u;
  return h ^ (h >> 13);
}
// Random bits, and bf16 values uniform in [-scale/2, scale/2).
__global__ void fill_bits(u32* p, size_t n, u32 seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = bench_hash(i, seed);
}
__global__ void fill_bf16(u16* p, size_t n, u32 seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float f = ((bench_hash(i, seed) & 0xffff) / 65536.0f - 0.5f) * scale;
    p[i] = (u16)(__float_as_uint(f) >> 16);
  }
}

static float bf16_host(u16 v) {
  u32 b = (u32)v << 16;
  float f;
  memcpy(&f, &b, 4);
  return f;
}

// Mean µs of one replay of the launches `issue()` makes on `s`, captured as a CUDA graph: one
// replay to warm up, then `reps` back to back between two events.
template <typename F> static double graph_us(cudaStream_t s, F issue, int reps = 50) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  issue();
  CK(cudaStreamEndCapture(s, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  CK(cudaGraphLaunch(exec, s));
  CK(cudaStreamSynchronize(s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < reps; ++i) CK(cudaGraphLaunch(exec, s));
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  return ms * 1e3 / reps;
}

// A launch of `grid` blocks of `block` threads on `s`, overlapped with the kernel before it
// (programmatic dependent launch); `attr` must outlive the launch.
static cudaLaunchConfig_t overlapped(dim3 grid, dim3 block, cudaStream_t s, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.stream = s;
  attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr->val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}
