"""The demo encoder: daily OHLCV bars -> 384-dimensional float32 regime embeddings.

This is the documented, deterministic encoder behind the regime-pg demo. It is
deliberately simple (no learned weights): each embedding is the last
:data:`WINDOW_DAYS` (63) trading days of six stationary daily features,
flattened and zero-padded to :data:`EMBEDDING_DIM` (384) dimensions.

Data
----
:func:`load_market` reads the daily bars that ship with the optional ``arch``
package (``pip install 'regime-pg[demo]'``), fully offline:

=========  ==========================  ==========================
region     ``arch`` dataset            content
=========  ==========================  ==========================
US         ``arch.data.sp500``         S&P 500, 1999-01-04..2018-12-31
US_TECH    ``arch.data.nasdaq``        NASDAQ Composite, 1999-01-04..2018-12-31
=========  ==========================  ==========================

Each is a :class:`pandas.DataFrame` of 5031 rows indexed by a sorted, unique
``DatetimeIndex`` named ``Date`` with float columns ``Open, High, Low, Close,
Adj Close`` (``Adj Close == Close`` for these indices) and an integer ``Volume``.
There are no NaNs. Known quirks, both handled below: NASDAQ reports
``Volume == 0`` on 2015-05-12 and 2018-01-09 (feed errors, not a halt), and
the S&P 500 ``Open`` equals the previous ``Close`` on most days from 1999 to
2006, so its overnight-gap feature is mostly 0 in those years.

Features (one row per trading day ``t``)
----------------------------------------
Let ``P`` be ``Adj Close`` (``Close`` if there is no ``Adj Close``) and
``r_t = log(P_t / P_{t-1})``. The *long-run volatility* ``s_t`` is the sample
standard deviation (``ddof=1``) of the 252 returns ``r_{t-251} .. r_t``,
floored at ``1e-12`` so flat prices cannot divide by zero. Every feature uses
data up to and including day ``t`` only (no look-ahead), and every feature is
clipped to ``[-10, 10]`` so that a single bad tick cannot dominate a vector.

=====  ======================  ===========================================================
index  name                    definition at day ``t``
=====  ======================  ===========================================================
0      ``log_return``          ``r_t / s_t``
1      ``realised_vol_21d``    ``log(rv_t / s_t)``, ``rv_t`` the std (``ddof=1``) of the 21
                               returns ``r_{t-20} .. r_t``: > 0 when the last month is more
                               volatile than the last year
2      ``drawdown_252d``       ``log(P_t / max(P_{t-251} .. P_t)) / (s_t * sqrt(252))``,
                               i.e. the drawdown from the running 252-day high in units
                               of annualised long-run volatility (always <= 0)
3      ``volume_change_63d``   ``log(V_t / mean(V_{t-63} .. V_{t-1}))``; volumes that are
                               zero, negative or NaN are treated as missing: they are left
                               out of the mean, and the feature is 0 (neutral) on such a
                               day or when the previous 63 days hold no valid volume
4      ``hl_range``            ``log(log(High_t / Low_t) / s_t)``: the day's (Parkinson)
                               log range, about ``(High - Low) / Close``, relative to the
                               long-run volatility; 0 (neutral) for a bar with
                               ``High == Low`` (a stale or placeholder bar)
5      ``overnight_gap``       ``log(Open_t / Close_{t-1}) / s_t``
=====  ======================  ===========================================================

All features are ratios or log-ratios of prices, or are scaled by the
trailing volatility, so they are stationary and comparable across decades and
markets. The two volatility measures (1 and 4) are taken as log-ratios so
that, like the returns, gap and volume features, they are centred near 0
rather than near 1: otherwise a constant positive offset shared by every
vector would dominate cosine similarity. Their order is :data:`FEATURES`.

Warm-up
-------
``s_t`` needs 252 returns, i.e. 253 prices, so :func:`daily_features` is NaN
(in every column) for the first :data:`FEATURE_WARMUP_DAYS` = 252 rows and
finite from row 252 (0-based) on. An embedding needs 63 defined feature rows,
so the first :data:`WARMUP_DAYS` = 252 + 63 - 1 = 314 trading days produce no
embedding: the first ``as_of_date`` is the 315th row (0-based row 314) of the
input. For the demo data that is 2000-03-31 for both ``US`` and ``US_TECH``;
the last is 2018-12-31, giving 4717 embeddings per market.

Embedding layout (feature-major)
--------------------------------
For an ``as_of_date`` at input row ``t`` the vector ``v`` (float32, shape
``(384,)``) is::

    v[f * 63 + d] = feature f on day t - 62 + d     for f in 0..5, d in 0..62
    v[378:384]    = 0                               (padding)

so each feature is one contiguous block of 63 values in chronological order
(``d = 0`` is the oldest day of the window, ``d = 62`` is the ``as_of_date``
itself): ``v[0:63]`` is ``log_return``, ``v[63:126]`` ``realised_vol_21d``,
``v[126:189]`` ``drawdown_252d``, ``v[189:252]`` ``volume_change_63d``,
``v[252:315]`` ``hl_range``, ``v[315:378]`` ``overnight_gap``. Features are
computed in float64 and only the final vector is cast to float32.

:func:`encode` is vectorised with :func:`numpy.lib.stride_tricks.sliding_window_view`:
the full 1999-2018 history of one market (5031 rows) encodes in about 5 ms.

Example
-------
>>> emb = encode(load_market("US"))
>>> len(emb), emb[0][0], emb[-1][0], emb[0][1].shape, emb[0][1].dtype
(4717, datetime.date(2000, 3, 31), datetime.date(2018, 12, 31), (384,), dtype('float32'))
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from regime_pg.errors import RegimePgError

if TYPE_CHECKING:  # pandas comes with the optional 'arch' extra: imported lazily
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

__all__ = [
    "EMBEDDING_DIM",
    "FEATURES",
    "FEATURE_WARMUP_DAYS",
    "MARKETS",
    "WARMUP_DAYS",
    "WINDOW_DAYS",
    "DemoDataUnavailable",
    "daily_features",
    "encode",
    "load_market",
]

#: Dimension of every embedding (the pgvector column width).
EMBEDDING_DIM: Final = 384
#: Trading days in one embedding window.
WINDOW_DAYS: Final = 63
#: Feature names, in layout order (block ``f`` of an embedding is ``FEATURES[f]``).
FEATURES: Final[tuple[str, ...]] = (
    "log_return",
    "realised_vol_21d",
    "drawdown_252d",
    "volume_change_63d",
    "hl_range",
    "overnight_gap",
)
#: Region -> name of the module under ``arch.data`` holding its daily bars.
MARKETS: Final[dict[str, str]] = {"US": "sp500", "US_TECH": "nasdaq"}

_LONG_RUN_DAYS: Final = 252
_REALISED_VOL_DAYS: Final = 21
_VOLUME_MEAN_DAYS: Final = 63
_CLIP: Final = 10.0
_VOL_FLOOR: Final = 1e-12

#: Leading rows of :func:`daily_features` that are NaN (long-run volatility warm-up).
FEATURE_WARMUP_DAYS: Final = _LONG_RUN_DAYS
#: Leading trading days of the input that get no embedding (row ``WARMUP_DAYS`` is the first).
WARMUP_DAYS: Final = FEATURE_WARMUP_DAYS + WINDOW_DAYS - 1

_PRICE_COLUMNS: Final = ("Open", "High", "Low", "Close")
_INSTALL_HINT: Final = "the demo needs the optional 'arch' package: pip install 'regime-pg[demo]'"

assert len(FEATURES) * WINDOW_DAYS <= EMBEDDING_DIM

_Float = NDArray[np.float64]


class DemoDataUnavailable(RegimePgError, RuntimeError):
    """The demo data cannot be loaded (the optional ``arch`` package is missing or broken)."""


def load_market(region: str) -> pd.DataFrame:
    """Load the daily OHLCV bars of a demo region from the ``arch`` package (offline).

    Raises :class:`DemoDataUnavailable` if ``arch`` is not installed and
    :class:`ValueError` for a region not in :data:`MARKETS`.

    >>> df = load_market("US_TECH")
    >>> list(df.columns), len(df), str(df.index[0].date())
    (['Open', 'High', 'Low', 'Close', 'Adj Close', 'Volume'], 5031, '1999-01-04')
    """
    try:
        dataset = MARKETS[region]
    except KeyError:
        known = ", ".join(sorted(MARKETS))
        raise ValueError(f"unknown demo region {region!r} (known: {known})") from None
    try:
        module = importlib.import_module(f"arch.data.{dataset}")
    except ImportError as exc:
        raise DemoDataUnavailable(_INSTALL_HINT) from exc
    try:
        frame = module.load()
    except OSError as exc:  # arch installed without its data files
        raise DemoDataUnavailable(
            f"cannot read the {dataset!r} data shipped with 'arch' ({exc}); "
            "reinstall it: pip install --force-reinstall 'regime-pg[demo]'"
        ) from exc
    if not isinstance(frame, _pandas().DataFrame):
        raise DemoDataUnavailable(f"arch.data.{dataset}.load() did not return a DataFrame")
    return frame.sort_index()


def daily_features(ohlcv: pd.DataFrame) -> pd.DataFrame:
    """Compute the six daily features of the module docstring, one row per input row.

    The result has the input's index, columns :data:`FEATURES` (float64) and is
    NaN in the first :data:`FEATURE_WARMUP_DAYS` rows, finite afterwards.
    Requires columns ``Open, High, Low, Close, Volume`` (``Adj Close`` optional),
    finite positive prices and a strictly increasing ``DatetimeIndex`` with one
    row per calendar day.

    >>> f = daily_features(load_market("US"))
    >>> f.shape, bool(f.iloc[:252].isna().all().all()), bool(f.iloc[252:].notna().all().all())
    ((5031, 6), True, True)
    >>> round(float(f.loc["2008-10-10", "realised_vol_21d"]), 2)
    0.8
    """
    open_, high, low, close, price, volume = _columns(ohlcv)
    n = len(close)

    log_price = np.log(price)
    ret = np.full(n, np.nan)
    ret[1:] = np.diff(log_price)
    long_vol = np.maximum(_rolling(ret, _LONG_RUN_DAYS, _std), _VOL_FLOOR)

    # Log-ratios for the two volatility measures: centred near 0 rather than 1, so a
    # cosine or L2 distance is not dominated by a constant positive offset.
    realised = _log_ratio(_rolling(ret, _REALISED_VOL_DAYS, _std), long_vol)
    hl_range = np.abs(np.log(high / low))
    range_ratio = np.zeros(n)  # High == Low (a stale, placeholder bar): neutral 0
    has_range = hl_range > 0
    range_ratio[has_range] = _log_ratio(hl_range[has_range], long_vol[has_range])
    drawdown = log_price - _rolling(log_price, _LONG_RUN_DAYS, _max)

    valid_volume = np.isfinite(volume) & (volume > 0)
    volume_sum = _rolling(np.where(valid_volume, volume, 0.0), _VOLUME_MEAN_DAYS, _sum)
    volume_count = _rolling(valid_volume.astype(np.float64), _VOLUME_MEAN_DAYS, _sum)
    prior_mean = np.full(n, np.nan)  # mean over t-63 .. t-1, excluding day t
    prior_mean[1:] = np.divide(
        volume_sum[:-1],
        volume_count[:-1],
        out=np.full(n - 1, np.nan),
        where=volume_count[:-1] > 0,
    )
    usable = valid_volume & np.isfinite(prior_mean)
    volume_change = np.zeros(n)
    np.log(volume, out=volume_change, where=usable)
    volume_change[usable] -= np.log(prior_mean[usable])

    gap = np.full(n, np.nan)
    gap[1:] = np.log(open_[1:] / close[:-1])

    columns = np.column_stack(
        [
            ret / long_vol,
            realised,
            drawdown / (long_vol * np.sqrt(_LONG_RUN_DAYS)),
            volume_change,
            range_ratio,
            gap / long_vol,
        ]
    )
    np.clip(columns, -_CLIP, _CLIP, out=columns)
    columns[:FEATURE_WARMUP_DAYS] = np.nan
    return _pandas().DataFrame(columns, index=ohlcv.index, columns=list(FEATURES))


def encode(
    ohlcv: pd.DataFrame,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
) -> list[tuple[datetime.date, NDArray[np.float32]]]:
    """Encode every trading day with a full 63-day window into a 384-dim float32 vector.

    Returns ``(as_of_date, vector)`` pairs in ascending date order, one per
    input row from row :data:`WARMUP_DAYS` on whose date is within
    ``[start, end]`` (both inclusive, either may be ``None``). The layout of
    ``vector`` is described in the module docstring. Inputs shorter than
    ``WARMUP_DAYS + 1`` rows give an empty list.

    >>> emb = encode(load_market("US"), datetime.date(2008, 9, 13), datetime.date(2008, 9, 16))
    >>> [str(day) for day, _ in emb], emb[0][1].shape, float(emb[0][1][-1])
    (['2008-09-15', '2008-09-16'], (384,), 0.0)
    """
    if start is not None and end is not None and _as_date(start) > _as_date(end):
        raise ValueError(f"start {start} is after end {end}")
    features = daily_features(ohlcv).to_numpy(dtype=np.float64)
    days = _trading_days(ohlcv.index)
    n, n_features = features.shape
    if n <= WARMUP_DAYS:
        return []

    rows = np.arange(WARMUP_DAYS, n)  # input row of each candidate as_of_date
    keep = np.ones(rows.shape, dtype=bool)
    if start is not None:
        keep &= days[rows] >= np.datetime64(_as_date(start), "D")
    if end is not None:
        keep &= days[rows] <= np.datetime64(_as_date(end), "D")
    rows = rows[keep]

    # windows[i] is (n_features, WINDOW_DAYS): feature-major, oldest day first,
    # covering input rows i .. i + WINDOW_DAYS - 1.
    windows = sliding_window_view(features, WINDOW_DAYS, axis=0)
    flat = windows[rows - (WINDOW_DAYS - 1)].reshape(len(rows), n_features * WINDOW_DAYS)
    vectors = np.zeros((len(rows), EMBEDDING_DIM), dtype=np.float32)
    vectors[:, : flat.shape[1]] = flat
    if not np.isfinite(vectors).all():  # cannot happen for validated input
        raise AssertionError("demo encoder produced a non-finite value")
    dates: list[datetime.date] = days[rows].tolist()
    return list(zip(dates, vectors, strict=True))


def _columns(ohlcv: pd.DataFrame) -> tuple[_Float, _Float, _Float, _Float, _Float, _Float]:
    """Validate the input frame; return Open, High, Low, Close, price, Volume as float64."""
    if not isinstance(ohlcv, _pandas().DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(ohlcv).__name__}")
    _trading_days(ohlcv.index)
    missing = [c for c in (*_PRICE_COLUMNS, "Volume") if c not in ohlcv.columns]
    if missing:
        raise ValueError(f"OHLCV frame lacks column(s) {missing}")
    price_column = "Adj Close" if "Adj Close" in ohlcv.columns else "Close"
    prices = [_float(ohlcv[c]) for c in (*_PRICE_COLUMNS, price_column)]
    for name, values in zip((*_PRICE_COLUMNS, price_column), prices, strict=True):
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            when = ohlcv.index[int(np.argmax(bad))]
            raise ValueError(
                f"column {name!r} must be finite and > 0; it is {values[bad][0]} on {when}"
            )
    open_, high, low, close, price = prices
    return open_, high, low, close, price, _float(ohlcv["Volume"])


def _trading_days(index: Any) -> NDArray[np.datetime64]:
    """Calendar dates of a strictly increasing, one-row-per-day DatetimeIndex."""
    if not isinstance(index, _pandas().DatetimeIndex):
        raise TypeError(f"OHLCV frame needs a DatetimeIndex, got {type(index).__name__}")
    if index.tz is not None:
        index = index.tz_localize(None)  # keep the local calendar date
    days: NDArray[np.datetime64] = index.to_numpy().astype("datetime64[D]")
    if len(days) > 1 and not bool((np.diff(days) > np.timedelta64(0, "D")).all()):
        raise ValueError("OHLCV index must be sorted ascending with one row per day")
    return days


def _pandas() -> Any:
    """The pandas module, imported on first use (it is not a core dependency)."""
    try:
        import pandas
    except ImportError as exc:
        raise DemoDataUnavailable(_INSTALL_HINT) from exc
    return pandas


def _float(column: Any) -> _Float:
    values: _Float = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _as_date(value: datetime.date) -> datetime.date:
    return value.date() if isinstance(value, datetime.datetime) else value


def _rolling(values: _Float, window: int, reduce: Callable[[_Float], _Float]) -> _Float:
    """Trailing-window reduction; NaN where fewer than ``window`` values exist."""
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        out[window - 1 :] = reduce(sliding_window_view(values, window))
    return out


def _log_ratio(numerator: _Float, denominator: _Float) -> _Float:
    """``log(numerator / denominator)`` for a positive denominator, floored at ``-_CLIP``."""
    result: _Float = np.log(np.maximum(numerator / denominator, np.exp(-_CLIP)))
    return result


def _std(windows: _Float) -> _Float:
    result: _Float = np.std(windows, axis=-1, ddof=1)
    return result


def _max(windows: _Float) -> _Float:
    result: _Float = np.max(windows, axis=-1)
    return result


def _sum(windows: _Float) -> _Float:
    result: _Float = np.sum(windows, axis=-1)
    return result
