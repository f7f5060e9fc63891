"""The ``sovit`` commands and their one-line help: read by ``sovit --help`` (sovit_cli.py, without importing the
package) and by sovit_hf/cli.py. Standard library only, no imports at all."""

DESCRIPTION = "SoViT (shape-optimised ViT) tools."
# One line per command: the overview of `sovit --help` and each subcommand's help line in sovit_hf/cli.py.
COMMANDS = {
    "demo": "build a variant, then check a big_vision fixture against its outputs",
    "info": "shape, parameter count and checkpoint size of a variant (e.g. So400m/14)",
    "variants": "markdown table of all named variants",
    "shape": "compute-optimal SoViT shape for a training budget",
    "fit": "fit SoViT's shape law (Eq. 2) to a runs CSV",
    "sweep": "shape sweep: plan, run, fit and validate (presets: micro, cpu, ...)",
    "train": "train / fine-tune with the Trainer (default: the digits demo; --task captioning|vqa) [train] extra",
    "convert": "big_vision .npz -> SoViT folder",
    "convert-siglip": "transformers SigLIP folder -> SoViT folder (or load it directly: SoViTModel.from_pretrained)",
    "export": "SoViT folder -> big_vision .npz",
}
EPILOG = "`sovit COMMAND --help` shows a command's options. Extras: README, Install."
