"""SQL and Python agree on every date of the demo data (S&P 500 and NASDAQ, 2000-2018).

The demo database is built once per session and server (``run_demo``, as
``regime-pg demo`` does); the sets are saved once per region, at the engine's
temperature 1.0 and at the fitted temperature.

Where the two sides can differ, and by how much:

* distances: pgvector's ``<->`` accumulates the squared differences in
  float32 (in SIMD lanes), Python in float64 from the same float32 values.
  Observed: at most 1.1e-7 relative; asserted 1e-6.
* confidence: SQL applies exactly the engine's softmax to its own distances
  (asserted to 1e-12 relative), so the only difference is the distances'.
  A distance error e (relative) moves ln(confidence) by at most
  2 (1 - c) e d_max / T, which exceeds 1e-6 when d_max / T is large: the demo's
  distances are 5..26 and the fitted temperatures 0.86 (US) and 0.64 (US_TECH).
  Observed at most 9.0e-7 relative at T = 1, and 1.0e-6 (US) and 1.3e-6 to
  1.4e-6 (US_TECH) at the fitted temperatures.  Asserted: 1e-6 plus that bound with
  e = 1e-6 (the distance bound).
* temperature fit: same rule (maximum likelihood, or the Laplace
  rule-of-succession target when the windows are separable).  On the distances
  pgvector computes, Python's fit_temperature equals SQL's fit to rounding
  (3e-14 relative observed, 1e-12 asserted).  On numpy's float64 distances
  the float32 noise is amplified by up to distance / T; observed at most
  1.1e-7 relative (temperature; US_TECH, overlapping windows, T = 0.27),
  asserted 1e-6.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from regime_pg import migrate
from regime_pg.connection import Connection, connect, vector_to_numpy
from regime_pg.demo.pipeline import DEMO_REGIONS, DEMO_WINDOWS, run_demo
from regime_pg.factory import model_from_set
from regime_pg.prototypes import DateWindow
from regime_pg.sets import fit_set_temperature, get_set, save_set
from regime_pg.softmax import fit_temperature, softmax_confidences
from tests.conftest import Server, create_database, database_dsn, drop_database

START, END = dt.date(1999, 1, 1), dt.date(2018, 12, 31)  # the demo's full range and more
DISTANCE_REL = 1e-6
#: Four calm and stressed windows of the demo data that overlap in embedding space,
#: so that the fit is a true maximum of the likelihood (not the separable case).
OVERLAPPING_WINDOWS = {
    "CARRY": DateWindow(dt.date(2013, 1, 1), dt.date(2014, 12, 31)),
    "CRISIS": DEMO_WINDOWS["CRISIS"],
    "NEUTRAL": DEMO_WINDOWS["NEUTRAL"],
    "RISK_OFF": DateWindow(dt.date(2011, 8, 1), dt.date(2011, 12, 31)),
}


@dataclass(frozen=True)
class Demo:
    dsn: str
    #: region -> (dates, float32 embeddings), every usable stored embedding, by date
    embeddings: dict[str, tuple[list[dt.date], np.ndarray]]


def set_name(region: str, fitted: bool) -> str:
    return f"{region}-{'fitted' if fitted else 't1'}"


@pytest.fixture(scope="session")
def demo(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The full demo data, and sets saved from the demo's windows."""
    name = create_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    try:
        migrate.upgrade(dsn)
        embeddings = {}
        with connect(dsn) as conn:
            run_demo(conn, tmp_path_factory.mktemp("parity-demo"))
            for region in DEMO_REGIONS:
                save_set(conn, set_name(region, False), region, DEMO_WINDOWS, temperature=1.0)
                save_set(conn, set_name(region, True), region, DEMO_WINDOWS, temperature=None)
                rows = conn.execute(
                    "SELECT as_of_date, embedding_vector FROM regime_embeddings_latest"
                    " WHERE region = %s AND embedding_vector IS NOT NULL ORDER BY as_of_date",
                    (region,),
                ).fetchall()
                dates = [row[0] for row in rows]
                vectors = np.stack([vector_to_numpy(row[1]) for row in rows])
                embeddings[region] = (dates, vectors)
        yield Demo(dsn, embeddings)
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def demo_conn(demo: Demo) -> Iterator[Connection]:
    with connect(demo.dsn) as conn:
        yield conn


