"""big_vision's optimizers as ``torch.optim.Optimizer`` subclasses, with its global-norm clipping and decoupled decay.

``big_vision.optax.make`` (big_vision/optax.py @0127fb6) chains, for every parameter ``θ`` with gradient ``g``::

    g ← clip_by_global_norm(g, grad_clip_norm)        # over *all* parameters
    u ← optimizer(g)                                  # scale_by_adafactor / momentum_hp
    Δ ← -schedule(t) · (lr · u + wd · mult · θ)       # ×lr, +add_decayed_weights, ×scale_by_schedule, ×(-1)

The optimizers here do the same in one ``step()``, with the schedule folded into each group's ``lr`` by ``LambdaLR``
(``lr_t = lr · schedule(t)``) and the decay written relative to the learning rate, as ``torch.optim.AdamW`` does::

    θ ← θ - lr_t · (u + weight_decay · θ)             # weight_decay = wd · mult / lr

So ``weight_decay`` is the papers' number directly: 0.03 for the body and 3.0 for the head ("Scaling Vision
Transformers", arXiv 2106.04560, Sec. 3.1 and App. B; big_vision ``configs/proj/scaling_laws/train_vit_g.py``:
``wd = 0.03 * lr`` with ``wd_mults = [('.*head/kernel', 100.0), ('.*/kernel', 1.0)]``); see ``param_groups.py`` for
the per-parameter multipliers. The decay follows the schedule but not the peak ``lr``, exactly as in big_vision.

Global-norm clipping happens inside ``step()`` over every parameter of the optimizer (``max_grad_norm``, default 1.0:
"Scaling Vision Transformers" App. B, SoViT Tables 5 and 8). When training with ``Trainer``, set
``TrainingArguments(max_grad_norm=0.0)`` so that the gradients are not clipped twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

ParamsT = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _dtype(name: str | torch.dtype) -> torch.dtype:
    """Optimizer settings keep dtypes as strings so that state dicts load with ``torch.load(weights_only=True)``."""
    return name if isinstance(name, torch.dtype) else getattr(torch, name)


def _dtype_name(dtype: str | torch.dtype) -> str:
    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype


# --------------------------------------------------------------------------------------------------------- clipping


def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum_i ||t_i||^2)`` in float32 (``optax.tree.norm``), on the first tensor's device."""
    device = tensors[0].device
    norms = [torch.linalg.vector_norm(t, dtype=torch.float32).to(device) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms))


def _clip_factors(norm: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(denominator, multiplier)`` such that ``g / denominator * multiplier`` is optax's ``clip_by_global_norm``:
    ``g`` if ``norm < max_norm`` else ``(g / norm) * max_norm`` (optax/transforms/_clipping.py). Tensors, so that no
    host synchronisation is needed (and meta tensors work)."""
    keep = norm < max_norm
    return torch.where(keep, 1.0, norm), torch.where(keep, 1.0, torch.full_like(norm, max_norm))


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the gradients of ``parameters`` in place to global norm ``max_norm``, the way optax/big_vision does.

    Same as ``torch.nn.utils.clip_grad_norm_`` up to its ``1e-6`` in ``max_norm / (norm + 1e-6)``: optax has no
    epsilon and leaves gradients untouched (bit for bit) when ``norm < max_norm``.

    Args:
        parameters: tensors whose ``.grad`` is clipped (those without a gradient are skipped).
        max_norm: the largest global norm allowed.

    Returns:
        The global norm before clipping (a float32 scalar tensor).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = global_norm(grads)
    denominator, multiplier = _clip_factors(norm, max_norm)
    for grad in grads:
        grad.div_(denominator.to(grad.device)).mul_(multiplier.to(grad.device))
    return norm


class _ClippedOptimizer(Optimizer):
    """Shared ``step()``: global-norm clipping over all groups, then ``_update`` per parameter."""

    max_grad_norm: float | None
    last_grad_norm: torch.Tensor | None = None  # global norm before clipping at the last step (when clipping)
    _momentum_key = ""  # the state entry kept in `momentum_dtype`

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One optimizer step; ``closure`` re-evaluates the model and returns the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return loss
        if any(g.is_sparse for g in grads):
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients.")
        factors = None
        if self.max_grad_norm:
            self.last_grad_norm = global_norm(grads)  # for logging; the pre-clip norm, as Trainer reports it
            factors = _clip_factors(self.last_grad_norm, self.max_grad_norm)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if factors is not None:  # (g / norm) * max_norm, optax's order; a copy, .grad stays as it was
                    grad = grad.div(factors[0].to(grad.device)).mul_(factors[1].to(grad.device))
                update = self._update(param, grad, group)
                # θ ← θ - lr_t (u + wd θ) = big_vision's θ - sched (lr u + wd_bv θ), wd_bv = lr · wd (mult included).
                if group["weight_decay"]:
                    update.add_(param, alpha=group["weight_decay"])
                param.add_(update, alpha=-group["lr"])
        return loss

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """The update ``u`` of one parameter (a tensor the caller may modify), before ``lr`` and weight decay."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``Optimizer.load_state_dict`` casts every floating-point state to the parameter's dtype; put the momentum
        back into ``momentum_dtype`` (bfloat16 → float32 → bfloat16 is lossless)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param, {})
                if self._momentum_key in state:
                    state[self._momentum_key] = state[self._momentum_key].to(_dtype(group["momentum_dtype"]))


