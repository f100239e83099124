// Timing of ferrox's quantized decode kernel (crates/ferrox/src/backend/cuda/kernels/
// quantized.cu, included as it is: affine, 4 bits, bf16) on the shapes of a Llama-3.2-1B
// decode step, one row of x, group size 64, with nvcc on the GPU machine
// (scripts/cuda-bench/run.sh). Each shape is timed over enough weight copies that they do
// not fit in L2; the figure is bytes of packed weights, scales and biases read a second.
// Then a whole step's 4-bit products (16 layers of fused q/k/v, o, fused gate/up and down,
// and the lm head, each layer's own weights) launched overlapped in a CUDA graph, as a
// replayed decode step runs them.
// The kernel's block shape can be swept: nvcc ... -DQMV_WARPS=8 -DQMV_SPLIT=4 -DQMV_COLS=4
// (docs/PERF.md, CUDA session 15).

#include "bench_common.cuh"
#define T bf16
#define BITS 4
#define FMT 0
#define QMV_M 1
#include "../../crates/ferrox/src/backend/cuda/kernels/quantized.cu"

struct Mat {
  u32* w;
  bf16 *s, *b;
};
typedef void (*Launcher)(bf16*, const bf16*, Mat, int, int, int, cudaStream_t);

// The launch ferrox makes for one row (quantized.rs).
static void launch_ferrox(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  const int features = QMV_WARPS / QMV_SPLIT * QMV_COLS;
  qmv_1<<<(n + features - 1) / features, QMV_WARPS * 32, 0, s>>>(y, x, m.w, m.s, m.b, n, k, 64, rows, nullptr,
                                                                   nullptr, 0.0f);
}

// A launch of `kern` overlapped with the kernel before it (programmatic dependent launch), as
// quantized.rs makes it on sm_90 and later, with the joins' arguments (addend, norm weight).
template <typename K>
static void launch_qmv(K kern, bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s,
                       const bf16* cadd, const bf16* nw) {
  const int features = QMV_WARPS / QMV_SPLIT * QMV_COLS;
  cudaLaunchAttribute attr;
  cudaLaunchConfig_t cfg = overlapped(dim3((n + features - 1) / features), dim3(QMV_WARPS * 32), s, &attr);
  i64 nn = n, kk = k, gs = 64;
  CK(cudaLaunchKernelEx(&cfg, kern, y, x, (const u32*)m.w, (const bf16*)m.s, (const bf16*)m.b, nn, kk, gs, rows, cadd,
                        nw, 1e-5f));
}
static void launch_overlapped(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  launch_qmv(qmv_1, y, x, m, rows, n, k, s, nullptr, nullptr);
}
// The joined variants: x rms-normalized by the kernel (the norm's weight is x itself), and a
// residual added (y as the addend). Their outputs differ from the plain kernel's, so their err
// column means nothing.
static void launch_rms(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  launch_qmv(qmv_rms_1, y, x, m, rows, n, k, s, nullptr, x);
}
static void launch_add(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  launch_qmv(qmv_1, y, x, m, rows, n, k, s, y, nullptr);
}

// The normalizing kernel with the rope epilogue (qmv_rms_rope_1: every head of 64 rotated at
// position 517, no cache writes): the cost of a decode step's rope joined into its q/k/v
// product. Its err column means nothing either.
static i32* rope_pos;
static void launch_rms_rope(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  const int features = QMV_WARPS / QMV_SPLIT * QMV_COLS;
  GemvRope rp;
  memset(&rp, 0, sizeof rp);
  rp.offset = (u64)rope_pos, rp.d = 64, rp.heads = n / 64, rp.values_from = -1, rp.len = 1;
  rp.base = 500000.0f, rp.scale = 1.0f;
  cudaLaunchAttribute attr;
  cudaLaunchConfig_t cfg = overlapped(dim3(n / features), dim3(QMV_WARPS * 32), s, &attr);
  i64 nn = n, kk = k, gs = 64;
  CK(cudaLaunchKernelEx(&cfg, qmv_rms_rope_1, y, x, (const u32*)m.w, (const bf16*)m.s, (const bf16*)m.b, nn, kk, gs, rows,
                        (const bf16*)nullptr, x, 1e-5f, rp));
}

// The long-k kernel (qmv_long_1: 8 warps, 4 splitting k, 8 features a group), and the mix
// quantized.rs launches: it where k is at least the features and there are 2 048 or more.
static void launch_long(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  const int features = QMV_LONG_WARPS / QMV_LONG_SPLIT * QMV_LONG_COLS;
  cudaLaunchAttribute attr;
  cudaLaunchConfig_t cfg = overlapped(dim3((n + features - 1) / features), dim3(QMV_LONG_WARPS * 32), s, &attr);
  i64 nn = n, kk = k, gs = 64;
  CK(cudaLaunchKernelEx(&cfg, qmv_long_1, y, x, (const u32*)m.w, (const bf16*)m.s, (const bf16*)m.b, nn, kk, gs, rows,
                        (const bf16*)nullptr, (const bf16*)nullptr, 1e-5f));
}
static void launch_mixed(bf16* y, const bf16* x, Mat m, int rows, int n, int k, cudaStream_t s) {
  if (k >= n && n >= 2048) launch_long(y, x, m, rows, n, k, s);
  else launch_overlapped(y, x, m, rows, n, k, s);
}