def classify_in_sql(
    conn: Connection, region: str, name: str, min_duration: int = 1
) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT as_of_date, label, raw_label, confidence, distances"
        "  FROM classify_regimes(%s, %s, %s, %s, %s)",
        (region, START, END, name, min_duration),
    ).fetchall()


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("fitted", [False, True], ids=["t1", "fitted"])
@pytest.mark.parametrize("region", DEMO_REGIONS)
def test_classify_regimes_equals_the_python_model_on_every_date(
    demo: Demo, demo_conn: Connection, region: str, fitted: bool
) -> None:
    name = set_name(region, fitted)
    model = model_from_set(demo_conn, name)
    temperature = get_set(demo_conn, name).temperature
    assert model.temperature == temperature
    assert (temperature == 1.0) is not fitted
    dates, vectors = demo.embeddings[region]
    rows = classify_in_sql(demo_conn, region, name)
    # One row per stored date: 2000-03-31 .. 2018-12-31, 4717 of them (see the demo encoder).
    assert [row[0] for row in rows] == dates
    assert (len(dates), dates[0], dates[-1]) == (4717, dt.date(2000, 3, 31), END)

    labels = [str(p.label) for p in model.prototypes]
    worst_distance = worst_confidence = 0.0
    for (_, label, raw_label, confidence, distances), embedding in zip(rows, vectors, strict=True):
        mine = model.classify_embedding(embedding)
        assert label == raw_label == mine.label
        assert sorted(distances) == labels
        sql_d = np.array([distances[k] for k in labels])
        py_d = np.array([mine.distances[k] for k in labels])
        error_d = float(np.max(np.abs(sql_d - py_d) / py_d))
        assert error_d <= DISTANCE_REL, (label, distances, mine.distances)
        # The engine's softmax of SQL's own distances, to rounding.
        winner = labels.index(label)
        own_softmax = float(softmax_confidences(sql_d, temperature)[winner])
        assert confidence == pytest.approx(own_softmax, rel=1e-12, abs=0)
        # Against Python's distances: the distance bound carried through the softmax.
        bound = 1e-6 + 2 * (1 - mine.confidence) * DISTANCE_REL * py_d.max() / temperature
        error_c = abs(confidence - mine.confidence) / mine.confidence
        assert error_c <= bound, (confidence, mine.confidence, bound)
        worst_distance = max(worst_distance, error_d)
        worst_confidence = max(worst_confidence, error_c)
    # float32 accumulation shows, but well inside the bounds.
    assert 0 < worst_distance < 5e-7
    assert worst_confidence < 1e-5
    # Both labels occur, and the confidences are not all 1.
    assert {row[1] for row in rows} == {"CRISIS", "NEUTRAL"}
    assert min(row[3] for row in rows) < 0.9


# --------------------------------------------------------------------------- temperature fit


def numpy_fit_distances(
    conn: Connection, demo: Demo, region: str, windows: dict[str, DateWindow]
) -> tuple[np.ndarray, np.ndarray]:
    """float64 distances of each window's stored embeddings to the windows' prototypes."""
    prototypes = conn.execute(
        "SELECT label, center FROM compute_regime_prototypes(%s, %s) ORDER BY label",
        (region, json.dumps({k: w.to_json() for k, w in windows.items()})),
    ).fetchall()
    centres = np.stack([vector_to_numpy(row[1]) for row in prototypes]).astype(np.float64)
    dates, vectors = demo.embeddings[region]
    distances, own = [], []
    for k, (label, _) in enumerate(prototypes):
        window = windows[label]
        x = vectors[[i for i, d in enumerate(dates) if window.start_date <= d <= window.end_date]]
        distances.append(np.linalg.norm(x.astype(np.float64)[:, None, :] - centres[None], axis=2))
        own += [k] * len(x)
    return np.concatenate(distances), np.array(own)


def pgvector_fit_distances(
    conn: Connection, region: str, windows: dict[str, DateWindow]
) -> tuple[np.ndarray, np.ndarray]:
    """The same distances as pgvector computes them (float32 accumulation)."""
    payload = json.dumps({k: w.to_json() for k, w in windows.items()})
    distances, own = [], []
    for k, label in enumerate(sorted(windows)):
        rows = conn.execute(
            "WITH p AS (SELECT label, center FROM compute_regime_prototypes(%s, %s))"
            " SELECT array_agg(e.embedding_vector <-> p.center ORDER BY p.label)"
            "   FROM regime_embeddings_latest AS e, p"
            "  WHERE e.region = %s AND e.embedding_vector IS NOT NULL"
            "    AND e.as_of_date BETWEEN %s AND %s"
            "  GROUP BY e.as_of_date ORDER BY e.as_of_date",
            (region, payload, region, windows[label].start_date, windows[label].end_date),
        ).fetchall()
        distances.append(np.array([row[0] for row in rows], dtype=np.float64))
        own += [k] * len(rows)
    return np.concatenate(distances), np.array(own)


