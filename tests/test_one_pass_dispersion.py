"""The dispersion's scan computes each row's distance once (prototypes--8.sql, 0021), and
the stored path's scan no longer counts a row without a vector as a capped distance
(bucket_sums--2.sql, 0022).

* ``regime_window_distances`` returns the bits of the released version 5
  (installed beside it under another name) on every window: ordinary ones
  under every plan (serial, forced parallel workers, sequential scans), and
  the edge cases below; the prototypes built on it are unchanged too.
* The edge cases are rows at one coordinate from a zero centre, whose
  distances PostgreSQL computes exactly as numpy does: a distance just below
  2^31, one of exactly 2^31 (version 5 sums it in float8), three that add up
  past (2^31 - 1) * 2^32 units, an infinite one (float32 overflow), a window
  without rows and one of NULL embeddings only.  Each result is also checked
  against the exact sum computed here.
* Version 5's statement runs only for a window whose distances add up to
  2^31 - 1 or more: the table scans a call starts (pg_stat_xact_user_tables)
  are one otherwise, two then.
* A long window's scan still gets parallel workers (PostgreSQL 18 counts them).
* The stored path's counted scan sums the units of the rows with a vector only
  (least() ignores a NULL: version 1 counted such a row as capped, and the
  window was summed a second time), so it makes one scan there too; the
  prototype is the same.

No timing assertions: speed is measured by ``python -m bench``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from regime_pg.connection import Connection
from regime_pg.migration_ops import released_function
from tests.conftest import (
    FORCE_PARALLEL,
    Server,
    create_database,
    database_dsn,
    drop_database,
    workers_launched,
)
from tests.engine import insert_rows

DIM = 384
UNITS = 2**32
CAP_UNITS = (2**31 - 1) * UNITS
V5 = "regime_v5_distances"

#: One row every 4 days for 13 years (about 1,200 rows): ordinary distances of about 60.
DATES = [dt.date(2000, 1, 3) + dt.timedelta(days=4 * k) for k in range(1190)]
ORDINARY = {
    "short": ("US", dt.date(2005, 1, 1), dt.date(2005, 12, 31)),
    "long": ("US", dt.date(1999, 6, 1), dt.date(2014, 12, 31)),
}
PLANS = {
    "default": (),
    "serial": ("SET max_parallel_workers_per_gather = 0",),
    "forced parallel": FORCE_PARALLEL,
    "sequential scans": ("SET enable_indexscan = off", "SET enable_bitmapscan = off"),
}

#: Edge regions: first coordinate of each row (the rest 0), measured from a zero centre.
#: The largest float32 below 2^31 is 2^31 - 128; a float32 square near 2^62 is a
#: multiple of 2^38, so no distance lies strictly between 2^31 - 64 and 2^31.
EDGES: dict[str, list[float | None]] = {
    "BELOW": [2.0**31 - 128, 5.0],         # one distance just below 2^31: one scan
    "AT": [2.0**31, 5.0],                  # 2^31: version 5's float8 sum
    "ADDS_UP": [1e9, 1e9, 1e9],            # each below 2^31, their units past the cap
    "INFINITE": [1e20, 5.0],               # the square overflows float32
    "NULLS": [None, None],                 # NULL embeddings: no distance
    "EMPTY": [],                           # no row at all
}
#: The edge windows whose distances add up to 2^31 - 1 or more: version 5's statement.
RESCANNED = {"AT", "ADDS_UP", "INFINITE"}
EDGE_START = dt.date(2020, 1, 1)


def edge_vector(first: float) -> npt.NDArray[np.float32]:
    x = np.zeros(DIM, dtype="<f4")
    x[0] = first
    return x


def exact_distance(first: float) -> float:
    """pgvector's distance to the zero vector: the float32 square, its root in float8."""
    with np.errstate(over="ignore"):
        square = np.float32(first) * np.float32(first)
    return math.sqrt(float(square))


