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
# Session 26's second rounds, each against the default in the same run: VARIANTS=s27 (k-chunked
# dependencies, half chunks, 8-byte lists), s27b, s27c, s27d (below).
S27="best:;kdep:-DKDEP;kdep_half:-DKDEP -DHALF;kdep_r3:-DKDEP -DRING=3;kdep_l8r4:-DKDEP -DLIST8 -DRING=4"
S27+=";kdep_half_l8r4:-DKDEP -DHALF -DLIST8 -DRING=4;l8r4:-DLIST8 -DRING=4;kdep_s32:-DKDEP -DCTR_STRIDE=32"
S27+=";kdep_nosums:-DKDEP -DNO_SUMS;kdep_chain:-DKDEP -DNO_WEIGHTS -DNO_SUMS -DTRACE;trace:-DTRACE"
S27+=";kdep_trace:-DKDEP -DTRACE;kdep_half_trace:-DKDEP -DHALF -DTRACE;best2:;kdep2:-DKDEP"
# Where x goes with KDEP (KX=0 / 1 / 2), second round:
S27B="best:;kx0:-DKDEP;kx1:-DKDEP -DKX=1;kx2:-DKDEP -DKX=2;kx1_trace:-DKDEP -DKX=1 -DTRACE"
S27B+=";kx1_chain:-DKDEP -DKX=1 -DNO_WEIGHTS -DNO_SUMS -DTRACE;kx2_chain:-DKDEP -DKX=2 -DNO_WEIGHTS -DNO_SUMS -DTRACE"
S27B+=";chain:-DNO_WEIGHTS -DNO_SUMS -DTRACE;best2:;kx1b:-DKDEP -DKX=1;kx2b:-DKDEP -DKX=2"
# x loaded by the poll warp (one cp.async round trip), third round:
S27C="best:;poll_x:-DPOLL_X;poll_x_trace:-DPOLL_X -DTRACE;poll_x_chain:-DPOLL_X -DNO_WEIGHTS -DNO_SUMS -DTRACE"
S27C+=";poll_x_r3:-DPOLL_X -DRING=3;best2:;poll_x2:-DPOLL_X"
# Pipelined polling, fourth round:
S27D="best:;pipe300:-DPIPE_POLL=300;pipe150:-DPIPE_POLL=150;pipe600:-DPIPE_POLL=600;pipe_trace:-DPIPE_POLL=300 -DTRACE"
S27D+=";pipe_chain:-DPIPE_POLL=300 -DNO_WEIGHTS -DNO_SUMS -DTRACE;best2:;pipe300b:-DPIPE_POLL=300"
[ "$VARIANTS" = s27 ] && VARIANTS=$S27
[ "$VARIANTS" = s27d ] && VARIANTS=$S27D
[ "$VARIANTS" = s27c ] && VARIANTS=$S27C
[ "$VARIANTS" = s27b ] && VARIANTS=$S27B
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
