// A persistent kernel for a decode step's 65 dependent 4-bit products, second design (after
// persist_bench.cu, PERF "CUDA, session 22"): far less work a warp once x arrives, and sums on
// the tensor cores. A measured experiment toward issue 7's 4-bit goal, not code ferrox runs.
//
// The products are those of a Llama-3.2-1B step (16 layers of fused q/k/v 3072 x 2048, o 2048 x
// 2048, fused gate/up 16384 x 2048, down 2048 x 8192, then the lm head 128256 x 2048; one row of
// x, MLX affine 4 bits, group 64, bf16), each reading the one before's output as its x.
//
// Work: a chunk is 8 features (an "octet") x 512 codes (8 groups): 2 KiB of codes, 16 B of
// scales and 16 B of biases a feature. Block b of the grid (one a multiprocessor) takes the
// octets [b * O / grid, (b + 1) * O / grid) of each product. Its chunks are spread over all its
// worker warps, in one of two ways (a fixed schedule: the host makes each warp's list of chunks,
// schedule in main, and the kernel copies the lists into shared memory first):
//   split: the chunks (octet, k-chunk) of the block go round the warps, so a product of few
//          octets (q/k/v, o, down) still keeps every warp busy for one chunk or two; each chunk's
//          8 partial sums go to shared memory, and after a barrier every worker thread joins one
//          output's partials in the fixed order of k (deterministic: the same sums whichever
//          warp summed which chunk, whenever);
//   whole: (products with at least NWARPS octets a block: the head) a warp takes whole octets,
//          summing its k-chunks in order in registers.
// Streaming: each worker warp copies its own chunks into its own ring of RING slots of shared
// memory with cp.async (16 B a lane, one commit group a chunk), up to RING chunks ahead of its
// sums and across products: the copies of the next products' weights are in flight while the
// warp waits for their x (weights never depend on the step). No warp waits for another's
// copies; no producer warp, no mbarrier.
// Dependencies: product p's counter (global) counts its blocks done (after the join, a second
// barrier, then one thread adds one by a release add). Each block has one poll warp:
// it waits for the counter of the product x comes from and raises a flag in shared memory; then
// every worker warp loads its part of x from L2 (one item of 16 values a lane: one round trip
// for any k), writes it in the tensor-core fragment order with x's group sums to one of two x
// buffers, and the workers meet at a named barrier before their sums (every worker goes through
// every product, with chunks of it or not; the barrier also frees the buffer of two products
// back).
// Sums (chunk_sums): mma.m16n8k16 (bf16, f32 accumulation) with the weights as A: row g of A is
// feature g of the octet over group 2j, row g + 8 the same feature over group 2j + 1, so one mma
// takes 256 weights; codes become bf16 128 + c two at a time (one lop3), x goes in B, even
// columns holding group 2j's x, odd ones group 2j + 1's; D[g][even] and D[g + 8][odd] are the
// two groups' sums, and s * D + (b - 128 s) * sum(x) adds each group's scale and bias in f32.
//
// Checks: every output of every product against ferrox's qmv_1 given the same x (so errors do
// not compound; outputs poisoned with NaN first), the last product against a chain of qmv_1
// launches, and two runs bit for bit (determinism).
//
// nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/pb2 scripts/cuda-bench/persist2_bench.cu && /tmp/pb2
// -DNWARPS=n worker warps a block (16), -DRING=n slots a warp (2; 3 at most with the lists in
// shared memory, 4 with -DLIST8), -DNO_SUMS replaces the sums by adding the words (how fast the chunks move with
// almost no arithmetic), -DNO_WEIGHTS copies no weights either (the chain of dependencies alone),
// -DTRACE the time of each step of a product (printed). Earlier versions, each measured slower:
// -DLIST_L1 reads the chunk lists through L1 (else they are copied into shared memory first),
// -DLAST_WARP_JOIN has the block's last warp join a split product's partials (else every worker
// thread takes outputs between two barriers), -DONE_D one mma accumulator chain a group pair
// (else two), -DFENCE_SIGNAL (with -DLAST_WARP_JOIN) the signal as a fence and an atomic add.
// scripts/cuda-bench/persist2_sweep.sh builds and runs several at once.
// Session 27's levers, off by default (the session-26 default stays the baseline). Each built
// and checked, each measured slower than the default with dependencies (371-374 us); POLL_X and
// KX=1 are faster with no waits (271 / 289 against 311 us):
// -DKDEP k-chunked dependencies: product p raises one counter per 512 outputs (x chunk c of its
// consumer), counters[p * XCH + c], from the blocks whose octets touch that chunk; the poll warp
// (a lane a chunk) publishes each chunk of x in shared memory as it completes (xrdy[c] = p), and
// a worker warp of a split product waits only for the x chunk of its own chunk, loads that
// chunk's 512 values from L2 itself into a scratch of its own (no x barrier, no shared x of the
// whole k). Whole products (the head) keep the shared x and its barrier. -DCTR_STRIDE=n spaces
// the chunk counters n words apart (1).
// -DKX=n (with KDEP) where x goes: 0 (the default) each worker warp loads its chunk's x into its
// own scratch, as above; 1 the poll warp loads each x chunk into the block's shared x as it
// completes (four chunks a round trip), then publishes it (workers read x from shared memory, no
// x barrier; a whole product must come last); 2 the chunk counters alone: the poll warp waits
// for all of x's chunks, then the workers load x and meet at the barrier as before.
// -DPOLL_X (without KDEP) the one counter a product as before, but the poll warp, once it sees
// it, copies all of x raw into a staging buffer with cp.async (one round trip for any k), turns
// it into the fragment order and the group sums itself, then publishes it; the workers neither
// load x nor meet at the x barrier (a whole product must come last).
// -DPIPE_POLL=n (without KDEP or POLL_X) the poll lane keeps four relaxed loads of the counter in
// flight, n cycles apart, instead of one acquire load at a time.
// -DHALF (with KDEP, KX=0) half chunks (8 features x 256 codes) for a block's split products of at
// most NWARPS / 2 full chunks (o; q/k/v where a block has 2 octets), so each warp's sums are half.
// -DLIST8 the chunk lists as 8-byte descriptors (shared memory for a deeper ring: RING=4 fits
// with KDEP).

#include "bench_common.cuh"
#define T bf16
#define BITS 4
#define FMT 0
#define QMV_M 1
#include "../../crates/ferrox/src/backend/cuda/kernels/quantized.cu"

