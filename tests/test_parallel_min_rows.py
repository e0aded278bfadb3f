"""Long windows start parallel workers only with enough rows (prototypes--7.sql, 0020).

* A window of 4096 days or more with fewer rows than the setting
  ``regime_pg.parallel_min_rows`` (default 50000) starts no parallel worker,
  even where PostgreSQL's settings make every plan parallel; from that many
  rows on it does (PostgreSQL 18 counts the workers a database
  launched; on 16 only the results are compared).
* The results are the same, bit for bit, with and without workers, and they
  are numpy's replay of the documented computation (8 parts of 15-day
  buckets); errors are the same too.
* A setting that is not a whole number of rows is a clear error (22023;
  ``InvalidInputError`` in Python).  With ``max_parallel_workers_per_gather``
  0 nothing is probed, and the setting is not read.

No timing assertions: speed is measured by ``python -m bench``.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

import regime_pg
from regime_pg import InvalidInputError, compute_prototype
from regime_pg.connection import Connection
from tests.conftest import (
    PARALLEL_PLANS,
    Server,
    create_database,
    database_dsn,
    drop_database,
    workers_launched,
)
from tests.engine import insert_rows
from tests.test_fast_centroid import documented_centre

DIM = 384
#: One row every 4 days for 13 years: long windows of about 1,200 rows.
DATES = [dt.date(2000, 1, 3) + dt.timedelta(days=4 * k) for k in range(1190)]
COLUMNS = ("p.n_dates, p.n_skipped, vector_send(p.center), p.l2_norm, p.dispersion,"
           " p.first_date, p.last_date")
CALL = f"SELECT {COLUMNS} FROM compute_regime_prototype(%s, %s, %s) AS p"

#: Windows of 4096 days or more (the 8-part path), and a short one.
WINDOWS: dict[str, tuple[str, dt.date, dt.date]] = {
    "every row": ("US", dt.date(1999, 6, 1), dt.date(2014, 12, 31)),
    "cut at both ends": ("US", dt.date(2001, 3, 7), dt.date(2012, 11, 19)),
    "past the last row": ("US", dt.date(2003, 1, 1), dt.date(2030, 1, 1)),
    "short": ("US", dt.date(2005, 1, 1), dt.date(2005, 12, 31)),
}
#: Long windows that fail, and their SQLSTATE: the same error on every path.
FAILING: dict[str, tuple[str, dt.date, dt.date]] = {
    "no row": ("US", dt.date(1950, 1, 1), dt.date(1970, 1, 1)),
    "unknown region": ("ZZ", dt.date(1990, 1, 1), dt.date(2010, 1, 1)),
}
FAILING_SQLSTATE = {"no row": "P0002", "unknown region": "42704"}


@dataclass(frozen=True)
class Data:
    dsn: str
    x: npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def data(pg_server: Server, migrated_template: str) -> Iterator[Data]:
    x = (np.random.default_rng(27).standard_normal((len(DATES), DIM)) * 3 + 1).astype("<f4")
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    with psycopg.connect(dsn) as conn:
        insert_rows(conn, "US", DATES, x)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE regimes")
    yield Data(dsn, x)
    drop_database(pg_server, name)


def connect(dsn: str, min_rows: str | None) -> Connection:
    """PostgreSQL's settings for parallel plans everywhere; regime-pg's setting as given."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '120s'")
    for setting in PARALLEL_PLANS:
        conn.execute(setting)
    if min_rows is not None:
        conn.execute("SELECT set_config('regime_pg.parallel_min_rows', %s, false)", (min_rows,))
    return conn


def outcome(conn: Connection, window: tuple[str, dt.date, dt.date]) -> tuple[Any, ...]:
    """The prototype's columns (the centre as vector_send bytes), or the error."""
    try:
        row = conn.execute(CALL, window).fetchone()
    except psycopg.Error as exc:
        return ("error", exc.sqlstate, exc.diag.message_primary)
    assert row is not None
    return tuple(row)


