#!/usr/bin/env bash
# The GPU check: build here (no CUDA needed), run on the GPU machine.
#
#   scripts/gpu-check.sh build [DIR]   # here: builds with --features cuda of the GPU check
#                                      # (crates/ferrox/tests/gpu_check.rs) and, unless
#                                      # GPU_CHECK_CLI=0, the `ferrox` CLI; stripped, with this
#                                      # script, into DIR (default .gpu-cuda, git-ignored).
#                                      # GPU_CHECK_PROFILE=dev skips the (slow) release build:
#                                      # GPU kernel timings do not depend on it
#   bash DIR/gpu-check.sh run          # there (from the repository root the device tool sends,
#                                      # DIR carried along): runs the check, which compares
#                                      # every GPU kernel with the CPU backend, times a few ops
#                                      # and prints a table last; exits non-zero on a failure
#   bash DIR/gpu-check.sh decode       # there: the tiny f32 Llama's greedy tokens on the CPU, on
#                                      # the GPU with replayed decode steps and without
#                                      # (FERROX_DECODE_REPLAY=0), for a short prompt and one
#                                      # whose generation fills the first 256-position cache
#                                      # block (a new recording); exits non-zero if they differ
#   bash DIR/gpu-check.sh llm [ARGS]   # there: makes a random-weight Llama-3.2-1B-shaped model
#                                      # with torch (scripts/make_llama1b.py, tokenizer of
#                                      # models/tiny-llama) in /tmp/m1b and runs `ferrox bench`
#                                      # on it (ARGS default: -p 512 -g 128 -n 3), listing the
#                                      # ops that fell back to the CPU
#
# With the device tool: `run` with carry=[DIR] and command `bash DIR/gpu-check.sh run`. DIR
# must sit in the checkout the device tool sends and be ignored there (.git/info/exclude), and
# hold at most 64 MiB (the binaries are stripped for that).
set -euo pipefail

mode=${1:-}
case "$mode" in
build)
    cd "$(dirname "$0")/.."
    dir=${2:-.gpu-cuda}
    mkdir -p "$dir"
    profile=${GPU_CHECK_PROFILE:-release}
    pflag=(--release)
    [ "$profile" = dev ] && pflag=()
    # One cargo invocation for the check and the CLI: the ferrox crate compiles once, with
    # the features of both (two invocations resolve them differently and compile it twice).
    targets=(-p ferrox --test gpu_check --features ferrox/cuda)
    [ "${GPU_CHECK_CLI:-1}" != 0 ] && targets+=(-p ferrox-cli --bin ferrox --features ferrox-cli/cuda)
    cargo build "${pflag[@]}" "${targets[@]}" --message-format=json-render-diagnostics |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])' >"$dir/.exe"
    while read -r name exe; do
        case "$name" in gpu_check | ferrox) cp "$exe" "$dir/$name" ;; esac
    done <"$dir/.exe"
    rm "$dir/.exe"
    strip "$dir"/gpu_check "$dir"/ferrox 2>/dev/null || strip "$dir"/gpu_check
    # gzip: the two stripped binaries of a dev build (~100 MB) pass the 64 MiB a device call
    # carries; `run` and `llm` unpack them there.
    gzip -6 -f "$dir"/gpu_check
    [ -f "$dir/ferrox" ] && gzip -6 -f "$dir/ferrox"
    cp "$0" "$dir/gpu-check.sh"
    cp scripts/make_llama1b.py scripts/gpu-decode-bench.sh scripts/gpu-profile-step.py "$dir/"
    du -sh "$dir"
    ;;
run)
    dir=$(cd "$(dirname "$0")" && pwd)
    for f in "$dir"/*.gz; do [ -e "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    export FERROX_KERNEL_CACHE=${FERROX_KERNEL_CACHE:-/tmp/ferrox-kernels}
    if [ -x "$dir/ferrox" ]; then
        echo "== ferrox CLI: default device"
        "$dir/ferrox" demo 2>&1 | head -5 || true
    fi
    echo "== GPU check"
    "$dir/gpu_check"
    ;;
decode)
    dir=$(cd "$(dirname "$0")" && pwd)
    for f in "$dir"/*.gz; do [ -e "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
    export FERROX_KERNEL_CACHE=${FERROX_KERNEL_CACHE:-/tmp/ferrox-kernels}
    status=0
    for reps in 1 40; do
        prompt=$(python3 -c "print('Once upon a time, ' * $reps)")
        gen() { "$dir/ferrox" generate --model models/tiny-llama -p "$prompt" -m 120 --ignore-chat-template --verbose false; }
        FERROX_DEVICE=cpu gen >/tmp/dec_cpu.txt
        FERROX_DEVICE=gpu FERROX_LOG_REPLAY=1 gen >/tmp/dec_gpu.txt 2>/tmp/dec_gpu.log
        FERROX_DEVICE=gpu FERROX_DECODE_REPLAY=0 gen >/tmp/dec_gpu0.txt
        echo "== prompt x$reps: $(wc -c </tmp/dec_cpu.txt) bytes of text; replay log:"
        cat /tmp/dec_gpu.log
        for f in dec_gpu dec_gpu0; do
            if cmp -s /tmp/dec_cpu.txt /tmp/$f.txt; then echo "ok   $f = cpu"; else echo "FAIL $f differs from cpu"; status=1; fi
        done
    done
    exit $status
    ;;
llm)
    dir=$(cd "$(dirname "$0")" && pwd)
    for f in "$dir"/*.gz; do [ -e "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
    shift
    export FERROX_KERNEL_CACHE=${FERROX_KERNEL_CACHE:-/tmp/ferrox-kernels}
    if [ ! -f /tmp/m1b/config.json ]; then
        python3 "$dir/make_llama1b.py" /tmp/m1b models/tiny-llama >/tmp/m1b.log 2>&1 || { cat /tmp/m1b.log; exit 1; }
    fi
    args=("$@")
    [ ${#args[@]} -eq 0 ] && args=(-p 512 -g 128 -n 3)
    echo "== ferrox bench --model /tmp/m1b ${args[*]}"
    FERROX_LOG_FALLBACK=1 "$dir/ferrox" bench --model /tmp/m1b "${args[@]}" 2>/tmp/fallback.log
    echo "ops that ran on the CPU (count, op):"
    sort /tmp/fallback.log | uniq -c | sort -rn | head -20
    ;;
*)
    echo "usage: $0 build [DIR] | run | decode | llm [BENCH ARGS]" >&2
    exit 2
    ;;
esac
