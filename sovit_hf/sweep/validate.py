"""``sovit sweep validate``: test the fitted law at a held-out budget (SoViT's central claim, on the user's data).

At a budget ``validate_factor`` (>= 4) times the largest compute of any sweep row, train the law's predicted shape and
three alternatives of the same compute, each on the examples that compute pays for, with ``validate_seeds`` seeds:

* ``vit_proportioned``: ViT-B's proportions (MLP = 4 x width, depth : width = 12 : 768) at the predicted shape's
  parameter count, as the paper's B-150m (Fig. 6 left);
* ``wider_shallower``: width x 1.5, depth / 2, same MLP;
* ``narrower_deeper``: width / 1.5, depth x 2, same MLP;
* ``mlp_wider`` / ``mlp_narrower``: MLP x 2 / MLP / 2, same width and depth (the MLP dimension varied);
* ``anchor_proportions``: the grid anchor x^(0) scaled uniformly to the predicted parameter count (no law at all);
* ``paper_exponents``: the paper's s_k (Sec. 4.1) on this sweep's anchor.

The last two are the baselines the fitted law must beat; they are planned when the sweep has a grid anchor.

The test (ours): for each alternative, a one-sided Welch t-test of "the alternative's mean f is larger than the
predicted shape's" over the seeds, with Holm's correction over the alternatives at family-wise level 0.05. With 3
seeds per shape the test has little power: a difference must be large against the seed spread to count.

The data regime (ours): validation rows train on 4x the sweep's largest compute, so on the sweep's data they would
repeat it many more times (the committed cpu run: 20-30 epochs against at most 3). With the sweep's generated
``hard_digits``, the validation plan draws more distortions of the same digits from the same generator (``copies``
raised) so that no validation row sees more epochs than the sweep's most-repeated row; the plan and the summary
record both epoch counts. Another dataset cannot grow: its epochs are recorded and the summary says they differ.

The rows form a plan of their own in ``FOLDER/validate`` (run with the same runner; ``--row`` works there too).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..configuration_sovit import SoViTConfig
from ..scaling.flops import count_flops, count_params
from ..scaling.optimal import PAPER_EXPONENTS, ScalingRule, compute_optimal_shape
from .fitting import FIT_REPORT, LAW_FILE, finished_rows
from .plan import load_plan, write_json_atomic, write_plan
from .star_grid import SweepRun

VALIDATE_DIR = "validate"
VALIDATION_FILE = "validation.json"
SHAPES = (
    "predicted",
    "vit_proportioned",
    "wider_shallower",
    "narrower_deeper",
    "mlp_wider",
    "mlp_narrower",
    "anchor_proportions",
    "paper_exponents",
)
ALPHA = 0.05  # family-wise level of the Holm-corrected one-sided Welch tests
VIT_B = {"width": 768, "depth": 12, "mlp_ratio": 4}  # Scaling ViT Table 2 / ViT-B


def _round(value: float, step: int) -> int:
    return max(step, step * round(value / step))


def _params(spec, width: int, depth: int, mlp: int) -> int:
    return count_params(
        SoViTConfig(
            hidden_size=width,
            num_hidden_layers=depth,
            intermediate_size=mlp,
            num_attention_heads=spec.heads,
            patch_size=spec.patch_size,
            image_size=spec.image_size,
        )
    )


def validation_shapes(
    spec, predicted: dict[str, int], anchor: dict[str, float] | None = None, paper: dict[str, int] | None = None
) -> dict[str, dict[str, int]]:
    """The predicted shape and its alternatives (widths rounded to lcm(heads, width_multiple)); ``anchor`` adds the
    anchor's proportions at the predicted parameter count, ``paper`` the paper-exponent shape."""
    step = math.lcm(spec.heads, spec.width_multiple)
    w, d, m = predicted["width"], predicted["depth"], predicted["mlp_dim"]
    target = _params(spec, w, d, m)
    candidates = []
    for width in range(step, 64 * max(w, step), step):
        depth = max(1, round(width * VIT_B["depth"] / VIT_B["width"]))
        mlp = VIT_B["mlp_ratio"] * width
        params = _params(spec, width, depth, mlp)
        candidates.append((abs(math.log(params / target)), width, depth, mlp))
        if params > target:  # the count grows with the width: every wider candidate is further off
            break
    _, vw, vd, vm = min(candidates)
    shapes = {
        "predicted": {"width": w, "depth": d, "mlp_dim": m},
        "vit_proportioned": {"width": vw, "depth": vd, "mlp_dim": vm},
        "wider_shallower": {"width": _round(1.5 * w, step), "depth": max(1, round(d / 2)), "mlp_dim": m},
        "narrower_deeper": {"width": _round(w / 1.5, step), "depth": 2 * d, "mlp_dim": m},
        "mlp_wider": {"width": w, "depth": d, "mlp_dim": _round(2 * m, spec.width_multiple)},
        "mlp_narrower": {"width": w, "depth": d, "mlp_dim": _round(m / 2, spec.width_multiple)},
    }
    if anchor is not None:
        scaled = []
        for k in np.geomspace(0.25, 16, 200):  # uniform scale factor of the anchor
            shape = (
                _round(anchor["width"] * k, step),
                max(1, round(anchor["depth"] * k)),
                _round(anchor["mlp_dim"] * k, spec.width_multiple),
            )
            scaled.append((abs(math.log(_params(spec, *shape) / target)), *shape))
        _, aw, ad, am = min(scaled)
        shapes["anchor_proportions"] = {"width": aw, "depth": ad, "mlp_dim": am}
    if paper is not None:
        shapes["paper_exponents"] = dict(paper)
    return shapes


