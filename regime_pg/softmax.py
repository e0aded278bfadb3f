"""The engine's confidence: softmax of -distance / temperature, and fitting the temperature.

``softmax_confidences`` is the Regime Engine's rule (shifted by the max for
stability).  ``fit_temperature`` finds the temperature that maximises the
likelihood of each calibration embedding's own label.

With beta = 1 / T, the negative log-likelihood

    NLL(beta) = sum_i [ beta * d_i,own + log sum_k exp(-beta * d_ik) ]

is convex in beta: its derivative is sum_i (d_i,own - E_p[d_i]) and its
second derivative sum_i Var_p(d_i) >= 0, so a bracketed search finds it.

Calibration windows are often *separable*: every embedding is nearest its
own prototype, and the likelihood then keeps growing as T -> 0 (every
confidence 1.000 again).  In that case the fit returns the temperature at
which the mean log-loss is ln((n + 2) / (n + 1)): labels that were right n
times out of n get the average confidence of Laplace's rule of succession,
not certainty.  Either way T stays within [1e-3 G, 1e3 G], G the median gap
between an embedding's own prototype and the nearest other one.  This is
the rule of ``fit_regime_temperature`` in SQL, which the tests compare.

>>> import numpy as np
>>> softmax_confidences(np.array([10.0, 12.0]), temperature=1.0).round(4)
array([0.8808, 0.1192])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


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
    #: Mean negative log-likelihood of the own labels at the fitted T, and at T = 1.
    log_loss: float
    log_loss_at_1: float
    n: int
    #: Every calibration embedding nearest its own prototype (see the module docstring).
    separable: bool


def _nll_and_slope(d: FloatArray, idx: npt.NDArray[np.intp], beta: float) -> tuple[float, float]:
    """Summed negative log-likelihood at beta = 1/T and its derivative in beta."""
    logits = -beta * d
    top = logits.max(axis=1, keepdims=True)
    weights = np.exp(logits - top)
    norm = weights.sum(axis=1)
    p = weights / norm[:, None]
    rows = np.arange(len(idx))
    nll = float(np.sum(top[:, 0] + np.log(norm) - logits[rows, idx]))
    slope = float(np.sum(d[rows, idx] - (p * d).sum(axis=1)))
    return nll, slope


def fit_temperature(distances: npt.ArrayLike, own: npt.ArrayLike) -> TemperatureFit:
    """The temperature that best explains each calibration embedding's own label.

    ``distances`` is (n, k), ``own`` the index of each row's own prototype.

    >>> d = np.array([[1.0, 3.0], [2.0, 1.5], [1.0, 2.0]])
    >>> fit = fit_temperature(d, [0, 0, 1])
    >>> round(fit.temperature, 3), fit.separable
    (5.198, False)
    """
    d = np.asarray(distances, dtype=np.float64)
    idx = np.asarray(own, dtype=np.intp)
    if d.ndim != 2 or d.shape[1] < 2 or len(idx) != d.shape[0] or d.shape[0] == 0:
        raise ValueError("distances must be (n, k) with k >= 2 and one own label per row")
    rows = np.arange(len(idx))
    mine = d[rows, idx]
    others = d.copy()
    others[rows, idx] = np.inf
    rival = others.min(axis=1)
    separable = bool(np.all(mine <= d.min(axis=1)))
    scale = float(np.median(np.abs(rival - mine)))
    if not scale > 0:
        scale = float(np.mean(d.max(axis=1) - d.min(axis=1)))
    if not scale > 0:
        raise ValueError("every embedding is as far from each prototype as from its own")
    n = len(idx)
    target = n * np.log((n + 2) / (n + 1))

    def psi(beta: float) -> float:  # increasing in beta, 0 at the wanted beta
        nll, slope = _nll_and_slope(d, idx, beta)
        return target - nll if separable else slope

    lo, hi = 1.0 / (1e3 * scale), 1.0 / (1e-3 * scale)
    if psi(lo) >= 0:
        beta = lo
    elif psi(hi) <= 0:
        beta = hi
    else:
        for _ in range(200):  # bisection in log(beta)
            mid = float(np.sqrt(lo * hi))
            if psi(mid) < 0:
                lo = mid
            else:
                hi = mid
            if hi <= lo * (1 + 1e-14):
                break
        beta = float(np.sqrt(lo * hi))
    return TemperatureFit(
        temperature=1.0 / beta,
        log_loss=mean_log_loss(d, idx, 1.0 / beta),
        log_loss_at_1=mean_log_loss(d, idx, 1.0),
        n=n,
        separable=separable,
    )
