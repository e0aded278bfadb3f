"""The engine's confidence: softmax of -distance / temperature, and fitting the temperature.

``softmax_confidences`` is the Regime Engine's rule (shifted by the max for
stability).  ``fit_temperature`` finds the temperature that maximises the
likelihood of each calibration embedding's own label.

With beta = 1 / T, the negative log-likelihood

    NLL(beta) = sum_i [ beta * d_i,own + log sum_k exp(-beta * d_ik) ]

is convex in beta: its derivative is sum_i (d_i,own - E_p[d_i]) and its
second derivative sum_i Var_p(d_i) >= 0, so bisection on the derivative
finds the optimum.  But calibration windows are usually *separable* (every
embedding nearest to its own prototype), and then the likelihood keeps
improving as T -> 0: plain maximum likelihood gives T = 0 and confidences of
1.000 again.  So the fit uses label smoothing: the target puts 1 - eps on the
own label and eps / (k - 1) on each other (eps = 0.01 by default, "one
calibration date in a hundred may belong to another regime").  The objective
stays convex and has a finite optimum; eps = 0 is plain maximum likelihood.

>>> import numpy as np
>>> softmax_confidences(np.array([10.0, 12.0]), temperature=1.0).round(4)
array([0.8808, 0.1192])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: The share of target probability moved from the own label to the others.
DEFAULT_LABEL_SMOOTHING = 0.01


def softmax_confidences(distances: npt.ArrayLike, temperature: float) -> FloatArray:
    """Softmax of ``-distances / temperature`` along the last axis, max-shifted."""
    logits = -np.asarray(distances, dtype=np.float64) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return np.asarray(weights / weights.sum(axis=-1, keepdims=True), dtype=np.float64)


def mean_log_loss(distances: npt.ArrayLike, own: npt.ArrayLike, temperature: float) -> float:
    """Mean negative log-likelihood of the ``own`` label indices under the softmax."""
    d = np.asarray(distances, dtype=np.float64)
    idx = np.asarray(own, dtype=np.intp)
    logits = -d / temperature
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(idx)), idx]))


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and how well it explains the calibration windows."""

    temperature: float
    label_smoothing: float
    #: The objective: mean cross-entropy against the smoothed targets, at the fit and at T = 1.
    cross_entropy: float
    cross_entropy_at_1: float
    #: Mean negative log-likelihood of the own label, at the fit and at T = 1.
    log_loss: float
    log_loss_at_1: float
    n: int
    separable: bool


def targets(own: npt.ArrayLike, k: int, label_smoothing: float) -> FloatArray:
    """Target probabilities: 1 - eps on the own label, eps spread over the others."""
    idx = np.asarray(own, dtype=np.intp)
    q = np.full((len(idx), k), label_smoothing / (k - 1))
    q[np.arange(len(idx)), idx] = 1.0 - label_smoothing
    return q


def cross_entropy(distances: npt.ArrayLike, q: FloatArray, temperature: float) -> float:
    """Mean cross-entropy of targets ``q`` under the softmax at ``temperature``."""
    logits = -np.asarray(distances, dtype=np.float64) / temperature
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return float(-np.mean((q * log_p).sum(axis=1)))


def _gradient(d: FloatArray, q: FloatArray, beta: float) -> float:
    """d/dbeta of the summed cross-entropy: sum_i (E_q[d_i] - E_p[d_i]), increasing in beta."""
    p = softmax_confidences(d, 1.0 / beta)
    return float(np.sum(((q - p) * d).sum(axis=1)))


def fit_temperature(
    distances: npt.ArrayLike,
    own: npt.ArrayLike,
    label_smoothing: float = DEFAULT_LABEL_SMOOTHING,
    min_temperature: float = 1e-6,
    max_temperature: float = 1e6,
) -> TemperatureFit:
    """The temperature that best explains each calibration embedding's own label.

    Minimises the mean cross-entropy between the softmax and targets that put
    ``1 - label_smoothing`` on the own label (``label_smoothing = 0`` is plain
    maximum likelihood).  ``separable`` tells that every embedding is nearest
    to its own prototype: plain maximum likelihood would then drive T to 0,
    and the smoothing is what keeps the fit finite.

    >>> d = np.array([[1.0, 3.0], [2.0, 1.5], [1.0, 2.0]])
    >>> fit = fit_temperature(d, [0, 0, 1], label_smoothing=0.0)
    >>> round(fit.temperature, 3), fit.separable
    (5.198, False)
    """
    d = np.asarray(distances, dtype=np.float64)
    idx = np.asarray(own, dtype=np.intp)
    if d.ndim != 2 or d.shape[1] < 2 or len(idx) != d.shape[0] or d.shape[0] == 0:
        raise ValueError("distances must be (n, k) with k >= 2 and one own label per row")
    if not 0.0 <= label_smoothing < 1.0 - 1.0 / d.shape[1]:
        raise ValueError("label_smoothing must be in [0, 1 - 1/k)")
    q = targets(idx, d.shape[1], label_smoothing)
    own_d = d[np.arange(len(idx)), idx]
    others = d.copy()
    others[np.arange(len(idx)), idx] = np.inf
    separable = bool(np.all(own_d < others.min(axis=1)))
    lo, hi = 1.0 / max_temperature, 1.0 / min_temperature
    if (separable and label_smoothing == 0.0) or _gradient(d, q, hi) < 0:
        beta = hi  # the optimum is T -> 0: stop at the smallest temperature allowed
    elif _gradient(d, q, lo) > 0:
        beta = lo
    else:
        for _ in range(200):  # bisection in log(beta)
            mid = float(np.sqrt(lo * hi))
            if _gradient(d, q, mid) < 0:
                lo = mid
            else:
                hi = mid
            if hi / lo < 1 + 1e-12:
                break
        beta = float(np.sqrt(lo * hi))
    temperature = 1.0 / beta
    return TemperatureFit(
        temperature=temperature,
        label_smoothing=label_smoothing,
        cross_entropy=cross_entropy(d, q, temperature),
        cross_entropy_at_1=cross_entropy(d, q, 1.0),
        log_loss=mean_log_loss(d, idx, temperature),
        log_loss_at_1=mean_log_loss(d, idx, 1.0),
        n=len(idx),
        separable=separable,
    )
