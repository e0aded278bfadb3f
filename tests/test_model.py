"""NumericRegimeModel semantics and the temperature fit (no database needed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from regime_pg import RegimeLabel, RegimePrototype
from regime_pg.errors import DimensionMismatchError, InvalidInputError, InvalidWindowError
from regime_pg.model import NumericRegimeModel, RegimeState
from regime_pg.softmax import fit_temperature, mean_log_loss, softmax_confidences


def _prototypes(dim: int = 4) -> list[RegimePrototype]:
    return [
        RegimePrototype(RegimeLabel.NEUTRAL, np.zeros(dim)),
        RegimePrototype(RegimeLabel.CRISIS, np.full(dim, 3.0)),
        RegimePrototype("RECOVERY", np.r_[np.full(dim - 1, 1.0), 5.0]),
    ]


class ArrayEncoder:
    """A real encoder over a dict of arrays, as the engine's encoders are called."""

    def __init__(self, table: dict[tuple[str, dt.date], np.ndarray]) -> None:
        self.table = table
        self.calls: list[tuple[str, dt.date, int]] = []

    def encode(self, instrument_id: str, as_of_date: dt.date, window_days: int) -> np.ndarray:
        self.calls.append((instrument_id, as_of_date, window_days))
        return self.table[(instrument_id, as_of_date)]


def test_classify_embedding_is_nearest_with_softmax_confidence() -> None:
    model = NumericRegimeModel(None, {}, 63, _prototypes(), temperature=2.0)
    x = np.array([2.5, 2.0, 3.5, 2.0])
    result = model.classify_embedding(x)
    centres = {str(p.label): p.center.astype(np.float64) for p in _prototypes()}
    expected = {k: float(np.linalg.norm(x - c)) for k, c in centres.items()}
    assert result.distances == pytest.approx(expected, rel=1e-12)
    labels = sorted(expected)
    d = np.array([expected[k] for k in labels])
    p = np.exp(-d / 2.0) / np.exp(-d / 2.0).sum()
    assert str(result.label) == labels[int(np.argmin(d))] == "CRISIS"
    assert result.confidence == pytest.approx(p.max(), rel=1e-12)


def test_ties_go_to_the_alphabetically_first_label() -> None:
    model = NumericRegimeModel(
        None,
        {},
        63,
        [
            RegimePrototype("NEUTRAL", np.array([1.0, 0.0])),
            RegimePrototype("CARRY", np.array([-1.0, 0.0])),
        ],
    )
    result = model.classify_embedding(np.zeros(2))
    assert result.label is RegimeLabel.CARRY and result.confidence == pytest.approx(0.5)


def test_default_temperature_saturates_at_large_distances() -> None:
    model = NumericRegimeModel(None, {}, 63, _prototypes(384))
    assert round(model.classify_embedding(np.zeros(384)).confidence, 3) == 1.0


def test_classify_returns_engine_state() -> None:
    day = dt.date(2020, 3, 16)
    embedding = np.full(4, 2.9, dtype=np.float32)
    encoder = ArrayEncoder({("SPX", day): embedding})
    model = NumericRegimeModel(encoder, {"US": "SPX"}, 21, _prototypes(), temperature=1.5)
    state = model.classify(day, "US")
    assert isinstance(state, RegimeState)
    assert (state.as_of_date, state.region, state.regime_label) == (day, "US", RegimeLabel.CRISIS)
    assert encoder.calls == [("SPX", day, 21)]
    assert np.array_equal(state.regime_embedding, embedding)
    assert state.metadata["window_days"] == 21 and state.metadata["temperature"] == 1.5
    assert state.metadata["instrument_id"] == "SPX"
    assert set(state.metadata["distances"]) == {"CRISIS", "NEUTRAL", "RECOVERY"}
    with pytest.raises(InvalidInputError, match="no instrument"):
        model.classify(day, "EU")


