// Timing of ferrox's decode matrix-vector kernels (crates/ferrox/src/backend/cuda/kernels/
// gemv.cu, included as it is) on the shapes of a Llama-3.2-1B decode step, bf16, with nvcc
// on the GPU machine (scripts/cuda-bench/run.sh). Each shape is timed over enough weight
// copies that they do not fit in L2, so every call reads its weights from memory; the figure
// is bytes of weights read a second. Then a whole step's products (16 layers of q, k, v, o,
// gate, up, down and the lm head; then with q/k/v and gate/up each one product, as
// ferrox-lm's fused projections run them) run back to back in a CUDA graph.

#include "bench_common.cuh"
#define T bf16
#define MMA_KIND "bf16"
#include "../../crates/ferrox/src/backend/cuda/kernels/gemv.cu"
#ifndef GEMV_MMA_SPLIT
#define GEMV_MMA_SPLIT GEMV_SPLIT
#endif

struct Shape {
  const char* name;
  int n, k;
};

// out = x · wᵀ for `rows` rows, as matmul.rs launches it.
static void launch_gemv(bf16* out, const bf16* x, const bf16* w, int rows, int n, int k, cudaStream_t s) {
  dim3 grid((n + GEMV_COLS - 1) / GEMV_COLS), block(GEMV_SPLIT * 32);
  if (rows == 1) gemv_1<<<grid, block, 0, s>>>(out, x, k, w, k, rows, n, k, 1.0f, (const bf16*)nullptr, 0, 0, 0.0f, (const bf16*)nullptr, 0.0f);
  else if (rows == 2) gemv_2<<<grid, block, 0, s>>>(out, x, k, w, k, rows, n, k, 1.0f, (const bf16*)nullptr, 0, 0, 0.0f, (const bf16*)nullptr, 0.0f);
  else if (rows <= 4) gemv_4<<<grid, block, 0, s>>>(out, x, k, w, k, rows, n, k, 1.0f, (const bf16*)nullptr, 0, 0, 0.0f, (const bf16*)nullptr, 0.0f);
  else gemv_8<<<grid, block, 0, s>>>(out, x, k, w, k, rows, n, k, 1.0f, (const bf16*)nullptr, 0, 0, 0.0f, (const bf16*)nullptr, 0.0f);
}

typedef void (*Launcher)(bf16*, const bf16*, const bf16*, int, int, int, cudaStream_t);


// The tensor-core kernel for several rows, overlapped.
static void launch_gemv_mma(bf16* out, const bf16* x, const bf16* w, int rows, int n, int k, cudaStream_t s) {
  cudaLaunchAttribute attr;
  cudaLaunchConfig_t cfg = overlapped(dim3((n + 15) / 16), dim3(GEMV_MMA_SPLIT * 32), s, &attr);
  i64 xs = k, ws = k, nn = n, kk = k;
  cudaLaunchKernelEx(&cfg, gemv_mma, out, x, xs, w, ws, rows, nn, kk, 1.0f, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f);
}

// The same launch, overlapped with the kernel before it (programmatic dependent launch), as
// matmul.rs makes it on sm_90 and later.
static void launch_gemv_overlapped(bf16* out, const bf16* x, const bf16* w, int rows, int n, int k, cudaStream_t s) {
  cudaLaunchAttribute attr;
  cudaLaunchConfig_t cfg = overlapped(dim3((n + GEMV_COLS - 1) / GEMV_COLS), dim3(GEMV_SPLIT * 32), s, &attr);
  i64 xs = k, ws = k, nn = n, kk = k;
  float alpha = 1.0f;
  if (rows == 1) cudaLaunchKernelEx(&cfg, gemv_1, out, x, xs, w, ws, rows, nn, kk, alpha, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, (const bf16*)nullptr, 0.0f);
  else if (rows == 2) cudaLaunchKernelEx(&cfg, gemv_2, out, x, xs, w, ws, rows, nn, kk, alpha, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, (const bf16*)nullptr, 0.0f);
  else if (rows <= 4) cudaLaunchKernelEx(&cfg, gemv_4, out, x, xs, w, ws, rows, nn, kk, alpha, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, (const bf16*)nullptr, 0.0f);
  else cudaLaunchKernelEx(&cfg, gemv_8, out, x, xs, w, ws, rows, nn, kk, alpha, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, (const bf16*)nullptr, 0.0f);
}

