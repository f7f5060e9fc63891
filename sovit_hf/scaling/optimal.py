"""Compute-optimal SoViT shapes: SoViT's joint scaling rule (Sec. 3 "Scaling") with published or fitted exponents.

The rule. The grid sweep gives a small compute-optimal anchor x^(0) at compute t^(0); the star sweep gives the
exponents s_k of x_k^* = O(t^{s_k}) (Eq. 4). To scale compute by tau = t / t^(0), SoViT splits tau into D
sub-increments tau^{w_k} with sum_k w_k = 1 and uses w_k = 1/D (Sec. 3). We read this as

    x_k(t) = x_k^(0) * tau^{w_k * s_k}        (default w_k = 1/3)

i.e. the share tau^{w_k} of the compute increase is spent on dimension k, which moves along its own law
x_k ~ t^{s_k}. The paper's wording ("increases by a factor of tau^{w_k}") can also be read as x_k = x_k^(0) tau^{w_k},
which ignores s_k, or as x_k ~ tau^{s_k} per dimension. Only the first reading agrees with the paper's own summary:
with s = (0.22, 0.45, 0.6), 10x compute gives about 2.3x-2.4x parameters ("about 2.5x parameters per 10x compute",
Sec. 4.1 II), whereas x_k ~ tau^{s_k} gives about 12x (more than the compute). See docs/scaling.md.

t^(0) is not published (SoViT Sec. 3 and App. B.3 give no value). The default is the compute of training the anchor
(608, 10, 928) for the grid sweep's 600M examples (App. B.3) at 224 px with patch 14 and a MAP head: an upper bound,
since rule 2 of App. B.3 takes the smallest compute at which the anchor is optimal. Pass ``t0`` to override it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..configuration_sovit import SoViTConfig
from .flops import count_flops, count_params, shape_flops, shape_params
from .laws import DIMENSIONS, ShapeLaw
from .paper import (  # re-exported: the names this module has always offered
    PAPER_ANCHOR,
    PAPER_EXPONENTS,
    PAPER_GRID_EXAMPLES,
    PAPER_HEADS,
    PAPER_IMAGE_SIZE,
    PAPER_PATCH_SIZE,
    TASKS,
)

PAPER_GRID_SWEEP_EXAMPLES = PAPER_GRID_EXAMPLES  # the name this module used before sovit_hf.scaling.paper


def paper_t0() -> float:
    """Default t^(0) in GFLOPs: the anchor x^(0) = (608, 10, 928), patch 14, MAP head, 224 px, trained on the grid
    sweep's 600M examples (SoViT App. B.3). The paper does not publish t^(0); this is an upper bound."""
    anchor = PAPER_ANCHOR
    per_image = shape_flops(anchor["width"], anchor["depth"], anchor["mlp_dim"], PAPER_PATCH_SIZE, PAPER_IMAGE_SIZE)
    return per_image * PAPER_GRID_EXAMPLES