def fallback_rule(folder: Path) -> ScalingRule:
    """The paper's classification exponents (Sec. 4.1) on this sweep's own grid anchor: what is left to test when
    the star sweep did not identify Eq. 2 (``fit.json`` status ``not_identified``)."""
    report_path = folder / FIT_REPORT
    if not report_path.is_file():
        raise ValueError(f"{report_path}: no fit yet (run `sovit sweep fit {folder}` first).")
    report = json.loads(report_path.read_text())
    if report.get("anchor") is None:
        raise ValueError(f"{report_path} has no grid anchor: the fallback rule needs the grid sweep.")
    anchor = report["anchor"]
    return ScalingRule(
        exponents=PAPER_EXPONENTS["classification"],
        anchor={k: float(v) for k, v in anchor["shape"].items()},
        t0=float(anchor["t0"]),
        source="SoViT Sec. 4.1 exponents on this sweep's grid anchor (the star sweep did not identify Eq. 2)",
    )


def _train_size(trainer: dict) -> int | None:
    """Training examples of the trainer's data when known without loading it (the sweep's ``hard_digits``)."""
    data = trainer.get("data") or {}
    if data.get("name") != "hard_digits":
        return None
    from .data import hard_digits_train_size

    return hard_digits_train_size(int(data.get("copies", 3)), float(data.get("test_fraction", 0.2)))


def same_regime(spec, sweep_examples: int, validate_examples: int):
    """``(spec for the validation rows, epochs)``: with ``hard_digits``, copies raised (never lowered) so that the
    validation rows' largest epoch count is at most the sweep rows' largest; ``epochs`` = {sweep_max, validate_max}
    (``None`` where the data's size is unknown)."""
    import dataclasses

    size = _train_size(spec.trainer)
    if size is None:
        return spec, {"sweep_max": None, "validate_max": None}
    sweep_epochs = sweep_examples / size
    copies = int(spec.trainer["data"].get("copies", 3))
    needed = max(copies, math.ceil(copies * validate_examples / sweep_examples))
    if needed > copies:
        data = {**spec.trainer["data"], "copies": needed}
        spec = dataclasses.replace(spec, trainer={**spec.trainer, "data": data})
    return spec, {"sweep_max": sweep_epochs, "validate_max": validate_examples / _train_size(spec.trainer)}


