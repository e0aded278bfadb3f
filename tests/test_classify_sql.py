"""Classification in SQL with a saved set, against numpy's float64 answer; temperature fit.

Tolerances: pgvector's ``<->`` sums squared float32 differences in float32, so a
distance is within about 1e-7 relative of numpy's float64 distance of the same
float32 values (asserted: 1e-6).  The confidence inherits that error scaled by
distance / temperature: it equals numpy's softmax of the returned distances to
1e-12, and an all-numpy softmax to 1e-6 + 4e-7 * max distance / temperature.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regime_pg.connection import Connection, vector_to_numpy
from tests.engine import business_days, insert_rows

DIM = 384
LABELS = ["BULL", "BEAR", "CHOP"]
WINDOWS = {
    "BULL": {"start_date": "2018-01-01", "end_date": "2018-03-31"},
    "BEAR": {"start_date": "2018-04-01", "end_date": "2018-06-30"},
    "CHOP": {"start_date": "2018-07-01", "end_date": "2018-09-30"},
}
TEMPERATURE = 2.0


def regime_embeddings(rng: np.random.Generator, which: list[int]) -> np.ndarray:
    """Embeddings around a centre per regime (axes 0, 1, 2), noisy enough to overlap."""
    x = rng.standard_normal((len(which), DIM)).astype(np.float32)
    x[np.arange(len(which)), which] += 3.0
    return x.astype("<f4")


def load(conn: Connection, region: str = "US", seed: int = 5) -> tuple[list[dt.date], np.ndarray]:
    """2018-2019: three calibration windows in 2018, a mixed 2019."""
    rng = np.random.default_rng(seed)
    dates = business_days(dt.date(2018, 1, 1), 2 * 261)
    which = [0 if d.month <= 3 else 1 if d.month <= 6 else 2 if d.month <= 9 else
             int(rng.integers(0, 3)) for d in dates]
    x = regime_embeddings(rng, which)
    insert_rows(conn, region, dates, x)
    return dates, x


def save_set(conn: Connection, name: str = "us-v1", region: str = "US",
             windows: dict[str, Any] = WINDOWS, temperature: float | None = TEMPERATURE) -> None:
    conn.execute("SELECT save_regime_prototype_set(%s, %s, %s, %s)",
                 (name, region, json.dumps(windows), temperature))


def prototypes(conn: Connection, name: str = "us-v1") -> tuple[list[str], np.ndarray, float]:
    rows = conn.execute(
        "SELECT label, center FROM regime_prototype_set_members WHERE set_name = %s ORDER BY label",
        (name,)).fetchall()
    temperature = conn.execute(
        "SELECT temperature FROM regime_prototype_sets WHERE name = %s", (name,)).fetchone()
    assert temperature is not None
    return ([str(r[0]) for r in rows], np.stack([vector_to_numpy(r[1]) for r in rows]),
            float(temperature[0]))


def numpy_classify(embedding: np.ndarray, labels: list[str], centers: np.ndarray,
                   temperature: float) -> tuple[str, float, dict[str, float]]:
    """The engine's rule in float64: nearest centre (ties: first label), softmax at it."""
    d = np.linalg.norm(centers.astype(np.float64) - embedding.astype(np.float64), axis=1)
    winner = min(range(len(labels)), key=lambda i: (d[i], labels[i]))
    z = -d / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return labels[winner], float(p[winner]), dict(zip(labels, d.tolist(), strict=True))


def softmax_at(distances: dict[str, float], label: str, temperature: float) -> float:
    d = np.array(list(distances.values()))
    z = -d / temperature
    p = np.exp(z - z.max())
    return float(p[list(distances).index(label)] / p.sum())