def exact_result(distances: list[float]) -> float:
    """Version 5's documented result: exact units of 2^-32 (each rounded to the nearest,
    ties to even, as round(float8) and ::bigint do) for distances below 2^31, rounded once
    to float8; the others summed in float8."""
    units = sum(round(d * UNITS) for d in distances if d < 2**31)
    rest = sum(d for d in distances if not d < 2**31)
    return float(units) / UNITS + rest


@dataclass(frozen=True)
class Data:
    dsn: str
    x: npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def data(pg_server: Server, migrated_template: str) -> Iterator[Data]:
    x = (np.random.default_rng(21).standard_normal((len(DATES), DIM)) * 3 + 1).astype("<f4")
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    with psycopg.connect(dsn) as conn:
        insert_rows(conn, "US", DATES, x)
        for region, firsts in EDGES.items():
            if not firsts:
                continue
            dates = [EDGE_START + dt.timedelta(days=k) for k in range(len(firsts))]
            insert_rows(conn, region, dates,
                        [None if f is None else edge_vector(f) for f in firsts])
        # the released version 5, beside version 8
        conn.execute(released_function("prototypes--5.sql", "regime_window_distances")
                     .replace("FUNCTION regime_window_distances(", f"FUNCTION {V5}(")
                     .encode())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE regimes")
    yield Data(dsn, x)
    drop_database(pg_server, name)


def connect(dsn: str, plan: tuple[str, ...] = ()) -> Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    for setting in plan:
        conn.execute(setting)
    return conn


def distances(conn: Connection, function: str, window: tuple[str, dt.date, dt.date],
              center: str) -> bytes:
    """The function's result as float8send bytes (its exact bits)."""
    row = conn.execute(f"SELECT float8send(d) FROM {function}(%s, %s, %s, %s::vector) AS d",
                       (*window, center)).fetchone()
    assert row is not None
    return bytes(row[0])


def as_text(vector: npt.NDArray[np.float32]) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def bits(value: float) -> bytes:
    return np.array([value], dtype=">f8").tobytes()


def edge_window(region: str) -> tuple[str, dt.date, dt.date]:
    return region, EDGE_START, EDGE_START + dt.timedelta(days=10)


def scans_of_regimes(conn: Connection) -> int:
    """Scans of regimes this transaction has started, of any kind."""
    row = conn.execute("SELECT seq_scan + idx_scan FROM pg_stat_xact_user_tables"
                       " WHERE relname = 'regimes'").fetchone()
    return 0 if row is None else int(row[0])


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("window", ORDINARY)
def test_version_5s_bits_on_ordinary_windows(data: Data, window: str, plan: str) -> None:
    _, start, end = ORDINARY[window]
    picked = np.array([start <= d <= end for d in DATES])
    center = as_text(data.x[picked].mean(axis=0, dtype=np.float64).astype("<f4"))
    with connect(data.dsn, PLANS[plan]) as conn:
        ours = distances(conn, "regime_window_distances", ORDINARY[window], center)
        released = distances(conn, V5, ORDINARY[window], center)
    assert ours == released
    # about 60 a row: far from the cap
    assert 40 * picked.sum() < np.frombuffer(ours, dtype=">f8")[0] < 80 * picked.sum()


@pytest.mark.parametrize("region", EDGES)
def test_edge_windows(data: Data, region: str) -> None:
    zero = as_text(np.zeros(DIM, dtype="<f4"))
    window = edge_window(region)
    expected = exact_result([exact_distance(f) for f in EDGES[region] if f is not None])
    with connect(data.dsn) as conn:
        assert distances(conn, "regime_window_distances", window, zero) == bits(expected)
        assert distances(conn, V5, window, zero) == bits(expected)


def test_the_edge_cases_are_what_they_claim() -> None:
    below = exact_distance(2.0**31 - 128)
    assert 2**31 - 129 < below < 2**31 - 127 and round(below * UNITS) < CAP_UNITS
    assert exact_distance(2.0**31) == 2**31
    assert 3 * round(exact_distance(1e9) * UNITS) > CAP_UNITS
    assert exact_distance(1e9) < 2**31 - 1
    assert math.isinf(exact_distance(1e20))


