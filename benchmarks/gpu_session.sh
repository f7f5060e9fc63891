#!/usr/bin/env bash
# One stage of the GPU work per call of the device machine (each stage fits its 10-minute limit; the 30-minute device
# budget of a session holds about three). Run from the repository root on the GPU machine:
#
#   bash benchmarks/gpu_session.sh 1   # install, GPU tests of the kernels (#3), kernel benchmark -> $OUT
#   bash benchmarks/gpu_session.sh 2   # throughput, So400m/14 @224 inference at batch 256 (issue #8's first target)
#   bash benchmarks/gpu_session.sh 3   # throughput, So400m/14 @224 training step, kernels vs SigLIP (+compile)
#   bash benchmarks/gpu_session.sh 4   # throughput, So400m/14 @384 and So150m/14 @224 inference at batch 256
#
# Everything lands in $OUT (the only folder that comes back); copy the returned JSON into benchmarks/results/ and
# commit it, then run `python benchmarks/throughput.py --readme-only`. Stages 2-4 append to the throughput file of
# this device when it is already in benchmarks/results/ (--resume: units with records are skipped).
# The machine has torch, triton, transformers and timm but no registry: sovit_hf goes in with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: bash benchmarks/gpu_session.sh STAGE (1-4)}"
OUT="${OUT:?the device machine sets OUT}"
python -m pip install -q --no-deps -e . >"$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
nvidia-smi -L

throughput() {  # the throughput script, resuming from this device's committed file
  slug=$(python -c "import torch; from benchmarks.throughput_lib.results import device_slug; \
print(device_slug(torch.device('cuda')))")
  previous="benchmarks/results/throughput_${slug}.json"
  resume=()
  [[ -f "$previous" ]] && resume=(--resume --previous "$previous")
  python benchmarks/throughput.py --device cuda --out "$OUT" --budget-s 500 "${resume[@]}" "$@" 2>&1 \
    | tee "$OUT/throughput_stage${stage}.log" | tail -40
}

case "$stage" in
  1)
    python -m pytest -q -m gpu tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
    timeout 420 python benchmarks/bench_kernels.py --out "$OUT/kernels.json" 2>&1 | tee "$OUT/bench_kernels.log" \
      | tail -30
    ;;
  2) throughput --models so400m-224 --modes inference --batches 256 ;;
  3) throughput --models so400m-224 --modes training \
       --implementations sdpa,sovit_triton+mlp+ln,siglip-sdpa,sovit_triton+mlp+ln+compile,siglip-sdpa+compile ;;
  4) throughput --models so400m-384,so150m-224 --modes inference --batches 256 \
       --implementations sdpa,sovit_triton+mlp+ln,sovit_triton+mlp+ln+qkv,siglip-sdpa,timm ;;
  *) echo "unknown stage $stage (1-4)" >&2; exit 2 ;;
esac
