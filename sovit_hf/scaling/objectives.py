"""Relative-error objectives of the scaling-law fits, with analytic Jacobians in log-parameter space.

SoViT (Sec. 3) estimates Eq. 2 "by minimizing the relative error"; we minimise the sum of squared relative
residuals r_i = (f_hat_i - f_i) / f_i. Every parameter p is optimised as log p, which keeps it > 0 by construction
(Eq. 2 requires all seven > 0). The derivative of a model value with respect to log p is p * d(model)/dp.
"""

from __future__ import annotations

import numpy as np

from .laws import SATURATING_PARAMS, SHAPE_PARAMS

# Log-parameters are clipped to these ranges (in the fit's normalised units, where the data are O(1)): a
# coefficient below e^-40 ~ 4e-18 has vanished (the fit reports it as on the boundary), and an exponent above
# e^3 ~ 20 is far outside anything a power law over one or two decades can identify. Clipping keeps every value
# finite; the gradient of a clipped entry is 0. Eq. 2's exponents may go further, to 100: the profile test of
# :mod:`.identification` must be able to represent a step in x_k (a_k + b_k = 50 c at s_k = 0.02) without the cap
# binding, so that a cap can never end an interval (x^100 over a 4x range of normalised x stays finite).
LOG_MIN, LOG_MAX_COEF, LOG_MAX_EXPONENT = -40.0, 40.0, 3.0
LOG_MAX_SHAPE_EXPONENT = float(np.log(100.0))
SHAPE_LOG_MAX = np.array(
    [
        LOG_MAX_COEF,
        LOG_MAX_SHAPE_EXPONENT,
        LOG_MAX_COEF,
        LOG_MAX_SHAPE_EXPONENT,
        LOG_MAX_COEF,
        LOG_MAX_SHAPE_EXPONENT,
        LOG_MAX_COEF,
    ]
)
SATURATING_LOG_MAX = np.array([LOG_MAX_COEF, LOG_MAX_EXPONENT, LOG_MAX_COEF, LOG_MAX_COEF])


def clip_log_params(log_params: np.ndarray, log_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip log-parameters to [LOG_MIN, log_max]; also return the mask of entries that were inside (gradient 1)."""
    clipped = np.minimum(np.maximum(log_params, LOG_MIN), log_max)
    return clipped, (clipped == log_params).astype(float)


def shape_model(log_params: np.ndarray, log_x: np.ndarray, log_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Eq. 2 and its gradient with respect to the log-parameters.

    Args:
        log_params: log of (alpha, a, beta, b, xi, c, epsilon), the order of ``laws.SHAPE_PARAMS``, shape `(7,)`,
            or `(n, 7)` for one parameter row per point; clipped by :func:`clip_log_params`.
        log_x: log of the shape-dimension values x_k, shape `(n,)`.
        log_t: log of the compute values t (GFLOPs), shape `(n,)`.

    Returns:
        ``(f_hat (n,), d f_hat / d log_params (n, 7))``, where with A = alpha x^-a, B = beta x^b t^-c and
        X = xi t^-c: d/dlog alpha = A, d/dlog a = -a ln(x) A, d/dlog beta = B, d/dlog b = b ln(x) B,
        d/dlog xi = X, d/dlog c = -c ln(t) (B + X), d/dlog epsilon = epsilon.
    """
    log_params, inside = clip_log_params(log_params, SHAPE_LOG_MAX)
    alpha, a, beta, b, xi, c, epsilon = np.moveaxis(np.exp(log_params), -1, 0)
    term_a = alpha * np.exp(-a * log_x)
    decay = np.exp(-c * log_t)  # t^-c
    term_b = beta * np.exp(b * log_x) * decay
    term_x = xi * decay
    f_hat = term_a + term_b + term_x + epsilon
    grad = np.empty((f_hat.size, 7))
    grad[:, 0] = term_a
    grad[:, 1] = -a * log_x * term_a
    grad[:, 2] = term_b
    grad[:, 3] = b * log_x * term_b
    grad[:, 4] = term_x
    grad[:, 5] = -c * log_t * (term_b + term_x)
    grad[:, 6] = epsilon
    return f_hat, grad * inside


def saturating_model(log_params: np.ndarray, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""E = a (C + d)^-b + c (Scaling ViT Sec. 2.2) and its gradient with respect to the log-parameters.

    Args:
        log_params: log of (a, b, c, d), the order of ``laws.SATURATING_PARAMS``; clipped by
            :func:`clip_log_params`.
        compute: compute values C >= 0, shape `(n,)`.

    Returns:
        ``(E_hat (n,), d E_hat / d log_params (n, 4))``, where with P = a (C + d)^-b: d/dlog a = P,
        d/dlog b = -b ln(C + d) P, d/dlog c = c, d/dlog d = -b d P / (C + d).
    """
    log_params, inside = clip_log_params(log_params, SATURATING_LOG_MAX)
    a, b, c, d = np.exp(log_params)
    shifted = compute + d
    power = a * shifted**-b
    e_hat = power + c
    grad = np.stack(
        [power, -b * np.log(shifted) * power, np.full_like(e_hat, c), -b * d * power / shifted], axis=1
    )  # (n, 4)
    return e_hat, grad * inside


def relative_residuals(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(prediction - target) / target, the residual whose squares are minimised.

    Args:
        prediction: model values.
        target: measured values (> 0).
    """
    return prediction / target - 1.0


__all__ = ["SATURATING_PARAMS", "SHAPE_PARAMS", "relative_residuals", "saturating_model", "shape_model"]
