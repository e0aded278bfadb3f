"""The dispersion is summed exactly, whatever the plan (prototypes--5.sql, 0014; finding F19).

* The same bits under every plan: default, index scans only, sequential scans
  only, forced parallel workers, ``debug_parallel_query``, serial; on a short
  and a long (over 4096 days, 8 parts) window, with and without dates that
  have several rows (buckets traded for their latest rows).
* The documented bound: the dispersion is the exact mean of the rows'
  distances (each as PostgreSQL computes it, latest row of a date winning) to
  2^-33 absolute plus a few float8 roundings; numpy's float64 mean agrees to
  1e-9; numpy's own distances from the BYTEA rows agree to float32 precision.
* Against the released version 3 (installed under other names): centres,
  counts and dates bit for bit, dispersions to 1e-9 relative.
* F19 itself: a set saved under one plan, the same windows computed again
  under another (sequential scans, parallel workers): the same dispersion,
  bit for bit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg.types.json import Jsonb

from regime_pg.connection import Connection
from tests.conftest import FORCE_PARALLEL, Server, workers_launched
from tests.engine import business_days
from tests.released_centroid import reference_database

DIM = 384
T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
UNIT = 2.0**-32

PLANS: dict[str, tuple[str, ...]] = {
    "default": (),
    "index scans": ("SET enable_seqscan = off", "SET enable_bitmapscan = off"),
    "sequential scans": ("SET enable_indexscan = off", "SET enable_bitmapscan = off"),
    "forced parallel": FORCE_PARALLEL,
    "debug_parallel_query": ("SET debug_parallel_query = on",),
    "serial": ("SET max_parallel_workers_per_gather = 0",),
}

WINDOWS = {
    "EX short": ("EX", "1991-01-01", "1991-12-31"),
    "EX long": ("EX", "1990-01-01", "2012-01-01"),
    "DUP short": ("DUP", "1990-03-01", "1991-02-28"),
    "DUP long": ("DUP", "1989-01-01", "2003-01-01"),
}

COLUMNS = ("p.n_dates, p.n_skipped, vector_send(p.center), float8send(p.l2_norm),"
           " float8send(p.dispersion), p.dispersion::text, p.first_date, p.last_date")
CALL = f"SELECT {COLUMNS} FROM compute_regime_prototype(%s, %s::date, %s::date) AS p"
V3_CALL = f"SELECT {COLUMNS} FROM regime_v3_for_window(%s, NULL, %s::date, %s::date) AS p"

Row = tuple[str, dt.date, object, dt.datetime]


def vectors(rng: np.random.Generator, n: int, scale: float = 3.0) -> npt.NDArray[np.float32]:
    return (rng.standard_normal((n, DIM)) * scale + 1).astype("<f4")


def rows() -> list[Row]:
    """EX: 5,000 business days, one clean row each (distances of about 60, and a
    few near 0.2).  DUP: every third day over 12 years, with newer re-runs, newer
    NULLs hiding a date's vector, older unconvertible rows, and NULL rows.  In
    random order."""
    rng = np.random.default_rng(19)
    out: list[Row] = []
    ex = business_days(dt.date(1990, 1, 2), 5000)
    xs = vectors(rng, len(ex))
    xs[::97] = (xs[::97] - 1) * 0.004 + 1  # some rows close to the centre
    out += [("EX", d, v, T0) for d, v in zip(ex, xs, strict=True)]
    dup = [dt.date(1989, 6, 1) + dt.timedelta(days=3 * k) for k in range(1500)]
    for k, (day, vec) in enumerate(zip(dup, vectors(rng, len(dup)), strict=True)):
        out.append(("DUP", day, None if k % 71 == 3 else vec, T0))
        if k % 17 == 2:  # a newer re-run wins
            out.append(("DUP", day, vectors(rng, 1, 0.5)[0], T0 + dt.timedelta(hours=1)))
        if k % 43 == 5:  # a newer NULL hides the date's vector
            out.append(("DUP", day, None, T0 + dt.timedelta(hours=2)))
        if k % 29 == 7:  # an older row that does not convert
            out.append(("DUP", day, b"\x01\x02", T0 - dt.timedelta(hours=1)))
    # inserted out of date order, as backfills do: a sequential scan then reads
    # the rows in another order than an index scan
    return [out[i] for i in rng.permutation(len(out))]


@dataclass(frozen=True)
class Data:
    dsn: str
    rows: list[Row]
    ids: list[str]


@pytest.fixture(scope="module")
def data(pg_server: Server, migrated_template: str) -> Iterator[Data]:
    table = rows()
    with reference_database(pg_server, migrated_template, table) as (dsn, ids):
        yield Data(dsn, table, ids)


def connect(dsn: str, plan: str = "default") -> Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '120s'")
    conn.execute("SET extra_float_digits = 3")
    for setting in PLANS[plan]:
        conn.execute(setting)
    return conn


def fetch(conn: Connection, query: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


# --------------------------------------------------------------------------- every plan


@pytest.mark.parametrize("window", WINDOWS)
def test_same_bits_under_every_plan(data: Data, window: str) -> None:
    results = {}
    for plan in PLANS:
        with connect(data.dsn, plan) as conn:
            before = workers_launched(conn)
            results[plan] = fetch(conn, CALL, WINDOWS[window])
            after = workers_launched(conn)
        if (plan == "forced parallel" and window.endswith("long")
                and before is not None and after is not None):
            # long windows' statements are RETURN QUERY and run parallel workers; a short
            # window's may run in the leader alone (seen in a full run), so only the bits
            # are compared there
            assert after > before
    first = results["default"]
    assert first[0] > 100
    for plan, result in results.items():
        assert result == first, (window, plan)  # centre, dispersion bits and text


# --------------------------------------------------------------------------- the bound


def latest_rows(data: Data, region: str, start: dt.date, end: dt.date) -> list[int]:
    """Indexes into data.rows of each date's latest row, as regime_embeddings_latest."""
    best: dict[dt.date, int] = {}
    for i, (r, day, _, created) in enumerate(data.rows):
        if r != region or not start <= day <= end:
            continue
        if day not in best or (created, data.ids[i]) > (data.rows[best[day]][3],
                                                         data.ids[best[day]]):
            best[day] = i
    return [best[day] for day in sorted(best)]


