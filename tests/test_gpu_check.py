"""gpu_check/run.sh, the one GPU run: its stage-d arguments are valid for throughput.py, and its
dry mode runs every stage's entry point on the CPU (tiny sizes, the kernels under Triton's interpreter), writing each
stage's file, at most 8 in all, every one labelled dry."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "gpu_check" / "run.sh"


def _bash_array(name: str) -> list[str]:
    """The words of ``NAME=(...)`` in the script."""
    match = re.search(rf"^{name}=\((.*?)\)$", SCRIPT.read_text(), flags=re.M | re.S)
    assert match, name
    return shlex.split(match.group(1), comments=True)


def test_stage_d_arguments_parse_with_the_throughput_script():
    from benchmarks import throughput as script
    from benchmarks.throughput_lib.matrix import parse_implementation

    for name in ("THROUGHPUT_GPU_ARGS", "THROUGHPUT_DRY_ARGS"):
        args = script.parse_args(_bash_array(name))
        assert args.models and args.implementations, name
        assert all(parse_implementation(i) for i in args.implementations)
    gpu = script.parse_args(_bash_array("THROUGHPUT_GPU_ARGS"))
    assert gpu.device == "cuda" and gpu.models == ["so400m-224"] and gpu.batches == [256]
    assert {"sdpa", "sovit_triton+mlp+ln", "siglip-sdpa", "siglip-sdpa+compile"} <= set(gpu.implementations)
    assert gpu.budget_s is not None and gpu.update_readme is False


def test_stage_limits_fit_eight_minutes():
    """The per-stage time limits of the GPU branch add up to at most 480 s, the whole check's budget."""
    text = SCRIPT.read_text().split("else  #", 1)[1]
    limits = [int(n) for n in re.findall(r"^\s*stage [a-d] (\d+) ", text, flags=re.M)]
    assert len(limits) == 4 and sum(limits) <= 470, limits


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils timeout")
def test_dry_run_writes_every_stage(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("SOVIT_HF_KERNELS", "SOVIT_HF_AUTOTUNE")}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        ["bash", str(SCRIPT), "--dry", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files
    for stage in "abcd":
        assert re.search(rf"== stage {stage}: exit 0 after", run.stdout), run.stdout[-3000:]

    assert json.loads((out / "env.json").read_text())["dry"] is True
    assert json.loads((out / "env.json").read_text())["sdpa_backend"]
    tests = (out / "tests.log").read_text()
    expected = len(_bash_array("TESTS")) + 5 + 1  # test_attention_gpu_variants has 6 cases, test_model_bf16_gpu 2
    assert re.search(rf"\b{expected} tests collected", tests), tests[-500:]

    kernels = json.loads((out / "kernels_dry_cpu.json").read_text())
    assert kernels["header"]["dry"] is True
    seen = {(r["op"], r["implementation"]) for r in kernels["records"] if r["ms"] is not None}
    for op, impl in [
        ("attn_fwd", "sovit_triton"),
        ("attn_fwd_bwd", "sovit_triton[atomic_dq]"),
        ("attn_fwd_bwd", "sovit_triton[atomic_dq+prescaled_k]"),
        ("attn_fwd", "sovit_triton[pad-pow2]"),
        ("attn_fwd", "sdpa[math]"),
        ("fc1_gelu", "cublaslt_gelu_epilogue"),
        ("fc1_gelu", "sovit_triton[autotuned]"),
        ("mlp_fwd_bwd", "sovit_triton"),
        ("add_layer_norm_fwd_bwd", "sovit_triton"),
        ("add_layer_norm", "add+F.layer_norm"),
    ]:
        assert (op, impl) in seen, (op, impl)

    throughput = json.loads((out / "throughput_dry_cpu.json").read_text())
    assert {r["implementation"] for r in throughput["records"] if r["images_per_s"]} == {"sdpa", "siglip-sdpa"}
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("== gpu_check summary (DRY RUN") and summary == run.stdout[-len(summary) :]


def test_old_path_forwards_to_the_check():
    """`bash benchmarks/gpu_check.sh` (the path the GPU-session instructions name) runs gpu_check/run.sh: the same usage
    error for a missing OUT folder, from the same script."""
    old = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=60
    )
    new = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert old.returncode == new.returncode == 1
    assert "usage: bash gpu_check/run.sh [--dry] OUT_FOLDER" in old.stderr
    assert old.stderr.split(": ", 2)[-1] == new.stderr.split(": ", 2)[-1]