def assert_matches_numpy(row: tuple[Any, ...], embedding: np.ndarray, labels: list[str],
                         centers: np.ndarray, temperature: float) -> None:
    label, confidence, distances = row[:3]
    want_label, want_confidence, want_distances = numpy_classify(
        embedding, labels, centers, temperature)
    if label != want_label:
        # a tie at float32 precision (the midpoint of two centres): pgvector's
        # float32 distances may break it the other way than float64 does
        assert want_distances[label] == pytest.approx(want_distances[want_label], rel=1e-6)
        want_confidence = softmax_at(want_distances, label, temperature)
    assert sorted(distances) == sorted(labels)
    for key, value in want_distances.items():
        assert distances[key] == pytest.approx(value, rel=1e-6)
    assert confidence == pytest.approx(softmax_at(distances, label, temperature), rel=1e-12)
    tolerance = 1e-6 + 4e-7 * max(want_distances.values()) / temperature
    assert confidence == pytest.approx(want_confidence, rel=tolerance)


def expect_error(conn: Connection, query: str, params: tuple[Any, ...], sqlstate: str,
                 message: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query, params)
    assert caught.value.sqlstate == sqlstate, caught.value.diag.message_primary
    assert message in (caught.value.diag.message_primary or "")
    return caught.value


# ----------------------------------------------------------------- classify_regime


def test_classify_regime_matches_numpy(conn: Connection) -> None:
    _, x = load(conn)
    save_set(conn)
    labels, centers, temperature = prototypes(conn)
    rng = np.random.default_rng(9)
    probes = [x[0], x[100], x[-1], centers[1], (centers[0] + centers[2]) / 2,
              rng.standard_normal(DIM).astype(np.float32) * 10]
    confidences = []
    for embedding in probes:
        row = conn.execute("SELECT * FROM classify_regime(%s, 'us-v1')",
                           (np.asarray(embedding, np.float32),)).fetchall()
        assert len(row) == 1
        assert_matches_numpy(row[0], np.asarray(embedding, np.float32), labels, centers,
                             temperature)
        confidences.append(row[0][1])
    # The confidences carry information at this temperature.
    assert min(confidences) < 0.6 < max(confidences) < 1


def test_confidence_is_stable_for_large_distance_over_temperature(conn: Connection) -> None:
    load(conn)
    save_set(conn, temperature=1e-3)
    labels, centers, _ = prototypes(conn)
    # exp(-distance / temperature) underflows: no error, the winner takes it all.
    row = conn.execute("SELECT * FROM classify_regime(%s, 'us-v1')", (centers[1],)).fetchone()
    assert row[:2] == (labels[1], 1.0)
    assert row[2][labels[1]] == 0
    assert min(v for k, v in row[2].items() if k != labels[1]) > 1


def test_ties_go_to_the_first_label_in_byte_order(conn: Connection) -> None:
    dates = business_days(dt.date(2018, 1, 1), 20)
    x = np.zeros((20, DIM), dtype=np.float32)
    x[:10, 0] = 5.0   # window A1: centre +5 e0
    x[10:, 0] = -5.0  # window A_: centre -5 e0
    insert_rows(conn, "TIE", dates, x.astype("<f4"))
    windows = {"A_": {"start_date": str(dates[10]), "end_date": str(dates[19])},
               "A1": {"start_date": str(dates[0]), "end_date": str(dates[9])}}
    save_set(conn, "tie", "TIE", windows, 1.0)
    probe = np.zeros(DIM, dtype=np.float32)
    probe[1] = 3.0
    label, confidence, distances = conn.execute(
        "SELECT * FROM classify_regime(%s, 'tie')", (probe,)).fetchone()
    assert distances["A1"] == distances["A_"]
    assert (label, confidence) == ("A1", 0.5)  # sorted(["A_", "A1"])[0], as in Python


def test_null_embedding_gives_one_row_of_nulls(conn: Connection) -> None:
    load(conn)
    save_set(conn)
    assert conn.execute("SELECT * FROM classify_regime(NULL, 'us-v1')").fetchall() == [
        (None, None, None)]
    # The set is still checked.
    expect_error(conn, "SELECT * FROM classify_regime(NULL, %s)", ("nope",), "42704",
                 "unknown prototype set 'nope'")


