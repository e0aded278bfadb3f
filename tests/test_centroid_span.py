"""The centroid visits the buckets of the window's rows only (prototypes--4.sql, 0013).

* The reviewer's windows: on a region of 2,609 rows, windows of 1990-2020,
  0001-9999 and 4713 BC-5874897 visit about as many 15-day buckets as the
  rows span (counted by the index scans of a call, and by the rows of the
  bucket loop in the plan of the function's own statement), and write no
  temporary file.  Version 3 visited every bucket of the calendar window
  (243,471 for 0001-9999, measured here the same way).
* Same results as version 3, bit for bit: the released definitions of
  prototypes--3.sql (and the functions they call) are installed next to the
  new ones under other names, and compared on many windows: short and long
  (over 4096 days, 8 parts), starting before the data and ending after it,
  in and over a gap of years, with duplicate dates (buckets read again
  through the view) at the ends of the data, unusable rows, no usable row,
  no row at all, an unknown region; serially and with parallel workers.
  Centres, l2_norm, counts and dates equal, bit for bit; dispersion to 1e-9
  relative (version 3 adds the distances in float8, in scan order; since
  prototypes--5.sql they are summed exactly: tests/test_exact_dispersion.py);
  errors equal.
* The widest window, which version 3 cannot finish: the documented
  algorithm replayed in numpy gives the same bits, and so does version 3 on
  a window with the same 15-day grid whose rows also fall in one part.
* The migration: downgrade to the previous revision restores version 3's
  definition (and keeps the function's privileges), upgrade gives version 4
  again.

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
from alembic.script import ScriptDirectory

from bench.statements import explain, function_statements
from regime_pg import migrate
from regime_pg.connection import Connection
from regime_pg.migration_ops import released_function
from tests.conftest import FORCE_PARALLEL, Server, workers_launched
from tests.engine import business_days
from tests.released_centroid import reference_database

DIM = 384
BUCKET_DAYS = 15
LONG_DAYS = 4096  # from this many days (p_end - p_start) on, a window has 8 parts
PARTS = 8
#: The reviewer's windows, as PostgreSQL dates (Python's cannot hold the last one).
REVIEWED = [
    ("1990-01-01", "2020-12-31"),
    ("0001-01-01", "9999-12-31"),
    ("4713-01-01 BC", "5874897-12-31"),
]
US_ROWS = 2609
T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)

#: start_date and end_date as text: Python's dates end at year 9999.
COLUMNS = ("p.region, p.start_date::text, p.end_date::text, p.n_dates, p.n_skipped,"
           " vector_send(p.center), p.l2_norm, p.dispersion, p.first_date, p.last_date")
V4_CALL = f"SELECT {COLUMNS} FROM compute_regime_prototype(%s, %s::date, %s::date) AS p"
V3_CALL = f"SELECT {COLUMNS} FROM regime_v3_for_window(%s, NULL, %s::date, %s::date) AS p"
DISPERSION = 7


def vectors(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    return (rng.standard_normal((n, DIM)) * 3 + 1).astype("<f4")


Row = tuple[str, dt.date, object, dt.datetime]


#: ASSOC: rows where the grouping of the float8 additions shows in the centre.  Over
#: ASSOC_WINDOW (4800 days, 321 buckets, parts cut at buckets 40, 80, ...) version 3
#: adds 1 (part 1), then 2^56 - 2^56 (part 2): 1, a centre of 1/3.  Added in one run,
#: (1 + 2^56) - 2^56 is 0 (1 is below half of 2^56's last bit in float8); cut into 8
#: parts over the rows' span (buckets 0..60), the same.
ASSOC_START = dt.date(1900, 1, 1)
ASSOC_ROWS = [(10, 1.0), (605, 2.0**56), (900, -(2.0**56))]
ASSOC_WINDOW = (str(ASSOC_START), str(ASSOC_START + dt.timedelta(days=4800)))


def span_rows() -> list[Row]:
    """US: the reviewer's 2,609 business days, clean.  GAP: two runs of dates three
    years apart, with re-runs (newer, newer NULL, older unconvertible) on the first
    and last dates and here and there, and a bucket of unusable rows.  EU: another
    region.  NUL: nothing usable.  ASSOC: see ASSOC_ROWS."""
    rng = np.random.default_rng(4)
    rows: list[Row] = []
    us = business_days(dt.date(1990, 1, 1), US_ROWS)
    rows += [("US", d, v, T0) for d, v in zip(us, vectors(rng, len(us)), strict=True)]
    gap = [dt.date(1985, 3, 7) + dt.timedelta(days=k) for k in range(0, 1030)
           if (dt.date(1985, 3, 7) + dt.timedelta(days=k)).weekday() < 5]
    gap += [dt.date(1991, 6, 1) + dt.timedelta(days=2 * k) for k in range(310)]
    for k, (day, vec) in enumerate(zip(gap, vectors(rng, len(gap)), strict=True)):
        unusable = dt.date(1986, 7, 1) <= day <= dt.date(1986, 7, 20)
        rows.append(("GAP", day, None if unusable else vec, T0))
        first_or_last = k in (0, len(gap) - 1)
        if first_or_last or k % 37 == 5:  # a newer re-run wins
            rows.append(("GAP", day, vectors(rng, 1)[0], T0 + dt.timedelta(hours=1)))
        if k % 53 == 7:  # a newer NULL hides the date's vector
            rows.append(("GAP", day, None, T0 + dt.timedelta(hours=2)))
        if first_or_last or k % 61 == 9:  # an older row that does not convert
            rows.append(("GAP", day, b"\x01\x02", T0 - dt.timedelta(hours=1)))
    eu = business_days(dt.date(2000, 1, 3), 300)
    rows += [("EU", d, v, T0) for d, v in zip(eu, vectors(rng, len(eu)), strict=True)]
    rows += [("NUL", dt.date(1995, 1, 2) + dt.timedelta(days=k), None if k % 2 else b"\x00", T0)
             for k in range(40)]
    rows += [("ASSOC", ASSOC_START + dt.timedelta(days=day), np.full(DIM, value, "<f4"), T0)
             for day, value in ASSOC_ROWS]
    return rows


@dataclass(frozen=True)
class SpanData:
    dsn: str
    major: int
    rows: list[Row]


@pytest.fixture(scope="module")
def span(pg_server: Server, migrated_template: str) -> Iterator[SpanData]:
    """One database per server: the rows of span_rows and the version 3 reference."""
    rows = span_rows()
    with reference_database(pg_server, migrated_template, rows) as (dsn, _):
        yield SpanData(dsn, pg_server.major, rows)


def connect(dsn: str) -> Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    # a guard: a regression fails the test instead of running for minutes
    conn.execute("SET statement_timeout = '120s'")
    return conn


def outcome(conn: Connection, query: str, window: tuple[str, str, str]) -> tuple[Any, ...]:
    """The prototype's columns (the centre as vector_send bytes), or the error."""
    try:
        row = conn.execute(query, window).fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # not the server's
            raise
        return ("error", exc.sqlstate, exc.diag.message_primary, exc.diag.table_name,
                exc.diag.column_name)
    assert row is not None
    return tuple(row)


