#!/usr/bin/env bash
# Builds persist2_bench.cu in several shapes at once (in parallel) and runs each in turn on the
# GPU machine; prints each run's output, then the RESULT lines as a table.
#   [VARIANTS="name:flags;name:flags"] bash scripts/cuda-bench/persist2_sweep.sh
set -e
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# Default: the bench as it is, again with a trace, the stream alone (no sums) and the chain
# alone (no weights); name:flags pairs, separated by ';'.
VARIANTS=${VARIANTS:-"best:;trace:-DTRACE;nosums:-DNO_SUMS;chain:-DNO_WEIGHTS -DNO_SUMS -DTRACE"}
IFS=';' read -ra vs <<<"$VARIANTS"
for v in "${vs[@]}"; do
  name=${v%%:*} flags=${v#*:}
  # shellcheck disable=SC2086
  nvcc -O3 -std=c++17 -arch=sm_90 $flags -o "$OUT/pb2_$name" "$D/persist2_bench.cu" &
done
wait
for v in "${vs[@]}"; do
  name=${v%%:*}
  echo "== $name: ${v#*:}"
  timeout 120 "$OUT/pb2_$name" | tee -a "$OUT/persist2.log" || echo "RESULT $name failed ($?)" | tee -a "$OUT/persist2.log"
done
rm -f "$OUT"/pb2_*
echo "== summary"
grep RESULT "$OUT/persist2.log"
