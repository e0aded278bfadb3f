"""Tests of the demo encoder (regime_pg.demo.encoder) on the real arch data; no database."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regime_pg.demo.encoder import (
    EMBEDDING_DIM,
    FEATURE_WARMUP_DAYS,
    FEATURES,
    MARKETS,
    WARMUP_DAYS,
    WINDOW_DAYS,
    DemoDataUnavailable,
    daily_features,
    encode,
    load_market,
)

USED = len(FEATURES) * WINDOW_DAYS  # 378 meaningful dimensions, then zero padding
CALM = (datetime.date(2017, 1, 1), datetime.date(2017, 12, 31))
CRISIS = (datetime.date(2008, 9, 15), datetime.date(2009, 3, 9))
REGIONS = sorted(MARKETS)
# as_of_dates checked for look-ahead: first embedding, 9/11 reopening, Lehman, the
# Oct-2008 crash, a NASDAQ zero-volume day, the day after it, and the last day.
LOOK_AHEAD_DAYS = [
    datetime.date(2000, 3, 31),
    datetime.date(2001, 9, 17),
    datetime.date(2008, 9, 15),
    datetime.date(2008, 10, 10),
    datetime.date(2015, 5, 12),
    datetime.date(2015, 5, 13),
    datetime.date(2018, 12, 31),
]
NO_HYPOTHESIS_DB = settings(
    database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Encoded:
    """One market's data, daily features and full encoding, computed once per module."""

    def __init__(self, region: str) -> None:
        self.frame = load_market(region)
        self.features = daily_features(self.frame)
        pairs = encode(self.frame)
        self.dates = [day for day, _ in pairs]
        self.vectors = [vector for _, vector in pairs]
        self.matrix: np.ndarray = np.stack(self.vectors)
        self.row_of = {day: WARMUP_DAYS + i for i, day in enumerate(self.dates)}

    def between(self, window: tuple[datetime.date, datetime.date]) -> np.ndarray:
        """Embeddings with as_of_date in the inclusive window."""
        mask = np.array([window[0] <= day <= window[1] for day in self.dates])
        selected: np.ndarray = self.matrix[mask]
        return selected

    def vector(self, day: datetime.date) -> np.ndarray:
        return self.vectors[self.dates.index(day)]


@pytest.fixture(scope="module")
def encoded() -> dict[str, Encoded]:
    try:
        return {region: Encoded(region) for region in REGIONS}
    except DemoDataUnavailable as exc:  # pragma: no cover - arch is a test dependency
        pytest.skip(str(exc))


def _blocks(vector: np.ndarray) -> np.ndarray:
    """(len(FEATURES), WINDOW_DAYS) view of an embedding's meaningful part."""
    return vector[:USED].reshape(len(FEATURES), WINDOW_DAYS)