#ifndef NWARPS
#define NWARPS 16
#endif
#ifndef RING
#define RING 2
#endif
// The defaults are the fastest measured; these flags select the versions measured before them.
#ifndef LIST_L1
#define LIST_SMEM
#endif
#ifndef LAST_WARP_JOIN
#define PJOIN
#endif
#ifndef ONE_D
#define TWO_D
#endif
constexpr int THREADS = (NWARPS + 1) * 32;  // the worker warps, then the poll warp
constexpr int CHUNK_K = 512;               // codes of a chunk's row: 8 groups of 64
// A slot: 8 rows of 256 B of codes, each row 32 B further along the banks than the one before
// (so the 8 rows' loads of one mma step fall in different banks), then 8 x 16 B of scales and
// 8 x 16 B of biases.
constexpr int ROW_STRIDE = 288, SLOT_CODES = 8 * ROW_STRIDE, SLOT_BYTES = SLOT_CODES + 256;
constexpr int MAX_K = 8192;
constexpr int XCH = MAX_K / CHUNK_K;  // x chunks a product can be read in (KDEP's counters a product)
#ifndef CTR_STRIDE
#define CTR_STRIDE 1
#endif
#if defined(KDEP) && !defined(KX)
#define KX 0
#endif
#if defined(KDEP) && KX == 0
#define WX 1  // x a warp's own (KX=0)
#else
#define WX 0
#endif
#if defined(KDEP) && KX == 1
#define PX 1  // x loaded by the poll warp chunk by chunk (KX=1)
#else
#define PX 0
#endif
#if defined(POLL_X) && defined(KDEP)
#error POLL_X is without KDEP
#endif
#ifdef POLL_X
constexpr int STAGE_BYTES = MAX_K * 2;  // raw x, for the poll warp
#else
constexpr int STAGE_BYTES = 0;
#endif
#if defined(HALF) && !WX
#error HALF needs KDEP with KX=0
#endif
// KDEP, KX=0: only whole products (the head) keep x in shared memory, so its buffers hold k <=
// XBUF_K; each worker warp has a scratch for one chunk's x (1 KiB in fragment order, 8 group sums).
#if WX
constexpr int XBUF_K = 2048, XW_BYTES = 1024 + 32;
#else
constexpr int XBUF_K = MAX_K, XW_BYTES = 0;
#endif
#ifdef LIST8
typedef int2 ListEnt;  // (p | flags << 8) | kc << 16, f0 | c << 17
inline int2 pack_ent(int4 d) { return make_int2((d.x & 0xfff) | d.z << 16, d.y | d.w << 17); }
__device__ __forceinline__ int4 unpack_ent(int2 e) {
  return make_int4(e.x & 0xfff, e.y & 0x1ffff, (int)((unsigned)e.x >> 16), (int)((unsigned)e.y >> 17));
}
#else
typedef int4 ListEnt;
inline int4 pack_ent(int4 d) { return d; }
__device__ __forceinline__ int4 unpack_ent(int4 e) { return e; }
#endif
constexpr int PART_MAX = 1024;  // partial sums a block keeps for one split product (8 a chunk)
// LIST_SMEM (the default): each warp's chunk list copied into shared memory at the start (at
// most LIST_MAX chunks a warp), instead of read through L1 (-DLIST_L1).
#ifdef LIST_SMEM
#ifndef LIST_MAX_CHUNKS
#define LIST_MAX_CHUNKS 160
#endif
constexpr int LIST_MAX = LIST_MAX_CHUNKS;
#else
constexpr int LIST_MAX = 0;
#endif
// The rings, x twice (fragment order, 2 B a value), x's group sums twice, the partials twice,
// the lists, the warps' x scratch (KDEP).
constexpr int SMEM = NWARPS * RING * SLOT_BYTES + 2 * XBUF_K * 2 + 2 * (XBUF_K / 64) * 4 + 2 * PART_MAX * 4 +
                     NWARPS * LIST_MAX * (int)sizeof(ListEnt) + NWARPS * XW_BYTES + STAGE_BYTES;
constexpr int MAX_PROD = 72;

struct Prod {
  const u32* w;
  const bf16 *s, *b, *x;
  bf16* y;
  int n, k;
  int dep;     // the product whose output x is (-1: none)
  int blocks;  // blocks with work in it (the count its counter reaches a run)
};
// One block's share of a product: octets [b * O / grid, (b + 1) * O / grid) of its O. Split
// (chunks round the warps, partials joined) unless there are at least NWARPS octets a block on
// average, then whole (octets round the warps). The host's schedule and the kernel both use it.
struct Share {
  int oct0, octs;  // its first octet and how many
  int kc;          // k-chunks an octet (k / 512; k / 256 when half)
  int whole;       // whole octets a warp (else split)
  int workers;     // its warps with a chunk of it
  int half;        // chunks of 256 codes (HALF)
};
__host__ __device__ inline Share share_of(int octs_all, int k, int b, int grid) {
  Share q;
  q.oct0 = (int)((long long)octs_all * b / grid);
  q.octs = (int)((long long)octs_all * (b + 1) / grid) - q.oct0;
  q.kc = k / CHUNK_K;
  q.whole = octs_all >= NWARPS * grid;
  q.half = 0;
#ifdef HALF
  if (!q.whole && q.octs * q.kc * 2 <= NWARPS) q.half = 1, q.kc *= 2;
#endif
  q.workers = q.whole ? (q.octs < NWARPS ? q.octs : NWARPS) : (q.octs * q.kc < NWARPS ? q.octs * q.kc : NWARPS);
  return q;
}

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most n of this thread's commit groups are still in flight (n < 8).
__device__ __forceinline__ void cp_wait(int n) {
  switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;" ::: "memory"); break;
  }
}
__device__ __forceinline__ u32 load_acquire(const u32* p) {
  u32 v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// PIPE_POLL's sampling load: relaxed, so several can be in flight (an acquire load holds the
// ones after it). The x loads that follow are L2 loads (.cg) ordered after it through the flag.
__device__ __forceinline__ u32 load_relaxed(const u32* p) {
  u32 v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }
// Codes (shift / 4) and (shift / 4 + 4) of a word as the bf16 pair (128 + c0, 128 + c1).
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
// -DTRACE: each block stamps (%globaltimer, ns) four moments of each product into trace[(p *
// grid + b) * 4 + e]: 0 the poll warp sees x's product done, 1 x is in shared memory (the
// workers past their barrier), 2 the block's workers are done with their sums, 3 the block has
// told the grid (its counter raised).
#ifdef TRACE
__device__ unsigned long long* trace_buf;
__device__ __forceinline__ void stamp(int p, int e) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  trace_buf[((size_t)p * gridDim.x + blockIdx.x) * 4 + e] = t;
}
#else
__device__ __forceinline__ void stamp(int, int) {}
#endif
__device__ __forceinline__ float bf_lo(u32 v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf_hi(u32 v) { return __uint_as_float(v & 0xffff0000u); }

// A chunk of a worker warp's list (the schedule, made by the host: schedule() below): product
// p and flags, the octet's first feature, the k-chunk, and the block-local chunk index (the slot
// of its partial sums).
enum { FIRST = 1, LAST = 2, WHOLE = 4, OCTET_END = 8 };  // the warp's first / last chunk of p, ...
struct Chunk {
  int pf;  // p | flags << 8
  int f0, kc, c;
};

// Starts the copies of chunk d of product pr into `slot` (one commit group).
__device__ __forceinline__ void issue_chunk(const Prod& pr, const int4 d, unsigned char* slot, int lane, int half) {
#ifdef NO_WEIGHTS
  cp_commit();
  return;
#endif
  const u32 row_bytes = (u32)pr.k / 2, f0 = d.y, kc = d.z;
  if (half) {  // 8 rows of 128 B (the first half of each slot row), 4 scales and biases a row
    const unsigned char* src = (const unsigned char*)pr.w + (size_t)(f0 * row_bytes + kc * (CHUNK_K / 4));
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const int i = 32 * m + lane;
      cp_async16(slot + (i >> 3) * ROW_STRIDE + (i & 7) * 16, src + (i >> 3) * row_bytes + (i & 7) * 16);
    }
    if (lane < 16) {
      const u32 r = lane & 7;
      const bf16* sb = (lane < 8 ? pr.s : pr.b) + (size_t)((f0 + r) * ((u32)pr.k / 64) + kc * 4);
      cp_async8(slot + SLOT_CODES + (lane >> 3) * 128 + r * 16, sb);
    }
    cp_commit();
    return;
  }
  const unsigned char* src = (const unsigned char*)pr.w + (size_t)(f0 * row_bytes + kc * (CHUNK_K / 2));
#pragma unroll
  for (int m = 0; m < 4; ++m) {  // 128 pieces of 16 B: lanes 0-15 one row, 16-31 the next
    const int i = 32 * m + lane;
    cp_async16(slot + (i >> 4) * ROW_STRIDE + (i & 15) * 16, src + (i >> 4) * row_bytes + (i & 15) * 16);
  }
  if (lane < 16) {
    const u32 r = lane & 7;
    const bf16* sb = (lane < 8 ? pr.s : pr.b) + (size_t)((f0 + r) * ((u32)pr.k / 64) + kc * 8);
    cp_async16(slot + SLOT_CODES + (lane >> 3) * 128 + r * 16, sb);
  }
  cp_commit();
}