def _decay_momentum(buffer: torch.Tensor, momentum: float) -> torch.Tensor:
    """``momentum * buffer`` as JAX computes it: a Python float times a bfloat16 array is a *bfloat16* multiply, so the
    carried state is scaled by bf16(0.9) = 0.8984375 and rounded to bfloat16 (optax ``ema`` with a bfloat16
    accumulator, as big_vision's ``scale_by_adafactor`` sets it; checked against ``optimizer_trajectory.npz``). For a
    float32 buffer this is the ordinary product."""
    return buffer * torch.tensor(momentum, dtype=buffer.dtype)


# --------------------------------------------------------------------------------------------------------- Adafactor


def factored_dims(shape: Sequence[int], min_dim_size_to_factor: int = 32) -> tuple[int, int] | None:
    """``(d1, d0)``: the second largest and the largest axis of ``shape``, or ``None`` if the second largest is smaller
    than ``min_dim_size_to_factor`` or ``shape`` has fewer than two axes (optax ``_factored_dims``,
    optax/_src/factorized.py). Ties go to the later axis (a stable sort, as numpy's argsort is for short arrays).

    A 3-D big_vision attention kernel ``[width, heads, head_dim]`` is thus factored over width and head_dim with
    the heads kept, not as a ``(width, width)`` matrix.
    """
    if len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda axis: shape[axis])
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return order[-2], order[-1]