@pytest.mark.parametrize("window", WINDOWS)
def test_exact_mean_of_the_distances(data: Data, window: str) -> None:
    region, start, end = WINDOWS[window]
    with connect(data.dsn) as conn:
        result = fetch(conn, CALL, WINDOWS[window])
        center = np.frombuffer(bytes(result[2])[4:], ">f4").astype(np.float64)
        distances = dict(conn.execute(
            "SELECT r.regime_record_id, r.embedding_vector <-> p.center"
            "  FROM compute_regime_prototype(%s, %s::date, %s::date) AS p, regimes AS r"
            " WHERE r.region = %s AND r.as_of_date BETWEEN %s::date AND %s::date"
            "   AND r.embedding_vector IS NOT NULL",
            (region, start, end, region, start, end)).fetchall())
    latest = [i for i in latest_rows(data, region, dt.date.fromisoformat(start),
                                     dt.date.fromisoformat(end))
              if isinstance(data.rows[i][2], np.ndarray)]
    assert len(latest) == result[0]  # n_dates: the usable latest rows
    d = np.array([distances[data.ids[i]] for i in latest], dtype=np.float64)
    dispersion = struct_double(result[4])
    # numpy from the BYTEA: pgvector adds the squares in float32
    x = np.array([data.rows[i][2] for i in latest], dtype=np.float64)
    assert np.allclose(np.linalg.norm(x - center, axis=1), d, rtol=1e-5, atol=1e-6)
    # the documented bound, against the exact mean of PostgreSQL's distances
    exact = math.fsum(d.tolist()) / len(d)
    assert abs(dispersion - exact) <= 2.0**-33 + 4 * 2.0**-53 * exact, window
    assert dispersion == pytest.approx(float(np.mean(d)), rel=1e-9, abs=0)
    # the units PostgreSQL adds: round(d * 2^32), rounded once
    if region == "EX":  # no date with several rows: one sum, rounded once
        units = sum(int(np.rint(v * 2.0**32)) for v in d.tolist())
        assert dispersion == (float(units) * UNIT) / len(d), window


