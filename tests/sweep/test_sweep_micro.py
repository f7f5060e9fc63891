"""The sweep with real training (the classification recipe), micro-sized: rows train through ``sovit sweep run``, and
the recorded f is the few-shot error an independent closed-form ridge probe (numpy, written out here) measures on the
trained model's frozen features; the test error matches the recipe's own evaluation; finished rows are skipped."""

import json

import numpy as np
import pytest

from sovit_hf.sweep import plan_rows, preset, row_states, run_sweep, write_plan
from tests.conftest import needs


def _probe_error(model_dir, data_dir, shots: int) -> float:
    """10-shot ridge probe by hand: big_vision fewshot_lsr's standardise + bias 100 + W = (Z^T Z + l2 I)^-1 Z^T Y."""
    import datasets
    import torch

    from sovit_hf import SoViTForImageClassification, SoViTImageProcessor

    model = SoViTForImageClassification.from_pretrained(model_dir).eval()
    size = model.config.image_size
    processor = SoViTImageProcessor(size={"height": size, "width": size})
    data = datasets.load_from_disk(data_dir)

    def features(split):
        pixels = processor([im.convert("RGB") for im in data[split]["image"]], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return model.sovit(pixels).pooler_output.double().numpy(), np.array(data[split]["label"])

    (x, y), (xt, yt) = features("train"), features("test")
    rng = np.random.default_rng(0)  # the same draw as sovit_hf.training.fewshot.sample_shots(seed=0)
    idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:shots] for c in np.unique(y)]))
    mean, std = x[idx].mean(0), x[idx].std(0) + 1e-5
    z = np.hstack([(x[idx] - mean) / std, np.full((len(idx), 1), 100.0)])
    w = z.T @ np.linalg.solve(z @ z.T + 1024.0 * np.eye(len(z)), 2 * np.eye(10)[y[idx]] - 1)
    zt = np.hstack([(xt - mean) / std, np.full((len(xt), 1), 100.0)])
    return float(((zt @ w).argmax(1) != yt).mean())


@needs("datasets", "sklearn")
def test_real_rows_record_the_probe_error_and_resume(tmp_path):
    spec = preset("micro")
    spec = preset("micro", trainer={**spec.trainer, "keep_model": True})
    rows = plan_rows(spec)
    picked = [next(r for r in rows if r["sweep"] == "grid")]  # one row: the recipe's fixed cost is ~10 s
    write_plan(tmp_path, spec, rows=[{**r, "index": i} for i, r in enumerate(picked)])
    outcome = run_sweep(tmp_path, jobs=0, progress=False)
    assert outcome["ok"] == [0], row_states(tmp_path)
    for index, row in enumerate(picked):
        record = row_states(tmp_path)[index]["ok"]
        train = tmp_path / "rows" / f"row_{index:04d}" / "train"
        config = json.loads((train / "config.json").read_text())
        assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (
            row["width"],
            row["depth"],
            row["mlp_dim"],
        )
        assert json.loads((train / "trainer_state.json").read_text())["global_step"] == row["steps"]
        assert record["f"] == pytest.approx(_probe_error(train, tmp_path / "data", 10), abs=1e-9)
        accuracy = json.loads((train / "eval_results.json").read_text())["eval_accuracy"]
        assert record["test_error"] == pytest.approx(1 - accuracy)
        assert record["curve"] and record["curve"][-1][0] == row["examples"]
    assert run_sweep(tmp_path, jobs=0, progress=False)["done"] == [0]  # nothing trains twice
