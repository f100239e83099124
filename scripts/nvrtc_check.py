"""Compiles ferrox's CUDA kernel sources with NVRTC for sm_90, here, without a GPU: catches
syntax errors before a device run and prints each kernel's registers, spills and shared memory.

    python3 scripts/nvrtc_check.py [FAMILY ...]   # attention quantized gather_mm index fast reduce
                                                # elementwise gemv
                                                # sort scatter random conv

Needs the nvidia-cuda-nvrtc wheel (cuda-bindings); the sources are assembled as the Rust side
does (common.cuh, #defines, the family's .cu, instantiations)."""
import re, sys, pathlib, subprocess, tempfile
from cuda.bindings import nvrtc

K = pathlib.Path(__file__).resolve().parent.parent / "crates/ferrox/src/backend/cuda/kernels"
COMMON = (K / "common.cuh").read_text()

def compile_src(name, src, arch="sm_90"):
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], [])
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-default-device", b"-Xptxas=-v"]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * n
    nvrtc.nvrtcGetProgramLog(prog, log)
    log = log.decode(errors="replace").rstrip("\x00")
    ok = err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    print(f"{'ok  ' if ok else 'FAIL'} {name}")
    for line in log.splitlines():
        if not ok or re.search(r"error|warning|spill|Used|Compiling entry", line):
            if ok and "0 bytes spill" in line:
                continue
            print("   ", line)
    return ok

def fam(name, defines, body, extra=""):
    d = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    return compile_src(name, f"{COMMON}\n{d}{(K / body).read_text()}\n{extra}")

want = set(sys.argv[1:]) or {"attention", "quantized", "gather_mm", "index", "fast", "reduce", "elementwise", "sort", "scatter",
                             "random", "conv", "gemv"}
ok = True
for t in ["float", "f16", "bf16"]:
    if "attention" in want:
        mma = {"f16": '"f16"', "bf16": '"bf16"'}.get(t)
        ok &= fam(f"attention {t}", {"T": t, **({"MMA_KIND": mma} if mma else {})}, "attention.cu")
    if "quantized" in want:
        # The module of dequantize, quantize and the tiled product (quantized.rs, QMV_M unset),
        # and one of the matrix-vector kernels.
        tiled = (K / "gather_mm.cu").read_text()
        for bits in [1, 2, 3, 4, 5, 6, 8]:
            ok &= fam(f"quantized {t} {bits}", {"T": t, "BITS": bits, "FMT": 0}, "quantized.cu", tiled)
        ok &= fam(f"quantized {t} 4 qmv 8", {"T": t, "BITS": 4, "FMT": 0, "QMV_M": 8}, "quantized.cu")
        for fmt, bits in [(1, 4), (2, 4), (3, 8)]:
            ok &= fam(f"quantized {t} {bits} fmt {fmt}", {"T": t, "BITS": bits, "FMT": fmt}, "quantized.cu", tiled)
    if "gather_mm" in want:
        ok &= fam(f"gather_mm {t}", {"T": t}, "gather_mm.cu")
    if "fast" in want:
        ok &= fam(f"fast {t}", {"T": t}, "fast.cu")
    if "gemv" in want:
        mma = {"f16": '"f16"', "bf16": '"bf16"'}.get(t)
        kind = {"MMA_KIND": mma} if mma else {}
        ok &= fam(f"gemv {t}", {"T": t, **kind}, "gemv.cu")
        # A module of the kernels whose output is a program of the product's two halves
        # (matmul.rs, prologue.rs's glu_source): here SwiGLU's silu(x0) · x1, one step at a
        # time as generated.
        glu = f"""__device__ {t} glu_epilogue({t} lower, {t} upper) {{
      const {t} x0 = lower;
      const {t} x1 = upper;
      const {t} s0 = from_acc<{t}>((acc_t<{t}>)op_Sigmoid(to_acc<{t}>(x0)));
      const {t} s1 = from_acc<{t}>(op_Multiply<acc_t<{t}>>(to_acc<{t}>(x0), to_acc<{t}>(s0)));
      const {t} s2 = from_acc<{t}>(op_Multiply<acc_t<{t}>>(to_acc<{t}>(s1), to_acc<{t}>(x1)));
  return s2;
}}
"""
        d = "".join(f"#define {k} {v}\n" for k, v in {"T": t, **kind}.items())
        src = (K / "elementwise.cu").read_text() + "\n#define GEMV_GLU\n" + (K / "gemv.cu").read_text()
        ok &= compile_src(f"gemv glu {t}", f"{COMMON}\n{d}{src}\n{glu}")
