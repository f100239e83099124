#!/usr/bin/env bash
# A syntax and template check of the CUDA kernel sources with g++, before device time is
# spent: each file is parsed as C++17 after common.cuh, with CUDA's built-ins mocked (mock.h)
# and the defines a module of it gets (bf16; 4-bit affine with 1, 2 and 8 rows for
# quantized.cu), so that undeclared names, bad template arguments and the like show here, not
# as an NVRTC error on the GPU machine. It checks what g++ can see: not PTX, not registers,
# not values.
#   bash scripts/cuda-syntax/check.sh [FILE.cu ...]   # default: the kernels it knows
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k="$here/../../crates/ferrox/src/backend/cuda/kernels"
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(gemv.cu quantized.cu attention.cu fast.cu reduce.cu random.cu conv.cu)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
check() { # file, defines
    local f=$1 defs=$2
    { echo "#include \"$here/mock.h\""; cat "$k/common.cuh"; printf '%b' "$defs"; cat "$k/$f"; } >"$tmp/x.cpp"
    if g++ -std=c++17 -fsyntax-only -w "$tmp/x.cpp" 2>"$tmp/err"; then
        echo "ok   $f ${defs//\\n/ }"
    else
        echo "FAIL $f ${defs//\\n/ }"
        grep -E "error" "$tmp/err" | head -10
        status=1
    fi
}
for f in "${files[@]}"; do
    f=$(basename "$f")
    case "$f" in
    quantized.cu)
        for m in 1 2 8; do check "$f" "#define T bf16\n#define BITS 4\n#define FMT 0\n#define QMV_M $m\n"; done ;;
    gemv.cu) check "$f" "#define T bf16\n#define MMA_KIND \"bf16\"\n" ;;
    *) check "$f" "#define T bf16\n" ;;
    esac
done
exit $status
