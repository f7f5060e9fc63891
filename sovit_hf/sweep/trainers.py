"""Trainers of sweep rows: ``train(row, spec, workdir) -> {"f", "test_error", "curve"}``.

* ``classification``: the package's classification recipe (``sovit train``, transformers ``Trainer``) on the row's
  shape and length; f is the paper's metric, the few-shot linear-probe error (SoViT Sec. 4: 10-shot, the closed-form
  ridge probe of :mod:`sovit_hf.training.fewshot`) on frozen pre-logits, averaged over ``probe_draws`` draws of the
  shots; ``test_error`` is the classifier's error on the test split; ``curve`` is the probe error at the recipe's
  evaluations during training (used by the grid-sweep anchor's rule 2).
* ``tensors``: the same model, optimizer and probe in a plain loop over pre-processed tensors, no augmentation, no
  per-row card or plot (:mod:`.fast_trainer`: the fast data path of small sweeps).
* ``synthetic``: no training; f follows a known decomposable law (SoViT Eq. 3, which gives Eq. 2 along each star arm
  with one shared c) times (1 + noise), for testing that the loop recovers s_k.
* ``"module:function"``: any callable with the same signature. A plan file names it, so it is code that a shared
  sweep folder would run: it is imported only with ``trust_code`` (``--trust-trainer-code``), as transformers'
  ``trust_remote_code``.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import numpy as np

from ..output_folder import remove_own_folder
from ..scaling.laws import DIMENSIONS
from .data import dataset_path
from .fast_trainer import SCHEDULES, schedule_of, train_tensors
from .spec import SweepSpec

# ---------------------------------------------------------------------------------------------------------------
# synthetic: SoViT Eq. 3


def synthetic_loss(law: dict, width: float, depth: float, mlp_dim: float, t: float) -> float:
    """Eq. 3: f = sum_k alpha_k x_k^-a_k + (sum_k beta_k x_k^b_k + xi) t^-c + epsilon."""
    x = {"width": width, "depth": depth, "mlp_dim": mlp_dim}
    size = sum(law["alpha"][k] * x[k] ** -law["a"][k] for k in DIMENSIONS)
    compute = sum(law["beta"][k] * x[k] ** law["b"][k] for k in DIMENSIONS) + law["xi"]
    return float(size + compute * t ** -law["c"] + law["epsilon"])


def synthetic_exponents(law: dict) -> dict[str, float]:
    """The true s_k = c / (a_k + b_k) of a synthetic law (Eq. 4)."""
    return {k: law["c"] / (law["a"][k] + law["b"][k]) for k in DIMENSIONS}


def train_synthetic(row: dict, spec: SweepSpec, workdir: Path) -> dict:
    """f of the row from ``spec.trainer["law"]`` with multiplicative Gaussian noise (seeded by the row)."""
    options = spec.trainer
    starts = workdir.parent.parent / "executions.log"  # every start is logged: tests count re-runs with it
    with starts.open("a") as handle:
        handle.write(f"{row['index']}\n")
    if row["index"] in options.get("fail_rows", ()):
        raise RuntimeError(f"synthetic failure of row {row['index']}")
    if row["index"] in options.get("die_rows", ()):  # as the kernel's OOM killer would
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(options.get("sleep_s", 0.0)))
    rng = np.random.default_rng([int(options.get("noise_seed", 0)), int(row["index"]), int(row["seed"])])
    noise = float(options.get("noise", 0.0))
    law = options["law"]

    def loss(examples: float) -> float:
        t = row["gflops_per_image"] * examples
        return synthetic_loss(law, row["width"], row["depth"], row["mlp_dim"], t) * (1 + noise * rng.normal())

    fractions = np.linspace(0.1, 1.0, int(options.get("synthetic_curve_points", 10)))
    curve = [[float(q * row["examples"]), loss(q * row["examples"])] for q in fractions]
    return {"f": curve[-1][1], "test_error": curve[-1][1], "curve": curve}


# ---------------------------------------------------------------------------------------------------------------
# classification: the package's recipe


def _recipe_argv(row: dict, spec: SweepSpec, data: str, out: Path) -> list[str]:
    options = spec.trainer
    overrides = {
        "hidden_size": row["width"],
        "num_hidden_layers": row["depth"],
        "intermediate_size": row["mlp_dim"],
        "num_attention_heads": row["heads"],
    }
    points = int(options.get("grid_curve_points" if row["sweep"] == "grid" else "curve_points", 1))
    return [
        "--dataset_name",
        data,
        "--output_dir",
        str(out),
        "--compute_budget_gflops",
        "0",
        "--model_overrides",
        json.dumps(overrides),
        "--image_size",
        str(row["image_size"]),
        "--patch_size",
        str(row["patch_size"]),
        "--max_steps",
        str(row["steps"]),
        "--per_device_train_batch_size",
        str(row["batch_size"]),
        "--learning_rate",
        str(options.get("learning_rate", 3e-3)),
        "--warmup_steps",
        str(max(1, round(float(options.get("warmup_fraction", 0.1)) * row["steps"]))),
        "--seed",
        str(row["seed"]),
        "--eval_steps",
        str(max(1, row["steps"] // points)),
        "--fewshot_shots",
        str(options.get("shots", 10)),
        "--logging_steps",
        str(max(1, row["steps"] // 10)),
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        "--lr_scheduler_type",
        SCHEDULES[schedule_of(options)],
        *options.get("extra_args", ()),
    ]


def _probe_error(model_dir: Path, data: str, shots: int, draws: int) -> float:
    """Mean few-shot error over ``draws`` draws of the shots, on the frozen pre-logits of the trained model."""
    import torch

    from ..image_processing_sovit import SoViTImageProcessor
    from ..modeling_sovit import SoViTForImageClassification
    from ..training.data import load_classification_dataset
    from ..training.fewshot import extract_features, fewshot_accuracy

    model = SoViTForImageClassification.from_pretrained(model_dir, dtype=torch.float32)
    size = model.config.image_size
    processor = SoViTImageProcessor(size={"height": size, "width": size})
    dataset = load_classification_dataset(data)
    features = {}
    for split in ("train", "test"):
        images = [image.convert("RGB") for image in dataset[split]["image"]]
        pixels = processor(images, return_tensors="pt")["pixel_values"]
        features[split] = (extract_features(model, pixels), np.asarray(dataset[split]["label"]))
    errors = [
        1.0 - fewshot_accuracy(*features["train"], *features["test"], shots=(shots,), seed=s)[shots]
        for s in range(draws)
    ]
    return float(np.mean(errors))


def train_classification(row: dict, spec: SweepSpec, workdir: Path) -> dict:
    """Train the row with ``sovit train`` (classification recipe) and measure f (few-shot error) and test error."""
    from ..training import classification

    options = spec.trainer
    data = dataset_path(spec, workdir.parent.parent)
    out = workdir / "train"
    remove_own_folder(out)  # a crashed attempt's leftovers (the recipe marked the folder as ours)
    code = classification.main(_recipe_argv(row, spec, data, out))
    if code != 0:
        raise RuntimeError(f"sovit train exited with {code} (see the row's log)")
    metrics = json.loads((out / "eval_results.json").read_text())
    shots = int(options.get("shots", 10))
    state = json.loads((out / "trainer_state.json").read_text())
    curve, seen = [], set()
    for entry in state["log_history"]:
        key = f"eval_fewshot_{shots}shot"
        if key in entry and entry["step"] not in seen:
            seen.add(entry["step"])
            curve.append([float(entry["step"] * row["batch_size"]), 1.0 - float(entry[key])])
    f = _probe_error(out, data, shots, int(options.get("probe_draws", 5)))
    if not options.get("keep_model", False):
        for weights in out.glob("*.safetensors"):
            weights.unlink()
    return {"f": f, "test_error": 1.0 - float(metrics["eval_accuracy"]), "curve": curve}


TRAINERS = {"synthetic": train_synthetic, "classification": train_classification, "tensors": train_tensors}


def get_trainer(spec: SweepSpec, trust_code: bool = False):
    """The trainer callable named by ``spec.trainer["name"]`` (a registered name, or ``module:function`` when
    ``trust_code``); ``ValueError`` otherwise, before anything is imported."""
    name = spec.trainer["name"]
    if isinstance(name, str) and name in TRAINERS:
        return TRAINERS[name]
    if isinstance(name, str) and ":" in name:
        if not trust_code:
            raise ValueError(
                f"the plan's trainer {name!r} is code named by the plan file; it runs only with --trust-trainer-code "
                "(pass it if you trust whoever wrote the plan)."
            )
        module, function = name.split(":", 1)
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"sweep trainer {name!r} cannot be loaded ({type(err).__name__}: {err}).") from err
    raise ValueError(f"Unknown sweep trainer {name!r}; use one of {sorted(TRAINERS)} or 'module:function'.")
