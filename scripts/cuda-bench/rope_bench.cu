// Timing of ferrox's rope kernel (crates/ferrox/src/backend/cuda/kernels/fast.cu, bf16) as
// Llama-3.2-1B's decode step and 2047-token prompt call it: q's 32 and k's 8 heads of the
// joined q/k/v product, read in place as the transposed view [1, 40, L, 64] of [1, L, 48, 64].
// The prompt runs rope_heads (8 heads a thread), the decode step rope; -DFAST_FILE='"other.cu"'
// -DOLD_ROPE times a version with rope alone (session 12's) in both.
#include "bench_common.cuh"
#define T bf16
#ifndef FAST_FILE
#define FAST_FILE "../../crates/ferrox/src/backend/cuda/kernels/fast.cu"
#endif
#include FAST_FILE

int main() {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int L : {1, 2047}) {
    const int heads = 40, d = 64, width = 48 * d;
    bf16 *x, *out;
    CK(cudaMalloc(&x, (size_t)L * width * 2));
    CK(cudaMalloc(&out, (size_t)heads * L * d * 2));
    fill_bf16<<<256, 256>>>((u16*)x, (size_t)L * width, 1, 2.0f);
    Layout rl;
    memset(&rl, 0, sizeof rl);
    rl.n = (i64)heads * L, rl.nd = 2, rl.shape[0] = heads, rl.shape[1] = L, rl.st[0][0] = d, rl.st[0][1] = width;
    if (L == 1) rl.nd = 1, rl.shape[0] = heads, rl.st[0][0] = d;
    int hpt = L >= 16 ? 8 : 1;
#ifdef OLD_ROPE
    hpt = 1;
#endif
    const long items = (heads + hpt - 1) / hpt * (long)L * (d / 2);
    const int grid = (int)std::min<long>((items + 63) / 64, 132 * 32);
    auto run = [&]() {
#ifndef OLD_ROPE
      if (hpt > 1) {
        rope_heads<<<grid, 64>>>(out, x, rl, nullptr, 2, 100, (i64)heads * L, L, d, d, 0, 10000.0f, 1.0f, nullptr, 0);
        return;
      }
#endif
      rope<<<grid, 64>>>(out, x, rl, nullptr, 2, 100, (i64)heads * L, L, d, d, 0, 10000.0f, 1.0f, nullptr, 0);
    };
    run();
    CK(cudaDeviceSynchronize());
    const int reps = 200;
    CK(cudaEventRecord(e0));
    for (int i = 0; i < reps; ++i) run();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    printf("rope L %4d, %d heads a thread: %7.2f us\n", L, hpt, ms * 1e3 / reps);
    CK(cudaFree(x));
    CK(cudaFree(out));
  }
  CK(cudaGetLastError());
  return 0;
}
