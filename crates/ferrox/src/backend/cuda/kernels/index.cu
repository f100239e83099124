// Indexing kernels: gather, take_along_axis, and the fills arange writes. Elements move by
// size only: T is the unsigned type of the element's size; I is the index arrays' type.
// Indices wrap once if negative and are clamped into range (the GPU cannot stop to raise
// an error; the CPU backend, which can, reports an out-of-range index instead).

// out [index shape..., slice...]: li is the index shape (st[k]: index array k's strides), ls
// the slice shape (st[0]: a's strides); slice_n elements per index position.
extern "C" __global__ void gather(T* __restrict__ out, const T* __restrict__ a, Indices ix, Layout li, Layout ls) {
  i64 slice_n = ls.n;
  GRID_LOOP(i, li.n * slice_n) {
    i64 pos = i / slice_n, j = i - pos * slice_n;
    i64 oi[4];
    offsets<4>(li, pos, oi);
    i64 base = indexed_offset<I>(ix, oi);
    i64 os[1];
    offsets<1>(ls, j, os);
    out[i] = a[base + os[0]];
  }
}

// out[pos] = a[pos with `axis` replaced by idx[pos]]: l.st[0] is a's strides with the axis
// stride 0, l.st[1] idx's; the axis has n elements at stride s.
extern "C" __global__ void take_along_axis(T* __restrict__ out, const T* __restrict__ a, const I* __restrict__ idx,
                                           Layout l, i64 n, i64 s) {
  GRID_LOOP(i, l.n) {
    i64 o[2];
    offsets<2>(l, i, o);
    out[i] = a[o[0] + wrap_index((i64)idx[o[1]], n) * s];
  }
}
