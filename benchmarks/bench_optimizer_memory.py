"""Optimizer state memory: big_vision's Adafactor vs ``torch.optim.AdamW`` (and SGD momentum) at full model size.

    python benchmarks/bench_optimizer_memory.py [--variants So400m/14 G/14] [--num-labels 1000]

"Scaling Vision Transformers" (arXiv 2106.04560) Sec. 3.4: Adam adds 2x the parameter memory, half-precision
momentum brings it to 1.5x, and the modified Adafactor to 0.5x ("only 50% memory overhead"). This measures it: each
model (MAP head and classifier, float32) is built on the meta device, every parameter gets a meta gradient, and one
real ``optimizer.step()`` allocates the optimizer's state (meta tensors have shapes and dtypes but no storage, so
this costs nothing). The bytes are summed from the tensors in ``optimizer.state`` and checked against the closed-form
formulas ``adafactor_state_bytes`` / ``adamw_state_bytes``. Writes ``benchmarks/results/optimizer_memory.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sovit_hf import SoViTConfig, SoViTForImageClassification  # noqa: E402
from sovit_hf.training import (  # noqa: E402
    Adafactor,
    SGDMomentum,
    adafactor_state_bytes,
    adamw_state_bytes,
    attention_factor_shapes,
    param_groups,
    state_bytes,
)

RESULTS = ROOT / "benchmarks" / "results" / "optimizer_memory.json"
GIB = 2**30


def _optimizers(model: torch.nn.Module) -> dict[str, tuple[torch.optim.Optimizer, int]]:
    """``{name: (optimizer, formula bytes)}``; the formula is computed from the parameter shapes alone."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    factor = attention_factor_shapes(model)
    params = list(model.parameters())

    def groups(big_vision_factoring: bool = True) -> list[dict]:  # fresh dicts: torch fills defaults into them
        return param_groups(model, lr=8e-4, weight_decay=0.03, factor_attention_like_big_vision=big_vision_factoring)

    return {
        "adamw_fp32": (
            torch.optim.AdamW(params, foreach=False),
            sum(adamw_state_bytes(s) for s in shapes.values()),
        ),
        "adafactor_big_vision": (  # the recipe: attention factored like big_vision's 3-D kernels, bf16 momentum
            Adafactor(groups()),
            sum(adafactor_state_bytes(s, factor_shape=factor.get(n)) for n, s in shapes.items()),
        ),
        "adafactor_2d_factoring": (  # torch shapes as they are: (out, in) attention matrices
            Adafactor(groups(False)),
            sum(adafactor_state_bytes(s) for s in shapes.values()),
        ),
        "adafactor_fp32_momentum": (
            Adafactor(groups(), momentum_dtype="float32"),
            sum(
                adafactor_state_bytes(s, factor_shape=factor.get(n), momentum_dtype="float32")
                for n, s in shapes.items()
            ),
        ),
        "adafactor_no_momentum": (
            Adafactor(groups(), momentum=None),
            sum(adafactor_state_bytes(s, factor_shape=factor.get(n), momentum=False) for n, s in shapes.items()),
        ),
        "sgd_momentum_bf16": (  # big_vision momentum_hp, the fine-tuning recipe
            SGDMomentum(params, momentum_dtype="bfloat16"),
            2 * sum(p.numel() for p in params),
        ),
    }


def measure(variant: str, num_labels: int) -> dict:
    config = SoViTConfig.from_variant(variant, num_labels=num_labels)
    with torch.device("meta"):
        model = SoViTForImageClassification(config)
    for param in model.parameters():
        param.grad = torch.empty_like(param)
    num_params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"num_params": num_params, "param_bytes": param_bytes, "param_gib": param_bytes / GIB, "optimizers": {}}
    for name, (optimizer, formula) in _optimizers(model).items():
        optimizer.step()
        measured = state_bytes(optimizer)
        if measured != formula:
            raise AssertionError(f"{variant} {name}: measured {measured} state bytes, formula says {formula}.")
        out["optimizers"][name] = {
            "state_bytes": measured,
            "state_gib": measured / GIB,
            "state_over_params": measured / param_bytes,
        }
    adam = out["optimizers"]["adamw_fp32"]["state_bytes"]
    for entry in out["optimizers"].values():
        entry["state_over_adamw"] = entry["state_bytes"] / adam
    return out


LABELS = {
    "adamw_fp32": "`torch.optim.AdamW` (fp32 m, v)",
    "adafactor_big_vision": "`Adafactor` (recipe: bf16 momentum, big_vision factoring)",
    "adafactor_2d_factoring": "`Adafactor`, 2-D factoring of attention weights",
    "adafactor_fp32_momentum": "`Adafactor`, fp32 momentum",
    "adafactor_no_momentum": "`Adafactor`, no momentum (second moment only)",
    "sgd_momentum_bf16": "`SGDMomentum`, bf16 buffer (fine-tuning recipe)",
}


def render_markdown(results: dict) -> str:
    """The table quoted in docs/training_optim.md (``tests/training`` checks that the doc contains it)."""
    variants = results["variants"]
    head = "| optimizer state | " + " | ".join(
        f"{name} ({entry['num_params'] / 1e6:.1f}M params, {entry['param_gib']:.3f} GiB) | ×params | ×AdamW"
        for name, entry in variants.items()
    )
    lines = [head + " |", "|---|" + "---|---|---|" * len(variants)]
    for key, label in LABELS.items():
        cells = []
        for entry in variants.values():
            opt = entry["optimizers"][key]
            cells.append(f"{opt['state_gib']:.3f} GiB | {opt['state_over_params']:.3f} | {opt['state_over_adamw']:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["So400m/14", "G/14"])
    parser.add_argument("--num-labels", type=int, default=1000)
    args = parser.parse_args()
    results = {
        "benchmark": "optimizer state bytes after one step (meta device, float32 parameters)",
        "method": "real optimizer.step() on meta tensors; bytes summed over optimizer.state; equals the formula",
        "num_labels": args.num_labels,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "variants": {variant: measure(variant, args.num_labels) for variant in args.variants},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from sovit_hf.output_folder import write_json_atomic

    write_json_atomic(RESULTS, results)
    print(render_markdown(results))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