@dataclass(frozen=True)
class ScalingRule:
    """SoViT's joint scaling rule x_k(t) = x_k^(0) (t / t^(0))^{w_k s_k} (Sec. 3 "Scaling"; see module docstring).

    Args:
        exponents: s_k per dimension (``width``, ``depth``, ``mlp_dim``), Eq. 4.
        anchor: x^(0) per dimension, the small compute-optimal shape of the grid sweep.
        t0: t^(0), the compute (GFLOPs) at which ``anchor`` is optimal.
        weights: w_k per dimension, summing to 1 (the paper uses 1/D).
        source: where the exponents and anchor come from (printed by the CLI).
    """

    exponents: Mapping[str, float]
    anchor: Mapping[str, float]
    t0: float
    weights: Mapping[str, float] = field(default_factory=lambda: {k: 1.0 / len(DIMENSIONS) for k in DIMENSIONS})
    source: str = ""

    def __post_init__(self) -> None:
        for name, table in (("exponents", self.exponents), ("anchor", self.anchor), ("weights", self.weights)):
            missing = [k for k in DIMENSIONS if k not in table]
            if missing:
                raise ValueError(f"ScalingRule.{name} is missing {missing}; expected keys {DIMENSIONS}.")
            if any(not (math.isfinite(table[k]) and table[k] > 0) for k in DIMENSIONS):
                raise ValueError(f"ScalingRule.{name} must be finite and > 0, got {dict(table)}.")
        if not math.isclose(sum(self.weights[k] for k in DIMENSIONS), 1.0, rel_tol=1e-9):
            raise ValueError(f"ScalingRule.weights must sum to 1, got {dict(self.weights)}.")
        if not (math.isfinite(self.t0) and self.t0 > 0):
            raise ValueError(f"ScalingRule.t0 must be > 0, got {self.t0}.")

    @classmethod
    def paper(cls, task: str = "classification", t0: float | None = None) -> ScalingRule:
        """The published exponents (SoViT Sec. 4.1 / 4.2) with the anchor (608, 10, 928) (Sec. 4.1, App. B.3).

        Args:
            task: ``classification`` (0.22 / 0.45 / 0.6) or ``image_to_text`` (0.25 / 0.49 / 0.62).
            t0: t^(0) in GFLOPs; default :func:`paper_t0`.
        """
        if task not in PAPER_EXPONENTS:
            raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")
        section = "4.1" if task == "classification" else "4.2"
        return cls(
            exponents=PAPER_EXPONENTS[task],
            anchor=PAPER_ANCHOR,
            t0=paper_t0() if t0 is None else t0,
            source=f"SoViT (arXiv 2305.13035) Sec. {section} exponents, anchor (608, 10, 928) of Sec. 4.1",
        )

    @classmethod
    def from_laws(
        cls,
        laws: Mapping[str, ShapeLaw],
        anchor: Mapping[str, float] | None = None,
        t0: float | None = None,
        source: str = "fitted laws",
    ) -> ScalingRule:
        """A rule with the exponents s_k of fitted laws (Eq. 4), and an anchor (else the paper's, Sec. 4.1).

        Args:
            laws: ``{dimension: ShapeLaw}`` for width, depth and mlp_dim (e.g. ``{k: fit.law for k, fit in ...}``).
            anchor: ``{"width", "depth", "mlp_dim", "t0"}`` of your own grid sweep, or None for the paper's.
            t0: override t^(0) in GFLOPs.
            source: provenance shown by the CLI.
        """
        missing = [k for k in DIMENSIONS if k not in laws]
        if missing:
            raise ValueError(f"No fitted law for {missing}; a scaling rule needs all of {DIMENSIONS}.")
        exponents = {k: laws[k].exponent for k in DIMENSIONS}
        if anchor is None:
            return replace(cls.paper(t0=t0), exponents=exponents, source=f"{source}; paper anchor (608, 10, 928)")
        return cls(
            exponents=exponents,
            anchor={k: float(anchor[k]) for k in DIMENSIONS},
            t0=float(anchor["t0"]) if t0 is None else t0,
            source=f"{source}; own anchor",
        )

    @classmethod
    def from_json(
        cls, path: str | Path, t0: float | None = None, fill_missing: str = "refuse", task: str = "classification"
    ) -> ScalingRule:
        """A rule from a law file written by ``sovit fit`` or ``sovit sweep fit``: s_k of each identified law, and
        the file's anchor if it has one, else the paper's.

        A law file carries only the exponents its sweep identified (:mod:`~sovit_hf.scaling.identification`); its
        ``not_identified`` section says why the others are missing. Such a file is refused, unless ``fill_missing``
        is ``"paper"``: then the paper's s_k (Sec. 4.1 / 4.2, ``task``) stands in for each missing one, and
        ``source`` says so.

        Args:
            path: the JSON law file.
            t0: override t^(0) in GFLOPs.
            fill_missing: ``"refuse"`` (ValueError naming the missing exponents and why) or ``"paper"``.
            task: whose published exponents fill in (``classification`` or ``image_to_text``).
        """
        import json

        from .files import load_shape_laws

        if fill_missing not in ("refuse", "paper"):
            raise ValueError(f"fill_missing must be 'refuse' or 'paper', got {fill_missing!r}.")
        laws, anchor = load_shape_laws(path)
        missing = [k for k in DIMENSIONS if k not in laws]
        if not missing:
            return cls.from_laws(laws, anchor, t0, source=f"fitted exponents from {path}")
        reasons = json.loads(Path(path).read_text()).get("not_identified") or {}
        why = "; ".join(f"s_{k}: {reasons.get(k, {}).get('reason', 'no law in the file')}" for k in missing)
        if fill_missing == "refuse":
            raise ValueError(
                f"{path} has no identified exponent for {missing} ({why}). Pass fill_missing='paper' "
                "(`sovit shape --fill-paper-exponents`) to use the paper's value for them, or extend the sweep."
            )
        if task not in PAPER_EXPONENTS:
            raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")
        exponents = {k: laws[k].exponent if k in laws else PAPER_EXPONENTS[task][k] for k in DIMENSIONS}
        filled = ", ".join(f"s_{k} = {PAPER_EXPONENTS[task][k]:g}" for k in missing)
        source = f"fitted exponents from {path}, with the paper's {filled} (not identified by the sweep)"
        if anchor is None:
            return replace(cls.paper(task, t0=t0), exponents=exponents, source=f"{source}; paper anchor")
        return cls(
            exponents=exponents,
            anchor={k: float(anchor[k]) for k in DIMENSIONS},
            t0=float(anchor["t0"]) if t0 is None else t0,
            source=f"{source}; own anchor",
        )

    @classmethod
    def through(
        cls,
        shape: Mapping[str, float],
        gflops: float,
        exponents: Mapping[str, float] | None = None,
        anchor: Mapping[str, float] | None = None,
    ) -> ScalingRule:
        """The rule with the given exponents and anchor (default: the paper's, Sec. 4.1) whose shape at ``gflops``
        is exactly ``shape``: the one t^(0) and weights w_k (sum 1) that the rule leaves free.

        From x_k = x_k^(0) tau^{w_k s_k}: w_k s_k ln tau = ln(x_k / x_k^(0)) =: L_k, and sum_k w_k = 1 gives
        ln tau = sum_k L_k / s_k, w_k = L_k / (s_k ln tau), t^(0) = gflops / tau. For SoViT-400m/14 (1152, 27,
        4304) at the paper's 9e12 GFLOPs this is t^(0) = 4.2e9 GFLOPs and w = (0.38, 0.29, 0.33) (docs/scaling.md).

        Args:
            shape: the target ``{"width", "depth", "mlp_dim"}`` (each larger than the anchor's).
            gflops: the budget t at which the rule must give ``shape``.
            exponents: s_k; default the paper's classification exponents.
            anchor: x^(0); default the paper's (608, 10, 928).
        """
        exponents = dict(PAPER_EXPONENTS["classification"] if exponents is None else exponents)
        anchor = dict(PAPER_ANCHOR if anchor is None else anchor)
        logs = {k: math.log(shape[k] / anchor[k]) for k in DIMENSIONS}
        if any(v <= 0 for v in logs.values()):
            raise ValueError(f"every dimension of {dict(shape)} must exceed the anchor's {anchor}.")
        log_tau = sum(logs[k] / exponents[k] for k in DIMENSIONS)
        weights = {k: logs[k] / (exponents[k] * log_tau) for k in DIMENSIONS}
        return cls(
            exponents=exponents,
            anchor=anchor,
            t0=gflops / math.exp(log_tau),
            weights=weights,
            source=f"the rule through {dict(shape)} at {gflops:.4g} GFLOPs (t0 and weights solved for)",
        )

    def shape(self, gflops: float) -> dict[str, float]:
        """Unrounded x_k(t) = x_k^(0) (t / t^(0))^{w_k s_k} for a training budget t.

        Args:
            gflops: training compute t in GFLOPs (forward GFLOPs per image x examples seen).
        """
        if not (math.isfinite(gflops) and gflops > 0):
            raise ValueError(f"The compute budget must be a positive number of GFLOPs, got {gflops}.")
        tau = gflops / self.t0
        return {k: self.anchor[k] * tau ** (self.weights[k] * self.exponents[k]) for k in DIMENSIONS}


