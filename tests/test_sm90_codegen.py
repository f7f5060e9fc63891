"""Code generation of the attention kernels for Hopper, checked without a GPU: compiled offline for sm_90a by
``benchmarks/sm90_compile_check.py`` (Triton's compiler and its ptxas), every kernel and variant at the default configs
keeps software-pipelined loads (``cp.async``) and tensor-core MMAs (``wgmma``) and spills no register; the atomic dQ
variant is the only one with atomics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_attention_kernels_compile_for_sm90_pipelined_without_spills(tmp_path):
    triton = pytest.importorskip("triton")
    if not (Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton wheel ships no ptxas")
    out = tmp_path / "sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sm90_compile_check.py"), "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["kernel"], r["head_dim"]) for r in rows} == {(k, d) for k in ("fwd", "dkdv", "dq") for d in (72, 55)}
    for r in rows:
        assert r["cp_async"] > 0 and r["wgmma"] > 0 and r["spill_store_bytes"] == 0, r
        assert (r["atomics"] > 0) == bool(r.get("atomic_dq")), r
