#!/usr/bin/env bash
# Builds and runs the CUDA kernel benchmarks of this folder on the GPU machine (nvcc there):
#   [WHAT="gemv qmv attn prefill rope"] [ROWS="1 8"] bash scripts/cuda-bench/run.sh
set -e
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
what=${WHAT:-gemv qmv attn prefill rope}
for b in $what; do nvcc -O3 -std=c++17 -arch=sm_90 -o "$OUT/${b}_bench" "$D/${b}_bench.cu"; done
case " $what " in *" gemv "*) for r in ${ROWS:-1}; do "$OUT/gemv_bench" $r; done ;; esac
case " $what " in *" qmv "*) "$OUT/qmv_bench" ;; esac
case " $what " in *" attn "*) "$OUT/attn_bench" ;; esac
case " $what " in *" prefill "*) "$OUT/prefill_bench" ;; esac
case " $what " in *" rope "*) "$OUT/rope_bench" ;; esac
