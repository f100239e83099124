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
    cargo test "${pflag[@]}" -p ferrox --features cuda --test gpu_check --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_check":
        print(m["executable"])' >"$dir/.exe"
    cp "$(cat "$dir/.exe")" "$dir/gpu_check"
    rm "$dir/.exe"
    if [ "${GPU_CHECK_CLI:-1}" != 0 ]; then
        cargo build "${pflag[@]}" -p ferrox-cli --features cuda
        out=$profile
        [ "$profile" = dev ] && out=debug
        cp "${CARGO_TARGET_DIR:-target}/$out/ferrox" "$dir/ferrox"
    fi
    strip "$dir"/gpu_check "$dir"/ferrox 2>/dev/null || strip "$dir"/gpu_check
    cp "$0" "$dir/gpu-check.sh"
    du -sh "$dir"
    ;;
run)
    dir=$(cd "$(dirname "$0")" && pwd)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    export FERROX_KERNEL_CACHE=${FERROX_KERNEL_CACHE:-/tmp/ferrox-kernels}
    if [ -x "$dir/ferrox" ]; then
        echo "== ferrox CLI: default device"
        "$dir/ferrox" demo 2>&1 | head -5 || true
    fi
    echo "== GPU check"
    "$dir/gpu_check"
    ;;
*)
    echo "usage: $0 build [DIR] | run" >&2
    exit 2
    ;;
esac