def test_classify_regime_errors(conn: Connection) -> None:
    load(conn)
    save_set(conn)
    error = expect_error(conn, "SELECT * FROM classify_regime(%s, %s)",
                         (np.ones(DIM, np.float32), "US-V1"), "42704",
                         "unknown prototype set 'US-V1'")
    assert (error.diag.table_name, error.diag.column_name) == ("regime_prototype_sets", "name")
    expect_error(conn, "SELECT * FROM classify_regime(%s, %s)",
                 (np.ones(DIM, np.float32), None), "22004", "must not be NULL")
    expect_error(conn, "SELECT * FROM classify_regime(%s, 'us-v1')",
                 (np.ones(3, np.float32),), "22000",
                 "embedding has 3 dimensions; prototype set 'us-v1' has 384")


# ----------------------------------------------------------------- classify_regimes


def test_classify_regimes_one_row_per_usable_date_matching_numpy(conn: Connection) -> None:
    conn.add_notice_handler(lambda d: None)
    dates, x = load(conn)
    save_set(conn)
    labels, centers, temperature = prototypes(conn)
    latest = {d: x[i] for i, d in enumerate(dates)}
    # Re-runs of the engine: a newer row replaces a date, a newer NULL hides one,
    # an older row changes nothing, unconvertible bytes are skipped.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    earlier = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    replaced = np.full(DIM, 0.5, dtype="<f4")
    insert_rows(conn, "US", [dates[300]], [replaced], created_at=later)
    latest[dates[300]] = replaced
    insert_rows(conn, "US", [dates[301]], [None], created_at=later)
    del latest[dates[301]]
    insert_rows(conn, "US", [dates[302]], [replaced * 7], created_at=earlier)
    insert_rows(conn, "US", [dates[303]], [b"\x00\x01"], created_at=later)
    del latest[dates[303]]
    insert_rows(conn, "OTHER", dates[:5], x[:5])

    start, end = dt.date(2018, 6, 1), dt.date(2019, 6, 30)
    rows = conn.execute(
        "SELECT * FROM classify_regimes('US', %s, %s, 'us-v1')", (start, end)).fetchall()
    expected_dates = sorted(d for d in latest if start <= d <= end)
    assert [r[0] for r in rows] == expected_dates
    for row in rows:
        as_of_date, label, confidence, distances, raw_label = row
        assert label == raw_label
        assert_matches_numpy((label, confidence, distances), latest[as_of_date], labels,
                             centers, temperature)
    # Same numbers as classify_regime on the same embeddings.
    single = conn.execute(
        "SELECT c.* FROM regime_embeddings_latest AS e,"
        "       LATERAL classify_regime(e.embedding_vector, 'us-v1') AS c"
        " WHERE e.region = 'US' AND e.as_of_date BETWEEN %s AND %s"
        "   AND e.embedding_vector IS NOT NULL ORDER BY e.as_of_date", (start, end)).fetchall()
    assert single == [r[1:4] for r in rows]
    # Every label shows up and the confidences are not all 1.
    assert {r[1] for r in rows} == set(LABELS)
    assert min(r[2] for r in rows) < 0.9


def test_classify_regimes_of_an_empty_window_is_empty(conn: Connection) -> None:
    load(conn)
    save_set(conn)
    assert conn.execute(
        "SELECT * FROM classify_regimes('US', '2030-01-01', '2030-12-31', 'us-v1')"
    ).fetchall() == []


@pytest.mark.parametrize(
    ("args", "sqlstate", "message", "table", "column"),
    [
        (("US", "2019-01-01", "2019-12-31", "nope", 1), "42704", "unknown prototype set 'nope'",
         "regime_prototype_sets", "name"),
        (("EU", "2019-01-01", "2019-12-31", "us-v1", 1), "22023",
         "prototype set 'us-v1' was saved for region 'US', not for region 'EU'",
         "regime_prototype_sets", "region"),
        (("XX", "2019-01-01", "2019-12-31", "us-v1", 1), "42704", "unknown region 'XX'",
         "regimes", "region"),
        (("US", "2019-12-31", "2019-01-01", "us-v1", 1), "22023", "is reversed",
         "regimes", "as_of_date"),
        (("US", "2019-01-01", "infinity", "us-v1", 1), "22008", "finite dates",
         "regimes", "as_of_date"),
        (("US", "2019-01-01", "2019-12-31", "us-v1", 0), "22023",
         "min_duration must be at least 1", None, None),
        (("US", "2019-01-01", "2019-12-31", "us-v1", None), "22004",
         "min_duration must not be NULL", None, None),
    ],
)
def test_classify_regimes_errors(conn: Connection, args: tuple[Any, ...], sqlstate: str,
                                 message: str, table: str | None, column: str | None) -> None:
    dates, x = load(conn)
    insert_rows(conn, "EU", dates[:10], x[:10])
    save_set(conn)
    error = expect_error(conn, "SELECT * FROM classify_regimes(%s, %s, %s, %s, %s)", args,
                         sqlstate, message)
    assert (error.diag.table_name, error.diag.column_name) == (table, column)


