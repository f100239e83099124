// Timing of ferrox's prefill attention kernel on tensor cores (attn_mma_HD of
// crates/ferrox/src/backend/cuda/kernels/attention.cu, included as it is: bf16) for
// Llama-3.2-1B's heads (32 query heads, 8 kv heads, head size 64) and head size 128, one
// sequence, causal and unmasked, with nvcc on the GPU machine (scripts/cuda-bench/run.sh).
// Each output is checked against the f32 flash kernel of the same file (attn_flash_HD, FMAs,
// no tensor cores); TFLOP/s count 4·D flops per visible (query, key) pair.
// -DATTN_FILE='"other.cu"' times another version of the file (a before / after; add
// -DMMA_ROW_MAJOR for one from before session 14).

#include "bench_common.cuh"
#define T bf16
#define MMA_KIND "bf16"
#ifndef ATTN_FILE
#define ATTN_FILE "../../crates/ferrox/src/backend/cuda/kernels/attention.cu"
#endif
#include ATTN_FILE

// With arguments D L S mkind (0 none, 1 causal), that one case only.
int main(int argc, char** argv) {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s: prefill attention (%s), bf16, 32 q heads / 8 kv heads, one sequence\n", prop.name, ATTN_FILE);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const int B = 1, Hq = 32, Hkv = 8;
  struct Case { int D, L, S, mkind; };
  const Case cases[] = {{64, 512, 512, 1},   {64, 2047, 2047, 1}, {64, 2048, 2048, 1}, {64, 2048, 2048, 0},
                        {64, 4096, 4096, 1}, {64, 100, 612, 1},   {64, 17, 17, 1},     {128, 512, 512, 1},
                        {128, 2047, 2047, 1}, {128, 2048, 2048, 1}};
  std::vector<Case> todo(cases, cases + sizeof cases / sizeof cases[0]);
  if (argc == 5) todo = {{atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4])}};
  for (const Case& c : todo) {
    const int D = c.D, L = c.L, S = c.S;
    size_t qn = (size_t)B * Hq * L * D, kn = (size_t)B * Hkv * S * D;
    bf16 *q, *k, *v, *o0, *o1;
    CK(cudaMalloc(&q, qn * 2));
    CK(cudaMalloc(&k, kn * 2));
    CK(cudaMalloc(&v, kn * 2));
    CK(cudaMalloc(&o0, qn * 2));
    CK(cudaMalloc(&o1, qn * 2));
    fill_bf16<<<1024, 256>>>((u16*)q, qn, 1, 4.0f);
    fill_bf16<<<1024, 256>>>((u16*)k, kn, 2, 4.0f);
    fill_bf16<<<1024, 256>>>((u16*)v, kn, 3, 4.0f);
    CK(cudaMemset(o1, 0xff, qn * 2));
    Attn p;
    memset(&p, 0, sizeof p);
    p.q = (u64)q, p.k = (u64)k, p.v = (u64)v;
    p.qs[0] = (i64)Hq * L * D, p.qs[1] = (i64)L * D, p.qs[2] = D;
    p.ks[0] = p.vs[0] = (i64)Hkv * S * D;
    p.ks[1] = p.vs[1] = (i64)S * D;
    p.ks[2] = p.vs[2] = D;
    p.B = B, p.Hq = Hq, p.Hkv = Hkv, p.L = L, p.S = S, p.D = D, p.Dv = D;
    p.mkind = c.mkind;
    p.scale = 1.0f / sqrtf((float)D);
    p.vec = 1;
    const int rows = Hq / Hkv * L;
    p.out = (u64)o0;
    dim3 gref(B * Hkv * ((rows + 31) / 32));
    if (D == 64) attn_flash_64<<<gref, 128>>>(p);
    else attn_flash_128<<<gref, 128>>>(p);
    p.out = (u64)o1;
#ifdef OLD_GRID
    dim3 grid(B * Hkv * ((rows + 63) / 64));
#else
    const int br = 64 * MmaTiles<64>::MT;
    dim3 grid(L >= br ? B * Hq * ((L + br - 1) / br) : B * Hkv * ((rows + br - 1) / br));
#endif
    auto run = [&]() {
      if (D == 64) attn_mma_64<<<grid, 128>>>(p);
      else attn_mma_128<<<grid, 128>>>(p);
    };
    run();
    CK(cudaDeviceSynchronize());
    std::vector<u16> a(qn), bb(qn);
    CK(cudaMemcpy(a.data(), o0, qn * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(bb.data(), o1, qn * 2, cudaMemcpyDeviceToHost));
    double err = 0, norm = 0;
    for (size_t i = 0; i < qn; ++i) {
      // The tensor-core kernel writes [B, L, Hq, D] memory (-DMMA_ROW_MAJOR: an older file's
      // row-major [B, Hq, L, D]); B is 1.
      const size_t h = i / ((size_t)L * D), r = i / D % L, e = i % D;
#ifdef MMA_ROW_MAJOR
      const size_t j = i;
#else
      const size_t j = (r * Hq + h) * D + e;
#endif
      double x = bf16_host(a[i]), y = bf16_host(bb[j]);
      double d = fabs(x - y);
      if (!(d <= err)) err = d;  // NaN sticks
      norm = std::max(norm, (double)fabs(x));
    }
    const int reps = 20;
    CK(cudaEventRecord(e0));
    for (int i = 0; i < reps; ++i) run();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    ms /= reps;
    double pairs = 0;
    for (int i = 0; i < L; ++i) pairs += c.mkind == 1 ? std::max(0, std::min(S, i + S - L + 1)) : S;
    double flops = 4.0 * D * pairs * Hq * B;
    printf("D %3d L %4d S %4d %-6s %8.1f us %6.1f TFLOP/s  max err %.1e of %.1f\n", D, L, S,
           c.mkind == 1 ? "causal" : "none", ms * 1e3, flops / ms / 1e9, err, norm);
    CK(cudaFree(q));
    CK(cudaFree(k));
    CK(cudaFree(v));
    CK(cudaFree(o0));
    CK(cudaFree(o1));
  }
  CK(cudaGetLastError());
  return 0;
}