@dataclass(frozen=True)
class OptimalShape:
    """A compute-optimal shape for a budget: unrounded, rounded, and what the rounded one costs.

    Args:
        budget_gflops: requested training compute t (GFLOPs).
        exact: unrounded (width, depth, mlp_dim) of the rule.
        config: the rounded shape as a ``SoViTConfig``.
        gflops_per_image: forward GFLOPs per image of the rounded shape at ``config.image_size``.
        exact_gflops_per_image: the same for the unrounded shape (continuous formula).
        examples: training examples that spend the budget on the rounded shape (budget / gflops_per_image).
        params: parameters of the rounded ``SoViTModel``.
        rule: the scaling rule used.
    """

    budget_gflops: float
    exact: dict[str, float]
    config: SoViTConfig
    gflops_per_image: float
    exact_gflops_per_image: float
    examples: float
    params: int
    rule: ScalingRule

    @property
    def rounding_change(self) -> float:
        """Relative change of per-image GFLOPs caused by rounding (rounded / unrounded - 1)."""
        return self.gflops_per_image / self.exact_gflops_per_image - 1.0

    def summary(self) -> str:
        """Human-readable lines (the CLI prints these)."""
        c = self.config
        e = self.exact
        return "\n".join(
            [
                f"budget t = {self.budget_gflops:.4g} GFLOPs (forward GFLOPs/image x examples)",
                f"  unrounded: width {e['width']:.1f}, depth {e['depth']:.2f}, mlp_dim {e['mlp_dim']:.1f}",
                f"  shape:     width {c.hidden_size}, depth {c.num_hidden_layers}, mlp_dim {c.intermediate_size}, "
                f"heads {c.num_attention_heads} (head_dim {c.head_dim}), patch {c.patch_size}",
                f"  params:    {self.params / 1e6:.1f}M (SoViTModel, pool {c.pool_type})",
                f"  GFLOPs/image @{c.image_size}px: {self.gflops_per_image:.2f} "
                f"(unrounded {self.exact_gflops_per_image:.2f}, rounding {100 * self.rounding_change:+.2f}%)",
                f"  examples:  {self.examples:.4g} (budget / rounded GFLOPs per image)",
                f"  law:       {self.rule.source}; s = "
                + ", ".join(f"{k} {self.rule.exponents[k]:.3g}" for k in DIMENSIONS)
                + f"; t0 = {self.rule.t0:.4g} GFLOPs",
            ]
        )


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def _resolve_rule(law: str | Path | ScalingRule, task: str, t0: float | None, fill_missing: str) -> ScalingRule:
    if isinstance(law, ScalingRule):
        return law if t0 is None else replace(law, t0=t0)
    if law == "paper":
        return ScalingRule.paper(task, t0=t0)
    path = Path(law)
    if not path.is_file():
        raise ValueError(f"law must be 'paper', a ScalingRule or a path to a law JSON file; {law!r} is none.")
    return ScalingRule.from_json(path, t0=t0, fill_missing=fill_missing, task=task)


