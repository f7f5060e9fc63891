#!/usr/bin/env bash
# The whole GPU check in one run of at most 8 minutes, on an H100/H200 machine without a package registry:
#
#   bash gpu_check/run.sh OUT          # on a GPU machine, from the repository root
#   bash gpu_check/run.sh --dry OUT    # on a CPU: every stage's entry point at tiny sizes, nothing measured
#
# Stages, each under its own `timeout` (no `set -e`: a failing stage does not skip the next), their files in OUT as
# soon as they exist (records are rewritten one by one, so a run cut short keeps what it measured):
#   a  env.json              torch / triton / transformers / cuDNN versions, the SDPA backend torch picks  <= 20 s
#   b  tests.log             selected gpu-marked correctness tests, default kernel configs (SOVIT_HF_AUTOTUNE=0)
#                                                                                                        <= 120 s
#   c  kernels_<gpu>.json    kernel micro-benchmarks vs every SDPA backend, cuBLAS(Lt), F.layer_norm, autotune picks
#                                                                                     (no new shape after 135 s) <= 165 s
#   d  throughput_<gpu>.json So400m/14@224: SoViT (sdpa / all kernels, each +compile) vs SiglipVisionModel sdpa
#      (+compile), inference at batch 256 and a training step, MFU against a GEMM peak measured in the run
#                                                                                     (no new unit after 120 s) <= 155 s
#   gpu_check.log (everything printed), summary.txt (the table printed last), throughput_<gpu>.png: 7 files in all.
# The durations are the time limits below (estimates: no GPU has run this yet). The machine has torch, triton,
# transformers, huggingface_hub, accelerate and timm but no registry: nothing is installed, PYTHONPATH does it.
# Afterwards: copy OUT's kernels_*.json and throughput_*.json into benchmarks/results/ and commit them.
dry=0
if [[ "${1:-}" == "--dry" ]]; then dry=1; shift; fi
out="${1:?usage: bash gpu_check/run.sh [--dry] OUT_FOLDER}"
mkdir -p "$out" && out="$(cd "$out" && pwd)" || exit 1  # absolute: the stages run from the repository root
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
log="$out/gpu_check.log"
: >"$log"

# Stage d's matrix (tests/test_gpu_check.py parses these arguments with throughput.py's own parser).
THROUGHPUT_GPU_ARGS=(--device cuda --models so400m-224 --batches 256 --modes inference,training
  --implementations sdpa,sovit_triton+mlp+ln,siglip-sdpa,sdpa+compile,sovit_triton+mlp+ln+compile,siglip-sdpa+compile
  --repeats 10 --warmup 3 --max-train-batch 256 --budget-s 120 --no-update-readme)
THROUGHPUT_DRY_ARGS=(--device cpu --models so400m-tiny --batches 1 --modes inference
  --implementations sdpa,siglip-sdpa --repeats 1 --warmup 0 --no-update-readme)
# Stage b: bf16 at head dims 72 and 55, the MAP probe, the attention variants, fused MLP and LayerNorm, a bf16 model
# forward and a training step's gradients (dtype0 is bfloat16 in these tests' parametrisations).
TESTS=(
  "tests/kernels/test_attention.py::test_attention_gpu_real_shapes[256-72-dtype0]"
  "tests/kernels/test_attention.py::test_attention_gpu_real_shapes[1024-72-dtype0]"
  "tests/kernels/test_attention.py::test_attention_gpu_real_shapes[729-55-dtype0]"
  "tests/kernels/test_attention.py::test_attention_gpu_real_shapes[256-55-dtype0]"
  "tests/kernels/test_attention.py::test_attention_gpu_map_probe[72-729-dtype0]"
  "tests/kernels/test_attention.py::test_attention_gpu_map_probe[55-1024-dtype0]"
  "tests/kernels/test_attention.py::test_attention_gpu_variants"
  "tests/kernels/test_attention.py::test_attention_gpu_deterministic"
  "tests/kernels/test_mlp.py::test_mlp_gpu_real_shapes[1152-4304-dtype0]"
  "tests/kernels/test_mlp.py::test_mlp_gpu_real_shapes[880-2320-dtype0]"
  "tests/kernels/test_layer_norm.py::test_layer_norm_gpu_real_shapes[True-1152-dtype0]"
  "tests/kernels/test_layer_norm.py::test_layer_norm_gpu_real_shapes[False-880-dtype0]"
  "tests/kernels/test_integration.py::test_model_bf16_gpu"
  "tests/kernels/test_integration.py::test_model_bf16_gpu_backward"
)

stage() {  # stage NAME SECONDS LOG COMMAND...: under a time limit; output to gpu_check.log, LOG (unless -) and the
  local name="$1" limit="$2" own="$3"  # terminal (its last 25 lines); never aborts the script
  shift 3
  [[ "$own" == - ]] && own=/dev/null
  echo "== stage $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log" "$own" | tail -n 25
  local rc=${PIPESTATUS[0]}
  echo "== stage $name: exit $rc after $((SECONDS - start))s$([[ $rc == 124 ]] && echo ' (time limit)')" | tee -a "$log"
}

if ((dry)); then
  export TRITON_INTERPRET=1  # the kernels run on the CPU through Triton's interpreter
  stage a 60 - "$PY" gpu_check/env.py --dry --out "$out/env.json"
  # The selected tests exist (a renamed test or parameter makes pytest fail here); a CPU does not run them.
  stage b 120 "$out/tests.log" "$PY" -m pytest --collect-only -q -p no:cacheprovider "${TESTS[@]}"
  stage c 240 - "$PY" benchmarks/bench_kernels.py --dry --out "$out/kernels_dry_cpu.json"
  stage d 240 - "$PY" benchmarks/throughput.py "${THROUGHPUT_DRY_ARGS[@]}" --out "$out/throughput_dry_cpu.json"
else  # limits: 20 + 120 + 165 + 155 = 460 s, plus a few seconds for nvidia-smi, the device name and the table
  nvidia-smi -L 2>&1 | tee -a "$log"
  stage a 20 - "$PY" gpu_check/env.py --out "$out/env.json"
  stage b 120 "$out/tests.log" env SOVIT_HF_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider -rfE "${TESTS[@]}"
  slug=$("$PY" -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '_', torch.cuda.get_device_name().lower()).strip('_'))")
  stage c 165 - "$PY" benchmarks/bench_kernels.py --budget-s 135 --out "$out/kernels_${slug}.json"
  stage d 155 - "$PY" benchmarks/throughput.py "${THROUGHPUT_GPU_ARGS[@]}" --out "$out"
fi
"$PY" gpu_check/summary.py "$out" | tee -a "$log"
