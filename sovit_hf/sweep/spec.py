"""What a sweep is: the shapes and lengths of its star and grid sweeps, how each run is trained, and presets.

Every field says whose choice it is: the paper's (SoViT App. B.2 / B.3, Table 5) or ours (the scale-down that lets
the loop run on a laptop CPU). See docs/sweep.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..scaling.laws import DIMENSIONS


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: star sweep (App. B.2), grid sweep (App. B.3), the trainer of each run and the validation stage.

    Args:
        center: star center x^(c) ``{"width", "depth", "mlp_dim"}``; every arm value is below it (App. B.2).
        star_grids: values of each star arm (exponentially spaced, large increments: App. B.3 rule 3).
        star_steps: training lengths of every star model (App. B.2 trains each at 3 lengths).
        include_center: also train the center (held out of the fit, Sec. 3 VI).
        grid: the grid sweep's values per dimension (about 20% increments, App. B.3 rule 3).
        grid_steps: training length of every grid model (App. B.3: one length, 600M examples in the paper).
        batch_size: examples per step (Table 5: 128).
        heads, patch_size, image_size: fixed across the sweep (App. B.2: 16 heads, patch 14).
        trainer: ``{"name": "classification" | "synthetic" | "module:function", ...options}``.
        validate_factor: held-out budget = this x the largest sweep compute (>= 4, ours).
        validate_seeds: seeds of every validation shape (>= 3, ours).
        star_seeds: seeds of every star row (ours; the paper trains one): two or more give the fit its noise model
            from the replicate spread (docs/scaling.md, "Identification").
        width_multiple: rounding step of widths and MLP dims of the validation shapes.
        fit_bootstrap: bootstrap replicates of the Eq. 2 fit.
        confidence: interval coverage of the fit (0.9).
        max_attempts: a crashed row is retried until it has failed this many times, then left failed.
    """

    center: dict[str, int]
    star_grids: dict[str, tuple[int, ...]]
    star_steps: tuple[int, ...]
    grid: dict[str, tuple[int, ...]]
    grid_steps: int
    batch_size: int
    heads: int
    patch_size: int
    image_size: int
    trainer: dict = field(default_factory=lambda: {"name": "classification"})
    include_center: bool = True
    validate_factor: float = 4.0
    validate_seeds: tuple[int, ...] = (0, 1, 2)
    star_seeds: tuple[int, ...] = (0,)
    width_multiple: int = 8
    fit_bootstrap: int = 200
    confidence: float = 0.9
    max_attempts: int = 2

    def __post_init__(self) -> None:
        for name in ("center", "grid"):
            missing = [k for k in DIMENSIONS if k not in getattr(self, name)]
            if missing:
                raise ValueError(f"SweepSpec.{name} is missing {missing}.")
        if self.validate_factor < 4:
            raise ValueError(
                f"validate_factor must be >= 4 (a held-out budget well past the sweep), got {self.validate_factor}."
            )
        if len(self.validate_seeds) < 3:
            raise ValueError(f"validate_seeds needs at least 3 seeds, got {list(self.validate_seeds)}.")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}.")
        if "name" not in self.trainer:
            raise ValueError(f"SweepSpec.trainer needs a 'name', got {self.trainer}.")
        check_field_types(self)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SweepSpec:
        """Inverse of :meth:`to_dict` (lists back to tuples)."""
        values = dict(values)
        values["star_grids"] = {k: tuple(v) for k, v in values["star_grids"].items()}
        values["grid"] = {k: tuple(v) for k, v in values["grid"].items()}
        values["star_steps"] = tuple(values["star_steps"])
        values["validate_seeds"] = tuple(values["validate_seeds"])
        values["star_seeds"] = tuple(values.get("star_seeds", (0,)))
        return cls(**values)


# Ours: the 2-CPU default. 16 px images in 4 px patches (16 tokens), 4 heads, batch 64, on the sweep's hard digits
# (sovit_hf.sweep.data, 12 distortions per digit: 17K training images, so that the longest star row sees
# under 3 epochs; Sec. 3 assumes unlimited data). Star and validation rows evaluate once at the end; grid rows 5 times
# (their curve of f against compute is what App. B.3 rule 2 reads). The lengths are long enough for the models to
# learn (f 0.4-0.8 over the sweep, not 0.67-0.86 as at 40-160 steps), and sized so that the loop (75 trainings) fits
# in an hour on 2 cores, the validation stage (12 rows at 4x the largest sweep compute) being half of it. The measured
# runs of this preset, and what extending its grid gave, are in docs/sweep.md.
CPU_TRAINER = {
    "name": "classification",
    "data": {"name": "hard_digits", "size": 16, "copies": 12, "noise": 0.35, "seed": 0},
    "learning_rate": 3e-3,
    "warmup_fraction": 0.1,
    "shots": 10,
    "probe_draws": 10,
    "curve_points": 1,
    "grid_curve_points": 5,
}

