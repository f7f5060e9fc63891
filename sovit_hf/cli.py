"""``sovit`` command line: ``sovit demo`` (the package's main job), ``sovit info VARIANT`` and the subcommands of
the converters, recipes and scaling helper. Nothing heavy is imported at module level: each command imports what it
runs (``sovit --help`` itself is answered by the standard library alone, in ``sovit_cli.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._commands import COMMANDS, DESCRIPTION, EPILOG

# A big_vision fixture of the repository (next to this package in a checkout; a wheel does not carry tests/).
DEFAULT_FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "big_vision" / "vit_map_unrolled.npz"
# Patch sizes the papers use with each name (SoViT paper Sec. 4.1, Scaling ViT Table 2, SigLIP checkpoints).
_PAPER_PATCH = {"So150m": 14, "So400m": 14, "H": 14, "g": 14, "G": 14, "e": 14}


def describe_variant(variant: str, image_size: int, pool_type: str = "map") -> dict:
    """Shape, parameter count and float32 / bfloat16 checkpoint size of a variant, built on the meta device."""
    import torch

    from .configuration_sovit import SoViTConfig, parse_variant
    from .modeling_sovit import SoViTModel

    shape, _ = parse_variant(variant)
    config = SoViTConfig.from_variant(variant, image_size=image_size, pool_type=pool_type)
    with torch.device("meta"):
        model = SoViTModel(config)
    params = sum(p.numel() for p in model.parameters())
    return dict(
        variant=variant,
        image_size=image_size,
        width=config.hidden_size,
        depth=config.num_hidden_layers,
        mlp_dim=config.intermediate_size,
        heads=config.num_attention_heads,
        head_dim=config.head_dim,
        patch=config.patch_size,
        tokens=config.grid_size**2,
        pool_type=pool_type,
        params=params,
        checkpoint_mb_fp32=params * 4 / 2**20,
        checkpoint_mb_bf16=params * 2 / 2**20,
        source=shape.source,
    )


def fixture_agreement(fixture: Path) -> dict[str, tuple[float, float]]:
    """Run a big_vision fixture through SoViT; ``{output: (max abs error, error / max |reference|)}``."""
    from .conversion.big_vision import load_big_vision, parity_errors

    model, _ = load_big_vision(fixture)
    return parity_errors(model, fixture.with_name(fixture.name.replace(".npz", ".ref.npz")))


def _demo(args: argparse.Namespace) -> int:
    info = describe_variant(args.variant, args.image_size)
    print(f"SoViT {info['variant']} @ {info['image_size']}px  ({info['source']})")
    print(
        f"  width {info['width']}, depth {info['depth']}, MLP {info['mlp_dim']}, heads {info['heads']} "
        f"(head_dim {info['head_dim']}), patch {info['patch']}, {info['tokens']} tokens, pool {info['pool_type']}"
    )
    print(f"  parameters: {info['params']:,}")
    print(
        f"  checkpoint size: {info['checkpoint_mb_fp32']:,.1f} MiB float32, "
        f"{info['checkpoint_mb_bf16']:,.1f} MiB bfloat16"
    )
    fixture = Path(args.fixture)
    if not fixture.is_file():
        print(f"big_vision fixture {fixture} not found (it ships with the repository, not the wheel: pass --fixture).")
        return 2
    print(f"big_vision fixture {fixture}: SoViT vs big_vision's own outputs (float32)")
    from .conversion.big_vision import PARITY_TOLERANCE

    ok = True
    for name, (err, rel) in fixture_agreement(fixture).items():
        passed = rel <= PARITY_TOLERANCE
        ok &= passed
        print(
            f"  {name:<11} max abs err {err:.2e}  relative {rel:.2e}  "
            f"{'OK' if passed else 'FAIL'} (<= {PARITY_TOLERANCE:g})"
        )
    return 0 if ok else 1


def variants_markdown(image_size: int = 224) -> str:
    """Markdown table of every named variant (default patch: 14 for the papers' /14 models, else 16)."""
    from .configuration_sovit import VARIANTS

    rows = [
        "| variant | width | depth | MLP | heads | head_dim | params (MAP head, 224 px) | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        info = describe_variant(f"{name}/{_PAPER_PATCH.get(name, 16)}", image_size)
        rows.append(
            f"| `{info['variant']}` | {info['width']} | {info['depth']} | {info['mlp_dim']} | {info['heads']} "
            f"| {info['head_dim']} | {info['params'] / 1e6:,.1f}M | {info['source']} |"
        )
    return "\n".join(rows)


def _variants(args: argparse.Namespace) -> int:
    print(variants_markdown(args.image_size))
    return 0


def with_patch(variant: str) -> tuple[str, str | None]:
    """``variant`` with a patch size, and a note when the name gave none: the papers' patch for their /14 models
    (SoViT paper Sec. 4.1, Scaling ViT Table 2), else big_vision's default 16."""
    if "/" in variant:
        return variant, None
    from .configuration_sovit import DEFAULT_VARIANT_PATCH

    if variant in _PAPER_PATCH:
        patch = _PAPER_PATCH[variant]
        return f"{variant}/{patch}", f"no patch size given: {variant}/{patch}, the papers' (e.g. {variant}/16 for 16)"
    return f"{variant}/{DEFAULT_VARIANT_PATCH}", f"no patch size given: {variant}/{DEFAULT_VARIANT_PATCH} (name one)"


def _info(args: argparse.Namespace) -> int:
    variant, note = with_patch(args.variant)
    if note:
        print(f"note: {note}")
    for key, value in describe_variant(variant, args.image_size, args.pool_type).items():
        print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
    return 0


# Subcommands that hand their arguments to a module's own command line.
_PASSTHROUGH = {
    "convert": "sovit_hf.conversion.big_vision",
    "convert-siglip": "sovit_hf.conversion.hf_siglip",
    "export": "sovit_hf.conversion.to_big_vision",
    "train": "sovit_hf.training.classification",
}


def _train_module(argv: list[str]) -> tuple[str, str, list[str]]:
    """``sovit train [--task classification|captioning|vqa|contrastive] ...``: the task, its recipe module and the
    remaining arguments."""
    from .training.tasks import TASK_MODULES

    rest, task, i = [], "classification", 0
    while i < len(argv):
        if argv[i] == "--task" and i + 1 < len(argv):
            task, i = argv[i + 1], i + 2
        elif argv[i].startswith("--task="):
            task, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    if task not in TASK_MODULES:
        raise SystemExit(f"sovit train: unknown --task {task!r}; choose from {', '.join(TASK_MODULES)}.")
    return task, TASK_MODULES[task], rest


def _passthrough(name: str, rest: list[str]) -> int:
    """Run a converter's or recipe's own ``main``, its usage lines saying ``sovit NAME`` (argparse takes the program
    name from ``sys.argv[0]``), after checking the command's extras."""
    import importlib

    from .extras import check_extras

    module, command = _PASSTHROUGH[name], name
    if name == "train":
        task, module, rest = _train_module(rest)
        command = f"train --task {task}"
    if name == "train" and {"-h", "--help"} & set(rest):  # a screenful: the recipe's own options
        from .training.tasks import recipe_help

        print(recipe_help(task), end="")
        raise SystemExit(0)  # as argparse's --help
    if name == "train" and "--help-trainer" in rest:  # every option, TrainingArguments' included
        rest = [arg if arg != "--help-trainer" else "--help" for arg in rest]
    elif not {"-h", "--help"} & set(rest):
        check_extras(command)
    argv0, sys.argv[0] = sys.argv[0], f"sovit {command}"
    try:
        return importlib.import_module(module).main(rest)
    finally:
        sys.argv[0] = argv0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sovit", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    demo = sub.add_parser("demo", help=COMMANDS["demo"], description=COMMANDS["demo"])
    demo.add_argument("--variant", default="So400m/14")
    demo.add_argument("--image-size", type=int, default=224)
    demo.add_argument("--fixture", default=str(DEFAULT_FIXTURE))
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help=COMMANDS["info"], description=COMMANDS["info"])
    info.add_argument("variant", help="e.g. So400m/14; without /PATCH: the papers' patch (14 for So400m), else 16")
    info.add_argument("--image-size", type=int, default=224)
    info.add_argument("--pool-type", default="map")
    info.set_defaults(func=_info)
    table = sub.add_parser("variants", help=COMMANDS["variants"], description=COMMANDS["variants"])
    table.add_argument("--image-size", type=int, default=224)
    table.set_defaults(func=_variants)
    from .scaling.cli import add_scaling_commands  # sovit shape / sovit fit

    add_scaling_commands(sub)
    from .sweep.cli import add_sweep_command  # sovit sweep plan|run|fit|validate|all

    add_sweep_command(sub)
    for name in _PASSTHROUGH:
        sub.add_parser(name, help=COMMANDS[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sweep" and getattr(args, "sweep_command", None) in ("run", "all", "validate"):
        from .extras import check_extras

        check_extras("sweep")
    try:
        return args.func(args)
    except ValueError as err:
        parser.error(str(err))
    except OSError as err:  # a missing, unreadable or unwritable file: one line naming it, no traceback
        parser.error(f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""))


if __name__ == "__main__":
    sys.exit(main())
