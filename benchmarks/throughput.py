"""End-to-end throughput: images/s, peak memory and MFU of SoViT (each kernel combination) against transformers'
SiglipVisionModel with the same weights, and timm's so400m where timm is importable.

    python benchmarks/throughput.py [--device cuda|cpu] [--models so400m-224,...] [--implementations sdpa,...]
        [--modes inference,training] [--batches 256,32,1] [--repeats 20] [--warmup 5] [--max-train-batch 1024]
        [--out PATH] [--previous PATH] [--append] [--resume] [--budget-s S] [--update-readme] [--readme-only]

GPU mode (``--device cuda``, the default when a GPU is visible): So400m/14 at 224 and 384, So150m/14 at 224 and g/14
at 224, all with a MAP head (SiglipVisionModel's head). Random weights, seeded: a SiglipVisionModel is built from the
equivalent SiglipVisionConfig (g/14 included: width 1408, depth 40, MLP 6144, 16 heads is an ordinary SigLIP config)
and its state dict goes through the project's converter
(``sovit_hf.conversion.hf_siglip.siglip_to_sovit_state_dict``, what ``load_siglip_as_sovit`` does, in memory
instead of through a folder) into SoViT. Implementations:

* SoViT: ``sdpa``; ``sovit_triton`` (Triton attention); ``sovit_triton+mlp`` (+ fused fc1/bias/GELU);
  ``sovit_triton+mlp+ln`` (+ fused residual-add/LayerNorm); each also ``+compile`` (``torch.compile(model)``, default
  mode). ``+qkv`` combinations (``sdpa+qkv``, ``sovit_triton+mlp+ln+qkv``) set the runtime field
  ``qkv_implementation="fused"`` (one GEMM for q, k and v).
  ``sovit_triton+mlp+ln+graphs``: ``torch.compile(model, mode="reduce-overhead")`` (CUDA graphs: what small batches
  lose to kernel-launch overhead); ``+graphs`` is accepted wherever ``+compile`` is.
* ``siglip-sdpa``, ``siglip-eager``, ``siglip-sdpa+compile``, ``siglip-sdpa+graphs``: transformers'
  SiglipVisionModel, same weights.
* ``timm``: ``timm.create_model("vit_so400m_patch14_siglip_<224|384>", pretrained=False, num_classes=0)`` (its own
  random weights; the same shape and FLOPs), So400m only, when ``import timm`` works.

Inference: weights and input in bf16, ``torch.inference_mode()``, batches ``--batches``. Training step: fp32 master
weights, forward under ``torch.autocast(dtype=bfloat16)``, loss ``mean(pooler_output.float() ** 2)`` for every model
(the same loss on the pooled output; no classifier, so that SoViT, SigLIP and timm compute the same function),
backward, ``torch.optim.AdamW(lr=1e-5, fused=True)`` step; gradient checkpointing off. The batch is the largest power
of two that fits (from 32 up, doubling, at most ``--max-train-batch``; down from 32 if 32 does not fit), searched with
the uncompiled model; a ``+compile`` combination is timed at that batch, halved if compiling or running it runs out
of memory.

Checks before timing: every SoViT and SigLIP implementation's pooled output (inference, at the benchmarked shape,
compiled if ``+compile``) or input gradient (training, at batch 8, uncompiled) is compared with a higher-precision
reference, SoViT ``sdpa`` in fp32 on the same weights (for inference rounded to bf16 first, as the timed models hold
them): relative error ``|out - ref| / |ref|`` must not exceed ``max(2 x that of SoViT sdpa, 2e-2)``
(FlashAttention's test rule "at most twice the error of the same-precision PyTorch reference"; 2e-2 is twice the top
of the 1e-3..1e-2 relative error that bf16 operands typically give). ``max_abs_diff_vs_sdpa`` is recorded. A
combination that fails to build, run or pass gets ``images_per_s: null`` and ``error``; the run goes on.

Timing: every step is timed on its own (GPU: CUDA events after a synchronize; CPU: ``time.perf_counter``), ``--warmup``
untimed steps first (the first one compiles / autotunes), then ``--repeats``; medians are reported. The uncompiled
inference implementations of one (model, batch), SigLIP and timm included, are interleaved in rounds (order reversed
every other round) so that drift hits all alike. Each ``+compile`` implementation is a unit of its own (compiling g/14
takes minutes, and a unit must fit in one 10-minute call), and so is each GPU training implementation (each searches
its batch and needs the memory to itself); those are compared across units of one process, not interleaved. On CPU,
where the training batch is fixed, the training implementations are interleaved too.

Peak memory: GPU ``torch.cuda.max_memory_allocated`` over one step, in GB (1e9 bytes). For inference, the step's
increase over what was resident before, plus the model's own weights (``weights_gb``) and what its first call left
allocated (``cache_gb``, e.g. the fused-QKV weight), because other implementations' weights are resident at the same
time; for training, the whole peak (weights, gradients, AdamW state, activations, input). CPU: null (torch's CPU
allocator keeps no peak counter, and tracemalloc does not see tensor storage).

MFU (model FLOPs utilisation) = images/s x FLOPs per image / peak, where FLOPs per image is
``sovit_hf.scaling.count_flops(config, image_size)`` x 1e9 (forward matmuls, 2 x MACs, MAP head included) for
inference and 3x that for a training step (backward = 2x forward, the usual convention; no recompute), and the peak
is the median rate of an 8192^3 bf16 ``torch.mm`` on random data measured by the same process (CPU: 2048^3 float32).

CPU mode (``--device cpu``): two CI-sized models with the so400m and so150m head dims (72 and 55), 2 layers, 112 px,
float32 weights and inputs, implementations ``eager``, ``sdpa``, ``siglip-sdpa``, ``siglip-eager`` (and ``sdpa+qkv``
when available), batches 1 and 8, training at batch 8 without autocast, reference in float64 with the limit
``max(2 x sdpa's error, 1e-5)``. Triton kernels are left out (on CPU they only run under TRITON_INTERPRET, far too
slow to time). About 30 s on 2 idle cores.

Output: ``benchmarks/results/throughput_<device>.json`` (``throughput_cpu.json``,
``throughput_nvidia-h100-80gb-hbm3.json``, ...): ``{"header": {...}, "records": [...]}``, rewritten atomically after
every unit. The README's table between ``<!-- throughput:start -->`` and ``<!-- throughput:end -->`` is generated from
every ``throughput_*.json`` in ``benchmarks/results`` (default on when writing there).

Splitting a GPU run over several calls of at most 10 minutes (on a GPU machine whose files do not persist between
calls; only $OUT comes back): copy the last returned file into benchmarks/results/ and run again with ``--resume``::

    python benchmarks/throughput.py --device cuda --out "$OUT" --resume --budget-s 480 \\
        --previous benchmarks/results/throughput_nvidia-h100-80gb-hbm3.json

``--resume`` skips units that already have records (an error counts: to retry one, run it with ``--append`` and
``--implementations``); ``--budget-s`` starts no new unit once the time used plus the longest unit of the same kind
so far (inference/training, compiled or not) would exceed it. ``--readme-only`` regenerates the README table from
the committed files. The full default matrix is about 30 units per model, more than one 30-minute device lease; the
issue's targets first::

  --models so400m-224 --modes inference --batches 256
  --models so400m-224 --modes training --implementations sdpa,sovit_triton+mlp+ln,siglip-sdpa
  --models so400m-224 --modes training --implementations sovit_triton+mlp+ln+compile,siglip-sdpa+compile
  --models so400m-384,so150m-224 --modes inference --batches 256 --implementations sdpa,sovit_triton+mlp+ln,siglip-sdpa
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

# The repository root, so that `benchmarks.throughput_lib` and `sovit_hf` import from any folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.throughput_lib.matrix import (
    ALL_MODELS,
    CPU_MODELS,
    GPU_MODELS,
    Settings,
    Unit,
    default_implementations,
    default_settings,
    parse_implementation,
    plan_units,
    timm_version,
)
from benchmarks.throughput_lib.results import (
    CONVENTIONS,
    default_output,
    environment,
    load_payload,
    merge_records,
    plot_payload,
    record_key,
    result_files,
    update_readme,
    write_json,
)
from benchmarks.throughput_lib.run import measure_peak_tflops, run_inference_unit, run_training_unit


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", type=_csv, help=f"comma list of {', '.join(ALL_MODELS)}")
    parser.add_argument("--implementations", type=_csv, help="comma list, e.g. sdpa,sovit_triton+mlp+ln,siglip-sdpa")
    parser.add_argument("--modes", type=_csv, default=["inference", "training"])
    parser.add_argument("--batches", type=lambda s: [int(b) for b in _csv(s)], help="inference batches")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--max-train-batch", type=int)
    parser.add_argument("--out", type=Path, help="result file, or a folder for throughput_<device>.json")
    parser.add_argument("--previous", type=Path, help="result file to merge with (default: the output file)")
    parser.add_argument("--append", action="store_true", help="merge into the previous records")
    parser.add_argument("--resume", action="store_true", help="--append, and skip units already recorded")
    parser.add_argument("--budget-s", type=float, help="start no unit that would end after this many seconds")
    parser.add_argument("--update-readme", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--readme-only", action="store_true", help="only regenerate the README table")
    args = parser.parse_args(argv)
    unknown = [key for key in args.models or [] if key not in ALL_MODELS] + sorted(
        set(args.modes) - {"inference", "training"}
    )
    if unknown:
        parser.error(f"unknown models or modes: {', '.join(unknown)}")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = default_settings(args.device)
    for name in ("repeats", "warmup", "max_train_batch"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.batches:
        settings.batches = tuple(args.batches)
    return settings


def selected_implementations(args: argparse.Namespace, device_type: str) -> list[str]:
    names = args.implementations or default_implementations(device_type, with_qkv=True)
    keep = []
    for name in names:
        impl = parse_implementation(name)  # ValueError on a typo, before any work
        if impl.family == "timm" and timm_version() is None:
            continue
        keep.append(name)
    return keep


def run_unit(unit: Unit, settings: Settings, gemm: dict, env: dict) -> list[dict]:
    if settings.device.type == "cuda":
        torch._dynamo.reset()  # compiled graphs of the previous unit are not needed again
    if unit.mode == "inference":
        return run_inference_unit(unit, settings, gemm, env)
    return run_training_unit(unit, settings, gemm, env)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        update_readme()
        print(f"README table regenerated from {', '.join(p.name for p in result_files())}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing was written.")
    settings = settings_from_args(args)
    device = settings.device
    out = args.out or default_output(device)
    if out.suffix != ".json":
        out = out / default_output(device).name
    update = args.update_readme if args.update_readme is not None else out.resolve() == default_output(device)
    specs = [ALL_MODELS[k] for k in (args.models or (GPU_MODELS if device.type == "cuda" else CPU_MODELS))]
    implementations = selected_implementations(args, device.type)
    units = plan_units(specs, implementations, args.modes, settings.batches, not settings.search_train_batch)
    if device.type == "cuda":
        _raise_compile_limits()

    env = environment(device)
    previous = load_payload(args.previous or out) if (args.append or args.resume) else None
    if previous and previous["header"]["device"] != env["device"]:
        sys.exit(f"{args.previous or out} holds {previous['header']['device']!r}, not {env['device']!r}.")
    records = previous["records"] if previous else []
    runs = previous["header"]["runs"] if previous else []
    if args.resume:
        done = {record_key(r) for r in records}
        units = [u for u in units if not all(k in done for k in u.keys())]

    started = time.perf_counter()
    gemm = measure_peak_tflops(device, settings.gemm_dtype, settings.gemm_n)
    print(f"{env['device']}: {gemm['dtype']} {gemm['n']}^3 matmul {gemm['tflops']:.3g} TFLOP/s", flush=True)
    run = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"main({argv})",
        "gemm": gemm,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "units": [],
    }
    runs = [*runs, run]
    longest: dict[tuple[str, bool], float] = {}  # per kind of unit: (mode, compiled)
    for index, unit in enumerate(units):
        elapsed = time.perf_counter() - started
        kind = (unit.mode, any(parse_implementation(i).compile for i in unit.implementations))
        expected = longest.get(kind, max(longest.values(), default=0.0))
        if args.budget_s is not None and index and elapsed + expected > args.budget_s:
            left = [u.label() for u in units[index:]]
            print(f"budget: stopping after {elapsed:.0f} s; {len(left)} units left (run again with --resume):")
            print("\n".join(f"  {label}" for label in left))
            break
        unit_start = time.perf_counter()
        new = run_unit(unit, settings, gemm, env)
        seconds = time.perf_counter() - unit_start
        longest[kind] = max(longest.get(kind, 0.0), seconds)
        run["units"].append({"unit": unit.label(), "wall_s": seconds})
        records = merge_records(records, new)
        header = {**env, "peak_tflops": gemm["tflops"], "date": run["date"], "command": run["command"]}
        write_json(out, {"header": {**header, "conventions": CONVENTIONS, "runs": runs}, "records": records})
        for r in new:
            _print_record(r)
        print(f"  [{unit.label()}: {seconds:.1f} s]", flush=True)
    if not run["units"]:
        print("Nothing to run: every selected unit is already recorded (or the selection is empty).")
    if update:
        update_readme()
    picture = plot_payload(load_payload(out), out.with_suffix(".png")) if run["units"] else None
    print(f"{'Wrote' if run['units'] else 'Left'} {out}" + (" and updated the README table" if update else ""))
    if picture:
        print(f"Plot: {picture}")
    return 0


def _raise_compile_limits() -> None:
    """Several compiled models of one class (one per kernel combination and batch) share forward's code object;
    dynamo's default recompile limit (8) would silently fall back to eager."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 256))


def _print_record(r: dict) -> None:
    where = f"{r['model_key']:12s} {r['mode']:9s} b{r['batch'] or '-':<5}"
    if r["images_per_s"] is None:
        print(f"{where} {r['implementation']:28s} ERROR {r['error']}", flush=True)
        return
    memory = f"{r['peak_memory_gb']:.2f} GB" if r["peak_memory_gb"] is not None else ""
    check = f"err {r['rel_err_vs_ref']:.1e}" if r["rel_err_vs_ref"] is not None else ""
    print(
        f"{where} {r['implementation']:28s} {r['images_per_s']:10.1f} img/s  {r['ms_per_step']:9.2f} ms  "
        f"MFU {100 * r['mfu']:5.1f}%  {memory} {check}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
