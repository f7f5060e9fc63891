"""`sovit shape` / `sovit fit` through a parser built with add_scaling_commands, and the plots."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest

from sovit_hf import SoViTConfig
from sovit_hf.scaling import compute_optimal_shape, count_flops, fit_shape_laws, variant_budget
from sovit_hf.scaling.cli import add_scaling_commands
from sovit_hf.scaling.files import load_runs_csv
from sovit_hf.scaling.sweeps import plan_star_sweep, write_sweep_csv
from tests.scaling.helpers import STAR_GRIDS, TRUE_LAWS, noisy, star_arm


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sovit")
    add_scaling_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _runs_csv(tmp_path, noise: float = 0.001):
    runs = plan_star_sweep(include_center=False)
    path = tmp_path / "runs.csv"
    write_sweep_csv(runs, path)
    rng_seed = iter(range(len(runs)))
    lines = path.read_text().splitlines()
    lines[0] += ",error"
    for i, run in enumerate(runs, start=1):
        f = TRUE_LAWS[run.dim].predict(getattr(run, run.dim), run.compute_gflops)
        lines[i] += f",{float(noisy(np.array([f]), noise, next(rng_seed))[0])!r}"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shape_gflops_prints_the_rounded_optimum(capsys):
    assert _run(["shape", "--gflops", "9e12"]) == 0
    out = capsys.readouterr().out
    report = compute_optimal_shape(9e12)
    c = report.config
    assert f"width {c.hidden_size}, depth {c.num_hidden_layers}, mlp_dim {c.intermediate_size}" in out
    assert f"{report.gflops_per_image:.2f}" in out and f"{report.params / 1e6:.1f}M" in out
    assert "Sec. 4.1" in out  # the law's provenance


def test_shape_examples_variant_like_compares_side_by_side(capsys):
    assert _run(["shape", "--examples", "40e9", "--variant-like", "So400m/14"]) == 0
    out = capsys.readouterr().out
    budget = variant_budget("So400m/14", 40e9)
    report = compute_optimal_shape(budget)
    assert f"budget t = {budget:.4g} GFLOPs" in out
    assert f"GFLOPs/image {count_flops(SoViTConfig.from_variant('So400m/14')):.2f}" in out
    assert f"width {report.config.hidden_size}," in out


def test_shape_errors_return_2(capsys):
    assert _run(["shape", "--examples", "40e9"]) == 2
    assert "--variant-like" in capsys.readouterr().err
    assert _run(["shape", "--gflops", "-1"]) == 2
    assert "positive number of GFLOPs" in capsys.readouterr().err


def test_fit_writes_law_json_usable_by_shape(tmp_path, capsys):
    runs = _runs_csv(tmp_path)
    out = tmp_path / "law.json"
    assert _run(["fit", str(runs), "--out", str(out), "--bootstrap", "20"]) == 0
    document = json.loads(out.read_text())
    for dim, law in TRUE_LAWS.items():
        entry = document["dimensions"][dim]
        assert entry["exponent"] == pytest.approx(law.exponent, rel=0.15)
        assert entry["intervals"]["exponent"][0] <= entry["exponent"] <= entry["intervals"]["exponent"][1]
    # The same numbers as the library call on the same file.
    fits = fit_shape_laws(load_runs_csv(runs), bootstrap=20, seed=0)
    for dim, fit in fits.items():
        assert document["dimensions"][dim]["law"] == fit.law.to_dict()
        assert document["dimensions"][dim]["intervals"]["exponent"] == list(fit.intervals["exponent"])
    printed = capsys.readouterr().out
    assert "s_k =" in printed and "held out t =" in printed
    assert _run(["shape", "--gflops", "9e12", "--law", str(out)]) == 0
    assert "fitted exponents from" in capsys.readouterr().out


def test_fit_reports_unidentifiable_data(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    rows = ["dim,width,compute_gflops,error"] + [f"width,{w},1e11,{0.3 + 1 / w}" for w in (608, 768, 928, 1088)]
    path.write_text("\n".join(rows * 3) + "\n")
    assert _run(["fit", str(path), "--bootstrap", "0"]) == 2
    assert "same compute" in capsys.readouterr().err


def test_fit_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    runs = _runs_csv(tmp_path)
    image = tmp_path / "fit.png"
    assert _run(["fit", str(runs), "--plot", str(image), "--bootstrap", "0"]) == 0
    with Image.open(image) as png:
        width, height = png.size
        pixels = np.asarray(png.convert("L"))
    assert width > 1000 and height > 800  # three rows of three panels
    assert pixels.std() > 10  # something was drawn


def test_saturating_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from sovit_hf.scaling import SaturatingLaw
    from sovit_hf.scaling.plot import plot_saturating_fit

    law = SaturatingLaw(a=0.63, b=0.32, c=0.12, d=0.52)
    compute = np.geomspace(0.1, 1e4, 10)
    path = plot_saturating_fit(law, compute, law.predict(compute), tmp_path / "sat.png")
    assert path.stat().st_size > 10_000


def test_plot_without_matplotlib_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    from sovit_hf.scaling.plot import plot_shape_fits

    x, t = star_arm("width", STAR_GRIDS["width"])
    data = {"width": (x, t, TRUE_LAWS["width"].predict(x, t))}
    fits = fit_shape_laws(data, bootstrap=0, holdout=False)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_shape_fits(fits, data, tmp_path / "x.png")