// The overlapped launch of the kernels that rms-normalize x (gemv_rms_*; the norm's weight is
// x's first row): the cost of the norm joined in. Its outputs differ from the plain kernels'
// (x is normalized), so its err column means nothing. More than 2 rows have no joined kernel
// (join.rs): the plain tensor-core one runs.
static void launch_gemv_rms(bf16* out, const bf16* x, const bf16* w, int rows, int n, int k, cudaStream_t s) {
  cudaLaunchAttribute attr;
  i64 xs = k, ws = k, nn = n, kk = k;
  float alpha = 1.0f;
  if (rows > 2) return launch_gemv_mma(out, x, w, rows, n, k, s);
  cudaLaunchConfig_t cfg = overlapped(dim3((n + GEMV_RMS_COLS - 1) / GEMV_RMS_COLS), dim3(GEMV_SPLIT * 32), s, &attr);
  if (rows == 1) cudaLaunchKernelEx(&cfg, gemv_rms_1, out, x, xs, w, ws, rows, nn, kk, alpha, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, x, 1e-5f);
  else cudaLaunchKernelEx(&cfg, gemv_rms_2, out, x, xs, w, ws, rows, nn, kk, alpha, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, x, 1e-5f);
}

// The normalizing kernels with the rope epilogue (gemv_rms_rope_*: every head of 64 rotated
// at position 517, no cache writes): the cost of a decode step's rope joined into its q/k/v
// product. Its outputs are rotated heads: its err column means nothing.
static i32* rope_pos;
static void launch_gemv_rms_rope(bf16* out, const bf16* x, const bf16* w, int rows, int n, int k, cudaStream_t s) {
  if (rows > 2) return launch_gemv_mma(out, x, w, rows, n, k, s);
  cudaLaunchAttribute attr;
  i64 xs = k, ws = k, nn = n, kk = k;
  GemvRope rp;
  memset(&rp, 0, sizeof rp);
  rp.offset = (u64)rope_pos, rp.d = 64, rp.heads = n / 64, rp.values_from = -1, rp.len = 1;
  rp.base = 500000.0f, rp.scale = 1.0f;
  cudaLaunchConfig_t cfg = overlapped(dim3(n / GEMV_RMS_COLS), dim3(GEMV_SPLIT * 32), s, &attr);
  if (rows == 1) cudaLaunchKernelEx(&cfg, gemv_rms_rope_1, out, x, xs, w, ws, rows, nn, kk, 1.0f, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, x, 1e-5f, rp);
  else cudaLaunchKernelEx(&cfg, gemv_rms_rope_2, out, x, xs, w, ws, rows, nn, kk, 1.0f, (const bf16*)nullptr, (i64)0, (i64)0, 0.0f, x, 1e-5f, rp);
}

// Stands for a decode step's latency-bound kernels between the q/k/v and o products (rope and
// the KV writes, attention, its combine): one block spinning `cycles` clocks, overlapped.
__global__ void bubble(long long cycles) {
  OVERLAPPED_START();
  if (threadIdx.x == 0) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
  }
}
// Warms L2 with `bytes` at p (the next products' weights) while the kernels after it run: it
// lets them start at once, issues its blocks' share of the range, and waits for the kernel
// before it only then (so what follows still sees that kernel's writes).
__global__ void warm_l2(const char* p, size_t bytes) {
  allow_next_kernel();
  const size_t per = (bytes / gridDim.x + 127) & ~(size_t)127;
  const size_t b0 = per * blockIdx.x, b1 = min(bytes, b0 + per);
  for (size_t o = b0 + threadIdx.x * (size_t)128; o < b1; o += (size_t)blockDim.x * 128) prefetch_l2(p + o);
  wait_for_previous_kernel();
}
__global__ void warm_l2_bulk(const char* p, size_t bytes) {
  allow_next_kernel();
  const size_t per = (bytes / (gridDim.x * (size_t)blockDim.x) + 4095) & ~(size_t)4095;
  const size_t b0 = per * (blockIdx.x * (size_t)blockDim.x + threadIdx.x), b1 = min(bytes, b0 + per);
  if (b0 < b1)
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + b0), "r"((u32)(b1 - b0)) : "memory");
  wait_for_previous_kernel();
}