PRESETS: dict[str, dict] = {
    "cpu": dict(
        center={"width": 48, "depth": 6, "mlp_dim": 192},
        star_grids={"width": (8, 12, 20, 32), "depth": (1, 2, 3, 4), "mlp_dim": (12, 24, 48, 96)},
        star_steps=(200, 400, 800),
        include_center=False,
        grid={"width": (16, 24, 32), "depth": (2, 3, 4), "mlp_dim": (48, 64, 80)},
        grid_steps=400,
        batch_size=64,
        heads=4,
        patch_size=4,
        image_size=16,
        trainer=CPU_TRAINER,
    ),
    # A few seconds per row: the whole loop in CI (tests/sweep/test_sweep_micro.py).
    "micro": dict(
        center={"width": 16, "depth": 4, "mlp_dim": 32},
        star_grids={"width": (4, 8, 12), "depth": (1, 2, 3), "mlp_dim": (8, 16, 24)},
        star_steps=(2, 4, 8),
        include_center=False,
        grid={"width": (8, 12, 16), "depth": (1, 2, 3), "mlp_dim": (16, 24, 32)},
        grid_steps=6,
        batch_size=16,
        heads=4,
        patch_size=4,
        image_size=8,
        trainer={
            **CPU_TRAINER,
            "data": {"name": "hard_digits", "size": 8, "copies": 1, "noise": 0.35, "seed": 0},
            "probe_draws": 1,
            "curve_points": 1,
            "grid_curve_points": 2,
        },
        fit_bootstrap=20,
    ),
}


_POSITIVE_INTS = ("grid_steps", "batch_size", "heads", "patch_size", "image_size", "width_multiple", "max_attempts")


def _whole(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_field_types(spec: SweepSpec) -> None:
    """``ValueError`` naming the first field of a spec (from a plan file, ``--spec`` or ``--override``) that is not
    of its type: sizes and lengths are positive whole numbers, the trainer a JSON object, the confidence in (0, 1)."""
    for name in _POSITIVE_INTS:
        if not _whole(getattr(spec, name)):
            raise ValueError(f"SweepSpec.{name} must be a positive whole number, got {getattr(spec, name)!r}.")
    if not _whole(spec.fit_bootstrap, 0):
        raise ValueError(f"SweepSpec.fit_bootstrap must be a whole number >= 0, got {spec.fit_bootstrap!r}.")
    if not isinstance(spec.trainer, dict) or not isinstance(spec.trainer.get("name"), str):
        raise ValueError(f"SweepSpec.trainer must be an object with a string 'name', got {spec.trainer!r}.")
    values = {
        "center": list(spec.center.values()),
        "star_steps": list(spec.star_steps),
        "validate_seeds": list(spec.validate_seeds),
        "star_seeds": list(spec.star_seeds),
        **{f"star_grids.{k}": list(v) for k, v in spec.star_grids.items()},
        **{f"grid.{k}": list(v) for k, v in spec.grid.items()},
    }
    for name, items in values.items():
        low = 0 if name in ("validate_seeds", "star_seeds") else 1
        if not items or not all(_whole(v, low) for v in items):
            raise ValueError(f"SweepSpec.{name} must be whole numbers >= {low}, got {items!r}.")
    for name in ("validate_factor", "confidence"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError(f"SweepSpec.{name} must be a number, got {value!r}.")
    if not 0 < spec.confidence < 1:
        raise ValueError(f"SweepSpec.confidence must be in (0, 1), got {spec.confidence!r}.")


def preset(name: str, **overrides) -> SweepSpec:
    """A named :class:`SweepSpec` (``cpu`` or ``micro``) with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"Unknown sweep preset {name!r}; choose from {sorted(PRESETS)}.")
    return SweepSpec(**{**PRESETS[name], **overrides})
