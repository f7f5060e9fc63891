"""The validation stage's alternatives and its statistical test, against hand computations."""

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from sovit_hf.sweep import preset, validation_shapes
from sovit_hf.sweep.validate import _params, _welch_holm


def test_alternatives_vary_every_dimension_and_the_anchor_keeps_its_proportions():
    spec = preset("cpu")
    shapes = validation_shapes(spec, {"width": 48, "depth": 2, "mlp_dim": 192}, anchor={"width": 32, "depth": 2,
                               "mlp_dim": 64}, paper={"width": 40, "depth": 3, "mlp_dim": 128})  # fmt: skip
    assert shapes["mlp_wider"] == {"width": 48, "depth": 2, "mlp_dim": 384}
    assert shapes["mlp_narrower"] == {"width": 48, "depth": 2, "mlp_dim": 96}
    assert shapes["paper_exponents"] == {"width": 40, "depth": 3, "mlp_dim": 128}
    anchor = shapes["anchor_proportions"]  # (32, 2, 64) x k at about the predicted parameter count
    k = anchor["width"] / 32
    assert anchor["mlp_dim"] == pytest.approx(64 * k, abs=8) and anchor["depth"] == max(1, round(2 * k))
    target = _params(spec, 48, 2, 192)
    assert abs(math.log(_params(spec, anchor["width"], anchor["depth"], anchor["mlp_dim"]) / target)) < 0.25


def test_welch_holm_by_hand():
    """Welch's t = (mean_a - mean_p) / sqrt(v_a / n_a + v_p / n_p) with Welch-Satterthwaite dof; Holm rejects the
    smallest p at 0.05 / 2 and the next at 0.05 / 1 only while every smaller one was rejected."""
    done = {
        "predicted": {"f": [0.10, 0.11, 0.09]},
        "clear": {"f": [0.20, 0.21, 0.19]},
        "close": {"f": [0.105, 0.115, 0.095]},
    }
    out = _welch_holm(done)
    p = np.array(done["predicted"]["f"])
    for name in ("clear", "close"):
        a = np.array(done[name]["f"])
        va, vp = a.var(ddof=1) / 3, p.var(ddof=1) / 3
        t = (a.mean() - p.mean()) / math.sqrt(va + vp)
        dof = (va + vp) ** 2 / (va**2 / 2 + vp**2 / 2)
        assert out[name]["p_value"] == pytest.approx(student_t.sf(t, dof), rel=1e-9)
    assert out["clear"]["holm_threshold"] == 0.025 and out["clear"]["predicted_better"]
    assert out["close"]["holm_threshold"] == 0.05 and not out["close"]["predicted_better"]
