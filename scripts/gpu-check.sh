#!/usr/bin/env bash
# One prepared run on a GPU machine (README, GPU backend): for every variant in the kit
# (scripts/gpu-kit.sh), the op-by-op parity suite against flex, the Grad-CAM fixture's
# training gradients against PyTorch's, and the training-step benchmark; then PyTorch CUDA's
# step time (python/bench_torch.py) when torch is installed. Every step has a timeout, and
# everything lands in $OUT (default gpu-check/), with summary.txt first to read.
#   bash scripts/gpu-check.sh target/gpu-kit
set -uo pipefail
kit=${1:-target/gpu-kit}
out=${OUT:-gpu-check}
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
run() {  # run NAME SECONDS CMD...: output to $out/NAME.txt, status to the summary
    local name=$1 seconds=$2; shift 2
    local started=$SECONDS
    timeout "$seconds" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    say "$name: exit $rc in $((SECONDS - started)) s"
    return 0
}
run machine 30 bash -c 'nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; (vulkaninfo --summary || true)'
for bin in "$kit"/faithful-*; do
    variant=${bin##*/faithful-}
    backend=wgpu
    [ "$variant" = vulkan ] && backend=vulkan
    run "doctor-$variant" 300 "$bin" --backend "$backend" doctor --json "$out/doctor-$variant.json"
    grep -c '\*\*differs\*\*' "$out/doctor-$variant.txt" | sed "s/^/doctor-$variant: outputs differing: /" | tee -a "$summary"
    if [ -x "$kit/gradcam_fixture-$variant" ]; then
        FAITHFUL_TEST_BACKEND=wgpu FAITHFUL_FIXTURE_DIR="$kit/fixture" \
            run "fixture-$variant" 300 "$kit/gradcam_fixture-$variant" --nocapture --test-threads=1
        grep -E "^test result" "$out/fixture-$variant.txt" | sed "s/^/fixture-$variant: /" | tee -a "$summary"
    fi
    run "bench-$variant" 300 "$bin" --backend "$backend" --allow-unverified-training bench --images 256
done
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    run bench-torch 300 python3 python/bench_torch.py --device cuda
else
    say "bench-torch: skipped (no python3 with CUDA torch)"
fi
cat "$summary"
