"""Autotuning stays affordable (at most six configs per kernel, the spilling LayerNorm-backward config
gone, batch and heads in the attention key) and its winners can be recorded with the benchmark results."""

from __future__ import annotations

import triton

from tests.kernels.helpers import kernels  # noqa: F401  (skips where the kernels cannot run)

# isort: split
from sovit_hf.kernels import _utils, attention, layer_norm, mlp  # after the skips


def test_at_most_six_configs_per_kernel():
    lists = {
        "attention fwd": attention._fwd_configs(),
        "attention dK/dV": attention._dkdv_configs(),
        "attention dQ": attention._dq_configs(),
        "LayerNorm fwd": layer_norm._fwd_configs(),
        "LayerNorm bwd": layer_norm._bwd_configs(),
        "MLP GEMMs": mlp._gemm_configs(),
    }
    for name, configs in lists.items():
        assert 1 <= len(configs) <= 6, (name, len(configs))
        assert len({(str(c.kwargs), c.num_warps, c.num_stages) for c in configs}) == len(configs), name
    spilling = [c for c in layer_norm._bwd_configs() if c.kwargs["ROWS"] == 4 and c.num_warps == 4]
    assert not spilling  # 20 bytes of spills at width 1152 on sm_90 (offline ptxas -v)
    assert {"batch", "num_heads", "seq_q", "seq_k"} <= set(attention._KEY)


class _FakeTuner:
    """What triton.autotune leaves after tuning: its key names and a cache from key values (+ dtypes) to configs."""

    keys = ["batch", "num_heads", "seq_q"]
    cache = {
        (256, 16, 256, "torch.bfloat16"): triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3)
    }


def test_autotune_winners_are_reported_per_key(monkeypatch):
    monkeypatch.setattr(_utils, "_AUTOTUNED", {"_attn_fwd_kernel": _FakeTuner()})
    assert _utils.autotune_winners() == [
        {
            "kernel": "_attn_fwd_kernel",
            "key": {"batch": 256, "num_heads": 16, "seq_q": 256},
            "key_dtypes": ["torch.bfloat16"],
            "config": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
        }
    ]