def compute_optimal_shape(
    gflops: float,
    task: str = "classification",
    law: str | Path | ScalingRule = "paper",
    heads: int = PAPER_HEADS,
    multiple_of: int = 16,
    patch_size: int = PAPER_PATCH_SIZE,
    image_size: int = PAPER_IMAGE_SIZE,
    pool_type: str = "map",
    t0: float | None = None,
    fill_missing: str = "refuse",
    **config_overrides,
) -> OptimalShape:
    """The compute-optimal shape for a training budget, rounded to a valid config, with its cost.

    Rounding: width to the nearest multiple of lcm(heads, multiple_of) (so that it divides into ``heads``),
    MLP dim to the nearest multiple of ``multiple_of``, depth to the nearest integer (all at least one step).
    Every width and MLP value of the paper's sweeps and models is a multiple of 16 (SoViT Sec. 4.1 and App. B:
    608, ..., 1648, 1152, 2320, 4304).

    Args:
        gflops: training compute t in GFLOPs (forward GFLOPs per image x examples), e.g. 9e12 for SoViT-400m.
        task: ``classification`` or ``image_to_text`` (for ``law="paper"``).
        law: ``"paper"``, a :class:`ScalingRule`, or a path to a law JSON file written by ``sovit fit``.
        heads: attention heads of the config.
        multiple_of: rounding step for width and MLP dim.
        patch_size: patch size of the config (the law was measured at 14).
        image_size: resolution of the config and of the GFLOPs per image reported.
        pool_type: pooling of the config (the papers use ``map``).
        t0: override t^(0) in GFLOPs.
        fill_missing: for a law file that lacks an exponent its sweep did not identify: ``"refuse"`` (ValueError,
            the default) or ``"paper"`` (the paper's s_k stands in, and the rule's ``source`` says so).
        **config_overrides: further ``SoViTConfig`` fields (e.g. ``num_labels``).
    """
    if heads < 1 or multiple_of < 1:
        raise ValueError(f"heads and multiple_of must be >= 1, got {heads} and {multiple_of}.")
    rule = _resolve_rule(law, task, t0, fill_missing)
    exact = rule.shape(gflops)
    width_step = math.lcm(heads, multiple_of)
    config = SoViTConfig(
        hidden_size=_round_to(exact["width"], width_step),
        num_hidden_layers=max(1, round(exact["depth"])),
        intermediate_size=_round_to(exact["mlp_dim"], multiple_of),
        num_attention_heads=heads,
        patch_size=patch_size,
        image_size=image_size,
        pool_type=pool_type,
        **config_overrides,
    )
    per_image = count_flops(config)
    exact_per_image = shape_flops(
        exact["width"], exact["depth"], exact["mlp_dim"], patch_size, image_size, pool_type, config.num_channels
    )
    return OptimalShape(
        budget_gflops=float(gflops),
        exact=exact,
        config=config,
        gflops_per_image=per_image,
        exact_gflops_per_image=exact_per_image,
        examples=gflops / per_image,
        params=count_params(config),
        rule=rule,
    )