@pytest.mark.parametrize("region", [*EDGES, "US"])
def test_version_5s_statement_runs_only_past_the_cap(data: Data, region: str) -> None:
    window = edge_window(region) if region in EDGES else ORDINARY["short"]
    zero = as_text(np.zeros(DIM, dtype="<f4"))
    with connect(data.dsn, PLANS["serial"]) as conn, conn.transaction():
        before = scans_of_regimes(conn)
        distances(conn, "regime_window_distances", window, zero)
        started = scans_of_regimes(conn) - before
    # the US rows are about 60 from zero: a year's 92 add up to far less than 2^31
    assert started == (2 if region in RESCANNED else 1)


def test_prototypes_are_unchanged(data: Data) -> None:
    """compute_regime_prototype's dispersion is version 5's scan over the window divided
    by its dates (no date has two rows here: tests/test_exact_dispersion.py trades them)."""
    region, start, end = ORDINARY["long"]
    with connect(data.dsn) as conn:
        row = conn.execute(
            "SELECT p.center::text, float8send(p.dispersion), p.n_dates"
            " FROM compute_regime_prototype(%s, %s, %s) AS p", (region, start, end)).fetchone()
        assert row is not None
        released = distances(conn, V5, (region, start, end), str(row[0]))
    total = np.frombuffer(released, dtype=">f8")[0]
    assert bytes(row[1]) == bits(float(total) / row[2])


def test_a_long_window_still_gets_workers(data: Data) -> None:
    region, start, end = ORDINARY["long"]
    center = as_text(data.x.mean(axis=0, dtype=np.float64).astype("<f4"))
    with connect(data.dsn, FORCE_PARALLEL) as conn:
        before = workers_launched(conn)
        distances(conn, "regime_window_distances", (region, start, end), center)
        after = workers_launched(conn)
    if before is None or after is None:
        pytest.skip("PostgreSQL 16 does not count the workers it launches")
    assert after > before


def test_the_counted_scan_skips_rows_without_a_vector(db: str) -> None:
    """SOME: rows 5 and 7 from zero, a NULL and an unconvertible embedding between them;
    CLEAN: the same dates, every row with a vector."""
    dates = [EDGE_START + dt.timedelta(days=k) for k in range(4)]
    zero = as_text(np.zeros(DIM, dtype="<f4"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: None)  # the trigger's WARNING on bad bytes
        insert_rows(conn, "SOME", dates, [edge_vector(5.0), None, b"\x00\x01", edge_vector(7.0)])
        insert_rows(conn, "CLEAN", dates, [edge_vector(f) for f in (5.0, 6.0, 6.0, 7.0)])
        row = conn.execute(
            "SELECT units, n_rows FROM regime_window_distances_counted('SOME', %s, %s, %s)",
            (dates[0], dates[-1], zero)).fetchone()
        # version 1: two capped distances, (2^31 - 1) * 2^32 units each, besides these
        assert row == (12 * UNITS, 4)
        conn.execute("SELECT regime_bucket_sums_enable()")
        scans, protos = {}, {}
        for region in ("SOME", "CLEAN"):
            with conn.transaction():
                before = scans_of_regimes(conn)
                protos[region] = conn.execute(
                    "SELECT p.n_dates, p.n_skipped, p.center::text, p.dispersion"
                    " FROM compute_regime_prototype(%s, %s, %s) AS p",
                    (region, dates[0], dates[-1])).fetchone()
                scans[region] = scans_of_regimes(conn) - before
    some = protos["SOME"]
    assert some is not None and some[:2] == (2, 2) and some[3] == 1.0
    assert np.array_equal(np.array(json.loads(some[2]), dtype="<f4"), edge_vector(6.0))
    # the same scans as a window whose rows all have a vector (version 1: one more)
    assert scans["SOME"] == scans["CLEAN"]
