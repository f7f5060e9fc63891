"""What a run writes: one record per (model, mode, implementation, batch) with images/s and MFU, the header's device,
versions and conventions, the result files (read, atomic write, merge), the README table and the plot, generated from
the result files and nothing else."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

from sovit_hf.output_folder import write_file_atomic, write_json_atomic
from sovit_hf.scaling import count_flops

from ..readme_tables import splice_readme
from .matrix import (
    ALL_MODELS,
    LOSS,
    TRAIN_LR,
    ModelSpec,
    Settings,
    Unit,
    parse_implementation,
    record_key_of,
    timm_version,
)

REQUIRED_FIELDS = (
    "model",
    "image_size",
    "implementation",
    "mode",
    "batch",
    "images_per_s",
    "ms_per_step",
    "peak_memory_gb",
    "mfu",
    "device",
    "torch",
    "triton",
    "repeats",
)
TRAINING_FLOPS_FACTOR = 3  # fwd + bwd = 3 x forward (backward = 2 x forward: input and weight gradients)


def model_flops_utilisation(images_per_s: float | None, gflops_per_image: float, mode: str, peak_tflops: float):
    """images/s x FLOPs per image (x3 for a training step) / peak FLOP/s."""
    if images_per_s is None:
        return None
    flops = gflops_per_image * 1e9 * (TRAINING_FLOPS_FACTOR if mode == "training" else 1)
    return images_per_s * flops / (peak_tflops * 1e12)


def make_record(
    spec: ModelSpec,
    impl: str,
    mode: str,
    batch: int | None,
    times: Sequence[float],
    settings: Settings,
    gemm: dict,
    env: dict,
    **extra,
) -> dict:
    """One result record; ``images_per_s`` and ``mfu`` are null when nothing was timed (``error`` says why)."""
    median = statistics.median(times) if times else None
    quintiles = statistics.quantiles(times, n=5) if len(times) > 1 else [None] * 4
    p20, p80 = quintiles[0], quintiles[3]
    ips = batch / median if median and batch else None
    gflops = count_flops(spec.config(), spec.image_size)
    if mode == "training":
        dtype = "float32" if settings.train_autocast is None else f"float32+{_dt(settings.train_autocast)}-autocast"
    else:
        dtype = _dt(settings.dtype)
    record = {
        "model": spec.name,
        "model_key": spec.key,
        "image_size": spec.image_size,
        "implementation": impl,
        "family": parse_implementation(impl).family,
        "mode": mode,
        "batch": batch,
        "dtype": dtype,
        "images_per_s": ips,
        "ms_per_step": None if median is None else median * 1e3,
        "ms_per_step_p20": None if p20 is None else p20 * 1e3,
        "ms_per_step_p80": None if p80 is None else p80 * 1e3,
        "repeats": len(times),
        "warmup": settings.warmup,
        "peak_memory_gb": None,
        "gflops_per_image": gflops,
        "peak_tflops": gemm["tflops"],
        "mfu": model_flops_utilisation(ips, gflops, mode, gemm["tflops"]),
        "rel_err_vs_ref": None,
        "check_limit": None,
        "max_abs_diff_vs_sdpa": None,
        "error": None,
        "device": env["device"],
        "torch": env["torch"],
        "triton": env["triton"],
        "transformers": env["transformers"],
    }
    record.update(extra)
    return record


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def unit_records(
    unit: Unit,
    mode: str,
    batch: int | None,
    times: dict[str, list[float]],
    errors: dict[str, str],
    extra: dict[str, dict],
    settings: Settings,
    gemm: dict,
    env: dict,
) -> list[dict]:
    """The records of a unit's implementations timed together: no times (and ``error``) for one that failed."""
    return [
        make_record(
            unit.spec,
            name,
            mode,
            batch,
            [] if name in errors else times[name],
            settings,
            gemm,
            env,
            error=errors.get(name),
            **extra[name],
        )
        for name in unit.implementations
    ]


