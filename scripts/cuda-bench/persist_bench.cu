// How fast could a decode step's 4-bit products run as one persistent kernel? A measured
// experiment toward issue 7's 4-bit goal (docs/STATUS.md, "persistent step kernel"), not code
// ferrox runs. The 65 products of a Llama-3.2-1B step (16 layers of fused q/k/v, o, fused
// gate/up and down, then the lm head; one row of x, 4 bits, group 64, bf16), each reading the
// one before's output as its x, run two ways:
//   launches:   ferrox's qmv_1 (quantized.cu as it is), one kernel a product launched
//               overlapped (programmatic dependent launch) in a CUDA graph, as a replayed
//               step runs them today;
//   pipelined:  one kernel of one block a multiprocessor (a cooperative launch: all resident).
//               A product is cut into pages of PAGE_WEIGHTS weights (8 192: 4 features at
//               k = 2048, 1 at k = 8192; 4 KiB of codes, 256 B of scales, 256 B of biases, each
//               one bulk copy since a page's rows are adjacent); page g goes to block g mod
//               grid, a fixed schedule each block knows. A producer warp streams the block's
//               pages, in order and across products, into the consumer warps' rings of shared
//               memory (TMA bulk copies completing on an mbarrier a slot) — weights never depend
//               on the step, so it runs ahead of the sums by up to SLOTS pages. A loader warp
//               waits until the product x comes from has all its pages done (a counter a
//               product in global memory) and puts x in shared memory (two buffers); each
//               consumer warp sums its pages from shared memory (page_sums), writes their
//               outputs, frees their slots and adds its count to the product's counter. No
//               warp waits for another's pages.
// Outputs are compared with the launches' (summation orders differ: a relative error).
// nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/pb scripts/cuda-bench/persist_bench.cu && /tmp/pb
// (-DSLOTS=n and -DCONSUMER_WARPS=n set the ring and the consumers, -DPAGE_WEIGHTS=n the page:
// at least the longest k, 8 192; -DSTREAM_ONLY sums the words as numbers instead of their codes: how
// fast the pages move with almost no arithmetic; -DMMA_SUMS sums on the tensor cores,
// page_sums_mma.)

#include "bench_common.cuh"
#define T bf16
#define BITS 4
#define FMT 0
#define QMV_M 1
#include "../../crates/ferrox/src/backend/cuda/kernels/quantized.cu"

#ifndef SLOTS
#define SLOTS 32
#endif
#ifndef CONSUMER_WARPS
#define CONSUMER_WARPS 8
#endif
// The consumer warps, then the producer warp, then the x loader warp.
constexpr int CT = CONSUMER_WARPS * 32, THREADS = CT + 64;
// Each consumer warp's own ring of slots.
constexpr int RING = SLOTS / CONSUMER_WARPS;
static_assert(RING >= 1 && SLOTS % CONSUMER_WARPS == 0, "SLOTS: a multiple of CONSUMER_WARPS");
#ifndef PAGE_WEIGHTS
#define PAGE_WEIGHTS 8192
#endif
constexpr int PAGE_CODE_BYTES = PAGE_WEIGHTS / 2, PAGE_GROUPS = PAGE_WEIGHTS / 64;
constexpr int PAGE_BYTES = PAGE_CODE_BYTES + 2 * PAGE_GROUPS * 2;
constexpr int MAX_K = 8192;
// The pages, x twice (bf16, or its fragments), x's group sums twice, the mbarriers.
constexpr int SMEM = SLOTS * PAGE_BYTES + 2 * MAX_K * 2 + 2 * (MAX_K / 64) * 4 + (2 * SLOTS + 4) * 8;