if "attention" in want:
    ok &= fam("attention double", {"T": "double", "ATTN_F64": ""}, "attention.cu")
if "index" in want:
    for t in ["u8", "u16", "u32", "u64"]:
        ok &= fam(f"index {t} i32", {"T": t, "I": "i32"}, "index.cu")
if "elementwise" in want:
    casts = "".join(f"CAST({d})\n" for d in ["float", "f16", "bf16", "double", "i32", "u8", "bool"])
    # A unary and a binary kernel (their run-of-ELEMS paths), and a kernel shaped like fused.rs
    # generates them (SwiGLU's product of two views).
    casts += "UNARY(Negative, op_Negative<A>)\nARITH(Add)\nARITH(Multiply)\n"
    fused = """extern "C" __global__ void fused_like(T* __restrict__ out, const T* __restrict__ in0,
                                         const T* __restrict__ in1, Layout l) {
  if (rows_fit<2>(l)) {
    GRID_LOOP(q, l.n / ELEMS) {
      i64 o[2];
      offsets<2>(l, q * ELEMS, o);
      const Run<T> v0 = load_run(in0 + o[0], last_stride(l, 0));
      const Run<T> v1 = load_run(in1 + o[1], last_stride(l, 1));
      Run<T> r;
#pragma unroll
      for (int u = 0; u < ELEMS; ++u) r.v[u] = from_acc<T>(op_Multiply<A>(to_acc<T>(v0.v[u]), to_acc<T>(v1.v[u])));
      store_run(out + q * ELEMS, r);
    }
  }
}
"""
    for t in ["float", "bf16", "f16", "i32", "bool", "double"]:
        ok &= fam(f"elementwise {t}", {"T": t}, "elementwise.cu", casts + fused)
if "reduce" in want:
    inst = ("REDUCE(Sum, A, (A)0, to_acc<T>(x), r_add<A>, T, from_acc<T>(acc))\nARGREDUCE(ArgMax, true)\n"
            "ARGREDUCE_SPLIT(ArgMax, true)\nARGREDUCE_SPLIT(ArgMin, false)\n"
            "SCAN(Sum, (A)0, r_add<A>)\nSCAN(Prod, (A)1, r_mul<A>)\nSCAN(Max, lowest(), r_max<A>)\n"
            "SCAN(Min, highest(), r_min<A>)\n")
    for t in ["float", "bf16", "i32", "u8", "bool"]:
        ok &= fam(f"reduce {t}", {"T": t}, "reduce.cu", inst)
if "sort" in want:
    for t in ["float", "bf16", "f16", "double", "i8", "u64", "bool"]:
        ok &= fam(f"sort {t}", {"T": t}, "sort.cu")
if "scatter" in want:
    for t in ["float", "bf16", "f16", "double", "i8", "u16", "i64", "bool"]:
        ok &= fam(f"scatter {t} i32", {"T": t, "I": "i32"}, "scatter.cu")
if "conv" in want:
    for t in ["float", "bf16", "f16", "double"]:
        ok &= fam(f"conv {t}", {"T": t}, "conv.cu")
if "random" in want:
    ok &= fam("random", {}, "random.cu")
sys.exit(0 if ok else 1)
