// Timing of ferrox's decode attention kernels (crates/ferrox/src/backend/cuda/kernels/
// attention.cu, included as it is: bf16) for Llama-3.2-1B's shape (32 query heads, 8 kv heads,
// head size 64) and a Llama-3-8B-like one (head size 128), one query row a head, with nvcc on
// the GPU machine (scripts/cuda-bench/run.sh): 16 layers' caches of S keys, each layer's
// decode and combine kernels back to back in a CUDA graph; µs a layer. The per-key kernel
// (attn_decode_EPL_R, the general path) beside the tiled one (attn_decode_rows_HD).

#include "bench_common.cuh"
#define T bf16
#include "../../crates/ferrox/src/backend/cuda/kernels/attention.cu"

static int sms;

// The per-key path as attention.rs launches it.
static void launch_old(Attn p, float* part, cudaStream_t s) {
  int rows = p.Hq / p.Hkv * p.L;
  int epl = p.D <= 64 ? 2 : 4;
  int r = rows == 1 ? 1 : rows == 2 ? 2 : rows <= 4 ? 4 : 8;
  int blocks = p.B * p.Hkv * ((rows + r - 1) / r);
  int nsplit = (8 * sms + blocks - 1) / blocks;
  nsplit = std::min(nsplit, (p.S + 15) / 16);
  nsplit = std::max(1, std::min(nsplit, 256));
  int chunk = (p.S + nsplit - 1) / nsplit;
  nsplit = (p.S + chunk - 1) / chunk;
  dim3 grid(blocks, nsplit);
#define OLD(E, RR) if (epl == E && r == RR) attn_decode_##E##_##RR<<<grid, 128, 0, s>>>(p, part, nsplit, chunk);
  OLD(2, 4) OLD(4, 4) OLD(2, 8) OLD(4, 8)
  if (nsplit > 1) attn_combine_4<<<p.B * p.Hq * p.L, 256, 0, s>>>(p, part, nsplit);
}

// The keys-across-lanes path with `kps` keys a split.
static int kps = 128;
static void launch_new(Attn p, float* part, cudaStream_t s) {
  int rows = p.Hq / p.Hkv * p.L;
  int nsplit = std::max(1, std::min(256, (p.S + kps - 1) / kps));
  int chunk = (p.S + nsplit - 1) / nsplit;
  chunk = (chunk + 31) / 32 * 32;
  nsplit = (p.S + chunk - 1) / chunk;
  dim3 grid(p.B * p.Hkv * ((rows + 3) / 4), nsplit);
  if (p.D == 64) attn_decode_rows_64<<<grid, 128, 0, s>>>(p, part, nsplit, chunk);
  if (p.D == 128) attn_decode_rows_128<<<grid, 128, 0, s>>>(p, part, nsplit, chunk);
  if (nsplit > 1) attn_combine_4<<<p.B * p.Hq * p.L, 256, 0, s>>>(p, part, nsplit);
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  sms = prop.multiProcessorCount;
  printf("%s: decode attention, bf16, 32 q heads / 8 kv heads, one row a head\n", prop.name);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  const int layers = 16, Hq = 32, Hkv = 8;
  for (int D : {64, 128})
    for (int B : {1, 8})
      for (int S : {128, 640, 2048, 8192}) {
        const int cap = S;
        size_t kvn = (size_t)B * Hkv * cap * D;
        bf16 *kv, *q, *o0, *o1;
        float* part;
        CK(cudaMalloc(&kv, kvn * 2 * 2 * layers));
        CK(cudaMalloc(&q, (size_t)B * Hq * D * 2));
        CK(cudaMalloc(&o0, (size_t)B * Hq * D * 2 * layers));
        CK(cudaMalloc(&o1, (size_t)B * Hq * D * 2 * layers));
        CK(cudaMalloc(&part, (size_t)B * Hq * 256 * (D + 2) * 4));
        fill_bf16<<<1024, 256>>>((u16*)kv, kvn * 2 * layers, 3, 4.0f);
        fill_bf16<<<64, 256>>>((u16*)q, (size_t)B * Hq * D, 9, 4.0f);
        CK(cudaDeviceSynchronize());
        auto params = [&](int layer, bf16* out) {
          Attn p;
          memset(&p, 0, sizeof p);
          p.q = (u64)q;
          p.k = (u64)(kv + kvn * 2 * layer);
          p.v = (u64)(kv + kvn * 2 * layer + kvn);
          p.out = (u64)(out + (size_t)B * Hq * D * layer);
          p.qs[0] = (i64)Hq * D, p.qs[1] = D, p.qs[2] = D;
          p.ks[0] = p.vs[0] = (i64)Hkv * cap * D;
          p.ks[1] = p.vs[1] = (i64)cap * D;
          p.ks[2] = p.vs[2] = D;
          p.B = B, p.Hq = Hq, p.Hkv = Hkv, p.L = 1, p.S = S, p.D = D, p.Dv = D;
          p.mkind = 0;
          p.scale = 1.0f / sqrtf((float)D);
          return p;
        };
        auto timed = [&](void (*f)(Attn, float*, cudaStream_t), bf16* out) {
          return graph_us(st, [&] {
                   for (int l = 0; l < layers; ++l) f(params(l, out), part, st);
                 }) /
                 layers;
        };
        double t_old = timed(launch_old, o0);
        printf("D %3d B %d S %5d: per-key %7.2f us/layer", D, B, S, t_old);
        std::vector<u16> a((size_t)B * Hq * D), bb((size_t)B * Hq * D);
        CK(cudaMemcpy(a.data(), o0, a.size() * 2, cudaMemcpyDeviceToHost));
        for (int k : {32, 64, 128, 256}) {
          kps = k;
          CK(cudaMemset(o1, 0xff, (size_t)B * Hq * D * 2 * layers));
          double t = timed(launch_new, o1);
          CK(cudaMemcpy(bb.data(), o1, bb.size() * 2, cudaMemcpyDeviceToHost));
          double err = 0, norm = 0;
          for (size_t i = 0; i < a.size(); ++i) {
            double x = bf16_host(a[i]), y = bf16_host(bb[i]);
            err = std::max(err, (double)fabs(x - y));
            norm = std::max(norm, (double)fabs(x));
          }
          printf(" | rows/%d %6.2f (%.0e)", k, t, err / norm);
        }
        printf("\n");
        CK(cudaFree(kv));
        CK(cudaFree(q));
        CK(cudaFree(o0));
        CK(cudaFree(o1));
        CK(cudaFree(part));
      }
  CK(cudaGetLastError());
  return 0;
}