// The sums of one chunk (slot) for feature lane / 4 of its octet; xf: x in fragment order from
// the chunk's first group on; sx: x's group sums from there on. Lane (g, t) holds words 2t and
// 2t + 1 of each group of row g (codes 16t .. 16t + 15 of the group).
// NJ: group pairs (4 for a chunk, 2 for a half chunk).
template <int NJ>
__device__ __forceinline__ float chunk_sums(const unsigned char* slot, const uint4* xf, const float* sx, int lane) {
  const int g = lane >> 2, t = lane & 3;
  const uint4 sv = *(const uint4*)(slot + SLOT_CODES + g * 16);
  const uint4 bv = *(const uint4*)(slot + SLOT_CODES + 128 + g * 16);
  const u32 sw[4] = {sv.x, sv.y, sv.z, sv.w}, bw[4] = {bv.x, bv.y, bv.z, bv.w};
  const unsigned char* row = slot + g * ROW_STRIDE + 8 * t;
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const uint2 wa = *(const uint2*)(row + (2 * j) * 32), wb = *(const uint2*)(row + (2 * j + 1) * 32);
#ifdef NO_SUMS
    acc += (float)(wa.x ^ wa.y ^ wb.x ^ wb.y) + bf_lo(sw[j]) + bf_lo(bw[j]);
#else
    // This lane's column of B: group 2j's x (even g) or group 2j + 1's (odd g).
    const uint4* xp = xf + ((2 * j + (g & 1)) * 4 + t) * 2;
    const uint4 x0 = xp[0], x1 = xp[1];
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#ifdef TWO_D  // two accumulator chains of two mma each (-DONE_D: one of four)
    float e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#else
    float* e = d;
#endif
    mma_bf16(d, code_pair(wa.x, 0), code_pair(wb.x, 0), code_pair(wa.x, 4), code_pair(wb.x, 4), x0.x, x0.y);
    mma_bf16(e, code_pair(wa.y, 0), code_pair(wb.y, 0), code_pair(wa.y, 4), code_pair(wb.y, 4), x1.x, x1.y);
    mma_bf16(d, code_pair(wa.x, 8), code_pair(wb.x, 8), code_pair(wa.x, 12), code_pair(wb.x, 12), x0.z, x0.w);
    mma_bf16(e, code_pair(wa.y, 8), code_pair(wb.y, 8), code_pair(wa.y, 12), code_pair(wb.y, 12), x1.z, x1.w);
#ifdef TWO_D
    d[0] += e[0], d[3] += e[3];
#endif
    const float2 s2 = *(const float2*)(sx + 2 * j);
    const float sa = bf_lo(sw[j]), sb = bf_hi(sw[j]);
    acc += sa * d[0] + (bf_lo(bw[j]) - 128.0f * sa) * s2.x;
    acc += sb * d[3] + (bf_hi(bw[j]) - 128.0f * sb) * s2.y;
#endif
  }
  return acc;
}