class Stamp(dt.datetime):
    """A datetime subclass, as ``pandas.Timestamp`` is one."""


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2020, 3, 16, 16, 0),
        dt.datetime(2020, 3, 16, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        Stamp(2020, 3, 16, 9, 30),
        np.datetime64("2020-03-16T16:00:00.123456789"),
        np.datetime64("2020-03-16"),
        "2020-03-16",
    ],
    ids=repr,
)
def test_classify_asks_for_the_calendar_date(when: object) -> None:
    day = dt.date(2020, 3, 16)
    encoder = ArrayEncoder({("SPX", day): np.full(4, 2.9, dtype=np.float32)})
    model = NumericRegimeModel(encoder, {"US": "SPX"}, 21, _prototypes())
    state = model.classify(when, "US")  # type: ignore[arg-type]
    assert encoder.calls == [("SPX", day, 21)]
    assert type(encoder.calls[0][1]) is dt.date
    assert type(state.as_of_date) is dt.date and state.as_of_date == day
    assert state.regime_label is RegimeLabel.CRISIS


@pytest.mark.parametrize(
    "when", [20200316, None, "2020-3-16", np.datetime64("2020-03"), dt.time(16)], ids=repr
)
def test_classify_refuses_what_is_no_date(when: object) -> None:
    encoder = ArrayEncoder({})
    model = NumericRegimeModel(encoder, {"US": "SPX"}, 21, _prototypes())
    with pytest.raises(InvalidWindowError, match=r"^as_of_date must be a date"):
        model.classify(when, "US")  # type: ignore[arg-type]
    assert encoder.calls == []


@pytest.mark.parametrize("shape", [(2, 4), (1, 4), (2, 3, 4)])
def test_classify_embedding_takes_one_embedding_not_a_batch(shape: tuple[int, ...]) -> None:
    model = NumericRegimeModel(None, {}, 63, _prototypes())
    with pytest.raises(DimensionMismatchError) as caught:
        model.classify_embedding(np.zeros(shape))
    assert str(caught.value) == (
        f"classify_embedding takes one embedding of shape (4,), got shape {shape}; "
        "for a batch, distances() takes (n, 4)"
    )


def test_distances_of_a_batch_are_those_of_each_embedding() -> None:
    model = NumericRegimeModel(None, {}, 63, _prototypes(), temperature=2.0)
    batch = np.array([[2.5, 2.0, 3.5, 2.0], [0.1, 0.0, 0.2, 0.0], [1.0, 1.0, 1.0, 4.0]])
    distances = model.distances(batch)
    assert distances.shape == (3, 3)
    for row, embedding in zip(distances, batch, strict=True):
        result = model.classify_embedding(embedding)
        assert list(row) == [result.distances[str(p.label)] for p in model.prototypes]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"window_days": 0}, InvalidInputError, "window_days"),
        ({"temperature": 0.0}, InvalidInputError, "temperature"),
        ({"temperature": float("nan")}, InvalidInputError, "temperature"),
        ({"prototypes": []}, InvalidInputError, "at least one"),
        (
            {"prototypes": [RegimePrototype("A", np.zeros(2)), RegimePrototype("B", np.zeros(3))]},
            DimensionMismatchError,
            "differ in shape",
        ),
    ],
)
def test_constructor_checks(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    args: dict[str, object] = {
        "encoder": None,
        "region_instruments": {},
        "window_days": 63,
        "prototypes": _prototypes(),
        "temperature": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(error, match=message):
        NumericRegimeModel(**args)  # type: ignore[arg-type]


def test_wrong_dimension_embedding() -> None:
    model = NumericRegimeModel(None, {}, 63, _prototypes())
    with pytest.raises(DimensionMismatchError):
        model.classify_embedding(np.zeros(5))


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(42)
    true_t = 2.5
    distances = rng.uniform(5.0, 15.0, size=(20_000, 4))
    p = softmax_confidences(distances, true_t)
    own = np.array([rng.choice(4, p=row) for row in p])
    fit = fit_temperature(distances, own)
    assert fit.temperature == pytest.approx(true_t, rel=0.05)
    assert not fit.separable
    assert fit.log_loss <= mean_log_loss(distances, own, true_t) + 1e-12
    assert fit.log_loss < fit.log_loss_at_1


def test_separable_windows_get_laplace_confidence() -> None:
    distances = np.array([[1.0, 9.0], [2.0, 8.0], [9.0, 1.5], [7.0, 2.0]])
    own = [0, 0, 1, 1]
    fit = fit_temperature(distances, own)
    assert fit.separable
    assert fit.log_loss == pytest.approx(np.log(6 / 5), rel=1e-9)
    assert 0.5 < fit.temperature < 5.0