// A step of fused products with a bubble of `bubble_us` after each layer's q/k/v product, the
// bubble warming L2 with the next `warm_mb` of weights (o, then gate/up) or not: what warming
// the next products' weights during latency-bound kernels would save.
static void bubble_steps(int rows, bf16* x, bf16* out, cudaStream_t s) {
  const Shape fused[] = {{"qkv", 3072, 2048}, {"o", 2048, 2048}, {"gate_up", 16384, 2048}, {"down", 2048, 8192}};
  const int layers = 16;
  size_t per_layer = 0;
  for (const Shape& sh : fused) per_layer += (size_t)sh.n * sh.k;
  const size_t head = (size_t)128256 * 2048, total = per_layer * layers + head;
  bf16* w;
  CK(cudaMalloc(&w, total * 2));
  fill_bf16<<<1024, 256>>>((u16*)w, total, 13, 0.1f);
  CK(cudaDeviceSynchronize());
  int clock_khz;
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  struct Case {
    double bubble_us, warm_mb;
    int bulk;
  };
  const Case cases[] = {{0, 0, 0}, {12, 0, 0}, {12, 8, 0}, {12, 24, 0}, {12, 36, 0}, {12, 8, 1}, {12, 24, 1}, {12, 36, 1}, {24, 48, 0}, {24, 0, 0}};
  for (const Case& c : cases) {
    const double us = graph_us(s, [&] {
      size_t off = 0;
      for (int l = 0; l < layers; ++l)
        for (int j = 0; j < 4; ++j) {
          launch_gemv_overlapped(out, x, w + off, rows, fused[j].n, fused[j].k, s);
          off += (size_t)fused[j].n * fused[j].k;
          if (j == 0 && c.bubble_us > 0) {
            cudaLaunchAttribute attr;
            if (c.warm_mb > 0) {
              const size_t bytes = std::min((size_t)(c.warm_mb * (1 << 20)), (total - off) * 2) & ~(size_t)4095;
              cudaLaunchConfig_t cfg = overlapped(dim3(sms), dim3(c.bulk ? 32 : 256), s, &attr);
              CK(cudaLaunchKernelEx(&cfg, c.bulk ? warm_l2_bulk : warm_l2, (const char*)(w + off), bytes));
            }
            cudaLaunchConfig_t cfg = overlapped(dim3(1), dim3(32), s, &attr);
            CK(cudaLaunchKernelEx(&cfg, bubble, (long long)(c.bubble_us * clock_khz / 1e3)));
          }
        }
      launch_gemv_overlapped(out, x, w + off, rows, 128256, 2048, s);
    });
    printf("step, bubble %4.1f us a layer, warm %4.0f MB %-5s %8.1f us  (products + bubbles alone: %.1f)\n", c.bubble_us, c.warm_mb,
           c.bulk ? "bulk" : "lines", us, c.bubble_us * layers);
  }
  CK(cudaFree(w));
}