// Stores item i (lo, hi: its 16 values) in the fragment order, with its group sum: x_load
// and KX=1 (all lanes take part; `lane & 3` is the item's place in its group of 4).
__device__ __forceinline__ void x_store(uint4 lo, uint4 hi, uint4* xf, float* sx, int i, int lane) {
  xf[2 * i] = make_uint4(__byte_perm(lo.x, lo.z, 0x5410), __byte_perm(lo.x, lo.z, 0x7632),
                         __byte_perm(lo.y, lo.w, 0x5410), __byte_perm(lo.y, lo.w, 0x7632));
  xf[2 * i + 1] = make_uint4(__byte_perm(hi.x, hi.z, 0x5410), __byte_perm(hi.x, hi.z, 0x7632),
                             __byte_perm(hi.y, hi.w, 0x5410), __byte_perm(hi.y, hi.w, 0x7632));
  const u32 e[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
  float v = 0.0f;
#pragma unroll
  for (int q = 0; q < 8; ++q) v += bf_lo(e[q]) + bf_hi(e[q]);
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  if ((lane & 3) == 0) sx[i / 4] = v;
}
// Item i of x (k values), i = (group i / 4, t = i % 4): x's 16 values 64 (i / 4) + 16t ..,
// stored in xf as the B registers of its four mma steps, (0,4) (1,5) (2,6) (3,7) (8,12) (9,13)
// (10,14) (11,15): 32 B; with the three lanes beside it (the same group), sx[group] = the
// group's sum. By the worker threads, item tid and on (k / 16: a multiple of 32, so whole
// warps take part).
__device__ __forceinline__ void x_load(const bf16* x, int k, uint4* xf, float* sx, int tid) {
  for (int i = tid; i < k / 16; i += NWARPS * 32) {
    const uint4 lo = __ldcg((const uint4*)x + 2 * i), hi = __ldcg((const uint4*)x + 2 * i + 1);
    x_store(lo, hi, xf, sx, i, tid);
  }
}

// KDEP: one warp loads `items` (<= 32) items of x from `x` on (lane i item i) into its scratch,
// in the order of x_load: xf[0 .. 2 items), sx[0 .. items / 4).
__device__ __forceinline__ void x_piece(const bf16* x, int items, uint4* xf, float* sx, int lane) {
  const bool on = lane < items;
  uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
  if (on) lo = __ldcg((const uint4*)x + 2 * lane), hi = __ldcg((const uint4*)x + 2 * lane + 1);
  if (on) {
    xf[2 * lane] = make_uint4(__byte_perm(lo.x, lo.z, 0x5410), __byte_perm(lo.x, lo.z, 0x7632),
                              __byte_perm(lo.y, lo.w, 0x5410), __byte_perm(lo.y, lo.w, 0x7632));
    xf[2 * lane + 1] = make_uint4(__byte_perm(hi.x, hi.z, 0x5410), __byte_perm(hi.x, hi.z, 0x7632),
                                  __byte_perm(hi.y, hi.w, 0x5410), __byte_perm(hi.y, hi.w, 0x7632));
  }
  const u32 e[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
  float v = 0.0f;
#pragma unroll
  for (int q = 0; q < 8; ++q) v += bf_lo(e[q]) + bf_hi(e[q]);
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  if (on && (lane & 3) == 0) sx[lane / 4] = v;
}
// The x chunks (512 outputs each, < XCH) block b's outputs of product p touch: [*c0, *c1].
__host__ __device__ inline void touched(const Share& q, int* c0, int* c1) {
  *c0 = q.oct0 * 8 / CHUNK_K;
  const int e = ((q.oct0 + q.octs) * 8 - 1) / CHUNK_K;
  *c1 = e < XCH - 1 ? e : XCH - 1;
}
__device__ __forceinline__ void red_release(u32* p) {
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(p) : "memory");
}

// counters[p]: blocks done with product p, epoch * prods[p].blocks once run `epoch` has done it
// (they are never reset: each run raises them by one round). Worker warp w of block b sums the
// chunks list[starts[b * NWARPS + w] .. starts[b * NWARPS + w + 1]) in order.
__global__ void __launch_bounds__(THREADS, 1)
    persistent(const Prod* __restrict__ prods, int nprod, const ListEnt* __restrict__ list,
               const int* __restrict__ starts, u32* counters, u32 epoch, const u32* __restrict__ needs) {
  extern __shared__ __align__(128) unsigned char smem[];
  uint4* xbuf = (uint4*)(smem + NWARPS * RING * SLOT_BYTES);  // 2 x XBUF_K * 2 B
  float* sxbuf = (float*)(smem + NWARPS * RING * SLOT_BYTES + 2 * XBUF_K * 2);
  float* parts = sxbuf + 2 * (XBUF_K / 64);
  __shared__ int xrdy[XCH];  // KDEP: the last product whose x chunk c is complete in global memory
  __shared__ int wdone;      // KX=1: the last product whose sums the workers are all past
  __shared__ Prod pr_s[MAX_PROD];
  __shared__ Share sh_s[MAX_PROD];
  __shared__ int xseen;     // the last product whose x is complete in global memory
  __shared__ int bdone[2];  // a product's workers done (by its parity)
  const int grid = gridDim.x, b = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int p = tid; p < nprod; p += blockDim.x) {
    const Prod pr = prods[p];
    pr_s[p] = pr;
    sh_s[p] = share_of(pr.n / 8, pr.k, b, grid);
  }
  if (tid == 0) xseen = -1, bdone[0] = bdone[1] = 0;
  if (tid < XCH) xrdy[tid] = -1;
  if (tid == 0) wdone = -1;
  __syncthreads();

  if (warp == NWARPS) {  // the poll warp: one lane waits for each product's x in turn
#ifdef POLL_X
    unsigned char* stage = (unsigned char*)((ListEnt*)(parts + 2 * PART_MAX) + NWARPS * LIST_MAX) + NWARPS * XW_BYTES;
    for (int p = 0; p < nprod; ++p) {
      if (sh_s[p].octs == 0) continue;
      const Prod& pr = pr_s[p];
      if (lane == 0 && pr.dep >= 0) {
        const u32 need = epoch * (u32)pr_s[pr.dep].blocks;
        while (load_acquire(counters + pr.dep) < need) {
        }
      }
      __syncwarp();
      if (lane == 0) stamp(p, 0);
      const int items = pr.k / 16;  // 32 B each
      for (int i = lane; i < 2 * items; i += 32) cp_async16(stage + 16 * i, (const uint4*)pr.x + i);
      cp_commit();
      // Buffer p & 1 is free once the workers are past the sums of p - 2.
      if (p >= 2)
        while (*(volatile int*)&wdone < p - 2) {
        }
      uint4* xf = xbuf + (p & 1) * (XBUF_K / 8);
      float* sx = sxbuf + (p & 1) * (XBUF_K / 64);
      cp_wait(0);
      __syncwarp();
      for (int i = lane; i < items; i += 32)
        x_store(((const uint4*)stage)[2 * i], ((const uint4*)stage)[2 * i + 1], xf, sx, i, lane);
      __syncwarp();
      if (lane == 0) {
        __threadfence_block();
        *(volatile int*)&xseen = p;
      }
    }
    return;
#endif
#ifdef KDEP
    // Lane c waits for x chunk c of each product in turn and publishes it as it comes; xseen
    // once all have (for whole products).
    for (int p = 0; p < nprod; ++p) {
      if (sh_s[p].octs == 0) continue;
      const Prod& pr = pr_s[p];
      bool done = lane >= pr.k / CHUNK_K;
      u32 need = 0;
      const u32* ctr = counters;
      if (!done && pr.dep >= 0) need = epoch * needs[pr.dep * XCH + lane], ctr = counters + (pr.dep * XCH + lane) * CTR_STRIDE;
#if PX
      // Buffer p & 1 is free once the workers are past the sums of p - 2.
      if (p >= 2)
        while (*(volatile int*)&wdone < p - 2) {
        }
      uint4* xf = xbuf + (p & 1) * (XBUF_K / 8);
      float* sx = sxbuf + (p & 1) * (XBUF_K / 64);
#endif
      for (;;) {
        bool now = false;
        if (!done && (need == 0 || load_acquire(ctr) >= need)) {
          done = true, now = true;
#if !PX
          __threadfence_block();
          *(volatile int*)&xrdy[lane] = p;
#endif
        }
#if PX
        // The chunks just seen: the warp loads them, up to four a round trip, then publishes them.
        u32 fresh = __ballot_sync(0xffffffffu, now);
        while (fresh) {
          int cs[4], m = 0;
          u32 bm = 0;
#pragma unroll
          for (int r = 0; r < 4; ++r)
            if (fresh) cs[r] = __ffs(fresh) - 1, bm |= fresh & (0u - fresh), fresh &= fresh - 1, m = r + 1;
          uint4 lo[4], hi[4];
#pragma unroll
          for (int r = 0; r < 4; ++r)
            if (r < m) {
              const uint4* src = (const uint4*)pr.x + 2 * (cs[r] * 32 + lane);
              lo[r] = __ldcg(src), hi[r] = __ldcg(src + 1);
            }
#pragma unroll
          for (int r = 0; r < 4; ++r)
            if (r < m) x_store(lo[r], hi[r], xf, sx, cs[r] * 32 + lane, lane);
          __syncwarp();
          if ((bm >> lane) & 1) {
            __threadfence_block();
            *(volatile int*)&xrdy[lane] = p;
          }
        }
#endif
        if (__all_sync(0xffffffffu, done)) break;
      }
      if (lane == 0) {
        stamp(p, 0);
        __threadfence_block();
        *(volatile int*)&xseen = p;
      }
      __syncwarp();
    }
    return;
#endif
    if (lane == 0)
      for (int p = 0; p < nprod; ++p) {
        if (sh_s[p].octs == 0) continue;
        const Prod& pr = pr_s[p];
        if (pr.dep >= 0) {
          const u32 need = epoch * (u32)pr_s[pr.dep].blocks;
#ifdef PIPE_POLL
          // Four relaxed loads in flight, PIPE_POLL cycles apart (each reissued as soon as it is
          // back), so the count is sampled about four times a round trip instead of once.
          const u32* c = counters + pr.dep;
          u32 v[4];
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            v[r] = load_relaxed(c);
            const long long t0 = clock64();
            while (clock64() - t0 < PIPE_POLL) {
            }
          }
          for (bool seen = false; !seen;) {
#pragma unroll
            for (int r = 0; r < 4; ++r)
              if (!seen) {
                if (v[r] >= need)
                  seen = true;
                else
                  v[r] = load_relaxed(c);
              }
          }
#else
          while (load_acquire(counters + pr.dep) < need) {
          }
#endif
        }
        stamp(p, 0);
        // Release at block scope: the workers' loads of x come after they see xseen.
        __threadfence_block();
        *(volatile int*)&xseen = p;
      }
    return;
  }

  // A worker warp.
  unsigned char* ring = smem + warp * RING * SLOT_BYTES;
  const int count = starts[b * NWARPS + warp + 1] - starts[b * NWARPS + warp];