def record_key(record: dict) -> tuple:
    return record_key_of(record["model_key"], record["mode"], record["implementation"], record["batch"])


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with records of the same (model, mode, implementation, inference batch) replaced by ``new``."""
    replaced = {record_key(r) for r in new}
    return [r for r in old if record_key(r) not in replaced] + new


CONVENTIONS = {
    "mfu": "images/s x count_flops(config, image_size) x 1e9 (x3 for a training step) / (peak_tflops x 1e12)",
    "peak_tflops": "median rate of an n^3 torch.mm on random data in this process (gemm in runs[])",
    "peak_memory_gb": (
        "GPU torch.cuda.max_memory_allocated over one step in 1e9 bytes (inference: increase over resident memory "
        "+ weights_gb + cache_gb of the model; training: whole peak); null on CPU (no allocator peak counter)"
    ),
    "training": f"fp32 master weights, autocast to bf16 on GPU, loss {LOSS}, AdamW(lr={TRAIN_LR}), largest "
    "power-of-two batch that fit on GPU",
    "check": "relative error of pooled output (inference) / input gradient (training) vs SoViT sdpa in higher "
    "precision on the same weights (inference: rounded to the timed dtype); limit max(2 x sdpa's, floor)",
}


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "transformers": transformers.__version__,
        "timm": timm_version(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model or platform.machine()}, {os.cpu_count()} cores".replace("  ", " ")


def device_slug(device: torch.device) -> str:
    """File-name form of the device: ``cpu``, ``nvidia-h100-80gb-hbm3``."""
    return slug(device_name(device), device.type)


def slug(name: str, device_type: str) -> str:
    return "cpu" if device_type != "cuda" else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"


def default_output(device: torch.device) -> Path:
    return RESULTS_DIR / f"throughput_{device_slug(device)}.json"


def load_payload(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, payload: dict) -> None:
    """The result file, through ``sovit_hf.output_folder.write_json_atomic`` (temporary file, rename): never
    half-written; a payload that does not serialise fails before any file is touched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, payload, indent=1)


def result_files(results_dir: Path = RESULTS_DIR) -> list[Path]:
    return sorted(results_dir.glob("throughput_*.json"))


README = ROOT / "README.md"
MARKERS = ("<!-- throughput:start -->", "<!-- throughput:end -->")


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table_groups(records: list[dict]) -> list[tuple[tuple, list[dict]]]:
    order = {key: i for i, key in enumerate(ALL_MODELS)}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        batch = r["batch"] if r["mode"] == "inference" else None
        groups.setdefault((r["model_key"], r["mode"], batch), []).append(r)
    return sorted(
        groups.items(),
        key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1] != "inference", kv[0][2] or 0),
    )


