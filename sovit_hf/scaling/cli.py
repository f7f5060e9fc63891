"""``sovit shape`` and ``sovit fit``: the scaling helper's subcommands, added to the ``sovit`` CLI's subparsers.

sovit shape --gflops 9e12
sovit shape --examples 40e9 --variant-like So400m/14
sovit fit runs.csv --out law.json --plot fit.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..configuration_sovit import SoViTConfig
from ..output_folder import write_json_atomic
from .fit import FitError, fit_shape_laws
from .flops import count_flops, count_params
from .identification import not_identified_section
from .optimal import PAPER_IMAGE_SIZE, TASKS, compute_optimal_shape, variant_budget


def _shape(args: argparse.Namespace) -> int:
    try:
        if args.gflops is None:
            if args.examples is None or args.variant_like is None:
                raise ValueError("give --gflops, or --examples together with --variant-like.")
            budget = variant_budget(args.variant_like, args.examples, PAPER_IMAGE_SIZE)
            print(f"budget: {args.variant_like} @{PAPER_IMAGE_SIZE}px x {args.examples:.4g} examples")
        else:
            budget = args.gflops
        report = compute_optimal_shape(
            budget,
            task=args.task,
            law=args.law,
            heads=args.heads,
            multiple_of=args.multiple_of,
            patch_size=args.patch_size,
            t0=args.t0,
            fill_missing="paper" if args.fill_paper_exponents else "refuse",
        )
    except (ValueError, FitError) as err:
        print(f"sovit shape: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    for note in shape_notes(report, args):
        print(f"  note: {note}")
    if args.variant_like is not None:
        ref = SoViTConfig.from_variant(args.variant_like, image_size=PAPER_IMAGE_SIZE)
        ref_flops, ref_params = count_flops(ref), count_params(ref)
        print(
            f"  vs {args.variant_like}: width {ref.hidden_size}, depth {ref.num_hidden_layers}, "
            f"mlp_dim {ref.intermediate_size}; params {ref_params / 1e6:.1f}M "
            f"({100 * (report.params / ref_params - 1):+.1f}%), GFLOPs/image {ref_flops:.2f} "
            f"({100 * (report.gflops_per_image / ref_flops - 1):+.1f}%), "
            f"examples for the budget {budget / ref_flops:.4g}"
        )
    return 0


# How far below t0 (the smallest compute the law's anchor is optimal at, SoViT App. B.3 rule 2) or above it a budget
# may be before `sovit shape` says the shape is an extrapolation of the law.
EXTRAPOLATION_BELOW, EXTRAPOLATION_ABOVE = 10.0, 1e4


def shape_notes(report, args: argparse.Namespace) -> list[str]:
    """Warnings for a shape: a budget far from the law's t0, and a head dim the attention kernels pad (docs/kernels.md:
    a multiple of 16 runs without padded columns), with the shape a better head count gives."""
    import math

    notes = []
    t, t0 = report.budget_gflops, report.rule.t0
    if t < t0 / EXTRAPOLATION_BELOW or t > t0 * EXTRAPOLATION_ABOVE:
        orders = abs(math.log10(t / t0))
        notes.append(
            f"t = {t:.3g} GFLOPs is {orders:.1f} orders of magnitude {'below' if t < t0 else 'above'} t0 = {t0:.3g} "
            "GFLOPs, where the law is anchored: this shape extrapolates the law far from where it was measured"
        )
    config = report.config
    if config.head_dim % 16:
        width = config.hidden_size
        same = [d for d in range(32, 129, 16) if width % d == 0]  # head dims for this very width
        if same:
            d = min(same, key=lambda d: (abs(d - 64), d))  # nearest to 64, as in the papers' ViTs
            hint = f"; --heads {width // d} gives head_dim {d} with the same width and MLP"
        else:
            heads = max(1, round(report.exact["width"] / 64))
            step = math.lcm(16 * heads, args.multiple_of)
            better = compute_optimal_shape(
                t, task=args.task, law=args.law, heads=heads, multiple_of=step, patch_size=args.patch_size, t0=args.t0
            ).config
            hint = (
                f"; --heads {heads} --multiple-of {step} gives width {better.hidden_size}, mlp_dim "
                f"{better.intermediate_size}, head_dim {better.head_dim}"
            )
        notes.append(
            f"head_dim {config.head_dim} is not a multiple of 16: the Triton kernels pad it (docs/kernels.md){hint}"
        )
    return notes


def _end(value: float | None) -> str:
    """An interval end; None is an open end (the data do not bound it)."""
    return "open" if value is None else f"{value:.4f}"


def _parse_anchor(text: str | None, t0: float | None) -> dict[str, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 3 or t0 is None:
        raise ValueError("--anchor takes WIDTH,DEPTH,MLP_DIM and needs --t0 (the anchor's compute in GFLOPs).")
    width, depth, mlp = (float(p) for p in parts)
    return {"width": width, "depth": depth, "mlp_dim": mlp, "t0": t0}


def _fit(args: argparse.Namespace) -> int:
    from .files import load_runs_csv, save_shape_fits

    try:
        anchor = _parse_anchor(args.anchor, args.t0)
        data = load_runs_csv(args.runs, metric=args.metric)
        fits = fit_shape_laws(
            data, shared_c=not args.no_shared_c, bootstrap=args.bootstrap, confidence=args.confidence, seed=args.seed
        )
    except OSError as err:  # a missing or unreadable CSV: one line, no traceback
        print(f"sovit fit: error: {args.runs}: {err.strerror or err}", file=sys.stderr)
        return 2
    except (ValueError, FitError) as err:
        print(f"sovit fit: error: {err}", file=sys.stderr)
        return 2
    level = round(100 * args.confidence)
    print(f"SoViT Eq. 2 fits of {args.metric!r} ({'shared' if not args.no_shared_c else 'separate'} c)")
    for dim, fit in fits.items():
        low, high = fit.intervals.get("exponent", (None, None))
        law = fit.law
        ident = fit.identification
        verdict = (
            f"identified, {level}% profile interval [{_end(ident.interval[0])}, {_end(ident.interval[1])}]"
            if fit.identified
            else f"NOT IDENTIFIED ({ident.reason}; {ident.advice})"
        )
        print(
            f"  {dim:<8} s_k = {fit.exponent:.4f}  {verdict}; [{_end(low)}, {_end(high)}] "
            f"({level}% bootstrap, {fit.n_bootstrap} refits)"
            f"  points {fit.n_points}, relative RMSE {100 * fit.relative_rmse:.2f}%"
        )
        print(
            f"           alpha {law.alpha:.4g}, a {law.a:.4g}, beta {law.beta:.4g}, b {law.b:.4g}, xi {law.xi:.4g}, "
            f"c {law.c:.4g}, epsilon {law.epsilon:.4g}"
            + (f"  (at boundary: {', '.join(fit.at_boundary)})" if fit.at_boundary else "")
        )
        if fit.holdout is not None:
            print(
                f"           held out t = {fit.holdout.compute:.4g}: mean |rel. error| "
                f"{100 * fit.holdout.mean_abs_relative_error:.2f}% over {fit.holdout.n_points} point(s)"
            )
        else:
            print(f"           held-out check: {fit.holdout_note}")
    if args.out:
        identified = {dim: fit for dim, fit in fits.items() if fit.identified}
        if not identified:
            print(f"sovit fit: no exponent is identified; {args.out} not written", file=sys.stderr)
            return 2
        save_shape_fits(args.out, identified, shared_c=not args.no_shared_c, metric=args.metric, anchor=anchor)
        document = json.loads(Path(args.out).read_text())
        document["not_identified"] = not_identified_section(fits)
        write_json_atomic(args.out, document)
        print(f"wrote {args.out} (identified exponents only: {', '.join(identified)})")
    if args.plot:
        from .optimal import ScalingRule
        from .plot import plot_shape_fits

        laws = {dim: fit.law for dim, fit in fits.items() if fit.identified}
        rule = ScalingRule.from_laws(laws, anchor) if all(d in laws for d in ("width", "depth", "mlp_dim")) else None
        try:
            plot_shape_fits(fits, data, args.plot, rule=rule, metric=args.metric)
        except ImportError as err:
            print(f"sovit fit: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.plot}")
    return 0


def add_scaling_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``shape`` and ``fit`` to the ``sovit`` CLI; each sets ``func(args) -> exit code``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    shape = subparsers.add_parser(
        "shape",
        help="compute-optimal SoViT shape for a training budget",
        description="Compute-optimal shape for a training budget t (GFLOPs = forward GFLOPs/image x examples), "
        "from SoViT's scaling rule with the published or a fitted law.",
    )
    budget = shape.add_mutually_exclusive_group(required=True)
    budget.add_argument("--gflops", type=float, help="training compute t in GFLOPs, e.g. 9e12 (SoViT-400m)")
    budget.add_argument("--examples", type=float, help="examples seen; the budget is --variant-like trained on them")
    shape.add_argument("--variant-like", help="reference variant, e.g. So400m/14 (compared side by side)")
    shape.add_argument("--task", choices=TASKS, default="classification")
    shape.add_argument("--law", default="paper", help="'paper' or a law JSON written by `sovit fit`")
    shape.add_argument("--heads", type=int, default=16)
    shape.add_argument("--multiple-of", type=int, default=16, help="rounding step of width and MLP dim")
    shape.add_argument("--patch-size", type=int, default=14)
    shape.add_argument("--t0", type=float, default=None, help="override the anchor's compute t^(0) in GFLOPs")
    shape.add_argument(
        "--fill-paper-exponents",
        action="store_true",
        help="with --law: use the paper's s_k for exponents the law file does not identify (refused otherwise)",
    )
    shape.set_defaults(func=_shape)

    fit = subparsers.add_parser(
        "fit",
        help="fit SoViT's shape law (Eq. 2) to a runs CSV",
        description="Fit Eq. 2 per dimension (width, depth, mlp_dim) to a runs CSV (columns: dim, width, depth, "
        "mlp_dim, compute_gflops or examples, and the metric), with bootstrap intervals and a held-out check.",
    )
    fit.add_argument("runs", help="runs CSV (see sovit_hf.scaling.files)")
    fit.add_argument("--out", help="write the fitted laws as JSON (usable as `sovit shape --law`)")
    fit.add_argument("--plot", help="write a figure (needs matplotlib)")
    fit.add_argument("--metric", default="error", help="column with the loss to fit")
    fit.add_argument("--no-shared-c", action="store_true", help="fit a separate c per dimension")
    fit.add_argument("--bootstrap", type=int, default=200)
    fit.add_argument("--confidence", type=float, default=0.9)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--anchor", help="grid-sweep anchor WIDTH,DEPTH,MLP_DIM stored in the JSON (needs --t0)")
    fit.add_argument("--t0", type=float, default=None, help="compute of the anchor in GFLOPs")
    fit.set_defaults(func=_fit)


__all__ = ["add_scaling_commands"]