#ifdef LIST_SMEM
  ListEnt* mine = (ListEnt*)(parts + 2 * PART_MAX) + warp * LIST_MAX;
  for (int j = lane; j < count; j += 32) mine[j] = list[starts[b * NWARPS + warp] + j];
  __syncwarp();
#define LIST_LOAD(j) unpack_ent(mine[j])
#else
  const ListEnt* mine = list + starts[b * NWARPS + warp];
#define LIST_LOAD(j) unpack_ent(__ldg(mine + (j)))
#endif
#ifdef KDEP
  uint4* xw = (uint4*)((unsigned char*)((ListEnt*)(parts + 2 * PART_MAX) + NWARPS * LIST_MAX) + warp * XW_BYTES);
  float* sxw = (float*)(xw + 64);
#endif
#ifdef HALF
#define HALF_OF(p) sh_s[p].half
#else
#define HALF_OF(p) 0
#endif
  int i = 0, issued = 0;  // the next chunk to sum, to copy
  float whole_acc = 0.0f;
  // Keep RING chunks in flight (the slot of chunk `issued` was freed by the __syncwarp after the
  // sums of chunk issued - RING); with -DLIST_L1 the list's lines are asked into L1 two ahead.
  auto fill = [&] {
    for (; issued < count && issued - i < RING; ++issued) {
#ifndef LIST_SMEM
      if ((issued & 7) == 0) prefetch_l1(mine + issued + 16);
#endif
      const int4 d = LIST_LOAD(issued);
      issue_chunk(pr_s[d.x & 255], d, ring + (issued % RING) * SLOT_BYTES, lane, HALF_OF(d.x & 255));
    }
  };
#ifndef LIST_SMEM
  if (lane == 0) prefetch_l1(mine), prefetch_l1(mine + 8);
#endif
  for (int p = 0; p < nprod; ++p) {
    const Share& q = sh_s[p];
    if (q.octs == 0) continue;
    fill();  // before any wait for x
    uint4* xf = xbuf + (p & 1) * (XBUF_K / 8);
    float* sx = sxbuf + (p & 1) * (XBUF_K / 64);
#if WX || PX
    int xk = -1;  // the piece of x in this warp's scratch (KX=0) / last seen ready (KX=1)
    bool xs = false;
    if (q.whole) {
#endif
#if PX || defined(POLL_X)
    // x is in buffer p & 1 once the poll warp has published all of it.
    while (*(volatile int*)&xseen < p) {
    }
    __threadfence_block();
#else
    // x into buffer p & 1 (its readers of product p - 2 are past the barrier of p - 1).
    while (*(volatile int*)&xseen < p) {
    }
    __threadfence_block();
    x_load(pr_s[p].x, pr_s[p].k, xf, sx, tid);
    asm volatile("bar.sync 1, %0;" ::"r"(NWARPS * 32) : "memory");
#endif
    if (tid == 0) stamp(p, 1);
#if WX || PX
    }
#endif
    bool had = false;
    for (; i < count; ++i) {
      const int4 d = LIST_LOAD(i);
      if ((d.x & 255) != p) break;
      had = true;
      fill();
      const int flags = d.x >> 8, kc = d.z;
#if PX
      if (!q.whole && kc != xk) {  // wait for this chunk's 512 values of x alone
        while (*(volatile int*)&xrdy[kc] < p) {
        }
        __threadfence_block();
        xk = kc;
        if (tid == 0 && !xs) stamp(p, 1), xs = true;
      }
#endif
#if WX
      if (!q.whole && kc != xk) {  // this chunk's x: wait for its 512 values alone, then load them
        const int xc = q.half ? kc >> 1 : kc;
        while (*(volatile int*)&xrdy[xc] < p) {
        }
        __threadfence_block();
        x_piece(pr_s[p].x + kc * (q.half ? CHUNK_K / 2 : CHUNK_K), q.half ? 16 : 32, xw, sxw, lane);
        __syncwarp();
        xk = kc;
        if (tid == 0 && !xs) stamp(p, 1), xs = true;
      }
#endif
      cp_wait(issued - i - 1);
      __syncwarp();
      float acc;
#if WX
      if (!q.whole) {
        if (q.half)
          acc = chunk_sums<2>(ring + (i % RING) * SLOT_BYTES, xw, sxw, lane);
        else
          acc = chunk_sums<4>(ring + (i % RING) * SLOT_BYTES, xw, sxw, lane);
      } else
#endif
        acc = chunk_sums<4>(ring + (i % RING) * SLOT_BYTES, xf + kc * (CHUNK_K / 16) * 2, sx + kc * (CHUNK_K / 64),
                            lane);
      const int g = lane >> 2;
      if (flags & WHOLE) {
        whole_acc = kc == 0 ? acc : whole_acc + acc;
        if ((flags & OCTET_END) && (lane & 3) == 0) pr_s[p].y[d.y + g] = from_acc<bf16>(whole_acc);
      } else if ((lane & 3) == 0) {
        parts[(p & 1) * PART_MAX + d.w * 8 + g] = acc;
      }
      __syncwarp();
    }
#ifdef PJOIN
    if (!q.whole) {  // every worker: the partials written, then one output a thread, then the signal
      asm volatile("bar.sync 2, %0;" ::"r"(NWARPS * 32) : "memory");
#if WX || PX
      if (tid == 0 && !xs) stamp(p, 1);
#endif
#if PX || defined(POLL_X)
      if (tid == 0) *(volatile int*)&wdone = p;  // every worker is past its sums of p
#endif
      if (tid == 0) stamp(p, 2);
      const float* pp = parts + (p & 1) * PART_MAX;
      for (int f = tid; f < q.octs * 8; f += NWARPS * 32) {
        const float* o = pp + (f / 8) * q.kc * 8 + f % 8;
        float v = 0.0f;
        if (q.kc == 4) {
#pragma unroll
          for (int c = 0; c < 4; ++c) v += o[c * 8];
        } else {
#pragma unroll 16
          for (int c = 0; c < q.kc; ++c) v += o[c * 8];
        }
        pr_s[p].y[q.oct0 * 8 + f] = from_acc<bf16>(v);
      }
      asm volatile("bar.sync 2, %0;" ::"r"(NWARPS * 32) : "memory");
#ifdef KDEP
      {  // one thread a touched x chunk
        int c0, c1;
        touched(q, &c0, &c1);
        if (tid <= c1 - c0) red_release(counters + (p * XCH + c0 + tid) * CTR_STRIDE);
        if (tid == 0) stamp(p, 3);
      }
#else
      if (tid == 0) {
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counters + p) : "memory");
        stamp(p, 3);
      }