class Adafactor(_ClippedOptimizer):
    r"""The modified Adafactor of "Scaling Vision Transformers" (arXiv 2106.04560, Sec. 3.4, App. B), exactly as
    big_vision's ``scale_by_adafactor`` (big_vision/optax.py @0127fb6) with optax's ``scale_by_factored_rms``.

    Per parameter, at step ``t`` (0 for the first update), with ``g`` the clipped gradient:

    * second moment, decay ``β2_t = min(β2_cap, 1 - (t + 1)^-decay_rate)`` (0 at the first step, capped at 0.999
      like Adam's β2: the paper's change 3); ``g² + eps`` with ``eps = 1e-30``;
    * factored (rank 1, Shazeer & Stern 2018) when the two largest axes ``d0 >= d1`` of the parameter (or of its
      ``factor_shape``) have at least ``min_dim_size_to_factor = 32`` entries: ``r = EMA(mean_{d0} g²)``,
      ``c = EMA(mean_{d1} g²)``, ``u = g / sqrt(r / mean(r)) / sqrt(c)``; otherwise ``v = EMA(g²)``, ``u = g/sqrt(v)``;
    * first moment (the paper's change 1) ``m = (1 - 0.9) u + 0.9 m_prev`` without bias correction, stored in
      ``momentum_dtype`` (bfloat16); the update uses the float32 value, only the carried state is rounded, and
      ``0.9 m_prev`` is itself a bfloat16 product as in JAX;
    * no parameter-scale, relative-step or update-clipping terms (change 2; big_vision's ``clipping_threshold=None``);
    * ``θ ← θ - lr (m + weight_decay θ)``, after global-norm clipping of all gradients to ``max_grad_norm``.

    State per parameter: ``step`` (int), ``exp_avg`` (the momentum, ``momentum_dtype``), and either
    ``exp_avg_sq_row`` (reduced over ``d0``; optax ``v_row``) and ``exp_avg_sq_col`` (reduced over ``d1``; optax
    ``v_col``) or ``exp_avg_sq``, in the parameter's dtype.

    Args:
        params: parameters or param groups (see ``param_groups.param_groups``); groups may override any default.
        lr: peak learning rate (8e-4: SoViT Table 5, big_vision ``train_vit_g.py``); ``LambdaLR`` scales it.
        weight_decay: decoupled decay relative to ``lr`` (0.03 body, 3.0 head: "Scaling ViT" App. B).
        momentum: first-moment decay β1 (0.9, App. B); ``None`` or 0 disables it.
        momentum_dtype: storage dtype of the first moment (``"bfloat16"``: Sec. 3.4 half-precision momentum).
        decay_rate: exponent of the second-moment decay schedule (0.8, Adafactor's default, big_vision).
        decay_offset: optax ``step_offset``: the step at which the β2 schedule restarts (e.g. for fine-tuning).
        beta2_cap: cap on β2 (0.999: "clipped at 0.999", Sec. 3.4).
        min_dim_size_to_factor: factor only if the second largest axis has at least this many entries (32,
            big_vision ``min_dim_size_to_factor``).
        eps: added to ``g²`` (1e-30, big_vision).
        max_grad_norm: global-norm clip over all parameters (1.0, App. B); ``None`` or 0 disables it.
        factor_shape: a shape to view each parameter of a group as when computing the second moment, so that a
            torch ``(heads * head_dim, width)`` projection is factored like big_vision's 3-D ``[width, heads,
            head_dim]`` kernel; ``None`` uses the parameter's own shape. Usually set per group by ``param_groups``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 8e-4,
        *,
        weight_decay: float = 0.0,
        momentum: float | None = 0.9,
        momentum_dtype: str | torch.dtype = "bfloat16",
        decay_rate: float = 0.8,
        decay_offset: int = 0,
        beta2_cap: float = 0.999,
        min_dim_size_to_factor: int = 32,
        eps: float = 1e-30,
        max_grad_norm: float | None = 1.0,
        factor_shape: Sequence[int] | None = None,
    ):
        if lr < 0 or weight_decay < 0 or (momentum is not None and not 0.0 <= momentum < 1.0):
            raise ValueError(f"Invalid lr={lr}, weight_decay={weight_decay} or momentum={momentum}.")
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            momentum_dtype=_dtype_name(momentum_dtype),
            decay_rate=decay_rate,
            decay_offset=decay_offset,
            beta2_cap=beta2_cap,
            min_dim_size_to_factor=min_dim_size_to_factor,
            eps=eps,
            factor_shape=None if factor_shape is None else tuple(factor_shape),
        )
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm

    _momentum_key = "exp_avg"

    @staticmethod
    def _beta2(step: int, group: dict[str, Any]) -> tuple[float, float]:
        """``(β2_t, 1 - β2_t)`` computed in float32 as big_vision's ``_decay_rate_pow`` (and optax) do."""
        t = torch.tensor(float(step - group["decay_offset"]), dtype=torch.float32) + 1.0
        beta2 = torch.minimum(torch.tensor(group["beta2_cap"], dtype=torch.float32), 1.0 - t ** -group["decay_rate"])
        return beta2.item(), (1.0 - beta2).item()

    def _init_state(self, param: torch.Tensor, shape: Sequence[int], group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[param]
        state["step"] = 0
        dims = factored_dims(shape, group["min_dim_size_to_factor"])
        zeros = dict(dtype=param.dtype, device=param.device)
        if dims is not None:
            d1, d0 = dims
            state["exp_avg_sq_row"] = torch.zeros([n for i, n in enumerate(shape) if i != d0], **zeros)
            state["exp_avg_sq_col"] = torch.zeros([n for i, n in enumerate(shape) if i != d1], **zeros)
        else:
            state["exp_avg_sq"] = torch.zeros_like(param)
        if group["momentum"]:
            state["exp_avg"] = torch.zeros_like(param, dtype=_dtype(group["momentum_dtype"]))
        return state

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        shape = tuple(group["factor_shape"] or param.shape)
        if math.prod(shape) != param.numel():
            raise ValueError(f"factor_shape {shape} does not fit a parameter of shape {tuple(param.shape)}.")
        state = self.state[param] or self._init_state(param, shape, group)
        beta2, one_minus_beta2 = self._beta2(state["step"], group)
        state["step"] += 1

        dims = factored_dims(shape, group["min_dim_size_to_factor"])
        grad_sqr = grad * grad + group["eps"]
        if dims is not None:
            d1, d0 = dims
            grad, grad_sqr = grad.reshape(shape), grad_sqr.reshape(shape)  # the factoring view, e.g. (H, D, W)
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2).add_(grad_sqr.mean(dim=d0).mul_(one_minus_beta2))  # shape without d0
            col.mul_(beta2).add_(grad_sqr.mean(dim=d1).mul_(one_minus_beta2))  # shape without d1
            reduced_d1 = d1 - 1 if d1 > d0 else d1  # d1's index in `row`
            row_factor = (row / row.mean(dim=reduced_d1, keepdim=True)).rsqrt_()
            update = (grad * row_factor.unsqueeze(d0) * col.rsqrt().unsqueeze(d1)).reshape(param.shape)
        else:
            second = state["exp_avg_sq"]
            second.mul_(beta2).add_(grad_sqr.mul_(one_minus_beta2))
            update = grad * second.rsqrt()

        if group["momentum"]:  # optax.ema(debias=False): (1 - β1) u + β1 m_prev; the sum is float32, the state is cast
            exp_avg = state["exp_avg"]
            update = update.mul_(1.0 - group["momentum"]).add_(_decay_momentum(exp_avg, group["momentum"]))
            exp_avg.copy_(update)
        return update