def plan_validation(folder: str | Path, fallback: bool = False) -> Path:
    """Write ``FOLDER/validate/plan.json`` from the sweep's results and law; returns the validation folder.

    Args:
        folder: the sweep folder.
        fallback: without a fitted ``law.json``, validate :func:`fallback_rule` instead of failing; with a law file
            that lacks an exponent the sweep did not identify, use the paper's s_k for it (the plan's ``law`` says so).
    """
    folder = Path(folder)
    plan = load_plan(folder)
    spec = plan["spec"]
    law = folder / LAW_FILE
    if not law.is_file():
        if not fallback:
            raise ValueError(
                f"{law}: no fitted law (run `sovit sweep fit {folder}`; if the star sweep did not identify Eq. 2, "
                "`--fallback` validates the paper's exponents on this sweep's anchor)."
            )
        law = fallback_rule(folder)
    rows = finished_rows(folder)
    largest = max(r["compute_gflops"] for r in rows)
    budget = spec.validate_factor * largest
    optimal = compute_optimal_shape(
        budget,
        law=law,
        fill_missing="paper" if fallback else "refuse",
        heads=spec.heads,
        multiple_of=spec.width_multiple,
        patch_size=spec.patch_size,
        image_size=spec.image_size,
    )
    c = optimal.config
    predicted = {"width": c.hidden_size, "depth": c.num_hidden_layers, "mlp_dim": c.intermediate_size}
    anchor = paper = None
    report_path = folder / FIT_REPORT
    if report_path.is_file() and json.loads(report_path.read_text()).get("anchor") is not None:
        anchor = json.loads(report_path.read_text())["anchor"]["shape"]
        paper_config = compute_optimal_shape(
            budget,
            law=fallback_rule(folder),
            heads=spec.heads,
            multiple_of=spec.width_multiple,
            patch_size=spec.patch_size,
            image_size=spec.image_size,
        ).config
        paper = {
            "width": paper_config.hidden_size,
            "depth": paper_config.num_hidden_layers,
            "mlp_dim": paper_config.intermediate_size,
        }
    out, index = [], 0
    for name, shape in validation_shapes(spec, predicted, anchor, paper).items():
        config = SoViTConfig(
            hidden_size=shape["width"],
            num_hidden_layers=shape["depth"],
            intermediate_size=shape["mlp_dim"],
            num_attention_heads=spec.heads,
            patch_size=spec.patch_size,
            image_size=spec.image_size,
        )
        per_image = count_flops(config)
        steps = max(1, round(budget / (per_image * spec.batch_size)))
        examples = steps * spec.batch_size
        for seed in spec.validate_seeds:
            run = SweepRun(
                "validate",
                name,
                shape["width"],
                shape["depth"],
                shape["mlp_dim"],
                spec.heads,
                spec.patch_size,
                spec.image_size,
                steps,
                spec.batch_size,
                examples,
                per_image,
                per_image * examples,
            )
            row = {
                "index": index,
                "stage": "validate",
                **run.to_dict(),
                "seed": seed,
                "name": f"validate-{name}-w{shape['width']}-d{shape['depth']}-m{shape['mlp_dim']}-seed{seed}",
                "params": count_params(config),
            }
            out.append(row)
            index += 1
    spec, epochs = same_regime(spec, max(r["examples"] for r in rows), max(r["examples"] for r in out))
    target = folder / VALIDATE_DIR
    extra = {
        "epochs": epochs,
        "budget_gflops": budget,
        "largest_sweep_gflops": largest,
        "law": str(law) if isinstance(law, Path) else law.source,
        "law_sha256": _law_sha256(folder),
        "predicted_unrounded": optimal.exact,
    }
    write_plan(target, spec, out, stage="validate", extra=extra)
    return target


def _law_sha256(folder: Path) -> str | None:
    """The sha256 of what the sweep's law says: ``law.json``'s fitted laws and anchor (or, for the fallback rule,
    ``fit.json``'s anchor); not where the folder lay when it was fitted. ``None`` without either file."""
    law = folder / LAW_FILE
    source = law if law.is_file() else folder / FIT_REPORT
    if not source.is_file():
        return None
    try:
        document = json.loads(source.read_text())
        substance = {key: document.get(key) for key in ("dimensions", "anchor")}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{source} is not a valid JSON object ({err}).") from err
    return hashlib.sha256(json.dumps(substance, sort_keys=True).encode()).hexdigest()


def check_validation_law(folder: str | Path) -> None:
    """``ValueError`` if ``FOLDER/validate/plan.json`` was planned from another law than the sweep's current one
    (``law.json`` re-fitted since): its shapes would test a law that is no longer the sweep's."""
    folder = Path(folder)
    plan = load_plan(folder / VALIDATE_DIR)
    if "law_sha256" in plan and plan["law_sha256"] != _law_sha256(folder):
        raise ValueError(
            f"{folder / VALIDATE_DIR / 'plan.json'} was planned from another law than {folder / LAW_FILE} (re-fitted "
            f"since); move {folder / VALIDATE_DIR} aside to validate the current law."
        )