def render_markdown(payload: dict) -> str:
    """The README's table for one result file: per (model, mode, batch) the fastest SoViT implementation against
    SigLIP sdpa (and SigLIP sdpa + compile, timm where measured). Numbers come only from the file."""
    header, records = payload["header"], payload["records"]
    ok = [r for r in records if r["images_per_s"] is not None]
    has = {name: any(r["implementation"] == name for r in ok) for name in ("siglip-sdpa+compile", "timm")}
    has_memory = any(r["peak_memory_gb"] is not None for r in ok)
    columns = ["model", "px", "mode", "batch", "fastest SoViT", "images/s", "MFU"]
    columns += ["peak GB"] * has_memory + ["SigLIP sdpa images/s", "SoViT / SigLIP sdpa"]
    columns += ["SigLIP sdpa+compile images/s"] * has["siglip-sdpa+compile"] + ["timm images/s"] * has["timm"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (_, mode, _), group in _table_groups(ok):
        by_impl = {r["implementation"]: r for r in group}
        sovit = [r for r in group if r["family"] == "sovit"]
        if not sovit:
            continue
        best = max(sovit, key=lambda r: r["images_per_s"])
        siglip = by_impl.get("siglip-sdpa")
        ratio = best["images_per_s"] / siglip["images_per_s"] if siglip else None
        cells = [best["model"], str(best["image_size"]), mode, str(best["batch"]), f"`{best['implementation']}`"]
        cells += [f"{best['images_per_s']:,.1f}", _fmt(None if best["mfu"] is None else 100 * best["mfu"], ".1f") + "%"]
        cells += [_fmt(best["peak_memory_gb"], ".1f")] * has_memory
        cells += [_ips_cell(siglip, best), _fmt(ratio, ".2f") + ("x" if ratio else "")]
        cells += [_ips_cell(by_impl.get("siglip-sdpa+compile"), best)] * has["siglip-sdpa+compile"]
        cells += [_ips_cell(by_impl.get("timm"), best)] * has["timm"]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("\n" + _caption(header, ok))
    failed = [r for r in records if r["images_per_s"] is None]
    if failed:
        listed = "; ".join(
            f"`{r['implementation']}` ({r['model_key']} {r['mode']}{' b' + str(r['batch']) if r['batch'] else ''}): "
            f"{r['error']}"
            for r in failed
        )
        rows.append(f"Not measured: {listed}.")
    return "\n".join(rows)


def _ips_cell(record: dict | None, best: dict) -> str:
    """images/s of a baseline, with its batch when it differs from the SoViT row's (training: each its largest)."""
    if record is None:
        return "–"
    other_batch = f" (b{record['batch']})" if record["batch"] != best["batch"] else ""
    return f"{record['images_per_s']:,.1f}{other_batch}"


def _caption(header: dict, records: list[dict]) -> str:
    peaks = "/".join(f"{p:,.3g}" for p in sorted({r["peak_tflops"] for r in records}))
    repeats = "/".join(str(n) for n in sorted({r["repeats"] for r in records}))
    warmups = "/".join(str(n) for n in sorted({r["warmup"] for r in records}))
    dates = sorted(run["date"][:10] for run in header["runs"])
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    gemm = header["runs"][-1]["gemm"]
    timm = f", timm {header['timm']}" if header.get("timm") else ""
    return (
        f"{header['device']}; torch {header['torch']}, triton {header['triton']}, transformers "
        f"{header['transformers']}{timm}; {when}. Medians of {repeats} timed steps after {warmups} warm-up steps. "
        f"MFU = images/s x forward FLOPs per image (`count_flops`, x3 for a training step) / the {gemm['dtype']} "
        f"{gemm['n']}³ matmul rate measured in the same run ({peaks} TFLOP/s). Inference in "
        f"{_inference_dtype(records)}; training: {_training_text(records)}."
    )


def _inference_dtype(records: list[dict]) -> str:
    dtypes = sorted({r["dtype"] for r in records if r["mode"] == "inference"})
    return "/".join(dtypes) or "–"


def _training_text(records: list[dict]) -> str:
    train = [r for r in records if r["mode"] == "training"]
    if not train:
        return "not measured"
    dtypes = "/".join(sorted({r["dtype"] for r in train}))
    return f"{dtypes}, {train[0]['optimizer']}, loss `{train[0]['loss']}`, batch in the table"


NO_GPU_YET = (
    "**No GPU throughput has been measured yet**, so this README states no GPU number and no progress on the "
    "H100/H200 targets (So400m/14 inference at 224 px, batch 256: >= 1.25x SigLIP sdpa and >= 60% MFU; "
    "training step >= 1.2x and >= 45% MFU; So400m/14 at 384 px and So150m/14 at 224 px >= 1.25x). The table below is "
    "the CPU mode (CI-sized models, float32 reference paths), which shows regressions in the reference path, not "
    "kernel speed."
)


def readme_block(payloads: list[dict]) -> str:
    """Everything between the README markers: GPU result files first, then CPU; a plain note while no GPU file."""
    gpu = [p for p in payloads if p["header"]["device_type"] == "cuda"]
    cpu = [p for p in payloads if p["header"]["device_type"] != "cuda"]
    parts = [] if gpu else [NO_GPU_YET]
    parts += [render_markdown(p) for p in gpu + cpu]
    return "\n\n".join(parts)


def update_readme(readme: Path = README, results_dir: Path = RESULTS_DIR) -> None:
    payloads = [json.loads(p.read_text()) for p in result_files(results_dir)]
    splice_readme(MARKERS, readme_block(payloads), readme)


def plot_payload(payload: dict, path: Path) -> Path | None:
    """Horizontal bars of images/s over SigLIP sdpa's, one panel per (model, mode, batch); written through a temporary
    file. Returns the path, or None when matplotlib is missing or nothing has a SigLIP sdpa reference."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = []
    for (_, mode, batch), group in _table_groups([r for r in payload["records"] if r["images_per_s"]]):
        base = next((r for r in group if r["implementation"] == "siglip-sdpa"), None)
        if base is None:
            continue
        bars = sorted(group, key=lambda r: r["images_per_s"])
        title = f"{group[0]['model']} @{group[0]['image_size']}, {mode}, batch {batch or group[0]['batch']}"
        panels.append((title, [(r["implementation"], r["images_per_s"] / base["images_per_s"], r) for r in bars]))
    if not panels:
        return None
    height = sum(0.8 + 0.28 * len(bars) for _, bars in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False)
    colours = {"sovit": "tab:blue", "siglip": "tab:orange", "timm": "tab:green"}
    for ax, (title, bars) in zip(axes[:, 0], panels, strict=True):
        names = [name for name, _, _ in bars]
        ratios = [ratio for _, ratio, _ in bars]
        ax.barh(names, ratios, color=[colours[r["family"]] for _, _, r in bars])
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, (_, ratio, record) in enumerate(bars):
            ax.text(ratio, y, f" {record['images_per_s']:,.0f} img/s", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, max(ratios) * 1.35)
    axes[-1, 0].set_xlabel("images/s relative to SigLIP sdpa (same run)")
    header = payload["header"]
    fig.suptitle(f"{header['device']} · torch {header['torch']}", fontsize=9)
    fig.tight_layout()
    try:
        write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path