struct Variant {
  const char* name;
  Launcher f;
};
static const Variant variants[] = {{"ferrox qmv_1", launch_ferrox},
                                   {"overlapped", launch_overlapped},
                                   {"rms", launch_rms},
                                   {"add", launch_add},
                                   {"rms rope", launch_rms_rope},
                                   {"long", launch_long},
                                   {"mixed", launch_mixed}};
#define NVARIANTS ((int)(sizeof(variants) / sizeof(variants[0])))

struct Shape {
  const char* name;
  int n, k;
};

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s: 4-bit affine, group 64, one row\n", prop.name);
  const Shape shapes[] = {{"q/o 2048x2048", 2048, 2048},       {"k/v 512x2048", 512, 2048},
                          {"qkv 3072x2048", 3072, 2048},
                          {"gate/up 8192x2048", 8192, 2048},   {"down 2048x8192", 2048, 8192},
                          {"lm_head 128256x2048", 128256, 2048}};
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  const i32 pos = 517;
  CK(cudaMalloc(&rope_pos, sizeof pos));
  CK(cudaMemcpy(rope_pos, &pos, sizeof pos, cudaMemcpyHostToDevice));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  bf16 *x, *y;
  CK(cudaMalloc(&x, 8 * 8192 * 2));
  CK(cudaMalloc(&y, 8 * 128256 * 2));
  fill_bf16<<<64, 256>>>((u16*)x, 8 * 8192, 7, 2.0f);
  std::vector<u16> ref(128256), got(128256);
  for (const Shape& sh : shapes) {
    size_t words = (size_t)sh.n * sh.k / 8, groups = (size_t)sh.n * sh.k / 64;
    size_t bytes = words * 4 + groups * 4;
    int copies = (int)((600ull << 20) / bytes) + 1;
    if (copies > 64) copies = 64;
    u32* w;
    bf16* sb;
    CK(cudaMalloc(&w, words * 4 * copies));
    CK(cudaMalloc(&sb, groups * 4 * copies));
    fill_bits<<<1024, 256>>>(w, words * copies, 11);
    fill_bf16<<<1024, 256>>>((u16*)sb, groups * 2 * copies, 5, 0.02f);
    CK(cudaDeviceSynchronize());
    auto mat = [&](int i) { return Mat{w + words * i, sb + groups * 2 * i, sb + groups * 2 * i + groups}; };
    int iters = copies * ((2000 + copies - 1) / copies);
    if (sh.n == 128256) iters = 100;
    for (int vi = 0; vi < NVARIANTS; ++vi) {
      const Variant& v = variants[vi];
      v.f(y, x, mat(0), 1, sh.n, sh.k, s);
      CK(cudaMemcpy(got.data(), y, sh.n * 2, cudaMemcpyDeviceToHost));
      if (vi == 0) ref = got;
      float err = 0;
      for (int i = 0; i < sh.n; ++i) {
        float a = bf16_host(ref[i]), b = bf16_host(got[i]);
        float d = fabsf(a - b) / (fabsf(a) + 1e-1f);
        err = d > err ? d : err;
      }
      for (int i = 0; i < copies; ++i) v.f(y, x, mat(i), 1, sh.n, sh.k, s);
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < iters; ++i) v.f(y, x, mat(i % copies), 1, sh.n, sh.k, s);
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      double us = ms * 1e3 / iters;
      printf("%-20s %-16s %8.2f us/call  %6.0f GB/s  err %.1e\n", sh.name, v.name, us, bytes / us / 1e3, err);
    }
    CK(cudaFree(w));
    CK(cudaFree(sb));
  }
  // A whole step's products as a CUDA graph: 16 layers' own weights, then the lm head.
  const Shape layer[] = {{"qkv", 3072, 2048}, {"o", 2048, 2048}, {"gate_up", 16384, 2048}, {"down", 2048, 8192}};
  std::vector<Shape> seq;
  for (int l = 0; l < 16; ++l)
    for (const Shape& sh : layer) seq.push_back(sh);
  seq.push_back({"lm_head", 128256, 2048});
  size_t words = 0, groups = 0;
  for (const Shape& sh : seq) words += (size_t)sh.n * sh.k / 8, groups += (size_t)sh.n * sh.k / 64;
  u32* w;
  bf16* sb;
  CK(cudaMalloc(&w, words * 4));
  CK(cudaMalloc(&sb, groups * 4));
  fill_bits<<<1024, 256>>>(w, words, 11);
  fill_bf16<<<1024, 256>>>((u16*)sb, groups * 2, 5, 0.02f);
  CK(cudaDeviceSynchronize());
  for (int vi = 0; vi < NVARIANTS; ++vi) {
    const double us = graph_us(s, [&] {
      size_t wo = 0, go = 0;
      for (const Shape& sh : seq) {
        variants[vi].f(y, x, Mat{w + wo, sb + go, sb + groups + go}, 1, sh.n, sh.k, s);
        wo += (size_t)sh.n * sh.k / 8, go += (size_t)sh.n * sh.k / 64;
      }
    });
    const double bytes = words * 4.0 + groups * 4.0;
    printf("step products (%3d launches) %-14s %8.1f us  %7.0f GB/s\n", (int)seq.size(), variants[vi].name, us, bytes / us / 1e3);
  }
  CK(cudaFree(w));
  CK(cudaFree(sb));
  CK(cudaGetLastError());
  return 0;
}