# ----------------------------------------------------------------- min_duration


def absorb(raw: list[str], min_duration: int) -> list[str]:
    """The documented rule, written independently: short runs take the label of the
    last long run before them; rows before the first long run take its label."""
    runs = [(label, len(list(group))) for label, group in itertools.groupby(raw)]
    long_labels = [label for label, length in runs if length >= min_duration]
    if not long_labels:
        return list(raw)
    current = long_labels[0]
    out: list[str] = []
    for label, length in runs:
        if length >= min_duration:
            current = label
        out.extend([current] * length)
    return out


SEQUENCE_CENTRES = {label: np.eye(DIM, dtype=np.float32)[axis] * 10
                    for axis, label in enumerate("ABC")}


def load_sequence_set(conn: Connection) -> None:
    """Region SEQ: three far-apart prototypes from 2017 windows, saved as set 'seq'."""
    if conn.execute("SELECT count(*) FROM regime_prototype_sets WHERE name = 'seq'"
                    ).fetchone() == (1,):
        return
    rng = np.random.default_rng(1)
    dates = business_days(dt.date(2017, 1, 2), 15)
    rows = [SEQUENCE_CENTRES["ABC"[i // 5]] + rng.standard_normal(DIM).astype(np.float32) * 0.01
            for i in range(15)]
    insert_rows(conn, "SEQ", dates, [r.astype("<f4") for r in rows])
    windows = {label: {"start_date": str(dates[5 * i]), "end_date": str(dates[5 * i + 4])}
               for i, label in enumerate("ABC")}
    save_set(conn, "seq", "SEQ", windows, 1.0)


def classify_sequence(conn: Connection, raw: list[str],
                      min_duration: int) -> list[tuple[Any, ...]]:
    conn.execute("DELETE FROM regimes WHERE region = 'SEQ' AND as_of_date >= '2018-01-01'")
    dates = business_days(dt.date(2018, 1, 1), len(raw))
    # Some dates without a usable embedding: they are no rows and break no run.
    insert_rows(conn, "SEQ", [d + dt.timedelta(days=1) for d in dates if d.weekday() == 4],
                [None] * sum(d.weekday() == 4 for d in dates))
    insert_rows(conn, "SEQ", dates, [SEQUENCE_CENTRES[label].astype("<f4") for label in raw])
    return conn.execute(
        "SELECT as_of_date, label, raw_label, confidence, distances"
        "  FROM classify_regimes('SEQ', '2018-01-01', '2019-12-31', 'seq', %s)",
        (min_duration,)).fetchall()


def test_min_duration_absorbs_short_runs(conn: Connection) -> None:
    load_sequence_set(conn)
    raw = list("BBAAAACAAABBBBCC")
    expected = list("AAAAAAAAAABBBBBB")
    assert absorb(raw, 3) == expected
    rows = classify_sequence(conn, raw, 3)
    assert [r[2] for r in rows] == raw
    assert [r[1] for r in rows] == expected
    plain = classify_sequence(conn, raw, 1)
    assert [r[1] for r in plain] == raw
    # Absorbed dates keep the confidence and distances of their nearest prototype.
    assert [r[3:] for r in rows] == [r[3:] for r in plain]
    # Without any run of min_duration dates, nothing is absorbed.
    assert [r[1] for r in classify_sequence(conn, list("ABABCC"), 3)] == list("ABABCC")
    # A run of exactly min_duration dates holds.
    assert [r[1] for r in classify_sequence(conn, list("AAABBBA"), 3)] == list(
        "AAABBBB")


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(st.sampled_from("ABC"), min_size=1, max_size=30),
       min_duration=st.integers(1, 6))
def test_min_duration_rule_on_random_sequences(conn: Connection, raw: list[str],
                                               min_duration: int) -> None:
    load_sequence_set(conn)
    rows = classify_sequence(conn, raw, min_duration)
    assert [r[2] for r in rows] == raw
    assert [r[1] for r in rows] == absorb(raw, min_duration)


# ----------------------------------------------------------------- centroid series


def test_centroid_series_matches_numpy_trailing_means(conn: Connection) -> None:
    dates, x = load(conn)
    insert_rows(conn, "US", [dates[40]], [None],
                created_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    save_set(conn)
    labels, centers, _ = prototypes(conn)
    usable = [(d, x[i]) for i, d in enumerate(dates) if i != 40]
    window = 7
    start, end = dates[3], dates[60]
    rows = conn.execute(
        "SELECT * FROM regime_centroid_series('US', %s, %s, %s, 'us-v1')",
        (start, end, window)).fetchall()
    assert [r[0] for r in rows] == [d for d, _ in usable if start <= d <= end]
    position = {d: i for i, (d, _) in enumerate(usable)}
    for as_of_date, n_dates, center, distances in rows:
        i = position[as_of_date]
        trailing = np.array([v for _, v in usable[max(0, i - window + 1): i + 1]])
        assert n_dates == len(trailing) == min(window, i + 1)
        expected = trailing.astype(np.float64).mean(axis=0)
        got = vector_to_numpy(center).astype(np.float64)
        scale = np.abs(trailing.astype(np.float64)).mean(axis=0)
        assert np.all(np.abs(got - expected) <= 1e-6 * scale + 1e-30)
        assert sorted(distances) == sorted(labels)
        for label, proto in zip(labels, centers, strict=True):
            assert distances[label] == pytest.approx(
                np.linalg.norm(got - proto.astype(np.float64)), rel=1e-6)
    # The window reaches back before start_date; only the region's first dates have fewer.
    assert rows[0][1] == 4
    assert all(r[1] == window for r in rows[4:])


def test_centroid_series_errors(conn: Connection) -> None:
    load(conn)
    save_set(conn)
    for window_days, sqlstate, message in [(0, "22023", "window_days must be at least 1"),
                                           (None, "22004", "window_days must not be NULL")]:
        expect_error(conn, "SELECT * FROM regime_centroid_series('US', '2018-01-01',"
                     " '2018-12-31', %s, 'us-v1')", (window_days,), sqlstate, message)
    error = expect_error(conn, "SELECT * FROM regime_centroid_series('US', '2018-01-01',"
                         " '2018-12-31', 5, 'nope')", (), "42704", "unknown prototype set")
    assert error.diag.table_name == "regime_prototype_sets"


# ----------------------------------------------------------------- temperature fit


def numpy_nll(beta: float, d: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Negative log-likelihood of labels y under softmax(-beta * d), and its slope."""
    x = d - d.min(axis=1, keepdims=True)
    w = np.exp(-beta * x)
    own = x[np.arange(len(y)), y]
    f = float((beta * own + np.log(w.sum(axis=1))).sum())
    g = float((own - (w * x).sum(axis=1) / w.sum(axis=1)).sum())
    return f, g


def numpy_root(fn: Any, lo: float = 1e-8, hi: float = 1e8) -> float:
    """The root of an increasing function of beta, by geometric bisection."""
    for _ in range(400):
        mid = math.sqrt(lo * hi)
        if fn(mid) < 0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def softmax_model_data(seed: int, n: int, temperature: float,
                       k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Positions around k centres, each labelled by a draw from softmax(-d / T) over the
    centroids of the labelled windows themselves: redraw (same uniforms) with the new
    centroids until they reproduce themselves, so the fitted model is the true one."""
    rng = np.random.default_rng(seed)
    component = rng.integers(0, k, n)
    position = np.zeros((n, DIM))
    position[np.arange(n), component] = 6.0
    position[:, :k] += 3.0 * rng.standard_normal((n, k))
    position[:, k:k + 5] += 0.5 * rng.standard_normal((n, 5))
    position = position.astype(np.float32)
    uniform = rng.random(n)
    centres = np.zeros((k, DIM))
    centres[np.arange(k), np.arange(k)] = 6.0
    for _ in range(200):
        d = np.linalg.norm(position[:, None, :].astype(np.float64) - centres[None], axis=2)
        z = -(d - d.min(axis=1, keepdims=True)) / temperature
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        label = np.minimum((uniform[:, None] > np.cumsum(p, axis=1)).sum(axis=1), k - 1)
        new = np.stack([position[label == j].astype(np.float64).mean(axis=0)
                        for j in range(k)]).astype(np.float32).astype(np.float64)
        if np.array_equal(new, centres):
            return position, label
        centres = new
    raise AssertionError("no self-consistent labelling")


def load_labelled(conn: Connection, region: str, position: np.ndarray,
                  label: np.ndarray) -> dict[str, Any]:
    """Each label's embeddings on consecutive business days, one window per label."""
    windows = {}
    start = dt.date(2001, 1, 1)
    for j in range(int(label.max()) + 1):
        rows = position[label == j]
        dates = business_days(start, len(rows))
        insert_rows(conn, region, dates, rows.astype("<f4"))
        windows[f"L{j}"] = {"start_date": str(dates[0]), "end_date": str(dates[-1])}
        start = dates[-1] + dt.timedelta(days=1)
    return windows


def distances_to_prototypes(conn: Connection, region: str, windows: dict[str, Any],
                            position: np.ndarray, label: np.ndarray) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    rows = conn.execute("SELECT label, center FROM compute_regime_prototypes(%s, %s)"
                        " ORDER BY label", (region, json.dumps(windows))).fetchall()
    centers = np.stack([vector_to_numpy(r[1]) for r in rows]).astype(np.float64)
    order = np.argsort(label, kind="stable")
    d = np.linalg.norm(position[order].astype(np.float64)[:, None, :] - centers[None], axis=2)
    return d, label[order]


def test_fit_recovers_a_known_temperature(conn: Connection) -> None:
    position, label = softmax_model_data(seed=0, n=3000, temperature=2.5)
    windows = load_labelled(conn, "SYN", position, label)
    fit = conn.execute("SELECT * FROM fit_regime_temperature('SYN', %s)",
                       (json.dumps(windows),)).fetchone()
    assert fit is not None
    temperature, log_loss, log_loss_at_1, n, separable = fit
    assert (n, separable) == (3000, False)
    assert temperature == pytest.approx(2.5, rel=0.1)
    # The maximum of the same likelihood, in numpy float64.
    d, y = distances_to_prototypes(conn, "SYN", windows, position, label)
    beta = numpy_root(lambda b: numpy_nll(b, d, y)[1])
    assert temperature == pytest.approx(1 / beta, rel=1e-5)
    assert log_loss == pytest.approx(numpy_nll(beta, d, y)[0] / n, rel=1e-6)
    assert log_loss_at_1 == pytest.approx(numpy_nll(1.0, d, y)[0] / n, rel=1e-6)
    assert log_loss < log_loss_at_1


def test_fit_of_separable_windows_is_bounded_by_the_rule_of_succession(
        conn: Connection) -> None:
    rng = np.random.default_rng(4)
    label = np.repeat([0, 1, 2], 40)
    position = rng.standard_normal((120, DIM)).astype(np.float32)
    position[np.arange(120), label] += 30.0
    windows = load_labelled(conn, "SEP", position, label)
    temperature, log_loss, log_loss_at_1, n, separable = conn.execute(
        "SELECT * FROM fit_regime_temperature('SEP', %s)", (json.dumps(windows),)).fetchone()
    assert (n, separable) == (120, True)
    d, y = distances_to_prototypes(conn, "SEP", windows, position, label)
    assert np.all(d.argmin(axis=1) == y)
    # The likelihood grows forever as T -> 0; the fit stops where the mean log-loss
    # is ln((n + 2) / (n + 1)).
    target = math.log(122 / 121)
    assert log_loss == pytest.approx(target, rel=1e-9)
    beta = numpy_root(lambda b: target - numpy_nll(b, d, y)[0] / n)
    assert temperature == pytest.approx(1 / beta, rel=1e-5)
    assert log_loss_at_1 == pytest.approx(numpy_nll(1.0, d, y)[0] / n, rel=1e-6)


def test_save_with_a_fitted_temperature_classifies_with_it(conn: Connection) -> None:
    dates, x = load(conn)
    save_set(conn, "fitted", temperature=None)
    fit = conn.execute("SELECT * FROM fit_regime_temperature('US', %s)",
                       (json.dumps(WINDOWS),)).fetchone()
    stored = conn.execute(
        "SELECT temperature, fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable"
        "  FROM regime_prototype_sets WHERE name = 'fitted'").fetchone()
    assert stored == fit
    assert fit[3] == sum(1 for d in dates if d.year == 2018 and d.month <= 9)
    labels, centers, temperature = prototypes(conn, "fitted")
    assert temperature == fit[0]
    row = conn.execute("SELECT * FROM classify_regime(%s, 'fitted')", (x[-1],)).fetchone()
    assert_matches_numpy(row, x[-1], labels, centers, temperature)


def test_fit_of_uninformative_labels_stops_at_the_upper_bound(conn: Connection) -> None:
    """Prototypes of a document whose labels are rotated: each window is nearer another
    label's centre, the likelihood is best at T -> infinity, and the fit stops at 1e3 * G."""
    dates, x = load(conn)
    document = conn.execute("SELECT regime_prototypes_json('US', %s)",
                            (json.dumps(WINDOWS),)).fetchone()[0]
    rotated = json.loads(json.dumps(document))
    order = sorted(LABELS)
    for label, donor in zip(order, order[1:] + order[:1], strict=True):
        for key in ("center", "l2_norm"):  # a centre keeps its norm (prototype_sets--3.sql)
            rotated["prototypes"][label][key] = document["prototypes"][donor][key]
    row = conn.execute(
        "SELECT temperature, fit_n, fit_separable"
        "  FROM save_regime_prototype_set_from_document('rotated', %s, NULL)",
        (json.dumps(rotated),)).fetchone()
    assert row[1:] == (len([d for d in dates if d.year == 2018 and d.month <= 9]), False)
    centers = np.array([rotated["prototypes"][label]["center"] for label in order])
    label_of = {label: j for j, label in enumerate(order)}
    y = np.array([label_of[LABELS[0 if d.month <= 3 else 1 if d.month <= 6 else 2]]
                  for d in dates if d.year == 2018 and d.month <= 9])
    d = np.linalg.norm(x[: len(y)].astype(np.float64)[:, None, :] - centers[None], axis=2)
    mine = d[np.arange(len(y)), y]
    rival = np.where(np.arange(3)[None, :] == y[:, None], np.inf, d).min(axis=1)
    assert numpy_nll(1e-9, d, y)[1] > 0  # the slope at T -> infinity: no maximum
    assert row[0] == pytest.approx(1e3 * np.median(np.abs(rival - mine)), rel=1e-6)


@pytest.mark.parametrize(
    ("windows", "sqlstate", "message"),
    [
        ({"BULL": WINDOWS["BULL"]}, "22023", "needs at least two prototypes, got 1"),
        ({"BULL": WINDOWS["BULL"], "SAME": WINDOWS["BULL"]}, "22023",
         "every calibration embedding is as far"),
        ({"BULL": WINDOWS["BULL"], "NONE": {"start_date": "2030-01-01",
                                            "end_date": "2030-02-01"}},
         "P0002", "no usable embedding"),
        ({"bull": WINDOWS["BULL"]}, "22P02", "label rule"),
    ],
)
def test_fit_errors(conn: Connection, windows: dict[str, Any], sqlstate: str,
                    message: str) -> None:
    load(conn)
    expect_error(conn, "SELECT * FROM fit_regime_temperature('US', %s)",
                 (json.dumps(windows),), sqlstate, message)
    expect_error(conn, "SELECT save_regime_prototype_set('f', 'US', %s, NULL)",
                 (json.dumps(windows),), sqlstate, message)
    assert conn.execute("SELECT count(*) FROM regime_prototype_sets").fetchone() == (0,)