def struct_double(data: Any) -> float:
    return float(np.frombuffer(bytes(data), ">f8")[0])


def test_the_float8_sum_depends_on_the_order_here(data: Data) -> None:
    """The data can show F19: its distances added in float8 in two orders differ."""
    region, start, end = WINDOWS["EX long"]
    with connect(data.dsn) as conn:
        d = [float(v) for (v,) in conn.execute(
            "SELECT r.embedding_vector <-> p.center"
            "  FROM compute_regime_prototype(%s, %s::date, %s::date) AS p, regimes AS r"
            " WHERE r.region = %s AND r.as_of_date BETWEEN %s::date AND %s::date"
            " ORDER BY r.as_of_date", (region, start, end, region, start, end)).fetchall()]
    forward = backward = 0.0
    for v in d:
        forward += v
    for v in reversed(d):
        backward += v
    assert forward != backward


# --------------------------------------------------------------------------- version 3


@pytest.mark.parametrize("plan", ["default", "sequential scans"])
def test_version_3_gives_the_same_centres(data: Data, plan: str) -> None:
    with connect(data.dsn, plan) as conn:
        for window, params in WINDOWS.items():
            new, old = fetch(conn, CALL, params), fetch(conn, V3_CALL, params)
            assert new[:4] == old[:4], window  # counts, centre bits, l2_norm bits
            assert new[6:] == old[6:], window
            a, b = struct_double(new[4]), struct_double(old[4])
            assert a == pytest.approx(b, rel=1e-9, abs=0), window
            assert abs(a - b) <= 2.0**-33 + new[0] * 2.0**-52 * b, window


# --------------------------------------------------------------------------- F19


def test_a_saved_set_matches_a_later_compute_under_another_plan(data: Data) -> None:
    windows = {"SHORT": {"start_date": "1990-03-01", "end_date": "1991-02-28"},
               "LONG": {"start_date": "1989-01-01", "end_date": "2003-01-01"}}
    query = ("SELECT label, vector_send(center), float8send(dispersion)"
             " FROM compute_regime_prototypes('DUP', %s) ORDER BY label")
    with connect(data.dsn, "forced parallel") as conn:
        conn.execute("SELECT save_regime_prototype_set('f19', 'DUP', %s)", (Jsonb(windows),))
        saved = conn.execute(
            "SELECT label, vector_send(center), float8send(dispersion)"
            "  FROM regime_prototype_set_members WHERE set_name = 'f19' ORDER BY label"
        ).fetchall()
        parallel = conn.execute(query, (Jsonb(windows),)).fetchall()
    try:
        assert [row[0] for row in saved] == ["LONG", "SHORT"]
        for plan in ("sequential scans", "index scans", "serial"):
            with connect(data.dsn, plan) as conn:
                assert conn.execute(query, (Jsonb(windows),)).fetchall() == saved, plan
        assert parallel == saved
    finally:
        with connect(data.dsn) as conn:
            conn.execute("SELECT delete_regime_prototype_set('f19')")


def test_version_3_differs_across_plans_here(data: Data) -> None:
    """The comparison above would see F19: version 3's dispersion of these windows
    is not the same under every plan."""
    seen: dict[str, set[bytes]] = {window: set() for window in WINDOWS}
    for plan in PLANS:
        with connect(data.dsn, plan) as conn:
            for window, params in WINDOWS.items():
                seen[window].add(bytes(fetch(conn, V3_CALL, params)[4]))
    assert any(len(bits) > 1 for bits in seen.values()), seen