#endif
      continue;
    }
#endif
    if (!had) continue;
    // Done with p: the block's last warp joins the partials (in k order) and tells the grid.
    __threadfence_block();
    __syncwarp();
    int old = 0;
    if (lane == 0) old = atomicAdd(&bdone[p & 1], 1);
    old = __shfl_sync(0xffffffffu, old, 0);
    if (old != q.workers - 1) continue;
    if (lane == 0) stamp(p, 2);
    __threadfence_block();
    if (!q.whole) {
      const float* pp = parts + (p & 1) * PART_MAX;
      for (int f = lane; f < q.octs * 8; f += 32) {
        const int o = f / 8, r = f % 8;
        float v = 0.0f;
        for (int c = 0; c < q.kc; ++c) v += pp[(o * q.kc + c) * 8 + r];
        pr_s[p].y[q.oct0 * 8 + f] = from_acc<bf16>(v);
      }
    }
    // The outputs' stores (every lane's, ordered by the warp barrier) before the count: a
    // release add, which the poll warps' acquire loads pair with.
    __syncwarp();
    if (lane == 0) {
      bdone[p & 1] = 0;
#if defined(KDEP)
      int c0, c1;
      touched(q, &c0, &c1);
      for (int c = c0; c <= c1; ++c) red_release(counters + (p * XCH + c) * CTR_STRIDE);
#elif defined(FENCE_SIGNAL)
      __threadfence();
      atomicAdd(counters + p, 1u);
#else
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counters + p) : "memory");
#endif
      stamp(p, 3);
    }
  }
}

__global__ void empty_kernel(int) {}

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
  const int nprod = (int)seq.size(), grid = prop.multiProcessorCount;
  size_t words = 0, groups = 0;
  for (const Shape& sh : seq) words += (size_t)sh.n * sh.k / 8, groups += (size_t)sh.n * sh.k / 64;
  u32* w;
  bf16 *sb, *acts, *refs;
  CK(cudaMalloc(&w, words * 4));
  CK(cudaMalloc(&sb, groups * 4));
  // Each product's output in its own buffer (x of product 0 is acts[0..8192)); refs: the same
  // layout for the reference outputs.
  size_t act_elems = 8192;
  for (const Shape& sh : seq) act_elems += sh.n;
  CK(cudaMalloc(&acts, act_elems * 2));
  CK(cudaMalloc(&refs, act_elems * 2));
  fill_bits<<<1024, 256>>>(w, words, 11);
  fill_bf16<<<1024, 256>>>((u16*)sb, groups * 2, 5, 0.004f);
  fill_bf16<<<64, 256>>>((u16*)acts, 8192, 7, 2.0f);
  CK(cudaGetLastError());
  std::vector<Prod> prods;
  std::vector<size_t> yoff;
  size_t wo = 0, go = 0, ao = 8192;
  const bf16* x = acts;
  for (int i = 0; i < nprod; ++i) {
    const Shape& sh = seq[i];
    int blocks = 0;
    for (int b = 0; b < grid; ++b) blocks += share_of(sh.n / 8, sh.k, b, grid).octs > 0;
    prods.push_back(Prod{w + wo, sb + go, sb + groups + go, x, acts + ao, sh.n, sh.k, i - 1, blocks});
    yoff.push_back(ao);
    x = acts + ao;
    wo += (size_t)sh.n * sh.k / 8, go += (size_t)sh.n * sh.k / 64, ao += sh.n;
  }
  // The schedule: a block's chunks of a product go round its worker warps (split: chunk c to
  // warp (c + n0) mod NWARPS; whole: octet o's chunks to warp (o + n0) mod NWARPS), n0 turning by
  // the block's chunks (octets) a product, so that the warps with one more change from product to
  // product. Each warp's list is in order: products, then chunks.
  std::vector<int4> list;
  std::vector<int> starts;
  int max_part = 0;
  for (int b = 0; b < grid; ++b) {
    std::vector<std::vector<int4>> wl(NWARPS);
    int n0 = 0;
    for (int p = 0; p < nprod; ++p) {
      const Share q = share_of(seq[p].n / 8, seq[p].k, b, grid);
      const int units = q.whole ? q.octs : q.octs * q.kc;
      std::vector<size_t> before(NWARPS);
      for (int wi = 0; wi < NWARPS; ++wi) before[wi] = wl[wi].size();
      for (int u = 0; u < units; ++u) {
        std::vector<int4>& v = wl[(u + n0) % NWARPS];
        if (q.whole)
          for (int kc = 0; kc < q.kc; ++kc)
            v.push_back(make_int4(p | (WHOLE | (kc == q.kc - 1 ? OCTET_END : 0)) << 8, (q.oct0 + u) * 8, kc,
                                  u * q.kc + kc));
        else
          v.push_back(make_int4(p, (q.oct0 + u / q.kc) * 8, u % q.kc, u));
      }
      for (int wi = 0; wi < NWARPS; ++wi)
        if (wl[wi].size() > before[wi]) wl[wi][before[wi]].x |= FIRST << 8, wl[wi].back().x |= LAST << 8;
      n0 = (n0 + units) % NWARPS;
      if (!q.whole) max_part = std::max(max_part, q.octs * q.kc * 8);
    }
    for (int wi = 0; wi < NWARPS; ++wi) {
      starts.push_back((int)list.size());
      list.insert(list.end(), wl[wi].begin(), wl[wi].end());
    }
  }
  starts.push_back((int)list.size());
  std::vector<ListEnt> plist;
  bool fits8 = true;
  for (const int4& d : list) {
    plist.push_back(pack_ent(d));
    fits8 = fits8 && (d.x & 0xfff) == d.x && d.y < (1 << 17) && d.z < (1 << 15) && d.w < (1 << 15);
  }
  // KDEP: needs[p * XCH + c]: the blocks whose outputs of p touch x chunk c (what its counter
  // reaches a run); whole products must fit the shared x buffers.
  std::vector<u32> needs(nprod * XCH, 0);
  bool kdep_ok = true;
  for (int p = 0; p < nprod; ++p) {
    for (int b = 0; b < grid; ++b) {
      const Share q = share_of(seq[p].n / 8, seq[p].k, b, grid);
      if (q.octs == 0) continue;
      int c0, c1;
      touched(q, &c0, &c1);
      for (int c = c0; c <= c1; ++c) ++needs[p * XCH + c];
      if (q.whole && seq[p].k > XBUF_K) kdep_ok = false;
#if PX || defined(POLL_X)
      if (q.octs == 0 || (q.whole && p != nprod - 1)) kdep_ok = false;  // wdone's rule needs both
#endif
    }
    if (p > 0)
      for (int c = 0; c < seq[p].k / CHUNK_K; ++c) kdep_ok = kdep_ok && needs[(p - 1) * XCH + c] > 0;
  }
