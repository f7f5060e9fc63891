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
from sovit_hf.sweep.star_grid import plan_star_sweep, write_sweep_csv
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
        assert png.format == "PNG" and png.size == (1800, 1512)  # 15 x 12.6 in (three rows) at 120 dpi


def _numeric_minimum(law, t: float) -> tuple[float, float]:
    """(argmin, min) over x of Eq. 2 at compute t by brute force on a dense log grid (not the closed form Eq. 4)."""
    x = np.geomspace(1e-2, 1e7, 400_001)
    f = law.predict(x, t)
    return float(x[np.argmin(f)]), float(f.min())


def test_shape_fit_figure_draws_the_data_the_fitted_law_and_its_minima():
    """Every panel against an independent computation: the scatter is the measured points; the curves are Eq. 2 of
    the fit; the dashed frontier, the IsoFLOP stars and the x*(t) line are the minima over x found by brute force."""
    pytest.importorskip("matplotlib")
    from sovit_hf.scaling.plot import shape_fits_figure

    data = {}
    for i, (dim, law) in enumerate(TRUE_LAWS.items()):
        x, t = star_arm(dim, STAR_GRIDS[dim])
        data[dim] = (x, t, noisy(law.predict(x, t), 0.002, i))
    fits = fit_shape_laws(data, bootstrap=0, holdout=False)
    figure = shape_fits_figure(fits, data)
    rows = np.reshape(figure.axes, (3, 3))
    for (dim, fit), (curves, isoflop, frontier) in zip(fits.items(), rows, strict=True):
        x, t, f = data[dim]
        points = np.concatenate([c.get_offsets() for c in curves.collections])
        assert sorted(map(tuple, points)) == sorted(zip(t, f, strict=True))
        *per_value, dashed = curves.get_lines()
        for line, value in zip(per_value, np.unique(x), strict=True):
            ts, ys = line.get_data()
            a, b, c, eps = fit.law.alpha, fit.law.beta, fit.law.xi, fit.law.epsilon
            by_hand = a * value**-fit.law.a + (b * value**fit.law.b + c) * ts**-fit.law.c + eps
            np.testing.assert_allclose(ys, by_hand, rtol=1e-12)
        ts, ys = dashed.get_data()
        for i in (0, 100, 199):
            assert ys[i] == pytest.approx(_numeric_minimum(fit.law, ts[i])[1], rel=1e-6)
        levels = np.geomspace(
            t.min(), t.max() * 16, 5
        )  # the panel's compute levels, from the smallest t to 16x the largest
        stars = [c.get_offsets()[0] for c in isoflop.collections]
        assert [line.get_label() for line in isoflop.get_lines()] == [f"t={level:.2g}" for level in levels]
        for level, (x_star, f_star) in zip(levels, stars, strict=True):
            brute_x, brute_f = _numeric_minimum(fit.law, level)
            assert x_star == pytest.approx(brute_x, rel=1e-3) and f_star == pytest.approx(brute_f, rel=1e-4)
        ts, xs = frontier.get_lines()[0].get_data()
        for i in (0, 199):
            assert xs[i] == pytest.approx(_numeric_minimum(fit.law, ts[i])[0], rel=1e-3)


def test_saturating_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from sovit_hf.scaling import SaturatingLaw
    from sovit_hf.scaling.plot import plot_saturating_fit, saturating_fit_figure

    law = SaturatingLaw(a=0.63, b=0.32, c=0.12, d=0.52)
    compute = np.geomspace(0.1, 1e4, 10)
    error = law.predict(compute) * (1 + 0.01 * np.cos(np.arange(10)))  # points off the curve
    ax = saturating_fit_figure(law, compute, error).axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.stack([compute, error], axis=1))
    grid, curve = ax.get_lines()[0].get_data()
    assert grid[0] == pytest.approx(0.05) and grid[-1] == pytest.approx(4e4)  # half the smallest C to 4x the largest
    np.testing.assert_allclose(curve, 0.63 * (grid + 0.52) ** -0.32 + 0.12, rtol=1e-12)  # Scaling ViT Sec. 2.2
    path = plot_saturating_fit(law, compute, error, tmp_path / "sat.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_law_file_without_an_identified_exponent_is_refused_unless_filled_with_the_paper(tmp_path, capsys):
    """A sweep whose depth optimum (2 at t = 5e10) lies below its arm (8-24) and whose MLP optimum (20,000) lies
    above its arm (1088-3072), 6.5% noise: `sovit fit` writes only s_width; `sovit shape --law` refuses, and with
    --fill-paper-exponents uses the paper's s_depth = 0.45 and s_MLP = 0.6 (Sec. 4.1) and says so."""
    from sovit_hf.scaling import ScalingRule
    from sovit_hf.scaling.paper import PAPER_STAR_GRIDS
    from sovit_hf.scaling.synthetic import PAPER_LIKE_LAWS, coverage_sweep, paper_like_law

    laws = {"width": PAPER_LIKE_LAWS["width"], "depth": paper_like_law(0.45, 2.0), "mlp_dim": paper_like_law(0.6, 2e4)}
    arms = {"depth": PAPER_STAR_GRIDS["depth"], "mlp_dim": PAPER_STAR_GRIDS["mlp_dim"]}
    data = coverage_sweep(0, replicates=2, laws=laws, values=arms)
    lines = ["dim,width,depth,mlp_dim,compute_gflops,error"]
    for dim, (x, t, f) in data.items():
        for xi, ti, fi in zip(x, t, f, strict=True):
            shape = [xi if dim == k else 1 for k in ("width", "depth", "mlp_dim")]
            lines.append(f"{dim},{shape[0]},{shape[1]},{shape[2]},{float(ti)!r},{float(fi)!r}")
    runs, out = tmp_path / "runs.csv", tmp_path / "law.json"
    runs.write_text("\n".join(lines) + "\n")
    assert _run(["fit", str(runs), "--out", str(out), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert "depth    s_k" in printed and "NOT IDENTIFIED (optimum below the arm" in printed
    assert "NOT IDENTIFIED (optimum above the arm" in printed
    document = json.loads(out.read_text())
    assert list(document["dimensions"]) == ["width"] and set(document["not_identified"]) == {"depth", "mlp_dim"}

    assert _run(["shape", "--gflops", "9e12", "--law", str(out)]) == 2
    assert "no identified exponent for ['depth', 'mlp_dim']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="optimum below the arm"):
        compute_optimal_shape(9e12, law=out)
    assert _run(["shape", "--gflops", "9e12", "--law", str(out), "--fill-paper-exponents"]) == 0
    assert "the paper's s_depth = 0.45, s_mlp_dim = 0.6" in capsys.readouterr().out
    filled = compute_optimal_shape(9e12, law=out, fill_missing="paper")
    s_width = document["dimensions"]["width"]["exponent"]
    by_hand = ScalingRule.paper().anchor["depth"] * (9e12 / ScalingRule.paper().t0) ** (0.45 / 3)
    assert filled.rule.exponents == {"width": s_width, "depth": 0.45, "mlp_dim": 0.6}
    assert filled.exact["depth"] == pytest.approx(by_hand, rel=1e-12)