def _synthetic_ohlcv(
    seed: int, n: int, daily_vol: float, zero_volume_share: float, flat_days: int
) -> Any:
    """A fat-tailed random walk with consistent OHLC bars, zero volumes and a flat stretch."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    returns = np.clip(rng.standard_t(3, n) * daily_vol, -0.5, 0.5)
    returns[: min(flat_days, n)] = 0.0  # a stale price: zero returns, zero range
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, daily_vol / 3, n))
    wick = np.abs(rng.normal(0, daily_vol / 2, (2, n)))
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    flat = slice(0, min(flat_days, n))
    open_[flat] = high[flat] = low[flat] = close[flat]
    volume = np.round(rng.lognormal(20, 0.4, n))
    volume[rng.random(n) < zero_volume_share] = 0
    index = pd.bdate_range("2001-01-01", periods=n, name="Date")
    return pd.DataFrame(
        {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}, index=index
    )


# -- constants and data loading -------------------------------------------------------


def test_constants_describe_the_layout() -> None:
    assert EMBEDDING_DIM == 384
    assert WINDOW_DAYS == 63
    assert len(FEATURES) == 6
    assert len(set(FEATURES)) == len(FEATURES)
    assert USED == 378 <= EMBEDDING_DIM
    assert FEATURE_WARMUP_DAYS == 252
    assert WARMUP_DAYS == FEATURE_WARMUP_DAYS + WINDOW_DAYS - 1 == 314
    assert MARKETS == {"US": "sp500", "US_TECH": "nasdaq"}


@pytest.mark.parametrize("region", REGIONS)
def test_load_market_returns_daily_ohlcv(encoded: dict[str, Encoded], region: str) -> None:
    frame = encoded[region].frame
    assert {"Open", "High", "Low", "Close", "Volume"} <= set(frame.columns)
    assert len(frame) == 5031
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert frame.index[0].date() == datetime.date(1999, 1, 4)
    assert frame.index[-1].date() == datetime.date(2018, 12, 31)


def test_load_market_rejects_unknown_region() -> None:
    with pytest.raises(ValueError, match="unknown demo region 'EU'"):
        load_market("EU")


def test_missing_arch_raises_demo_data_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes any import of that module raise ImportError.
    for name in ("arch", "arch.data", "arch.data.sp500", "arch.data.nasdaq"):
        monkeypatch.setitem(sys.modules, name, None)
    for region in REGIONS:
        with pytest.raises(DemoDataUnavailable, match=r"pip install 'regime-pg\[demo\]'") as info:
            load_market(region)
        assert isinstance(info.value, RuntimeError)
        assert isinstance(info.value.__cause__, ImportError)


def test_encoder_module_imports_without_arch_or_pandas() -> None:
    code = (
        "import sys\n"
        "sys.modules['arch'] = sys.modules['pandas'] = None\n"
        "from regime_pg.demo import encoder\n"
        "try:\n"
        "    encoder.load_market('US')\n"
        "except encoder.DemoDataUnavailable as exc:\n"
        "    print('unavailable:', exc)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "unavailable: the demo needs the optional 'arch' package" in result.stdout


# -- shapes, dtype, padding, warm-up ----------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_one_float32_vector_per_trading_day_after_warm_up(
    encoded: dict[str, Encoded], region: str
) -> None:
    enc = encoded[region]
    assert len(enc.vectors) == len(enc.frame) - WARMUP_DAYS == 4717
    assert all(v.shape == (EMBEDDING_DIM,) and v.dtype == np.float32 for v in enc.vectors)
    assert all(type(day) is datetime.date for day in enc.dates)
    assert all(a < b for a, b in zip(enc.dates, enc.dates[1:], strict=False))
    expected_days = [ts.date() for ts in enc.frame.index[WARMUP_DAYS:]]
    assert enc.dates == expected_days
    assert enc.dates[0] == datetime.date(2000, 3, 31)
    assert enc.dates[-1] == datetime.date(2018, 12, 31)


@pytest.mark.parametrize("region", REGIONS)
def test_all_values_finite_and_clipped(encoded: dict[str, Encoded], region: str) -> None:
    matrix = encoded[region].matrix
    assert np.isfinite(matrix).all()
    assert np.abs(matrix).max() <= 10.0


@pytest.mark.parametrize("region", REGIONS)
def test_padding_is_zero_and_only_padding_is_structurally_zero(
    encoded: dict[str, Encoded], region: str
) -> None:
    matrix = encoded[region].matrix
    assert np.all(matrix[:, USED:] == 0.0)
    # Every meaningful dimension carries information somewhere in the history.
    assert np.all(matrix[:, :USED].std(axis=0) > 0)


@pytest.mark.parametrize("region", REGIONS)
def test_daily_features_warm_up(encoded: dict[str, Encoded], region: str) -> None:
    enc = encoded[region]
    features = enc.features
    assert list(features.columns) == list(FEATURES)
    assert features.index.equals(enc.frame.index)
    values = features.to_numpy()
    assert values.dtype == np.float64
    assert np.isnan(values[:FEATURE_WARMUP_DAYS]).all()
    assert np.isfinite(values[FEATURE_WARMUP_DAYS:]).all()


# -- layout -----------------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_layout_is_feature_major_oldest_day_first(encoded: dict[str, Encoded], region: str) -> None:
    enc = encoded[region]
    values = enc.features.to_numpy()
    for day in [enc.dates[0], datetime.date(2008, 10, 10), enc.dates[2500], enc.dates[-1]]:
        row = enc.row_of[day]
        window = values[row - WINDOW_DAYS + 1 : row + 1]  # (63 days, 6 features)
        np.testing.assert_array_equal(_blocks(enc.vector(day)), window.T.astype(np.float32))


@pytest.mark.parametrize("region", REGIONS)
def test_each_block_holds_its_named_feature(encoded: dict[str, Encoded], region: str) -> None:
    enc = encoded[region]
    day = datetime.date(2008, 10, 10)
    vector = enc.vector(day)
    stamp = enc.frame.index[enc.row_of[day]]
    previous = enc.frame.index[enc.row_of[day] - 1]
    for f, name in enumerate(FEATURES):
        last = f * WINDOW_DAYS + WINDOW_DAYS - 1
        assert vector[last] == np.float32(enc.features.loc[stamp, name]), name
        assert vector[last - 1] == np.float32(enc.features.loc[previous, name]), name
    realised = FEATURES.index("realised_vol_21d")
    assert vector[realised * WINDOW_DAYS + WINDOW_DAYS - 1] > 0.5  # Oct 2008 vol spike


# -- no look-ahead and determinism ---------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("day", LOOK_AHEAD_DAYS, ids=str)
def test_no_look_ahead_truncated_data_gives_same_embedding(
    encoded: dict[str, Encoded], region: str, day: datetime.date
) -> None:
    enc = encoded[region]
    truncated = enc.frame.loc[: day.isoformat()]
    pairs = encode(truncated)
    assert pairs[-1][0] == day
    np.testing.assert_array_equal(pairs[-1][1], enc.vector(day))
    np.testing.assert_array_equal(
        daily_features(truncated).to_numpy(), enc.features.to_numpy()[: len(truncated)]
    )


@pytest.mark.parametrize("region", REGIONS)
def test_changing_the_future_does_not_change_the_past(
    encoded: dict[str, Encoded], region: str
) -> None:
    enc = encoded[region]
    day = datetime.date(2008, 9, 12)
    future = enc.frame.index > day.isoformat()
    shocked = enc.frame.copy()
    prices = ["Open", "High", "Low", "Close", "Adj Close"]
    shocked.loc[future, prices] *= 0.25
    shocked.loc[future, "Volume"] = 0
    pairs = dict(encode(shocked, end=day))
    for as_of, vector in pairs.items():
        np.testing.assert_array_equal(vector, enc.vector(as_of))
    assert max(pairs) == day
    assert not np.array_equal(dict(encode(shocked))[enc.dates[-1]], enc.vectors[-1])


@pytest.mark.parametrize("region", REGIONS)
def test_deterministic_and_input_untouched(encoded: dict[str, Encoded], region: str) -> None:
    enc = encoded[region]
    before = enc.frame.copy()
    again = encode(enc.frame)
    assert [day for day, _ in again] == enc.dates
    np.testing.assert_array_equal(np.stack([v for _, v in again]), enc.matrix)
    assert enc.frame.equals(before)


# -- date filtering -----------------------------------------------------------------------


def test_date_filter_is_inclusive(encoded: dict[str, Encoded]) -> None:
    enc = encoded["US"]
    lehman = datetime.date(2008, 9, 15)
    only = encode(enc.frame, start=lehman, end=lehman)
    assert [day for day, _ in only] == [lehman]
    np.testing.assert_array_equal(only[0][1], enc.vector(lehman))

    # Saturday .. Tuesday: the Monday and Tuesday, nothing else.
    days = [d for d, _ in encode(enc.frame, datetime.date(2008, 9, 13), datetime.date(2008, 9, 16))]
    assert days == [lehman, datetime.date(2008, 9, 16)]

    weekend = datetime.date(2008, 9, 13)
    assert encode(enc.frame, start=weekend, end=weekend) == []
    assert [d for d, _ in encode(enc.frame, end=enc.dates[0])] == [enc.dates[0]]
    assert [d for d, _ in encode(enc.frame, start=enc.dates[-1])] == [enc.dates[-1]]
    assert len(encode(enc.frame, start=datetime.date(1990, 1, 1))) == len(enc.dates)
    assert encode(enc.frame, start=datetime.date(2019, 1, 1)) == []
    assert encode(enc.frame, end=datetime.date(2000, 3, 30)) == []  # still warming up


def test_filtered_output_is_a_slice_of_the_full_output(encoded: dict[str, Encoded]) -> None:
    enc = encoded["US_TECH"]
    start, end = datetime.date(2011, 8, 1), datetime.date(2011, 8, 31)
    pairs = encode(enc.frame, start=start, end=end)
    expected = [(d, v) for d, v in zip(enc.dates, enc.vectors, strict=True) if start <= d <= end]
    assert [d for d, _ in pairs] == [d for d, _ in expected]
    np.testing.assert_array_equal(
        np.stack([v for _, v in pairs]), np.stack([v for _, v in expected])
    )
    as_datetimes = encode(
        enc.frame, start=datetime.datetime(2011, 8, 1, 23, 59), end=datetime.datetime(2011, 8, 31)
    )
    assert [d for d, _ in as_datetimes] == [d for d, _ in pairs]


def test_reversed_date_window_is_rejected(encoded: dict[str, Encoded]) -> None:
    with pytest.raises(ValueError, match="after end"):
        encode(encoded["US"].frame, start=datetime.date(2010, 1, 2), end=datetime.date(2010, 1, 1))


# -- regimes are visible ---------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_crisis_embeddings_differ_from_calm_ones(encoded: dict[str, Encoded], region: str) -> None:
    enc = encoded[region]
    calm, crisis = enc.between(CALM), enc.between(CRISIS)
    assert len(calm) == 251 and len(crisis) == 121

    def feature_mean(matrix: np.ndarray, name: str) -> float:
        return float(
            matrix[:, :USED].reshape(-1, len(FEATURES), WINDOW_DAYS)[:, FEATURES.index(name)].mean()
        )

    # realised_vol_21d is log(21-day vol / 252-day vol): crisis vol is > 1.5x calm vol.
    assert feature_mean(crisis, "realised_vol_21d") - feature_mean(calm, "realised_vol_21d") > (
        np.log(1.5)
    )
    assert feature_mean(crisis, "hl_range") > feature_mean(calm, "hl_range") + 0.4
    assert feature_mean(crisis, "drawdown_252d") < -1.0 < -0.2 < feature_mean(calm, "drawdown_252d")
    assert feature_mean(crisis, "log_return") < 0 < feature_mean(calm, "log_return")

    # As vectors: the centroids are further apart than calm days are from their own centroid,
    # and cosine similarity is higher within each period than across them.
    calm_centre, crisis_centre = calm.mean(axis=0), crisis.mean(axis=0)
    spread = np.linalg.norm(calm - calm_centre, axis=1).mean()
    assert np.linalg.norm(calm_centre - crisis_centre) > 1.2 * spread

    def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return float((a @ b.T).mean())

    across = mean_cosine(calm, crisis)
    assert across < 0 < mean_cosine(calm, calm)
    assert across < mean_cosine(crisis, crisis)


# -- messy input ---------------------------------------------------------------------------


def test_zero_volume_days_are_neutral(encoded: dict[str, Encoded]) -> None:
    enc = encoded["US_TECH"]
    volume = enc.features["volume_change_63d"]
    for day in ["2015-05-12", "2018-01-09"]:  # Volume == 0 in the NASDAQ data
        assert enc.frame.loc[day, "Volume"] == 0
        assert volume.loc[day] == 0.0
        after = volume.loc[day:].iloc[1]  # the zero is left out of the next day's mean
        assert np.isfinite(after) and abs(after) < 0.5


def test_adj_close_is_optional_and_tz_aware_index_keeps_local_dates(
    encoded: dict[str, Encoded],
) -> None:
    enc = encoded["US"]
    window = {"start": datetime.date(2008, 9, 1), "end": datetime.date(2008, 12, 31)}
    reference = encode(enc.frame, **window)
    for variant in (
        enc.frame.drop(columns="Adj Close"),  # Adj Close == Close for an index
        enc.frame.tz_localize("America/New_York"),
    ):
        pairs = encode(variant, **window)
        assert [d for d, _ in pairs] == [d for d, _ in reference]
        np.testing.assert_array_equal(
            np.stack([v for _, v in pairs]), np.stack([v for _, v in reference])
        )


def test_short_input_gives_no_embedding(encoded: dict[str, Encoded]) -> None:
    frame = encoded["US"].frame
    assert encode(frame.iloc[:WARMUP_DAYS]) == []
    assert encode(frame.iloc[:10]) == []
    assert np.isnan(daily_features(frame.iloc[:10]).to_numpy()).all()
    pairs = encode(frame.iloc[: WARMUP_DAYS + 1])
    assert [d for d, _ in pairs] == [datetime.date(2000, 3, 31)]


def test_invalid_input_is_rejected(encoded: dict[str, Encoded]) -> None:
    frame = encoded["US"].frame.iloc[:400]
    with pytest.raises(TypeError, match="DataFrame"):
        encode(frame.to_numpy())
    with pytest.raises(TypeError, match="DatetimeIndex"):
        encode(frame.reset_index(drop=True))
    with pytest.raises(ValueError, match="Volume"):
        encode(frame.drop(columns="Volume"))
    with pytest.raises(ValueError, match="sorted ascending"):
        encode(frame.iloc[::-1])
    with pytest.raises(ValueError, match="one row per day"):
        encode(frame.iloc[[0, 0, 1]])
    bad = frame.copy()
    bad.iloc[350, bad.columns.get_loc("Close")] = -1.0
    with pytest.raises(ValueError, match="'Close' must be finite and > 0"):
        encode(bad)
    bad = frame.copy()
    bad.iloc[20, bad.columns.get_loc("Open")] = np.nan
    with pytest.raises(ValueError, match="'Open' must be finite"):
        daily_features(bad)


# -- synthetic data (hypothesis) --------------------------------------------------------------

synthetic = st.builds(
    _synthetic_ohlcv,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(WARMUP_DAYS - 5, WARMUP_DAYS + 150),
    daily_vol=st.floats(1e-5, 0.15),
    zero_volume_share=st.sampled_from([0.0, 0.02, 0.5, 1.0]),
    flat_days=st.sampled_from([0, 30, 300, 1000]),
)


@settings(NO_HYPOTHESIS_DB, max_examples=40)
@given(ohlcv=synthetic)
def test_synthetic_random_walks_encode_to_finite_float32(ohlcv: Any) -> None:
    pairs = encode(ohlcv)
    assert len(pairs) == max(0, len(ohlcv) - WARMUP_DAYS)
    for _, vector in pairs:
        assert vector.shape == (EMBEDDING_DIM,) and vector.dtype == np.float32
        assert np.isfinite(vector).all()
        assert np.abs(vector).max() <= 10.0
        assert not vector[USED:].any()
    values = daily_features(ohlcv).to_numpy()
    assert np.isfinite(values[FEATURE_WARMUP_DAYS:]).all()


@settings(NO_HYPOTHESIS_DB, max_examples=25)
@given(ohlcv=synthetic, cut=st.integers(0, 200), data=st.data())
def test_synthetic_prefix_encodes_identically(ohlcv: Any, cut: int, data: Any) -> None:
    cut = min(len(ohlcv), WARMUP_DAYS + cut)
    full = encode(ohlcv)
    prefix = encode(ohlcv.iloc[:cut])
    assert len(prefix) == max(0, cut - WARMUP_DAYS)
    for (day_a, vec_a), (day_b, vec_b) in zip(prefix, full, strict=False):
        assert day_a == day_b
        np.testing.assert_array_equal(vec_a, vec_b)
    # Rewriting everything after the cut leaves the embeddings up to the cut unchanged.
    scale = data.draw(st.floats(0.1, 10.0))
    changed = ohlcv.copy()
    changed.iloc[cut:, :4] *= scale
    for (_, vec_a), (_, vec_b) in zip(prefix, encode(changed), strict=False):
        np.testing.assert_array_equal(vec_a, vec_b)