def centre(row: tuple[Any, ...]) -> npt.NDArray[np.float32]:
    data = bytes(row[5])
    assert struct.unpack(">hh", data[:4]) == (DIM, 0)
    return np.frombuffer(data[4:], ">f4").astype(np.float32)


def days(conn: Connection, start: str, end: str) -> int:
    row = conn.execute("SELECT %s::date - %s::date", (end, start)).fetchone()
    assert row is not None
    return int(str(row[0]))


# --------------------------------------------------------------------------- the reviewer's windows


def index_scans_and_temp_files(conn: Connection) -> tuple[int, int]:
    """Index scans started on regimes, temporary files written in this database, so far."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # at the end of this statement
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT (SELECT coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        "         WHERE relid = 'regimes'::regclass),"
        "       (SELECT temp_files FROM pg_stat_database WHERE datname = current_database())"
    ).fetchone()
    assert row is not None
    return int(str(row[0])), int(str(row[1]))


def test_reviewed_windows_visit_the_buckets_of_their_rows_only(span: SpanData) -> None:
    """Each 15-day bucket is one index scan: a call starts about as many as its rows span."""
    with connect(span.dsn) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")  # the backend's own counters
        first, last = dt.date(1990, 1, 1), business_days(dt.date(1990, 1, 1), US_ROWS)[-1]
        # buckets the rows touch on any 15-day grid; 2 probes per part; the dispersion
        data_buckets = (last - first).days // BUCKET_DAYS + 2
        budget = data_buckets + 2 * PARTS + 1
        for start, end in REVIEWED:
            scans, temp_files = index_scans_and_temp_files(conn)
            row = outcome(conn, V4_CALL, ("US", start, end))
            after_scans, after_temp_files = index_scans_and_temp_files(conn)
            assert row[3:5] == (US_ROWS, 0) and row[8:] == (first, last), (start, end)
            assert after_scans - scans <= budget, (start, end, after_scans - scans)
            assert after_temp_files == temp_files, (start, end)
        # the same count on version 3: one scan per bucket of the calendar window
        start, end = REVIEWED[1]
        scans, _ = index_scans_and_temp_files(conn)
        assert outcome(conn, V3_CALL, ("US", start, end))[3] == US_ROWS
        after_scans, _ = index_scans_and_temp_files(conn)
        assert after_scans - scans >= days(conn, start, end) // BUCKET_DAYS + 1


def test_bucket_statement_loops_over_the_data_span(span: SpanData) -> None:
    """The plan of the function's own statement (bench.statements): two LIMIT 1 index
    probes, then the bucket loop over the rows' buckets, whatever the window's width."""
    with connect(span.dsn) as conn:
        statements = function_statements(conn)
        for setting in FORCE_PARALLEL:
            conn.execute(setting)
        for mode in ("force_generic_plan", "force_custom_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            for start, end in REVIEWED:
                last_bucket = days(conn, start, end) // BUCKET_DAYS
                nodes, text = explain(conn, statements["buckets"],
                                      ("US", start, end, 0, last_bucket))
                loops = [n for n in nodes if n.get("Function Name") == "generate_series"]
                probes = [n for n in nodes if n["Node Type"] == "Limit"]
                assert len(loops) == 1 and len(probes) == 2, text
                assert float(loops[0]["Actual Rows"]) <= 245, text  # 1990-01-01..1999-12-30
                assert all(float(p["Actual Rows"]) == 1 for p in probes), text
                assert all(p["Plans"][0]["Node Type"].startswith("Index") for p in probes), text
                assert nodes[0].get("Temp Written Blocks", 0) == 0, text
                types = {n["Node Type"] for n in nodes}
                assert "Nested Loop" in types and not types & {"Hash", "Gather"}, text
            # a range of buckets without a row visits none
            nodes, text = explain(conn, statements["buckets"],
                                  ("US", "2001-01-01", "2030-12-31", 0, 800))
            loops = [n for n in nodes if n.get("Function Name") == "generate_series"]
            assert float(loops[0]["Actual Rows"]) == 0, text


def test_helpers_readers_may_call_are_bounded_too(span: SpanData) -> None:
    """regime_window_bucket_states and regime_window_parts take any range of buckets:
    the widest one costs what its rows cost."""
    start, end = REVIEWED[2]
    expected = (US_ROWS, 0, dt.date(1990, 1, 1),
                business_days(dt.date(1990, 1, 1), US_ROWS)[-1], None)
    with connect(span.dsn) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        n_buckets = days(conn, start, end) // BUCKET_DAYS + 1
        bounds = [i * n_buckets // PARTS for i in range(PARTS + 1)]
        for query, last in (
            ("regime_window_bucket_states('US', %s::date, %s::date, 0, %s)", n_buckets - 1),
            ("regime_window_parts('US', %s::date, %s::date, %s::integer[])", bounds),
        ):
            scans, temp_files = index_scans_and_temp_files(conn)
            row = conn.execute(f"SELECT n_usable, n_skipped, first_date, last_date, dirty"
                               f"  FROM {query}", (start, end, last)).fetchone()
            after_scans, after_temp_files = index_scans_and_temp_files(conn)
            assert row == expected, query
            assert after_scans - scans <= 245 + 2 * PARTS, query
            assert after_temp_files == temp_files, query


# --------------------------------------------------------------------------- same bits as v3


def windows() -> list[tuple[str, str, str]]:
    """Short and long windows around, over and between the rows of every region."""
    d = dt.date
    fixed: list[tuple[str, dt.date | str, dt.date | str]] = [
        ("US", d(1991, 1, 1), d(1991, 12, 31)),
        ("US", d(1989, 6, 1), d(1990, 3, 1)),  # starts before the data
        ("US", d(1999, 10, 1), d(2001, 1, 1)),  # ends after it
        ("US", d(1989, 12, 25), d(1989, 12, 25) + dt.timedelta(days=LONG_DAYS - 1)),  # short
        ("US", d(1989, 12, 25), d(1989, 12, 25) + dt.timedelta(days=LONG_DAYS)),  # long
        ("US", d(1995, 5, 5), d(1995, 5, 5) + dt.timedelta(days=LONG_DAYS)),
        ("US", d(1980, 1, 1), d(2030, 1, 1)),  # the data in the middle parts
        ("US", d(1960, 1, 1), d(1990, 1, 1)),  # only the first date, at the very end
        ("US", d(1999, 12, 30), d(2050, 1, 1)),  # only the last date, at the very start
        ("US", d(2005, 1, 1), d(2006, 1, 1)),  # after the data: no row
        ("US", d(1900, 1, 1), d(1950, 1, 1)),  # long, before the data: no row
        ("US", d(1990, 1, 1), d(1990, 1, 1)),
        ("GAP", d(1984, 1, 1), d(1996, 1, 1)),  # long: whole parts in the gap
        ("GAP", d(1987, 6, 1), d(1991, 9, 1)),  # short, over the gap
        ("GAP", d(1988, 6, 1), d(1990, 6, 1)),  # in the gap: no row
        ("GAP", d(1985, 3, 7), d(1985, 3, 7)),  # the first date, re-run
        ("GAP", d(1985, 3, 1), d(1985, 4, 1)),
        ("GAP", d(1986, 6, 25), d(1986, 7, 25)),  # the unusable bucket
        ("GAP", d(1986, 7, 2), d(1986, 7, 19)),  # unusable rows only
        ("GAP", d(1970, 1, 1), d(2000, 1, 1)),
        ("GAP", d(1992, 1, 1), d(2010, 1, 1)),  # long, ends after the data
        ("EU", d(1985, 1, 1), d(2001, 1, 1)),
        ("NUL", d(1990, 1, 1), d(2000, 1, 1)),  # no usable embedding
        ("NUL", d(1994, 12, 20), d(1995, 12, 31)),
        ("ZZ", d(1990, 1, 1), d(2000, 1, 1)),  # no such region
        ("ZZ", d(1990, 1, 1), d(1990, 2, 1)),
        ("ASSOC", *ASSOC_WINDOW),
        ("ASSOC", ASSOC_START - dt.timedelta(days=7), ASSOC_START + dt.timedelta(days=4800)),
        ("ASSOC", ASSOC_START - dt.timedelta(days=300), ASSOC_START + dt.timedelta(days=4000)),
        ("ASSOC", ASSOC_START, ASSOC_START + dt.timedelta(days=LONG_DAYS - 1)),  # short: 0
        ("ASSOC", "0001-01-01", "9999-12-31"),  # one part: 0
        ("US", "0001-01-01", "9999-12-31"),  # version 3: 243,471 buckets
        ("GAP", "0001-01-01", "9999-12-31"),
        ("US", "1990-01-01", "2020-12-31"),
    ]
    rng = np.random.default_rng(13)
    drawn = []
    for region in ("US", "GAP"):
        for _ in range(45):
            start = d(1983, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6500)))
            length = int(rng.choice([rng.integers(0, 600), rng.integers(0, LONG_DAYS),
                                     rng.integers(LONG_DAYS - 20, LONG_DAYS + 20),
                                     rng.integers(LONG_DAYS, 9000)]))
            drawn.append((region, start, start + dt.timedelta(days=length)))
    return [(region, str(start), str(end)) for region, start, end in fixed + drawn]


@pytest.mark.parametrize("plans", ["serial", "parallel"])
def test_same_results_as_version_3(span: SpanData, plans: str) -> None:
    with connect(span.dsn) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        if plans == "parallel":
            for setting in FORCE_PARALLEL:
                conn.execute(setting)
        workers = workers_launched(conn)
        checked = {"short": 0, "long": 0, "errors": 0, "with duplicates": 0}
        for window in windows():
            new, old = outcome(conn, V4_CALL, window), outcome(conn, V3_CALL, window)
            if new[0] == "error":
                assert new == old, window
                checked["errors"] += 1
                continue
            assert new[:DISPERSION] == old[:DISPERSION], window  # the centre's bits included
            assert new[DISPERSION + 1:] == old[DISPERSION + 1:], window
            # version 5's exact sum against version 3's float8 one (which can leave
            # a residue of about 1e-11, even below 0, where all rows but one cancel)
            assert new[DISPERSION] == pytest.approx(old[DISPERSION], rel=1e-9, abs=1e-9), window
            checked["long" if days(conn, *window[1:]) >= LONG_DAYS else "short"] += 1
            checked["with duplicates"] += window[0] == "GAP"
        after = workers_launched(conn)
    assert min(checked.values()) >= 10, checked
    if workers is not None and after is not None:  # PostgreSQL 18 counts them
        assert (after > workers) == (plans == "parallel"), (workers, after)


def test_the_comparison_would_see_a_regrouping(span: SpanData) -> None:
    """On ASSOC the centre depends on which buckets form each part: version 3's
    parts give 1/3, the same buckets added as one part give 0."""
    start, end = ASSOC_WINDOW
    with connect(span.dsn) as conn:
        new = outcome(conn, V4_CALL, ("ASSOC", start, end))
        old = outcome(conn, V3_CALL, ("ASSOC", start, end))
        one_part = conn.execute(
            "SELECT vector_send(vector_avg(ARRAY[s.n_usable::float8] || s.state[2:]))"
            "  FROM regime_window_bucket_states('ASSOC', %s::date, %s::date, 0, %s) AS s",
            (start, end, days(conn, start, end) // BUCKET_DAYS),
        ).fetchone()
    assert one_part is not None
    assert new[:DISPERSION] == old[:DISPERSION]
    assert np.array_equal(centre(new), np.full(DIM, 1 / 3, np.float32))
    assert np.array_equal(centre((*new[:5], one_part[0])), np.zeros(DIM, np.float32))


# --------------------------------------------------------------------------- the widest window


def replay(offsets: npt.NDArray[np.int64], x: npt.NDArray[np.float32],
           span_days: int) -> npt.NDArray[np.float32]:
    """prototypes--3.sql's centre, in numpy, for rows without duplicate dates at
    ``offsets`` days from the window's start, visiting only buckets with rows."""
    n_buckets = span_days // BUCKET_DAYS + 1
    parts = 1 if span_days < LONG_DAYS else PARTS
    bounds = [i * n_buckets // parts for i in range(parts + 1)]
    buckets = offsets // BUCKET_DAYS
    order = np.argsort(offsets, kind="stable")
    total = np.zeros(DIM, dtype=np.float64)
    for p in range(parts):
        part = np.zeros(DIM, dtype=np.float64)
        members = [i for i in order if bounds[p] <= buckets[i] < bounds[p + 1]]
        for b in sorted({int(buckets[i]) for i in members}):
            rows = [i for i in members if buckets[i] == b]
            bucket = x[rows[0]].copy()
            for i in rows[1:]:
                bucket = bucket + x[i]  # float32, as pgvector's sum(vector)
            part += bucket.astype(np.float64)
        total += part
    return (total / len(offsets)).astype(np.float32)


def test_widest_window_is_version_3s_computation(span: SpanData) -> None:
    """4713 BC to 5874897: version 3 never finishes it, so its centre is checked two ways."""
    start, end = REVIEWED[2]
    us = [(day, vec) for region, day, vec, _ in span.rows if region == "US"]
    x = np.array([vec for _, vec in us], dtype=np.float32)
    with connect(span.dsn) as conn:
        for setting in FORCE_PARALLEL:
            conn.execute(setting)
        span_days = days(conn, start, end)
        base = days(conn, start, "1990-01-01")
        offsets = np.array([base + (day - dt.date(1990, 1, 1)).days for day, _ in us])
        for region in ("US", "GAP"):
            widest = outcome(conn, V4_CALL, (region, start, end))
            if region == "US":  # (1) the documented algorithm, replayed
                assert centre(widest).tobytes() == replay(offsets, x, span_days).tobytes()
            # (2) version 3 on a long window with the same 15-day grid, all of whose
            # rows fall in one part, as they all fall in one part of the widest
            # window: the other parts add a state of count 0, which changes nothing
            first, last = conn.execute(
                "SELECT min(as_of_date), max(as_of_date) FROM regimes WHERE region = %s",
                (region,)).fetchone() or (None, None)
            assert isinstance(first, dt.date) and isinstance(last, dt.date)
            offset = days(conn, start, str(first - dt.timedelta(days=40)))
            aligned = first - dt.timedelta(days=40 + offset % BUCKET_DAYS)
            same_grid = (region, str(aligned), str(aligned + dt.timedelta(days=PARTS * 4000)))
            n_buckets = (PARTS * 4000) // BUCKET_DAYS + 1
            assert (last - aligned).days // BUCKET_DAYS < n_buckets // PARTS  # in part 1
            assert days(conn, start, str(aligned)) % BUCKET_DAYS == 0
            reference = outcome(conn, V3_CALL, same_grid)
            assert widest[3:DISPERSION] == reference[3:DISPERSION], region
            assert widest[DISPERSION + 1:] == reference[DISPERSION + 1:], region
            assert widest[DISPERSION] == pytest.approx(reference[DISPERSION], rel=1e-9)


# --------------------------------------------------------------------------- the migration


BUCKET_STATES = "regime_window_bucket_states(text,date,date,integer,integer)"
DEFINITION = """
    SELECT p.prosrc, p.proacl, p.proparallel, p.provolatile, p.procost, p.proconfig,
           pg_get_function_result(p.oid), obj_description(p.oid, 'pg_proc')
      FROM pg_proc AS p WHERE p.oid = %s::regprocedure
"""


def released_body(name: str) -> str:
    return released_function(name, "regime_window_bucket_states").split("$$")[1]


def test_downgrade_restores_version_3_and_keeps_privileges(db: str) -> None:
    """Down to the previous revision: version 3's body, the same privileges (a REVOKE
    made at head stays), flags, settings and comment; up again: version 4's."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    previous = script.get_revision("0013").down_revision
    assert isinstance(previous, str)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {BUCKET_STATES} FROM PUBLIC")
        head = conn.execute(DEFINITION, (BUCKET_STATES,)).fetchone()
    assert head is not None and head[0] == released_body("prototypes--4.sql")
    migrate.downgrade(db, previous)
    with psycopg.connect(db, autocommit=True) as conn:
        down = conn.execute(DEFINITION, (BUCKET_STATES,)).fetchone()
    assert down is not None and down[0] == released_body("prototypes--3.sql")
    assert down[1:] == head[1:]
    migrate.upgrade(db)
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute(DEFINITION, (BUCKET_STATES,)).fetchone() == head
