"""The recipe under torchrun (2 processes, gloo on CPU) matches one process at the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import needs
from tests.training.test_classification import TINY

pytestmark = needs("datasets")

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(out: Path, nproc: int, per_device_batch: int) -> dict[int, float]:
    args = [
        "--output_dir",
        str(out),
        *TINY,
        "--per_device_train_batch_size",
        str(per_device_batch),
        "--max_steps",
        "6",
        "--logging_steps",
        "1",
        "--eval_strategy",
        "no",
        "--augment",
        "False",
        "--use_cpu",
        "True",
    ]
    module = ["-m", "sovit_hf.training.classification", *args]
    if nproc > 1:
        launcher = [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
        ]
        cmd = [sys.executable, *launcher, *module]
    else:
        cmd = [sys.executable, *module]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {r["step"]: r["loss"] for r in history if "loss" in r}


def test_two_processes_match_one(tmp_path):
    one = _train(tmp_path / "one", nproc=1, per_device_batch=16)
    two = _train(tmp_path / "two", nproc=2, per_device_batch=8)  # same global batch of 16
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:  # float32 sums in a different order across the two gradient shards
        assert abs(one[step] - two[step]) <= 1e-5 * max(1.0, abs(one[step])), (step, one[step], two[step])
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