#ifndef LIST8
  fits8 = true;
#endif
  if (!fits8 || !kdep_ok) {
    fprintf(stderr, "a descriptor does not fit 8 bytes (%d), or KDEP's chunks / x buffers do not fit (%d)\n", fits8,
            kdep_ok);
    return 1;
  }
  u32* dneeds;
  CK(cudaMalloc(&dneeds, needs.size() * 4));
  CK(cudaMemcpy(dneeds, needs.data(), needs.size() * 4, cudaMemcpyHostToDevice));
  ListEnt* dlist;
  int* dstarts;
  CK(cudaMalloc(&dlist, plist.size() * sizeof(ListEnt)));
  CK(cudaMalloc(&dstarts, starts.size() * sizeof(int)));
  CK(cudaMemcpy(dlist, plist.data(), plist.size() * sizeof(ListEnt), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dstarts, starts.data(), starts.size() * sizeof(int), cudaMemcpyHostToDevice));
  int longest = 0;
  for (size_t j = 0; j + 1 < starts.size(); ++j) longest = std::max(longest, starts[j + 1] - starts[j]);
  if (max_part > PART_MAX || nprod > MAX_PROD || (LIST_MAX && longest > LIST_MAX)) {
    fprintf(stderr, "partials %d > %d, products %d > %d or a list of %d > %d\n", max_part, PART_MAX, nprod,
            MAX_PROD, longest, LIST_MAX);
    return 1;
  }
  Prod* dprods;
  CK(cudaMalloc(&dprods, prods.size() * sizeof(Prod)));
  CK(cudaMemcpy(dprods, prods.data(), prods.size() * sizeof(Prod), cudaMemcpyHostToDevice));
  u32* counters;
  const size_t ncounters = (size_t)nprod * XCH * CTR_STRIDE;
  CK(cudaMalloc(&counters, ncounters * 4));
#ifdef TRACE
  unsigned long long* tbuf;
  const size_t tn = (size_t)nprod * grid * 4;
  CK(cudaMalloc(&tbuf, tn * 8));
  CK(cudaMemset(tbuf, 0, tn * 8));
  CK(cudaMemcpyToSymbol(trace_buf, &tbuf, sizeof(tbuf)));
