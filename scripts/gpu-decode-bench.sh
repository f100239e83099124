#!/usr/bin/env bash
# Decode speed on the GPU machine, before and after, side by side in one call (docs/PERF.md,
# "CUDA decode, session 8").
#
# Here: `GPU_CHECK_PROFILE=release scripts/gpu-check.sh build DIR` (the GPU check and the CLI
# with --features cuda), optionally the CLI to compare against as DIR/ferrox-before.gz (built
# the same way from the older commit, stripped and gzipped); copy this script and
# gpu-profile-step.py into DIR. DIR must be an
# ignored folder of the checkout the device tool sends. There (device tool `run`, carry DIR):
#
#   [Q4=1] [B32=1] [P2048=1] [PROFILE=1] bash DIR/gpu-decode-bench.sh [bench|profile|check|all]
#
# bench: gpu-check.sh decode (greedy tokens of the tiny f32 Llama: CPU, GPU replayed, GPU not
# replayed), then `ferrox bench` on a random Llama-3.2-1B-shaped bf16 model at batch 1, 8 (and
# 32 with B32=1; a 2048-token prefill with P2048=1), and its 4-bit conversion with Q4=1: the "before" CLI (if there is one), this
# CLI with FERROX_DECODE_REPLAY=0 and this CLI; with PROFILE=1, the kernels of one batch-1
# decode step under Nsight Compute (gpu-profile-step.py); with PROFILE_PREFILL=1, those of one
# 2048-token prompt. profile: the decode check and
# the profiles only. check: the GPU check (GPU_CHECK_ONLY narrows it).
D=$(dirname "$0")
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for f in "$D"/*.gz; do [ -e "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
export FERROX_KERNEL_CACHE=/tmp/ferrox-kernels
what=${1:-all}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
t0=$(date +%s)
trio() { # model, bench args
    local m=$1
    shift
    if [ -x "$D/ferrox-before" ]; then
        echo "== $m $*: before"
        timeout 120 "$D/ferrox-before" bench --model "$m" "$@" 2>&1 | grep -E "Averages|Trial|rror"
    fi
    echo "== $m $*: after, FERROX_DECODE_REPLAY=0"
    FERROX_DECODE_REPLAY=0 timeout 120 "$D/ferrox" bench --model "$m" "$@" 2>&1 | grep -E "Averages|Trial|rror"
    echo "== $m $*: after"
    FERROX_LOG_REPLAY=1 timeout 120 "$D/ferrox" bench --model "$m" "$@" 2>"$OUT/replay_log.txt" | grep -E "Averages|Trial|rror"
    sort "$OUT/replay_log.txt" | uniq -c | head -5
}
if [ "$what" != check ]; then
    echo "== decode check"
    timeout 120 bash "$D/gpu-check.sh" decode 2>&1 | tee "$OUT/decode.log"
    [ -f /tmp/m1b/config.json ] || python3 "$D/make_llama1b.py" /tmp/m1b models/tiny-llama >/tmp/m1b.log 2>&1 ||
        cat /tmp/m1b.log
    if [ "$what" != profile ]; then
        trio /tmp/m1b -p 512 -g 128 -n 3
        trio /tmp/m1b -b 8 -p 512 -g 128 -n 2
        [ -n "$B32" ] && trio /tmp/m1b -b 32 -p 512 -g 64 -n 2
        [ -n "$P2048" ] && trio /tmp/m1b -p 2048 -g 8 -n 3
    fi
    if [ -n "$Q4" ] && [ "$what" != profile ]; then
        [ -f /tmp/m1b-q4/config.json ] || "$D/ferrox" convert --hf-path /tmp/m1b --mlx-path /tmp/m1b-q4 -q >/tmp/q4.log 2>&1 ||
            tail -3 /tmp/q4.log
        trio /tmp/m1b-q4 -p 512 -g 128 -n 3
    fi
    if [ -n "$PROFILE" ]; then
        echo "== kernels of one batch-1 bf16 decode step (ncu, replay off)"
        FERROX_DECODE_REPLAY=0 timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
            "$D/ferrox" bench --model /tmp/m1b -p 512 -g 6 -n 1 >"$OUT/ncu.csv" 2>"$OUT/ncu.err" || tail -3 "$OUT/ncu.err"
        python3 "$D/gpu-profile-step.py" "$OUT/ncu.csv"
    fi
    if [ -n "$PROFILE_PREFILL" ]; then
        echo "== kernels of one 2048-token prompt (ncu)"
        timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
            "$D/ferrox" bench --model /tmp/m1b -p 2048 -g 2 -n 1 >"$OUT/ncu-prefill.csv" 2>"$OUT/ncu-prefill.err" ||
            tail -3 "$OUT/ncu-prefill.err"
        python3 "$D/gpu-profile-step.py" --prefill "$OUT/ncu-prefill.csv"
    fi
    echo "benches done at $(($(date +%s) - t0)) s"
fi
if [ "$what" != bench ] && [ "$what" != profile ]; then
    echo "== gpu_check (${GPU_CHECK_ONLY:-all groups})"
    timeout "${CHECK_TIMEOUT:-300}" "$D/gpu_check" >"$OUT/check.log" 2>&1
    echo "gpu_check exit $?"
    grep -E "FAIL" "$OUT/check.log" | head -30
    sed -n '/| check group/,$p' "$OUT/check.log"
    echo "check done at $(($(date +%s) - t0)) s"
fi
