"""A picture of one result file: per (model, mode, batch), every implementation's images/s relative to SigLIP sdpa
in the same run (1.0 = parity; the issue's targets are 1.25x inference / 1.2x training)."""

from __future__ import annotations

from pathlib import Path

from .readme_table import _table_groups


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
    partial = path.with_name(path.stem + ".partial.png")
    fig.savefig(partial, dpi=110)
    plt.close(fig)
    partial.replace(path)
    return path