def workers_of(conn: Connection, window: tuple[str, dt.date, dt.date]
               ) -> tuple[tuple[Any, ...], int | None]:
    """The window's outcome, and the parallel workers its call launched (PostgreSQL 18)."""
    before = workers_launched(conn)
    result = outcome(conn, window)
    after = workers_launched(conn)
    return result, None if before is None or after is None else after - before


def rows_in(window: tuple[str, dt.date, dt.date]) -> int:
    _, start, end = window
    return sum(start <= d <= end for d in DATES)


def test_few_rows_run_without_workers_and_enough_rows_with_them(data: Data) -> None:
    window = WINDOWS["every row"]
    n = rows_in(window)
    assert n == len(DATES)
    cases = {None: False, "": False, str(n + 1): False, str(n): True, "1": True, "0": True}
    results = {}
    for setting, parallel in cases.items():
        with connect(data.dsn, setting) as conn:
            results[setting], workers = workers_of(conn, window)
        if workers is not None:  # PostgreSQL 18 counts them
            assert (workers > 0) == parallel, (setting, workers)
    assert len(set(results.values())) == 1, results


@pytest.mark.parametrize("window", [*WINDOWS, *FAILING])
def test_same_results_with_and_without_workers(data: Data, window: str) -> None:
    region, start, end = {**WINDOWS, **FAILING}[window]
    results = {}
    for setting in (None, "0", "999999999"):
        with connect(data.dsn, setting) as conn:
            results[setting] = outcome(conn, (region, start, end))
    assert results["0"] == results[None] == results["999999999"], window
    result = results[None]
    if window in FAILING:
        assert result[:2] == ("error", FAILING_SQLSTATE[window]), result
        return
    dates = [d for d in DATES if start <= d <= end]
    x = data.x[[k for k, d in enumerate(DATES) if start <= d <= end]]
    raw = bytes(result[2])
    assert struct.unpack(">hh", raw[:4]) == (DIM, 0)
    centre = np.frombuffer(raw[4:], ">f4").astype(np.float32)
    assert result[:2] == (len(dates), 0) and result[5:] == (dates[0], dates[-1])
    assert np.array_equal(centre, documented_centre(x, dates, start, end)), window


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1e4", " 10", "1000000000", "12345678901"])
def test_a_setting_that_is_not_a_number_of_rows_is_refused(data: Data, value: str) -> None:
    with connect(data.dsn, value) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as failure:
            conn.execute(CALL, WINDOWS["every row"])
        # read by long windows only: a short window does not need it
        assert outcome(conn, WINDOWS["short"])[0] == rows_in(WINDOWS["short"])
    message = failure.value.diag.message_primary or ""
    assert message.startswith("regime_pg.parallel_min_rows must be a whole number of rows"
                              " from 0 to 999999999, got '"), message
    assert failure.value.diag.message_hint == (
        "RESET regime_pg.parallel_min_rows gives the default, 50000.")


def test_the_client_raises_a_typed_error_naming_the_setting(data: Data) -> None:
    _, start, end = WINDOWS["every row"]
    dsn = psycopg.conninfo.make_conninfo(data.dsn, options="-c regime_pg.parallel_min_rows=lots")
    with (regime_pg.connect(dsn) as conn,
          pytest.raises(InvalidInputError, match=r"^regime_pg\.parallel_min_rows must be")):
        compute_prototype(conn, "US", (start, end))


def test_without_workers_allowed_nothing_is_probed(data: Data) -> None:
    """max_parallel_workers_per_gather = 0: the window's rows are not counted, so not
    even a malformed setting is read; the results are the same bits."""
    window = WINDOWS["every row"]
    with connect(data.dsn, None) as conn:
        expected = outcome(conn, window)
    with connect(data.dsn, "lots") as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        assert outcome(conn, window) == expected
