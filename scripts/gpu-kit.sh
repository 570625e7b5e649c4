#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine into target/gpu-kit (one folder to carry
# there, at most ~64 MiB): the faithful binary and the Grad-CAM fixture test per backend variant,
# stripped, and the reference fixture.
#   scripts/gpu-kit.sh                 # the wgpu variant (WGSL compiler)
#   VARIANTS="wgpu vulkan fusion" scripts/gpu-kit.sh
# Variants: wgpu (--features wgpu), vulkan (SPIR-V compiler, --features vulkan), fusion and
# autotune (wgpu with burn's op fusion / kernel autotuning). Each builds in target/gpu-<variant>.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/gpu-kit
fixture=${FAITHFUL_FIXTURE_DIR:-../shared/reference/gradcam-loss-fixture}
mkdir -p "$kit"
for variant in ${VARIANTS:-wgpu}; do
    case $variant in
        wgpu) features=wgpu ;;
        vulkan) features=vulkan ;;
        fusion) features="wgpu fusion" ;;
        autotune) features="wgpu autotune" ;;
        *) echo "gpu-kit: unknown variant $variant (wgpu, vulkan, fusion, autotune)" >&2; exit 2 ;;
    esac
    dir=target/gpu-$variant
    [ "$variant" = wgpu ] && dir=target/wgpu   # shared with tests/wgpu_lavapipe.rs
    cargo build --release --features "$features" --target-dir "$dir"
    cp "$dir/release/faithful" "$kit/faithful-$variant"
    test_bin=$(cargo test --release --features "$features" --target-dir "$dir" --test gradcam_fixture \
        --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gradcam_fixture":
        print(m["executable"])')
    cp "$test_bin" "$kit/gradcam_fixture-$variant"
    strip "$kit/faithful-$variant" "$kit/gradcam_fixture-$variant" 2>/dev/null || true
done
if [ -d "$fixture" ]; then
    mkdir -p "$kit/fixture"
    cp "$fixture"/*.safetensors "$kit/fixture/"
fi
du -sh "$kit"
echo "carry $kit and run: bash scripts/gpu-check.sh $kit"
