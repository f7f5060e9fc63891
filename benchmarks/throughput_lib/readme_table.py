"""The README's throughput table, generated from the committed result files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from .models import ALL_MODELS
from .storage import RESULTS_DIR, ROOT, result_files

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
    "H100/H200 targets of issue #8 (So400m/14 inference at 224 px, batch 256: >= 1.25x SigLIP sdpa and >= 60% MFU; "
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
    text = readme.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    readme.write_text(text[:start] + "\n" + readme_block(payloads) + "\n" + text[end:])
