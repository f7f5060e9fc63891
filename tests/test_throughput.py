"""benchmarks/throughput.py: MFU arithmetic against independent FLOP counts, the README table against the committed
result files, the correctness checks the CPU mode performs (SoViT vs SigLIP, inference and one AdamW step), the
largest-batch search in closed form, and the fields of every committed record."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import SiglipVisionModel

from benchmarks.throughput_lib import run as runner
from benchmarks.throughput_lib.build import build_model, make_weights, siglip_config_for, training_model
from benchmarks.throughput_lib.matrix import (
    ALL_MODELS,
    CPU_MODELS,
    GPU_MODELS,
    ModelSpec,
    Unit,
    default_implementations,
    default_settings,
    parse_implementation,
    plan_units,
)
from benchmarks.throughput_lib.results import (
    MARKERS,
    REQUIRED_FIELDS,
    RESULTS_DIR,
    environment,
    make_record,
    merge_records,
    model_flops_utilisation,
    readme_block,
    render_markdown,
    result_files,
    slug,
    write_json,
)
from benchmarks.throughput_lib.run import largest_fitting_batch, make_train_step, run_inference_unit, run_training_unit
from sovit_hf.conversion.hf_siglip import siglip_to_sovit_state_dict
from sovit_hf.scaling import count_flops

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = result_files()
PAYLOADS = [json.loads(path.read_text()) for path in RESULT_FILES]
RECORDS = [r for payload in PAYLOADS for r in payload["records"]]
# Smaller than the CPU mode's models, same structure (MAP head, 2 layers, odd MLP): fast enough for every test run.
TINY = ModelSpec(
    "test-tiny",
    "test tiny",
    56,
    fields=dict(hidden_size=48, num_hidden_layers=2, intermediate_size=90, num_attention_heads=2, patch_size=14),
)
GEMM = {"n": 1, "dtype": "float32", "median_ms": 1.0, "repeats": 1, "tflops": 0.5}


def _settings(**overrides):
    settings = default_settings("cpu")
    settings.warmup, settings.repeats, settings.batches = 0, 2, (2,)
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


def _env():
    return environment(torch.device("cpu"))


# --------------------------------------------- committed results: consistency checks of the files, not evidence of
# behaviour (the runner's behaviour is tested below, on CPU, by running it)


def test_committed_cpu_result_file_exists():
    assert RESULTS_DIR / "throughput_cpu.json" in RESULT_FILES


def test_readme_throughput_table_comes_from_the_result_files():
    text = (ROOT / "README.md").read_text()
    block = text.split(MARKERS[0], 1)[1].split(MARKERS[1], 1)[0]
    assert block.strip() == readme_block(PAYLOADS).strip()
    if not any(p["header"]["device_type"] == "cuda" for p in PAYLOADS):
        assert "No GPU throughput has been measured yet" in block


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.name for p in RESULT_FILES])
def test_committed_records_have_the_required_fields(path):
    payload = json.loads(path.read_text())
    header = payload["header"]
    for key in ("device", "device_type", "torch", "triton", "transformers", "timm", "peak_tflops", "date", "command"):
        assert key in header, key
    assert header["runs"] and all(run["gemm"]["tflops"] > 0 for run in header["runs"])
    assert path.name == f"throughput_{slug(header['device'], header['device_type'])}.json"
    for record in payload["records"]:
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        assert not missing, (record["implementation"], missing)
        assert record["mode"] in ("inference", "training")
        assert record["device"] == header["device"] and record["torch"] == header["torch"]
        assert (record["images_per_s"] is None) == (record["error"] is not None), record
        if record["images_per_s"] is not None:
            assert record["repeats"] >= 1 and record["batch"] >= 1
            if record["rel_err_vs_ref"] is not None:  # timed only after passing the check
                assert record["rel_err_vs_ref"] <= record["check_limit"]


@pytest.mark.parametrize("record", [r for r in RECORDS if r["images_per_s"] is not None], ids=lambda r: "")
def test_committed_mfu_and_images_per_s_follow_from_the_record(record):
    """images/s = batch / median step; MFU = images/s x count_flops x 1e9 (x3 training) / peak, with the FLOP count
    recomputed here from the model table (not read back from the record)."""
    spec = ALL_MODELS[record["model_key"]]
    gflops = count_flops(spec.config(), spec.image_size)
    assert record["gflops_per_image"] == gflops
    factor = 3 if record["mode"] == "training" else 1
    assert record["mfu"] == pytest.approx(
        record["images_per_s"] * gflops * 1e9 * factor / (record["peak_tflops"] * 1e12), rel=1e-12
    )
    assert record["images_per_s"] == pytest.approx(record["batch"] / (record["ms_per_step"] / 1e3), rel=1e-12)


def test_committed_cpu_records_show_sovit_and_siglip_computing_the_same_function():
    """What the committed run recorded; the runner's check itself is tested by
    test_inference_unit_checks_sovit_against_siglip_and_times_every_implementation."""
    cpu = [r for p in PAYLOADS if p["header"]["device_type"] == "cpu" for r in p["records"]]
    siglip = [r for r in cpu if r["family"] == "siglip" and r["mode"] == "inference"]
    assert siglip and all(r["max_abs_diff_vs_sdpa"] <= 1e-5 for r in siglip)


@pytest.mark.parametrize("key", list(CPU_MODELS))
def test_flops_per_image_equals_flop_counter_on_siglip(key):
    """The FLOP count behind MFU, against torch's FlopCounterMode on transformers' SiglipVisionModel (eager attention,
    so that QK^T and attention x V are counted): an implementation that shares no code with count_flops."""
    spec = CPU_MODELS[key]
    model = SiglipVisionModel(siglip_config_for(spec.config()))
    model.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, spec.image_size, spec.image_size))
    assert counter.get_total_flops() / 2 / 1e9 == pytest.approx(count_flops(spec.config(), spec.image_size), rel=1e-9)


# ----------------------------------------------------------------------------------------------- the runner itself


def test_inference_unit_checks_sovit_against_siglip_and_times_every_implementation():
    unit = Unit(TINY, "inference", ("sdpa", "eager", "siglip-sdpa", "siglip-eager"), batch=2)
    records = run_inference_unit(unit, _settings(), GEMM, _env())
    assert [r["implementation"] for r in records] == list(unit.implementations)
    for record in records:
        assert record["error"] is None, record["error"]
        assert record["max_abs_diff_vs_sdpa"] <= 1e-5  # same weights through the converter: same function
        assert record["rel_err_vs_ref"] <= record["check_limit"] == 1e-5  # fp32 errors are far under the floor
        assert record["repeats"] == 2 and record["images_per_s"] > 0
        assert record["params"] == records[0]["params"]
    assert records[0]["max_abs_diff_vs_sdpa"] == 0.0  # sdpa against itself


def test_a_failing_or_wrong_implementation_is_recorded_not_fatal(monkeypatch):
    real_build = build_model

    def build(impl, weights, dtype, device):
        if impl.name == "eager":
            raise RuntimeError("kernel exploded")
        model = real_build(impl, weights, dtype, device)
        if impl.name == "siglip-eager":  # a wrong model: its output must fail the check, not be timed
            with torch.no_grad():
                model.post_layernorm.bias.add_(0.05)
        return model

    monkeypatch.setattr(runner, "build_model", build)  # where run_inference_unit looks it up
    unit = Unit(TINY, "inference", ("sdpa", "eager", "siglip-eager"), batch=2)
    by_impl = {r["implementation"]: r for r in run_inference_unit(unit, _settings(), GEMM, _env())}
    assert by_impl["sdpa"]["error"] is None and by_impl["sdpa"]["images_per_s"] > 0
    assert by_impl["eager"]["images_per_s"] is None and "kernel exploded" in by_impl["eager"]["error"]
    wrong = by_impl["siglip-eager"]
    assert wrong["images_per_s"] is None and wrong["mfu"] is None and "check failed" in wrong["error"]
    assert wrong["rel_err_vs_ref"] > wrong["check_limit"]


def test_one_adamw_step_is_the_same_for_sovit_and_siglip():
    """Same weights -> same loss and same gradients (compared through the converter's renaming); after one AdamW step
    the loss is the same again, and it moved. (Parameters are not compared element-wise: Adam's first update is
    ~lr * sign(g), so an element whose gradient is at rounding level can move either way in either model.)"""
    settings = _settings()
    weights = make_weights(TINY, settings.device)
    pixels = torch.randn(4, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(5))
    losses, grads = {}, {}
    for name in ("sdpa", "siglip-sdpa"):
        impl = parse_implementation(name)
        model = training_model(impl, weights, settings.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        step = make_train_step(model, impl.family, optimizer, pixels, None)
        first = float(step())
        grads[name] = {k: p.grad.clone() for k, p in model.named_parameters()}  # of the first step
        losses[name] = [first, float(step())]  # the second loss is after one update
    assert losses["sdpa"] == pytest.approx(losses["siglip-sdpa"], rel=1e-5, abs=1e-7)
    before, after = losses["sdpa"]
    assert abs(after - before) > 1e-4 * abs(before)  # the step changed the parameters
    siglip_grads, _ = siglip_to_sovit_state_dict(grads["siglip-sdpa"], TINY.config().hidden_size)
    assert siglip_grads.keys() == grads["sdpa"].keys()
    scale = max(float(g.abs().max()) for g in grads["sdpa"].values())  # k_proj.bias has a zero gradient in exact math
    for key, grad in grads["sdpa"].items():
        assert float((grad - siglip_grads[key]).abs().max()) <= 1e-5 * scale, key


@pytest.mark.parametrize("implementations", [("siglip-eager",), ("sdpa", "siglip-eager")], ids=["alone", "interleaved"])
def test_training_unit_checks_then_times_at_the_cpu_batch(implementations):
    settings = _settings(batches=(1, 4), max_train_batch=4)
    records = run_training_unit(Unit(TINY, "training", implementations), settings, GEMM, _env())
    assert [r["implementation"] for r in records] == list(implementations)
    for record in records:
        assert record["error"] is None, record["error"]
        assert record["batch"] == 4 and record["repeats"] == 2 and record["dtype"] == "float32"
        assert record["rel_err_vs_ref"] <= record["check_limit"] and record["loss_rel_diff_vs_ref"] < 1e-5
        assert record["peak_memory_gb"] is None  # no allocator peak on CPU
        assert record["mfu"] == pytest.approx(record["images_per_s"] * record["gflops_per_image"] * 3e9 / 0.5e12)


# ------------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    "capacity, start, cap, expected, tried",
    [
        (100, 32, 1024, 64, [32, 64, 128]),
        (20, 32, 1024, 16, [32, 16]),
        (5000, 32, 1024, 1024, [32, 64, 128, 256, 512, 1024]),
        (100, 32, 48, 32, [32]),
        (0, 32, 1024, None, [32, 16, 8, 4, 2, 1]),
    ],
)
def test_largest_fitting_batch_in_closed_form(capacity, start, cap, expected, tried):
    calls = []

    def fits(batch):
        calls.append(batch)
        return batch <= capacity

    assert largest_fitting_batch(fits, start, cap) == expected
    assert calls == tried


def test_model_flops_utilisation_by_hand():
    # 1,000 img/s x 220 GFLOP = 220 TFLOP/s of 880: 25%; a training step counts 3x the forward.
    assert model_flops_utilisation(1000.0, 220.0, "inference", 880.0) == pytest.approx(0.25)
    assert model_flops_utilisation(1000.0, 220.0, "training", 880.0) == pytest.approx(0.75)
    assert model_flops_utilisation(None, 220.0, "training", 880.0) is None


def test_parse_implementation():
    impl = parse_implementation("sovit_triton+mlp+ln+compile")
    assert (impl.family, impl.attn, impl.mlp, impl.ln, impl.qkv, impl.compile) == (
        "sovit",
        "sovit_triton",
        True,
        True,
        False,
        True,
    )
    assert parse_implementation("siglip-sdpa+compile").family == "siglip"
    assert parse_implementation("sdpa+compile").compile_mode == "default"
    graphs = parse_implementation("sovit_triton+mlp+ln+graphs")
    assert graphs.compile and graphs.compile_mode == "reduce-overhead" and parse_implementation("sdpa").wrap(1) == 1
    for bad in ("flash", "sdpa+mlp+mlp", "siglip-sdpa+mlp", "timm+ln", "siglip-triton", "sdpa+compile+graphs"):
        with pytest.raises(ValueError):
            parse_implementation(bad)


def test_default_gpu_matrix_has_each_combination_with_and_without_compile():
    names = default_implementations("cuda", with_qkv=False)
    for base in ("sdpa", "sovit_triton", "sovit_triton+mlp", "sovit_triton+mlp+ln"):
        assert base in names and f"{base}+compile" in names
    assert {"siglip-sdpa", "siglip-eager", "timm", "sovit_triton+mlp+ln+graphs", "siglip-sdpa+graphs"} <= set(names)
    assert "sdpa+qkv" in default_implementations("cuda", with_qkv=True)
    cpu = default_implementations("cpu", with_qkv=False)
    assert cpu == ["eager", "sdpa", "siglip-sdpa", "siglip-eager"]  # no Triton, no compile on CPU


def test_units_and_resume_keys():
    impls = ["sdpa", "sdpa+compile", "siglip-sdpa", "timm"]
    units = plan_units([GPU_MODELS["so150m-224"]], impls, ["inference", "training"], [1, 256])
    assert [(u.mode, u.batch, u.implementations) for u in units] == [
        ("inference", 1, ("sdpa", "siglip-sdpa")),  # uncompiled ones interleaved in one unit per batch
        ("inference", 256, ("sdpa", "siglip-sdpa")),
        ("training", None, ("sdpa",)),
        ("training", None, ("siglip-sdpa",)),
        ("inference", 1, ("sdpa+compile",)),  # each compiled implementation alone
        ("inference", 256, ("sdpa+compile",)),
        ("training", None, ("sdpa+compile",)),
    ]  # no timm unit for So150m (timm has no model of that shape)
    cpu_units = plan_units([TINY], ["eager", "sdpa"], ["training"], [8], interleave_training=True)
    assert [(u.mode, u.implementations) for u in cpu_units] == [("training", ("eager", "sdpa"))]
    old = [{"model_key": "m", "mode": "inference", "implementation": "sdpa", "batch": 1, "v": 1}]
    new = [{"model_key": "m", "mode": "inference", "implementation": "sdpa", "batch": 1, "v": 2}]
    new += [{"model_key": "m", "mode": "inference", "implementation": "sdpa", "batch": 8, "v": 3}]
    assert [r["v"] for r in merge_records(old, new)] == [2, 3]


def test_render_markdown_picks_the_fastest_sovit_and_divides_by_siglip_sdpa():
    def record(impl, family, ips, mode="inference", batch=256):
        ms = batch / ips * 1e3
        return {
            "model": "So400m/14",
            "model_key": "so400m-224",
            "image_size": 224,
            "implementation": impl,
            "family": family,
            "mode": mode,
            "batch": batch,
            "dtype": "bfloat16",
            "images_per_s": ips,
            "ms_per_step": ms,
            "repeats": 20,
            "warmup": 5,
            "peak_memory_gb": 10.0,
            "mfu": 0.5,
            "peak_tflops": 800.0,
            "error": None,
        }

    failed = {**record("sovit_triton+compile", "sovit", 1.0), "images_per_s": None, "error": "boom"}
    payload = {
        "header": {
            "device": "GPU X",
            "device_type": "cuda",
            "torch": "t",
            "triton": "tr",
            "transformers": "tf",
            "timm": None,
            "runs": [{"date": "2026-01-02T00:00:00", "gemm": {"dtype": "bfloat16", "n": 8192, "tflops": 800.0}}],
        },
        "records": [
            record("sdpa", "sovit", 100.0),
            record("sovit_triton", "sovit", 150.0),
            record("siglip-sdpa", "siglip", 120.0),
            failed,
        ],
    }
    table = render_markdown(payload)
    row = next(line for line in table.splitlines() if line.startswith("| So400m/14"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:] == ["`sovit_triton`", "150.0", "50.0%", "10.0", "120.0", "1.25x"]
    assert "Not measured: `sovit_triton+compile`" in table and "boom" in table
    assert "No GPU throughput" not in readme_block([payload])


def test_json_is_written_atomically(tmp_path, monkeypatch):
    """The result file changes only through one rename of a complete temporary file: a crash before the rename (here
    the rename itself fails) or a payload that cannot be serialised leaves the previous file exactly as it was, and
    no temporary file behind."""
    path = tmp_path / "sub" / "out.json"
    write_json(path, {"a": [1.5, math.pi]})
    assert json.loads(path.read_text()) == {"a": [1.5, math.pi]}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary file left behind
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_json(path, {"a": list(range(1000))})
    monkeypatch.undo()
    with pytest.raises(TypeError):
        write_json(path, {"a": list(range(1000)), "z": object()})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_median_is_what_the_record_reports():
    times = [0.010, 0.030, 0.020, 0.050]
    record = make_record(TINY, "sdpa", "inference", 8, times, _settings(), GEMM, _env())
    assert record["ms_per_step"] == pytest.approx(statistics.median(times) * 1e3)
    assert record["images_per_s"] == pytest.approx(8 / statistics.median(times))


def test_timm_rows_run_without_a_weight_check(monkeypatch):
    """timm holds its own random weights: it is timed with the others but not compared (and asked for pooled
    features: pretrained=False, num_classes=0)."""
    calls = []

    class FakeTimmViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = torch.nn.Module()
            self.patch_embed.img_size = (TINY.image_size, TINY.image_size)
            self.proj = torch.nn.Linear(3, TINY.config().hidden_size)

        def forward(self, pixels):  # (B, 3, H, W) -> (B, W)
            return self.proj(pixels.mean(dim=(2, 3)))

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return FakeTimmViT()

    fake = types.ModuleType("timm")
    fake.__version__, fake.create_model = "0.0-test", create_model
    monkeypatch.setitem(sys.modules, "timm", fake)
    spec = dataclasses.replace(TINY, timm_name="vit_test")
    records = run_inference_unit(Unit(spec, "inference", ("sdpa", "timm"), batch=2), _settings(), GEMM, _env())
    timm_record = records[1]
    assert calls == [("vit_test", {"pretrained": False, "num_classes": 0})]
    assert timm_record["error"] is None and timm_record["images_per_s"] > 0
    assert timm_record["rel_err_vs_ref"] is None and timm_record["max_abs_diff_vs_sdpa"] is None


def test_the_script_itself_runs_from_another_folder(tmp_path):
    """The entry point (not only the package) imports and works from any cwd: --readme-only on a copy of the README
    rewrites nothing, and bad names are refused with a message."""
    import subprocess

    readme = (ROOT / "README.md").read_text()
    script = ROOT / "benchmarks" / "throughput.py"
    run = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--models", "so400m-tiny,vit-zz"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "unknown models or modes: vit-zz" in run.stderr
    run = subprocess.run(
        [sys.executable, str(script), "--readme-only"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (ROOT / "README.md").read_text() == readme


def test_plot_has_one_panel_per_group_with_a_siglip_reference(tmp_path):
    """Figure height is the closed form of its panels (0.8 in + 0.28 in per bar, at 110 dpi): one panel per (model,
    mode, batch) that has SigLIP sdpa, one bar per implementation; nothing without a reference."""
    pytest.importorskip("matplotlib")
    from PIL import Image

    from benchmarks.throughput_lib.results import plot_payload

    payload = json.loads((RESULTS_DIR / "throughput_cpu.json").read_text())
    ok = [r for r in payload["records"] if r["images_per_s"]]
    groups = {}
    for r in ok:
        groups.setdefault((r["model_key"], r["mode"], r["batch"]), []).append(r["implementation"])
    groups = [g for g in groups.values() if "siglip-sdpa" in g]
    path = plot_payload(payload, tmp_path / "t.png")
    assert Image.open(path).size[1] == round(110 * sum(0.8 + 0.28 * len(g) for g in groups))
    no_reference = {**payload, "records": [r for r in ok if r["implementation"] != "siglip-sdpa"]}
    assert plot_payload(no_reference, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