int main(int argc, char** argv) {
  int rows = argc > 1 ? atoi(argv[1]) : 1;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s, %d SMs, L2 %d MB; rows %d\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, rows);
  const Shape shapes[] = {{"q/o 2048x2048", 2048, 2048}, {"k/v 512x2048", 512, 2048}, {"qkv 3072x2048", 3072, 2048}, {"gate_up 16384x2048", 16384, 2048},
                          {"gate/up 8192x2048", 8192, 2048}, {"down 2048x8192", 2048, 8192},
                          {"lm_head 128256x2048", 128256, 2048}};
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  bf16 *x, *out;
  CK(cudaMalloc(&x, 8 * 8192 * 2));
  CK(cudaMalloc(&out, 8 * 128256 * 2));
  fill_bf16<<<64, 256>>>((u16*)x, 8 * 8192, 7, 0.1f);
  struct Variant {
    const char* name;
    Launcher f;
  };
  const Variant variants[] = {
      {"ferrox gemv", launch_gemv}, {"overlapped", launch_gemv_overlapped}, {"mma", launch_gemv_mma},
      {"rms", launch_gemv_rms}, {"rms rope", launch_gemv_rms_rope}};
  const int nvariants = 5;
  const i32 pos = 517;
  CK(cudaMalloc(&rope_pos, sizeof pos));
  CK(cudaMemcpy(rope_pos, &pos, sizeof pos, cudaMemcpyHostToDevice));
  std::vector<u16> ref(8 * 128256), got(8 * 128256);
  for (const Shape& sh : shapes) {
    size_t per = (size_t)sh.n * sh.k;
    int copies = (int)((600ull << 20) / (per * 2)) + 1;
    if (copies > 64) copies = 64;
    bf16* w;
    CK(cudaMalloc(&w, per * copies * 2));
    fill_bf16<<<1024, 256>>>((u16*)w, per * copies, 11, 0.1f);
    CK(cudaDeviceSynchronize());
    int iters = copies * ((2000 + copies - 1) / copies);
    if (sh.n == 128256) iters = 40;
    for (int vi = 0; vi < nvariants; ++vi) {
      const Variant& v = variants[vi];
      v.f(out, x, w, rows, sh.n, sh.k, s);
      CK(cudaMemcpy(got.data(), out, (size_t)rows * sh.n * 2, cudaMemcpyDeviceToHost));
      if (vi == 0) ref = got;
      float err = 0;
      for (int i = 0; i < rows * sh.n; ++i) {
        float a = bf16_host(ref[i]), b = bf16_host(got[i]);
        float d = fabsf(a - b) / (fabsf(a) + 1e-2f);
        err = d > err ? d : err;
      }
      for (int i = 0; i < copies; ++i) v.f(out, x, w + per * i, rows, sh.n, sh.k, s);
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < iters; ++i) v.f(out, x, w + per * (i % copies), rows, sh.n, sh.k, s);
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      double us = ms * 1e3 / iters;
      printf("%-20s %-10s %8.2f us/call  %6.0f GB/s  err %.1e\n", sh.name, v.name, us, per * 2 / us / 1e3, err);
    }
    CK(cudaFree(w));
  }
  // A whole step's products as a CUDA graph: 16 layers' own weights, then the lm head.
  const Shape separate[] = {{"q", 2048, 2048},    {"k", 512, 2048},  {"v", 512, 2048},   {"o", 2048, 2048},
                            {"gate", 8192, 2048}, {"up", 8192, 2048}, {"down", 2048, 8192}};
  const Shape fused[] = {{"qkv", 3072, 2048}, {"o", 2048, 2048}, {"gate_up", 16384, 2048}, {"down", 2048, 8192}};
  for (int fi = 0; fi < 2; ++fi)
  for (int vi = 0; vi < nvariants; ++vi) {
    const int layers = 16;
    const Shape* seq = fi ? fused : separate;
    const int nseq = fi ? 4 : 7;
    size_t per_layer = 0;
    for (int j = 0; j < nseq; ++j) per_layer += (size_t)seq[j].n * seq[j].k;
    size_t head = (size_t)128256 * 2048;
    bf16* w;
    CK(cudaMalloc(&w, (per_layer * layers + head) * 2));
    fill_bf16<<<1024, 256>>>((u16*)w, per_layer * layers + head, 13, 0.1f);
    CK(cudaDeviceSynchronize());
    const double us = graph_us(s, [&] {
      size_t off = 0;
      for (int l = 0; l < layers; ++l)
        for (int j = 0; j < nseq; ++j) {
          variants[vi].f(out, x, w + off, rows, seq[j].n, seq[j].k, s);
          off += (size_t)seq[j].n * seq[j].k;
        }
      variants[vi].f(out, x, w + off, rows, 128256, 2048, s);
    });
    double bytes = (per_layer * layers + head) * 2.0;
    printf("step products (%3d launches) %-14s %8.1f us  %7.0f GB/s\n", layers * nseq + 1, variants[vi].name, us, bytes / us / 1e3);
    CK(cudaFree(w));
  }
  bubble_steps(rows, x, out, s);
  CK(cudaGetLastError());
  return 0;
}