# compute_optimal_shape's leading arguments, in the same order (this returns its config): a drop-in signature.
def compute_optimal_config(
    gflops: float,
    task: str = "classification",
    law: str | Path | ScalingRule = "paper",
    heads: int = PAPER_HEADS,
    multiple_of: int = 16,
    **kwargs,
) -> SoViTConfig:
    """The compute-optimal ``SoViTConfig`` for a training budget (see :func:`compute_optimal_shape`, which also
    reports the rounded shape's GFLOPs next to the budget).

    Args:
        gflops: training compute t in GFLOPs (forward GFLOPs per image x examples seen).
        task: ``classification`` or ``image_to_text`` (for ``law="paper"``).
        law: ``"paper"``, a :class:`ScalingRule`, or a path to a law JSON file written by ``sovit fit``.
        heads: attention heads; the width is rounded to a multiple of it.
        multiple_of: rounding step for width and MLP dim.
        **kwargs: ``patch_size``, ``image_size``, ``pool_type``, ``t0``, ``fill_missing`` or other ``SoViTConfig``
            fields.
    """
    return compute_optimal_shape(gflops, task, law, heads, multiple_of, **kwargs).config


def variant_budget(variant: str, examples: float, image_size: int = PAPER_IMAGE_SIZE) -> float:
    """Training compute (GFLOPs) of a named variant trained on ``examples`` images, e.g. So400m/14 x 40B ~ 9e12.

    Args:
        variant: big_vision variant string such as ``"So400m/14"``.
        examples: examples seen.
        image_size: training resolution (the papers count 224 px).
    """
    if not (math.isfinite(examples) and examples > 0):
        raise ValueError(f"examples must be positive, got {examples}.")
    return count_flops(SoViTConfig.from_variant(variant, image_size=image_size)) * examples


def parameter_growth(rule: ScalingRule, gflops: float, factor: float = 10.0) -> float:
    """Parameter ratio of the unrounded optimal shapes at ``factor * gflops`` and ``gflops`` (Sec. 4.1 II says
    about 2.5x per 10x compute).

    Args:
        rule: the scaling rule.
        gflops: the reference budget in GFLOPs.
        factor: compute multiplier.
    """
    small, large = rule.shape(gflops), rule.shape(gflops * factor)
    return shape_params(**large) / shape_params(**small)


__all__ = [
    "DIMENSIONS",
    "PAPER_ANCHOR",
    "PAPER_EXPONENTS",
    "OptimalShape",
    "ScalingRule",
    "compute_optimal_config",
    "compute_optimal_shape",
    "paper_t0",
    "parameter_growth",
    "variant_budget",
]
