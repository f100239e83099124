// Counter-based random bits: Threefry-2x32 with 20 rounds, laid out as the CPU backend's
// random.rs does (MLX's layout), so a key gives the same bits on both. Each key fills its
// own block of `bpk` bytes, viewed as W little-endian words (the last possibly cut short),
// h = W / 2, c = W - h: pair i < h is threefry(key, (i, i + c)) into words i and i + c; if W
// is odd, word h is the first half of threefry(key, (h, 0)).

__device__ __forceinline__ u32 rotl32(u32 x, u32 r) { return (x << r) | (x >> (32 - r)); }

__device__ __forceinline__ void threefry2x32(u32 k0, u32 k1, u32 c0, u32 c1, u32* out) {
  const u32 rot[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  u32 ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};
  u32 x0 = c0 + ks[0], x1 = c1 + ks[1];
#pragma unroll
  for (int b = 0; b < 5; ++b) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      x0 += x1;
      x1 = rotl32(x1, rot[b % 2][r]) ^ x0;
    }
    x0 += ks[(b + 1) % 3];
    x1 += ks[(b + 2) % 3] + (u32)(b + 1);
  }
  out[0] = x0;
  out[1] = x1;
}

// Word w of a key's block (only the bytes inside the block).
__device__ __forceinline__ void put_word(u8* blk, i64 w, u32 v, i64 bpk) {
  if (w * 4 + 4 <= bpk && (((u64)(blk + w * 4)) & 3) == 0) {
    *(u32*)(blk + w * 4) = v;
    return;
  }
  for (int b = 0; b < 4; ++b)
    if (w * 4 + b < bpk) blk[w * 4 + b] = (u8)(v >> (8 * b));
}

// out: num_keys blocks of bpk bytes; keys: the uint32 [..., 2] keys, element 2k and 2k + 1
// of key k at the offsets lk gives.
extern "C" __global__ void random_bits(u8* __restrict__ out, const u32* __restrict__ keys, Layout lk, i64 num_keys,
                                       i64 bpk) {
  i64 words = (bpk + 3) / 4, h = words / 2, c = words - h;
  GRID_LOOP(t, num_keys * c) {
    i64 key = t / c, i = t - key * c;
    i64 o0[1], o1[1];
    offsets<1>(lk, 2 * key, o0);
    offsets<1>(lk, 2 * key + 1, o1);
    u32 k0 = keys[o0[0]], k1 = keys[o1[0]];
    u8* blk = out + key * bpk;
    u32 r[2];
    if (i < h) {
      threefry2x32(k0, k1, (u32)i, (u32)(i + c), r);
      put_word(blk, i, r[0], bpk);
      put_word(blk, i + c, r[1], bpk);
    } else {
      threefry2x32(k0, k1, (u32)h, 0u, r);
      put_word(blk, h, r[0], bpk);
    }
  }
}