# --------------------------------------------------------------------------------------------------------- SGD


class SGDMomentum(_ClippedOptimizer):
    r"""SGD with heavy-ball momentum, big_vision's fine-tuning optimizer ``big_vision.momentum_hp`` (= ``optax.trace``
    with a half-precision accumulator; big_vision/optax.py, ``configs/transfer.py``), with global-norm clipping and
    decoupled lr-relative weight decay.

    ``b ← g + momentum · b_prev`` (stored in ``momentum_dtype``); ``u = b`` (or ``g + momentum · b`` with Nesterov);
    ``θ ← θ - lr (u + weight_decay θ)``. With ``momentum_dtype="float32"``, ``weight_decay=0`` and
    ``max_grad_norm=None`` this is ``torch.optim.SGD(lr, momentum, nesterov=...)`` exactly; note that
    ``torch.optim.SGD``'s own ``weight_decay`` is coupled (added to the gradient), this one is not.

    SoViT fine-tuning (SoViT Table 8, "Scaling ViT" App. D): momentum 0.9, clipping 1.0, no weight decay.

    Args:
        params: parameters or param groups (groups may override any default).
        lr: peak learning rate (0.03: SoViT Table 8).
        momentum: momentum factor (0.9).
        momentum_dtype: storage dtype of the momentum buffer (``"bfloat16"`` is big_vision's ``momentum_hp``).
        nesterov: Nesterov momentum.
        weight_decay: decoupled decay relative to ``lr`` (0: SoViT Table 8).
        max_grad_norm: global-norm clip over all parameters (1.0); ``None`` or 0 disables it.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.03,
        *,
        momentum: float = 0.9,
        momentum_dtype: str | torch.dtype = "float32",
        nesterov: bool = False,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 1.0,
    ):
        if lr < 0 or weight_decay < 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid lr={lr}, weight_decay={weight_decay} or momentum={momentum}.")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            momentum_dtype=_dtype_name(momentum_dtype),
            nesterov=nesterov,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm

    _momentum_key = "momentum_buffer"

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if not group["momentum"]:
            return grad.clone()
        state = self.state[param]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(param, dtype=_dtype(group["momentum_dtype"]))
        buffer = state["momentum_buffer"]
        trace = grad + _decay_momentum(buffer, group["momentum"])  # float32 (optax.trace: g + decay * t)
        buffer.copy_(trace)
        return grad + group["momentum"] * trace if group["nesterov"] else trace


# --------------------------------------------------------------------------------------------------------- memory


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by the tensors in ``optimizer.state`` (Python scalars such as Adafactor's ``step`` count 0)."""
    return sum(
        value.numel() * value.element_size()
        for per_param in optimizer.state.values()
        for value in per_param.values()
        if isinstance(value, torch.Tensor)
    )


def adafactor_state_bytes(
    shape: Sequence[int],
    *,
    factor_shape: Sequence[int] | None = None,
    min_dim_size_to_factor: int = 32,
    momentum: bool = True,
    momentum_dtype: str | torch.dtype = "bfloat16",
    param_dtype: torch.dtype = torch.float32,
) -> int:
    """State bytes :class:`Adafactor` allocates for one parameter, from its shape alone.

    Factored: ``numel / n_d0 + numel / n_d1`` second-moment entries; otherwise ``numel``; plus ``numel`` momentum
    entries in ``momentum_dtype``.
    """
    view = tuple(factor_shape or shape)
    numel = math.prod(view)
    dims = factored_dims(view, min_dim_size_to_factor)
    second = numel if dims is None else numel // view[dims[1]] + numel // view[dims[0]]
    first = numel if momentum else 0
    return second * param_dtype.itemsize + first * _dtype(momentum_dtype).itemsize


def adamw_state_bytes(shape: Sequence[int], param_dtype: torch.dtype = torch.float32) -> int:
    """State bytes ``torch.optim.AdamW`` allocates for one parameter: ``exp_avg`` and ``exp_avg_sq`` in the parameter
    dtype plus a float32 scalar ``step`` tensor (torch/optim/adam.py, non-capturable)."""
    return 2 * math.prod(shape) * param_dtype.itemsize + 4


__all__ = [
    "Adafactor",
    "SGDMomentum",
    "adafactor_state_bytes",
    "adamw_state_bytes",
    "clip_grad_norm_",
    "factored_dims",
    "global_norm",
    "state_bytes",
]