@pytest.mark.parametrize(
    ("windows", "separable"),
    [(DEMO_WINDOWS, True), (OVERLAPPING_WINDOWS, False)],
    ids=["demo-windows", "overlapping-windows"],
)
@pytest.mark.parametrize("region", DEMO_REGIONS)
def test_temperature_fit_in_sql_equals_numpy(
    demo: Demo,
    demo_conn: Connection,
    region: str,
    windows: dict[str, DateWindow],
    separable: bool,
) -> None:
    sql_fit = fit_set_temperature(demo_conn, region, windows)
    # The rule: Python's fit on the distances pgvector computes is SQL's, to rounding.
    same = fit_temperature(*pgvector_fit_distances(demo_conn, region, windows))
    assert (sql_fit.n, sql_fit.separable) == (same.n, same.separable)
    assert sql_fit.temperature == pytest.approx(same.temperature, rel=1e-12)
    assert sql_fit.log_loss == pytest.approx(same.log_loss, rel=1e-12)
    assert sql_fit.log_loss_at_1 == pytest.approx(same.log_loss_at_1, rel=1e-12)
    # End to end, on numpy's float64 distances.
    d, own = numpy_fit_distances(demo_conn, demo, region, windows)
    py_fit = fit_temperature(d, own)
    assert (sql_fit.n, sql_fit.separable) == (py_fit.n, py_fit.separable) == (len(own), separable)
    assert sql_fit.temperature == pytest.approx(py_fit.temperature, rel=1e-6)
    assert sql_fit.log_loss == pytest.approx(py_fit.log_loss, rel=1e-6)
    assert sql_fit.log_loss_at_1 == pytest.approx(py_fit.log_loss_at_1, rel=1e-6)
    assert sql_fit.log_loss < sql_fit.log_loss_at_1
    if separable:
        n = sql_fit.n
        assert sql_fit.log_loss == pytest.approx(np.log((n + 2) / (n + 1)), rel=1e-9)
    if windows is DEMO_WINDOWS:  # what the saved set holds
        assert get_set(demo_conn, set_name(region, True)).info.fit == sql_fit


# --------------------------------------------------------------------------- min_duration


def held_labels(raw: list[str], min_duration: int) -> list[str]:
    """The rule of classify_regimes (sql/classify--1.sql), written again in Python.

    A run (maximal sequence of consecutive rows of one raw label) shorter than
    min_duration rows takes the label of the last row before it that belongs to
    a run of at least min_duration rows; rows before the first such run take
    that run's label; with no such run every label stays.
    """
    runs: list[list[Any]] = []
    for label in raw:
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    long_runs = [label for label, length in runs if length >= min_duration]
    if not long_runs:
        return list(raw)
    out: list[str] = []
    held = long_runs[0]
    for label, length in runs:
        if length >= min_duration:
            held = label
        out += [held] * length
    return out


@pytest.mark.parametrize("region", DEMO_REGIONS)
def test_min_duration_equals_the_python_rule(demo_conn: Connection, region: str) -> None:
    name = set_name(region, False)
    plain = classify_in_sql(demo_conn, region, name)
    raw = [row[1] for row in plain]
    assert [row[2] for row in plain] == raw
    shortest = min(len(list(run)) for _, run in itertools.groupby(raw))
    changed = {}
    for min_duration in (shortest, shortest + 1, 5, 21, 63, 250, 10_000):
        rows = classify_in_sql(demo_conn, region, name, min_duration)
        assert [row[0] for row in rows] == [row[0] for row in plain]
        assert [row[2] for row in rows] == raw
        assert [row[1] for row in rows] == held_labels(raw, min_duration), min_duration
        # Absorbed dates keep the confidence and distances of their nearest prototype.
        assert [row[3:] for row in rows] == [row[3:] for row in plain]
        changed[min_duration] = sum(row[1] != row[2] for row in rows)
    # Runs of the shortest length hold; from one more date on, labels are absorbed;
    # longer than every run, nothing is (no run to hold on to).
    assert changed[shortest] == 0
    assert changed[shortest + 1] > 0 and changed[21] > 0 and changed[63] > 0
    assert changed[10_000] == 0
