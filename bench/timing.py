"""Repeated measurements, medians and spreads; interleaved pairs for ratios."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, with the time since the start."""
    elapsed = time.monotonic() - _T0
    print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of ``samples`` (and the samples themselves)."""
    ordered = sorted(samples)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
        "samples": samples,
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """``summary`` of ``repeats`` timed calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return summary([timed(fn)[0] for _ in range(repeats)])


def paired(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Time several paths in interleaved rounds (order rotated each round).

    The machine is shared: interleaving puts every path under the same load
    drift, and per-round ratios can be taken against the first path.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    return interleaved({name: _without_argument(fn) for name, fn in fns.items()},
                       range(repeats))


def _without_argument(fn: Callable[[], Any]) -> Callable[[object], Any]:
    return lambda _: fn()


def interleaved(
    fns: Mapping[str, Callable[[T], Any]], rounds: Sequence[T]
) -> dict[str, dict[str, Any]]:
    """``paired`` with an argument per round: round k calls every path with
    ``rounds[k]`` (a new window each round), the order rotated each round; no warm-up.

    >>> stats = interleaved({"a": abs, "b": float}, [-1, 2, -3])
    >>> [stats[name]["n"] for name in stats]
    [3, 3]
    """
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_, arg in enumerate(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timed(partial(fns[name], arg))[0])
    return {name: summary(values) for name, values in samples.items()}


def ratio(slow: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """slow / fast: the ratio of medians, and the spread of per-round ratios."""
    rounds = [s / f for s, f in zip(slow["samples"], fast["samples"], strict=True) if f > 0]
    spread = summary(rounds)
    return {
        "median": slow["median"] / fast["median"],
        "round_min": spread["min"],
        "round_max": spread["max"],
        "round_q1": spread["q1"],
        "round_q3": spread["q3"],
    }


def per_row(stats: dict[str, Any], rows: int) -> dict[str, float]:
    """Microseconds per row: median, min and max."""
    return {k: stats[k] / rows * 1e6 for k in ("median", "min", "max", "q1", "q3")}
