// Convolution as im2col + GEMM: `im2col` unfolds the input into a [rows, groups, taps, cin_g]
// matrix (a row per batch element and output position; zero where a tap falls on padding or
// a hole of the input dilation), which cuBLAS then multiplies by the weight, group by group.
// T is the element type.

#define CONV_MAXSP 3
// The geometry (`struct ConvGeom` of conv.rs): per spatial axis the input size and stride,
// output size, kernel size, window stride, low padding, kernel and input dilation.
struct ConvGeom {
  i64 nsp;
  i64 in_sp[CONV_MAXSP], x_st[CONV_MAXSP], out_sp[CONV_MAXSP], ker[CONV_MAXSP];
  i64 stride[CONV_MAXSP], pad[CONV_MAXSP], kdil[CONV_MAXSP], idil[CONV_MAXSP];
  i64 xs_n, xs_c, groups, cin_g, taps, rows;
  i32 flip;
  i32 pad_;
};

extern "C" __global__ void im2col(T* __restrict__ col, const T* __restrict__ x, ConvGeom g) {
  GRID_LOOP(i, g.rows * g.groups * g.taps * g.cin_g) {
    i64 c = i % g.cin_g, rest = i / g.cin_g;
    i64 t = rest % g.taps;
    rest /= g.taps;
    i64 gi = rest % g.groups, r = rest / g.groups;
    bool ok = true;
    i64 off = 0;
    for (int d = (int)g.nsp - 1; d >= 0; --d) {
      i64 o = r % g.out_sp[d], k = t % g.ker[d];
      r /= g.out_sp[d];
      t /= g.ker[d];
      i64 tap = g.flip ? g.ker[d] - 1 - k : k;
      i64 pos = o * g.stride[d] + tap * g.kdil[d] - g.pad[d];
      i64 q = pos / g.idil[d];
      ok = ok && pos >= 0 && pos % g.idil[d] == 0 && q < g.in_sp[d];
      off += q * g.x_st[d];
    }
    T z{};
    col[i] = ok ? x[r * g.xs_n + (gi * g.cin_g + c) * g.xs_c + off] : z;
  }
}