struct Prod {
  const u32* w;
  const bf16 *s, *b, *x;
  bf16* y;
  int n, k;
  int dep;    // the product whose output x is (-1: none)
  int first;  // the global index of its first page
};

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(u64* bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect(u64* bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(u64* bar, u32 parity) {
  u32 done;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
// `bytes` (a multiple of 16) from global `src` to shared `dst`, completing on `bar`.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, u32 bytes, u64* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ u32 load_acquire(const u32* p) {
  u32 v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The first page of product `pr` that block `b` of `grid` takes.
__device__ __forceinline__ int first_page(const Prod& pr, int b, int grid) { return ((b - pr.first) % grid + grid) % grid; }

// Warp-sized work: the sums of one page whose F features (rows) lie in shared memory. Lane l
// takes the row positions l, l + 32, .. of 8 codes each (a u32 word), converts x there once and
// uses it for every feature; the F sums meet by shuffles and lane f writes feature f.
template <int F>
__device__ __forceinline__ void page_sums(const unsigned char* page, const bf16* xs, bf16* y, int lane) {
  constexpr int WPF = PAGE_WEIGHTS / F / 8, GPF = PAGE_WEIGHTS / F / 64;
  const u32* codes = (const u32*)page;
  const bf16* sc = (const bf16*)(page + PAGE_CODE_BYTES);
  const bf16* bi = sc + PAGE_GROUPS;
  float acc[F];
#pragma unroll
  for (int f = 0; f < F; ++f) acc[f] = 0.0f;
#pragma unroll 2
  for (int wi = lane; wi < WPF; wi += 32) {
    const uint4 xv = *(const uint4*)(xs + wi * 8);
    const bf16* xe = (const bf16*)&xv;
    float xf[8], sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) xf[j] = to_acc<bf16>(xe[j]), sum += xf[j];
#pragma unroll
    for (int f = 0; f < F; ++f) {
      const u32 word = codes[f * WPF + wi];
#ifdef STREAM_ONLY
      acc[f] += (float)word;
      continue;
#endif
      float dot = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j) dot = fmaf(xf[j], code_value((word >> (4 * j)) & 15u), dot);
      const int gi = f * GPF + wi / 8;
      acc[f] += to_acc<bf16>(sc[gi]) * dot + to_acc<bf16>(bi[gi]) * sum;
    }
  }
#pragma unroll
  for (int f = 0; f < F; ++f) {
    const float v = warp_sum(acc[f]);
    if (lane == f) y[f] = from_acc<bf16>(v);
  }
}

// The tensor-core form of page_sums (-DMMA_SUMS; x of bf16). A page's codes become bf16
// 128 + c, two by one lop3 (codes j and j + 4 of a word share a 32-bit register), and
// mma.m16n8k16 (f32 accumulation) sums x · (128 + c) a group of 64 codes at a time; the group's
// scale s and bias b then add s · D + (b − 128 s) · Σx in f32, as the scalar kernel adds
// s · (x · c) + b · Σx. The 8 columns of the mma are (feature f, quarter q) pairs, Q = 8 / F
// quarters of k a feature: row q of A is x's quarter q, so D[q][(f, q)] is that quarter's sum
// (the other rows are unused). Lane (g, t) holds column g's codes 16t .. 16t + 15 of a group
// and x's pairs in the same order, which xf holds ready (xf_prepare); sx holds x's group sums.
__device__ __forceinline__ u32 code_pair(u32 w, int shift) {
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w >> shift), "r"(0x000F000Fu), "r"(0x43004300u));
  return r;  // (w >> shift & mask) | magic
}
__device__ __forceinline__ void mma_bf16(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// x (k values) as mma fragments: block u of 16 values becomes the pairs (0,4) (1,5) (2,6) (3,7)
// (8,12) (9,13) (10,14) (11,15), 32 bytes; and the sums of x's groups of 64. By the x loader warp.
__device__ __forceinline__ void xf_prepare(const bf16* x, int k, uint4* xf, float* sx, int t) {
  for (int u = t; u < k / 16; u += 32) {
    const uint4 lo = __ldcg((const uint4*)x + 2 * u), hi = __ldcg((const uint4*)x + 2 * u + 1);
    xf[2 * u] = make_uint4(__byte_perm(lo.x, lo.z, 0x5410), __byte_perm(lo.x, lo.z, 0x7632),
                           __byte_perm(lo.y, lo.w, 0x5410), __byte_perm(lo.y, lo.w, 0x7632));
    xf[2 * u + 1] = make_uint4(__byte_perm(hi.x, hi.z, 0x5410), __byte_perm(hi.x, hi.z, 0x7632),
                               __byte_perm(hi.y, hi.w, 0x5410), __byte_perm(hi.y, hi.w, 0x7632));
  }
  for (int g = t; g < k / 64; g += 32) {
    float v = 0.0f;
    for (int i = 0; i < 8; ++i) {
      const uint4 q = __ldcg((const uint4*)x + 8 * g + i);
      const bf16* e = (const bf16*)&q;
#pragma unroll
      for (int j = 0; j < 8; ++j) v += to_acc<bf16>(e[j]);
    }
    sx[g] = v;
  }
}
template <int Q>
__device__ __forceinline__ void page_sums_mma(const unsigned char* page, const uint4* xf, const float* sx, bf16* y,
                                              float* red, int lane, int k) {
  constexpr int F = 8 / Q, GQ = PAGE_WEIGHTS / 8 / 64;  // groups a quarter
  const int g = lane >> 2, t = lane & 3, wpf = k / 8, gpf = k / 64;
  const u32* codes = (const u32*)page;
  const bf16* sc = (const bf16*)(page + PAGE_CODE_BYTES);
  const bf16* bi = sc + PAGE_GROUPS;
  // B: column g = (feature g / Q, quarter g % Q); A: row g is quarter g % Q.
  const u32* bw = codes + (g / Q) * wpf + (g % Q) * (GQ * 8) + 2 * t;
  const uint4* ax = xf + 2 * ((g % Q) * GQ * 4 + t);
  // The columns of this lane's c0 / c1, and whether its row g holds their quarter.
  const int n0 = 2 * t, n1 = 2 * t + 1;
  const int s0i = (n0 / Q) * gpf + (n0 % Q) * GQ, s1i = (n1 / Q) * gpf + (n1 % Q) * GQ;
  const int x0i = (n0 % Q) * GQ, x1i = (n1 % Q) * GQ;
  float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll 4
  for (int G = 0; G < GQ; ++G) {
    const uint2 w = *(const uint2*)(bw + 8 * G);
    const uint4 xa = ax[8 * G], xb = ax[8 * G + 1];
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_bf16(d, xa.x, xa.x, xa.y, xa.y, code_pair(w.x, 0), code_pair(w.x, 4));
    mma_bf16(d, xa.z, xa.z, xa.w, xa.w, code_pair(w.x, 8), code_pair(w.x, 12));
    mma_bf16(d, xb.x, xb.x, xb.y, xb.y, code_pair(w.y, 0), code_pair(w.y, 4));
    mma_bf16(d, xb.z, xb.z, xb.w, xb.w, code_pair(w.y, 8), code_pair(w.y, 12));
    const float sa = to_acc<bf16>(sc[s0i + G]), sb = to_acc<bf16>(sc[s1i + G]);
    acc0 += sa * d[0] + (to_acc<bf16>(bi[s0i + G]) - 128.0f * sa) * sx[x0i + G];
    acc1 += sb * d[1] + (to_acc<bf16>(bi[s1i + G]) - 128.0f * sb) * sx[x1i + G];
  }
  if (g == n0 % Q) red[n0] = acc0;
  if (g == n1 % Q) red[n1] = acc1;
  __syncwarp();
  if (lane < F) {
    float v = 0.0f;
#pragma unroll
    for (int q = 0; q < Q; ++q) v += red[lane * Q + q];
    y[lane] = from_acc<bf16>(v);
  }
}

// counters[i]: product i's pages done (zeroed by the host before each run). The block's pages
// are numbered in order across products (n); page n goes to consumer warp n mod
// CONSUMER_WARPS, into slot (n / CONSUMER_WARPS) mod RING of that warp's own ring, so each ring
// is filled and emptied in order and no warp waits for another. The loader warp waits for the
// product x comes from and loads x into one of two buffers (xready / xfree: an mbarrier each);
// every consumer warp waits for each product's x, even with no page of it, so those waits
// stay in step with the buffers' phases.
__global__ void __launch_bounds__(THREADS, 1) pipelined(const Prod* __restrict__ prods, int nprod, u32* counters) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* pages = smem;
  bf16* xbuf = (bf16*)(smem + SLOTS * PAGE_BYTES);
  float* sxbuf = (float*)(xbuf + 2 * MAX_K);
  u64* full = (u64*)(sxbuf + 2 * (MAX_K / 64));
  u64* empty = full + SLOTS;
  u64* xready = empty + SLOTS;
  u64* xfree = xready + 2;
  __shared__ float red[CONSUMER_WARPS][8];
  const int grid = gridDim.x, b = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) {
    for (int i = 0; i < SLOTS; ++i) mbar_init(full + i, 1), mbar_init(empty + i, 1);
    for (int i = 0; i < 2; ++i) mbar_init(xready + i, 1), mbar_init(xfree + i, CONSUMER_WARPS);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (warp == CONSUMER_WARPS) {  // the producer: one lane issues the copies
    if (lane != 0) return;
    int n = 0;
    for (int p = 0; p < nprod; ++p) {
      const Prod pr = prods[p];
      const int npages = pr.n * pr.k / PAGE_WEIGHTS;
      for (int g = first_page(pr, b, grid); g < npages; g += grid, ++n) {
        const int i = n / CONSUMER_WARPS, slot = (n % CONSUMER_WARPS) * RING + i % RING;
        if (i >= RING) mbar_wait(empty + slot, (i / RING - 1) & 1);
        unsigned char* page = pages + slot * PAGE_BYTES;
        mbar_expect(full + slot, PAGE_BYTES);
        bulk_copy(page, (const unsigned char*)pr.w + (size_t)g * PAGE_CODE_BYTES, PAGE_CODE_BYTES, full + slot);
        bulk_copy(page + PAGE_CODE_BYTES, pr.s + (size_t)g * PAGE_GROUPS, PAGE_GROUPS * 2, full + slot);
        bulk_copy(page + PAGE_CODE_BYTES + PAGE_GROUPS * 2, pr.b + (size_t)g * PAGE_GROUPS, PAGE_GROUPS * 2,
                  full + slot);
      }
    }
    return;
  }
  if (warp == CONSUMER_WARPS + 1) {  // the x loader
    int q = 0;
    for (int p = 0; p < nprod; ++p) {
      const Prod pr = prods[p];
      if (first_page(pr, b, grid) >= pr.n * pr.k / PAGE_WEIGHTS) continue;
      const int buf = q & 1;
      if (q >= 2) mbar_wait(xfree + buf, (q / 2 - 1) & 1);
      if (pr.dep >= 0 && lane == 0) {
        const Prod& d = prods[pr.dep];
        const u32 need = (u32)(d.n * d.k / PAGE_WEIGHTS);
        while (load_acquire(counters + pr.dep) < need) __nanosleep(20);
      }
      __syncwarp();
      bf16* xs = xbuf + buf * MAX_K;
#ifdef MMA_SUMS
      xf_prepare(pr.x, pr.k, (uint4*)xs, sxbuf + buf * (MAX_K / 64), lane);
#else
      for (int i = lane; i < pr.k / 8; i += 32) ((uint4*)xs)[i] = __ldcg((const uint4*)pr.x + i);
#endif
      __threadfence_block();
      __syncwarp();
      if (lane == 0) mbar_arrive(xready + buf);
      ++q;
    }
    return;
  }
  int n0 = 0, q = 0;  // the block's number of the product's first page; the product's x buffer
  for (int p = 0; p < nprod; ++p) {
    const Prod pr = prods[p];
    const int npages = pr.n * pr.k / PAGE_WEIGHTS, g0 = first_page(pr, b, grid);
    if (g0 >= npages) continue;
    const int mine = (npages - g0 + grid - 1) / grid, f_count = PAGE_WEIGHTS / pr.k, buf = q & 1;
    const bf16* xs = xbuf + buf * MAX_K;
    mbar_wait(xready + buf, (q / 2) & 1);
    int done = 0;
    for (int j = ((warp - n0) % CONSUMER_WARPS + CONSUMER_WARPS) % CONSUMER_WARPS; j < mine;
         j += CONSUMER_WARPS, ++done) {
      const int n = n0 + j, i = n / CONSUMER_WARPS, slot = warp * RING + i % RING, g = g0 + j * grid;
      mbar_wait(full + slot, (i / RING) & 1);
      const unsigned char* page = pages + slot * PAGE_BYTES;
      bf16* y = pr.y + (size_t)g * f_count;
#ifdef MMA_SUMS
      const float* sx = sxbuf + buf * (MAX_K / 64);
      switch (f_count) {
        case 8: page_sums_mma<1>(page, (const uint4*)xs, sx, y, red[warp], lane, pr.k); break;
        case 4: page_sums_mma<2>(page, (const uint4*)xs, sx, y, red[warp], lane, pr.k); break;
        case 2: page_sums_mma<4>(page, (const uint4*)xs, sx, y, red[warp], lane, pr.k); break;
        default: page_sums_mma<8>(page, (const uint4*)xs, sx, y, red[warp], lane, pr.k); break;
      }
#else
      switch (f_count) {
        case 1: page_sums<1>(page, xs, y, lane); break;
        case 2: page_sums<2>(page, xs, y, lane); break;
        case 4: page_sums<4>(page, xs, y, lane); break;
        case 8: page_sums<8>(page, xs, y, lane); break;
        default: page_sums<16>(page, xs, y, lane); break;
      }
#endif
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + slot);
    }
    if (done) {
      __threadfence();
      __syncwarp();
      if (lane == 0) atomicAdd(counters + p, (u32)done);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(xfree + buf);
    n0 += mine;
    ++q;
  }
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  struct Shape {
    int n, k;
  };
  const Shape layer[] = {{3072, 2048}, {2048, 2048}, {16384, 2048}, {2048, 8192}};
  std::vector<Shape> seq;
  for (int l = 0; l < 16; ++l)
    for (const Shape& sh : layer) seq.push_back(sh);
  seq.push_back({128256, 2048});
  const int nprod = (int)seq.size();
  size_t words = 0, groups = 0;
  for (const Shape& sh : seq) words += (size_t)sh.n * sh.k / 8, groups += (size_t)sh.n * sh.k / 64;
  u32* w;
  bf16 *sb, *acts;
  CK(cudaMalloc(&w, words * 4));
  CK(cudaMalloc(&sb, groups * 4));
  // Each product's output in its own buffer (x of product 0 is acts[0..8192)).
  size_t act_elems = 8192;
  for (const Shape& sh : seq) act_elems += sh.n;
  CK(cudaMalloc(&acts, act_elems * 2));
  fill_bits<<<1024, 256>>>(w, words, 11);
  fill_bf16<<<1024, 256>>>((u16*)sb, groups * 2, 5, 0.004f);
  fill_bf16<<<64, 256>>>((u16*)acts, 8192, 7, 2.0f);
  std::vector<Prod> prods;
  size_t wo = 0, go = 0, ao = 8192;
  int first = 0;
  const bf16* x = acts;
  for (int i = 0; i < nprod; ++i) {
    const Shape& sh = seq[i];
    prods.push_back(Prod{w + wo, sb + go, sb + groups + go, x, acts + ao, sh.n, sh.k, i - 1, first});
    x = acts + ao;
    wo += (size_t)sh.n * sh.k / 8, go += (size_t)sh.n * sh.k / 64, ao += sh.n;
    first += sh.n * sh.k / PAGE_WEIGHTS;
  }
  Prod* dprods;
  CK(cudaMalloc(&dprods, prods.size() * sizeof(Prod)));
  CK(cudaMemcpy(dprods, prods.data(), prods.size() * sizeof(Prod), cudaMemcpyHostToDevice));
  u32* counters;
  CK(cudaMalloc(&counters, nprod * 4));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  CK(cudaDeviceSynchronize());
  const double bytes = words * 4.0 + groups * 4.0;
  printf("%s: %d products, %d pages, %.0f MB of weights; %d slots, %d consumer warps, %d B shared\n", prop.name,
         nprod, first, bytes / 1e6, SLOTS, CONSUMER_WARPS, SMEM);

  auto launches = [&] {
    for (const Prod& pr : prods) {
      const int features = QMV_WARPS / QMV_SPLIT * QMV_COLS;
      cudaLaunchAttribute attr;
      cudaLaunchConfig_t cfg = overlapped(dim3((pr.n + features - 1) / features), dim3(QMV_WARPS * 32), s, &attr);
      i64 nn = pr.n, kk = pr.k, gs = 64;
      CK(cudaLaunchKernelEx(&cfg, qmv_1, pr.y, pr.x, (const u32*)pr.w, pr.s, pr.b, nn, kk, gs, 1,
                            (const bf16*)nullptr, (const bf16*)nullptr, 0.0f));
    }
  };
  const int last_n = seq.back().n;
  std::vector<u16> ref(last_n), got(last_n);
  launches();
  CK(cudaStreamSynchronize(s));
  CK(cudaMemcpy(ref.data(), prods.back().y, last_n * 2, cudaMemcpyDeviceToHost));
  float mag = 0;
  for (int i = 0; i < last_n; ++i) mag = fmaxf(mag, fabsf(bf16_host(ref[i])));
  const double launch_us = graph_us(s, launches);
  printf("launches (qmv_1):      %8.1f us  %6.0f GB/s\n", launch_us, bytes / launch_us / 1e3);

  CK(cudaFuncSetAttribute(pipelined, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  const int grid = prop.multiProcessorCount;
  int np = nprod;
  void* args[] = {&dprods, &np, &counters};
  auto run = [&] {
    CK(cudaMemsetAsync(counters, 0, nprod * 4, s));
    CK(cudaLaunchCooperativeKernel((void*)pipelined, dim3(grid), dim3(THREADS), args, SMEM, s));
  };
  CK(cudaMemsetAsync(prods.back().y, 0, last_n * 2, s));
  run();
  CK(cudaStreamSynchronize(s));
  CK(cudaMemcpy(got.data(), prods.back().y, last_n * 2, cudaMemcpyDeviceToHost));
  float err = 0;
  for (int i = 0; i < last_n; ++i) err = fmaxf(err, fabsf(bf16_host(got[i]) - bf16_host(ref[i])) / mag);
  // Timed as launches back to back (a cooperative launch is not captured in the graph).
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  run();
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < 50; ++i) run();
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  const double us = ms * 1e3 / 50;
  printf("pipelined (%3d blocks): %8.1f us  %6.0f GB/s  max |diff| / max |y| %.1e (max |y| %.1e)\n", grid, us,
         bytes / us / 1e3, err, mag);
  // The same with no product waiting for another: how fast the pages stream and sum alone.
  std::vector<Prod> free_prods = prods;
  for (Prod& pr : free_prods) pr.dep = -1;
  CK(cudaMemcpy(dprods, free_prods.data(), prods.size() * sizeof(Prod), cudaMemcpyHostToDevice));
  run();
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < 50; ++i) run();
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  CK(cudaEventElapsedTime(&ms, e0, e1));
  printf("pipelined, no waits:   %8.1f us  %6.0f GB/s\n", ms * 1e3 / 50, bytes / (ms * 1e3 / 50) / 1e3);
  CK(cudaGetLastError());
  return 0;
}