#endif
  CK(cudaMemset(counters, 0, ncounters * 4));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  CK(cudaDeviceSynchronize());
  const double bytes = words * 4.0 + groups * 4.0;
  printf("%s: %d products, %.0f MB of weights; %d worker warps, ring %d, %d B shared%s\n", prop.name, nprod,
         bytes / 1e6, NWARPS, RING, SMEM,
#if defined(NO_WEIGHTS)
         ", NO_WEIGHTS (outputs not checked)"
#elif defined(NO_SUMS)
         ", NO_SUMS (outputs not checked)"
#else
         ""
#endif
  );

  // ferrox's qmv_1 for product pr with x taken from `xp`, into `yp`.
  auto qmv = [&](const Prod& pr, const bf16* xp, bf16* yp) {
    const int features = QMV_WARPS / QMV_SPLIT * QMV_COLS;
    cudaLaunchAttribute attr;
    cudaLaunchConfig_t cfg = overlapped(dim3((pr.n + features - 1) / features), dim3(QMV_WARPS * 32), s, &attr);
    i64 nn = pr.n, kk = pr.k, gs = 64;
    CK(cudaLaunchKernelEx(&cfg, qmv_1, yp, xp, (const u32*)pr.w, pr.s, pr.b, nn, kk, gs, 1, (const bf16*)nullptr,
                          (const bf16*)nullptr, 0.0f));
  };
  auto launches = [&] {
    for (const Prod& pr : prods) qmv(pr, pr.x, pr.y);
  };
  const int last_n = seq.back().n;
  std::vector<u16> chain_ref(last_n);
  launches();
  CK(cudaStreamSynchronize(s));
  CK(cudaMemcpy(chain_ref.data(), prods.back().y, last_n * 2, cudaMemcpyDeviceToHost));
  const double launch_us = graph_us(s, launches);
  printf("launches (qmv_1 graph):    %8.1f us  %6.0f GB/s\n", launch_us, bytes / launch_us / 1e3);

  CK(cudaFuncSetAttribute(persistent, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  int np = nprod;
  u32 epoch = 0;
  void* args[] = {&dprods, &np, &dlist, &dstarts, &counters, &epoch, &dneeds};
  auto run = [&] {
    ++epoch;  // read by the launch call (the arguments are copied then)
    CK(cudaLaunchCooperativeKernel((void*)persistent, dim3(grid), dim3(THREADS), args, SMEM, s));
  };
  // Times `reps` runs one by one (events around each): the median and the smallest, µs.
  auto time_runs = [&](auto&& one, int reps, double* best) {
    std::vector<cudaEvent_t> ev(reps + 1);
    for (auto& ei : ev) CK(cudaEventCreate(&ei));
    one();
    CK(cudaEventRecord(ev[0], s));
    for (int i = 0; i < reps; ++i) {
      one();
      CK(cudaEventRecord(ev[i + 1], s));
    }
    CK(cudaEventSynchronize(ev[reps]));
    std::vector<float> t(reps);
    for (int i = 0; i < reps; ++i) CK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
    for (auto& ei : ev) CK(cudaEventDestroy(ei));
    std::sort(t.begin(), t.end());
    *best = t[0] * 1e3;
    return t[reps / 2] * 1e3;
  };

  // Correctness: poison the outputs, run once, check every product against qmv_1 on the same x.
  CK(cudaMemset(acts + 8192, 0xff, (act_elems - 8192) * 2));
  run();
  CK(cudaStreamSynchronize(s));
  CK(cudaGetLastError());
  std::vector<u16> got(act_elems), got2(act_elems), ref(act_elems);
  CK(cudaMemcpy(got.data(), acts, act_elems * 2, cudaMemcpyDeviceToHost));
  for (int i = 0; i < nprod; ++i) qmv(prods[i], prods[i].x, refs + yoff[i]);
  CK(cudaStreamSynchronize(s));
  CK(cudaGetLastError());
  CK(cudaMemcpy(ref.data(), refs, act_elems * 2, cudaMemcpyDeviceToHost));
  double worst = 0;
  int worst_p = 0;
  long nan = 0;
  for (int i = 0; i < nprod; ++i) {
    float mag = 0, err = 0;
    for (int j = 0; j < seq[i].n; ++j) {
      const float r = bf16_host(ref[yoff[i] + j]), v = bf16_host(got[yoff[i] + j]);
      if (!(v == v)) ++nan;
      mag = fmaxf(mag, fabsf(r));
      err = fmaxf(err, fabsf(v - r));
    }
    if (err / mag > worst || !(err == err)) worst = err / mag, worst_p = i;
  }
  float cmag = 0, cerr = 0;
  for (int j = 0; j < last_n; ++j) {
    cmag = fmaxf(cmag, fabsf(bf16_host(chain_ref[j])));
    cerr = fmaxf(cerr, fabsf(bf16_host(got[yoff.back() + j]) - bf16_host(chain_ref[j])));
  }
  // Determinism: a second run, bit for bit.
  run();
  CK(cudaStreamSynchronize(s));
  CK(cudaMemcpy(got2.data(), acts, act_elems * 2, cudaMemcpyDeviceToHost));
  const bool same = memcmp(got.data(), got2.data(), act_elems * 2) == 0;
  const bool ok = nan == 0 && worst < 1e-2;
  printf("check: %s; worst product %d: max |y - qmv_1(same x)| / max |qmv_1| %.1e; unwritten/NaN %ld; "
         "last output vs the launches' chain %.1e (max |y| %.2e); two runs %s\n",
         ok ? "PASS" : "FAIL", worst_p, worst, nan, cerr / cmag, cmag, same ? "identical" : "DIFFER");

#ifdef TRACE
  {
    // Where a product's time goes, averaged over the blocks and over the products of a kind:
    // span: from the last block's signal of the product before to the last block's of this one;
    // see: from that signal until a block's poll warp sees it; x: the workers loading x into
    // shared memory; sums: from x ready until the block's workers are done (mean and max over
    // the blocks); join: the join, the outputs' stores and the signal.
    run();
    CK(cudaStreamSynchronize(s));
    std::vector<unsigned long long> tr(tn);
    CK(cudaMemcpy(tr.data(), tbuf, tn * 8, cudaMemcpyDeviceToHost));
    auto at = [&](int p, int b, int e) { return (double)tr[((size_t)p * grid + b) * 4 + e]; };
    const char* names[5] = {"q/k/v", "o", "gate/up", "down", "head"};
    double span[5] = {}, see[5] = {}, xl[5] = {}, sums[5] = {}, sums_max[5] = {}, join[5] = {};
    int cnt[5] = {};
    for (int p = 1; p < nprod; ++p) {
      const int ty = p == nprod - 1 ? 4 : p % 4;
      double prev = 0, done = 0, smax = 0;
      for (int b = 0; b < grid; ++b) prev = std::max(prev, at(p - 1, b, 3)), done = std::max(done, at(p, b, 3));
      double a = 0, c = 0, d = 0, e = 0;
      for (int b = 0; b < grid; ++b) {
        a += at(p, b, 0) - prev, c += at(p, b, 1) - at(p, b, 0), d += at(p, b, 2) - at(p, b, 1);
        e += at(p, b, 3) - at(p, b, 2), smax = std::max(smax, at(p, b, 2) - at(p, b, 1));
      }
      span[ty] += done - prev, see[ty] += a / grid, xl[ty] += c / grid, sums[ty] += d / grid;
      sums_max[ty] += smax, join[ty] += e / grid, ++cnt[ty];
    }
    printf("trace (us, mean a product): kind    n   span    see      x   sums  (max)   join\n");
    double total = 0;
    for (int t = 0; t < 5; ++t) {
      const double n = cnt[t];
      total += span[t];
      printf("trace                      %-7s %2d %6.2f %6.2f %6.2f %6.2f %6.2f %6.2f\n", names[t], cnt[t],
             span[t] / n / 1e3, see[t] / n / 1e3, xl[t] / n / 1e3, sums[t] / n / 1e3, sums_max[t] / n / 1e3,
             join[t] / n / 1e3);
    }
    printf("trace: products 1..%d span %.1f us\n", nprod - 1, total / 1e3);
  }
#endif
  double best;
  const double us = time_runs(run, 30, &best);
  printf("persistent, with deps:     %8.1f us  %6.0f GB/s  (best %.1f)\n", us, bytes / us / 1e3, best);
  // The same with no product waiting for another: how fast the chunks stream and sum alone.
  std::vector<Prod> free_prods = prods;
  for (Prod& pr : free_prods) pr.dep = -1;
  CK(cudaMemcpy(dprods, free_prods.data(), prods.size() * sizeof(Prod), cudaMemcpyHostToDevice));
  const double us_free = time_runs(run, 30, &best);
  printf("persistent, no waits:      %8.1f us  %6.0f GB/s  (best %.1f)\n", us_free, bytes / us_free / 1e3, best);
  // What a cooperative launch of this shape costs with nothing in it.
  auto empty = [&] {
    int z = 0;
    void* a[] = {&z};
    CK(cudaLaunchCooperativeKernel((void*)empty_kernel, dim3(grid), dim3(THREADS), a, SMEM, s));
  };
  CK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  printf("empty cooperative launch:  %8.1f us\n", time_runs(empty, 30, &best));
  CK(cudaGetLastError());
  const char* tags = ""
#ifdef KDEP
                     " kdep"
#endif
#if defined(KDEP) && KX == 1
                     " kx1"
#elif defined(KDEP) && KX == 2
                     " kx2"
#endif
#ifdef POLL_X
                     " poll_x"
#endif
#ifdef PIPE_POLL
                     " pipe_poll"
#endif
#ifdef HALF
                     " half"
#endif
#ifdef LIST8
                     " list8"
#endif
#if CTR_STRIDE != 1
                     " ctr_stride"
#endif
#ifdef TRACE
                     " trace"
#endif
      ;
  printf("RESULT warps=%d ring=%d%s%s%s%s%s%s deps=%.1f free=%.1f launches=%.1f check=%s\n", NWARPS, RING, tags,
#ifdef NO_SUMS
#ifdef NO_WEIGHTS
         " noweights",
#else
         " nosums",
#endif
#else
         "",
#endif
#ifdef ONE_D
         " one_d",
#else
         "",
#endif
#ifdef LIST_L1
         " list_l1",
#else
         "",
#endif
#ifdef LAST_WARP_JOIN
         " last_warp_join",
#else
         "",
#endif
#if defined(FENCE_SIGNAL)
         " fence_signal",
#else
         "",
#endif
         us, us_free, launch_us, ok && same ? "ok" : "BAD");
  return 0;
}