def summarise_validation(folder: str | Path) -> dict:
    """Mean, spread (sample std, min, max) of f and test error per shape; writes ``FOLDER/validation.json``."""
    folder = Path(folder)
    target = folder / VALIDATE_DIR
    plan = json.loads((target / "plan.json").read_text())
    rows = finished_rows(target)
    table = {}
    names = list(dict.fromkeys(r["dim"] for r in plan["rows"]))  # the shapes this plan has, in its order
    for name in names:
        mine = [r for r in rows if r["dim"] == name]
        planned = [r for r in plan["rows"] if r["dim"] == name]
        f = np.array([r["f"] for r in mine])
        test = np.array([r["test_error"] for r in mine])
        first = planned[0]
        table[name] = {
            "width": first["width"],
            "depth": first["depth"],
            "mlp_dim": first["mlp_dim"],
            "params": first["params"],
            "steps": first["steps"],
            "compute_gflops": first["compute_gflops"],
            "seeds": len(mine),
            "f": [float(v) for v in f],
            "test_error": [float(v) for v in test],
            "f_mean": float(f.mean()) if len(f) else None,
            "f_std": float(f.std(ddof=1)) if len(f) > 1 else None,
            "test_error_mean": float(test.mean()) if len(test) else None,
            "test_error_std": float(test.std(ddof=1)) if len(test) > 1 else None,
        }
    done = {k: v for k, v in table.items() if v["f_mean"] is not None}
    ranking = sorted(done, key=lambda k: done[k]["f_mean"])
    outcome, tests = "incomplete", {}
    if "predicted" in done and len(done) == len(names):
        tests = _welch_holm(done)
        rejected = [k for k, entry in tests.items() if entry["predicted_better"]]
        rank = ranking.index("predicted") + 1
        outcome = (
            f"the predicted shape ranks {rank} of {len(done)} by mean f; one-sided Welch t-tests with Holm's "
            f"correction (family-wise {ALPHA:g}) find it better than {len(rejected)} of {len(tests)} alternatives"
            + (f" ({', '.join(rejected)})" if rejected else "")
        )
    document = {
        "budget_gflops": plan["budget_gflops"],
        "largest_sweep_gflops": plan["largest_sweep_gflops"],
        "factor": plan["budget_gflops"] / plan["largest_sweep_gflops"],
        "law": plan["law"],
        "epochs": plan.get("epochs"),
        "shapes": table,
        "ranking_by_mean_f": ranking,
        "tests": tests,
        "outcome": outcome,
    }
    write_json_atomic(folder / VALIDATION_FILE, document)
    return document


def _welch_holm(done: dict) -> dict[str, dict]:
    """Per alternative: the one-sided Welch t-test of mean f(alternative) > mean f(predicted) over the seeds, and
    whether Holm's step-down procedure rejects it at family-wise level ALPHA."""
    from scipy.stats import ttest_ind

    predicted = np.array(done["predicted"]["f"])
    p_values = {}
    for name, row in done.items():
        if name == "predicted":
            continue
        result = ttest_ind(np.array(row["f"]), predicted, equal_var=False, alternative="greater")
        p_values[name] = float(result.pvalue) if np.isfinite(result.pvalue) else 1.0
    out, still_rejecting = {}, True
    for i, (name, p) in enumerate(sorted(p_values.items(), key=lambda item: item[1])):
        threshold = ALPHA / (len(p_values) - i)
        still_rejecting = still_rejecting and p <= threshold
        out[name] = {"p_value": p, "holm_threshold": threshold, "predicted_better": still_rejecting}
    return {name: out[name] for name in p_values}


def validation_markdown(document: dict) -> str:
    """The validation table as markdown (mean ± sample std over seeds)."""
    lines = [
        f"Held-out budget {document['budget_gflops']:.4g} GFLOPs = {document['factor']:.1f} x the largest sweep "
        "run; f = 10-shot linear-probe error; mean ± std over seeds.",
        f"Predicted shape from: {document['law']}.",
        "",
        "| shape | width | depth | MLP | params | steps | seeds | f (few-shot error) | test error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in document["shapes"].items():

        def cell(mean, std):
            return "-" if mean is None else f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"

        lines.append(
            f"| {name} | {row['width']} | {row['depth']} | {row['mlp_dim']} | {row['params']:,} | "
            f"{row['steps']} | {row['seeds']} | {cell(row['f_mean'], row['f_std'])} | "
            f"{cell(row['test_error_mean'], row['test_error_std'])} |"
        )
    epochs = document.get("epochs") or {}
    if epochs.get("sweep_max") is not None:
        same = epochs["validate_max"] <= epochs["sweep_max"] * (1 + 1e-9)
        lines += [
            "",
            f"Data regime: the sweep's rows see at most {epochs['sweep_max']:.2f} epochs of their data, the validation "
            f"rows at most {epochs['validate_max']:.2f} ({'the same regime' if same else 'NOT the same regime'}).",
        ]
    tests = document.get("tests") or {}
    if tests:
        lines += ["", "| alternative | one-sided Welch p | Holm threshold | predicted better |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {entry['p_value']:.3g} | {entry['holm_threshold']:.3g} | "
            f"{'yes' if entry['predicted_better'] else 'no'} |"
            for name, entry in tests.items()
        ]
    lines += ["", f"Outcome: {document['outcome']}."]
    return "\n".join(lines)
