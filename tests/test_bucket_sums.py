"""Stored bucket sums (bucket_sums--1.sql, 0018) against numpy, the rows and the window grid.

* The calendar grid, bit for bit: with the sums enabled, the centre of every
  window (one day, inside one bucket, cut buckets, buckets and groups aligned
  or not, one year, over a gap in the dates, longer than 4096 days over many
  groups) is the same bits as the grid computed from the rows
  (``regime_calendar_grid_state(..., false)``, whose whole state equals the
  stored one), as numpy's replay of the documented computation, and the same
  under every plan; it is within 15 * 2^-24 * mean |x| of the float64 mean.
  Counts and dates equal the window grid's (disabled); the dispersion is the
  exact mean of PostgreSQL's distances to the returned centre.
* Trigger maintenance: after single-row and multi-row INSERTs, COPY (engine
  BYTEA and binary vectors), UPDATEs of the embedding, of the date and of the
  region, DELETE, TRUNCATE, re-runs of a date, NULL and undecodable
  embeddings, a rolled-back transaction: both tables hold exactly what numpy
  computes from the rows, and what a fresh ``regime_bucket_sums_enable()``
  rebuilds.
* Staleness: rows written with ``session_replication_role = replica`` make a
  window over them warn and still give the rebuilt sums' result.
* Concurrency: two writers of one bucket (READ COMMITTED: the second waits,
  both counted; REPEATABLE READ: 40001 for the second).
* Privileges and row-level security: a role without SELECT on the sums, and
  any role while regimes has row-level security, computes from the rows.
* disable(), enable() twice, a disabled trigger, the downgrade of 0018, and
  the errors: as before.

No timing assertions.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from alembic.script import ScriptDirectory
from psycopg import sql
from psycopg.types.json import Jsonb

from regime_pg import migrate
from regime_pg.connection import Connection
from tests.conftest import FORCE_PARALLEL, Server, create_database, database_dsn, drop_database
from tests.test_fast_centroid import adversarial, copy_vectors, documented_centre

DIM = 384
#: date.toordinal() + JD_OFFSET is the Julian day number (2000-01-01: 2,451,545).
JD_OFFSET = 1_721_425
BUCKET_DAYS = 15
GROUP_BUCKETS = 16
U = 2.0**-24
T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
NAN_BYTES = np.full(DIM, np.nan, "<f4").tobytes()
BAD_BYTES = b"\x01\x02"

Vector = npt.NDArray[np.float32]
Payload = Vector | bytes | None

# --------------------------------------------------------------------------- the calendar


def julian_day(day: dt.date) -> int:
    return day.toordinal() + JD_OFFSET


def bucket_of(day: dt.date) -> int:
    return julian_day(day) // BUCKET_DAYS


def bucket_start(bucket: int) -> dt.date:
    """First day of calendar bucket ``bucket`` (Julian day 15 * bucket)."""
    return dt.date.fromordinal(BUCKET_DAYS * bucket - JD_OFFSET)


def group_start(group: int) -> dt.date:
    """First day of group ``group`` (buckets 16 * group .. 16 * group + 15)."""
    return bucket_start(GROUP_BUCKETS * group)


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def float32_sum(rows: npt.NDArray[np.float32]) -> Vector:
    """pgvector's sum(vector): the first row, then float32 additions in order."""
    total: Vector = rows[0].copy()
    for row in rows[1:]:
        total = total + row
    return total


def float8_accumulate(parts: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.float64] | None:
    """pgvector's vector_accum / vector_combine: the first part copied, then float8 adds."""
    total: npt.NDArray[np.float64] | None = None
    for part in parts:
        total = part.astype(np.float64) if total is None else total + part.astype(np.float64)
    return total


def calendar_centre(dates: Sequence[dt.date], x: npt.NDArray[np.float32]) -> Vector:
    """The centre on the calendar grid, as bucket_sums--1.sql documents it, in numpy.

    ``dates`` (sorted, one per usable date) and ``x`` its latest usable vectors:
    float32 sums of each 15-day calendar bucket in date order, float8 sums of
    those in bucket order within each 240-day group, the groups' float8 states
    added in group order, divided by the number of dates and rounded once.
    """
    buckets = np.array([bucket_of(d) for d in dates])
    group_states = []
    for group in sorted(set((buckets // GROUP_BUCKETS).tolist())):
        sums = [
            float32_sum(x[buckets == b])
            for b in sorted(set(buckets[buckets // GROUP_BUCKETS == group].tolist()))
        ]
        state = float8_accumulate(sums)
        assert state is not None
        group_states.append(state)
    total = float8_accumulate(group_states)
    assert total is not None
    return (total / len(dates)).astype(np.float32)


def assert_within_bound(centre: Vector, x: npt.NDArray[np.float32]) -> None:
    """|c_j - mean_j| <= 15 * 2^-24 * mean_i |x_ij| for every coordinate."""
    rows = x.astype(np.float64)
    error = np.abs(centre.astype(np.float64) - rows.mean(axis=0))
    bound = 15 * U * np.abs(rows).mean(axis=0)
    assert np.all(error <= bound), f"coordinate {int(np.argmax(error / bound))} over the bound"


# --------------------------------------------------------------------------- the rows


def decode(payload: Payload) -> Vector | None:
    """The vector the sync trigger makes of an engine payload (None: not usable)."""
    if isinstance(payload, np.ndarray):
        return payload
    if isinstance(payload, bytes) and len(payload) == 4 * DIM:
        vector = np.frombuffer(payload, "<f4")
        return vector if bool(np.all(np.isfinite(vector))) else None
    return None


@dataclass
class Row:
    """One engine row of regimes."""

    region: str
    day: dt.date
    payload: Payload
    created: dt.datetime = T0
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def engine_bytes(self) -> bytes | None:
        if isinstance(self.payload, np.ndarray):
            return np.asarray(self.payload, "<f4").tobytes()
        return self.payload


@dataclass
class Model:
    """What regimes holds, by record id: what the sums and centres are computed from."""

    rows: dict[str, Row] = field(default_factory=dict)

    def add(self, rows: Sequence[Row]) -> None:
        self.rows.update((row.rid, row) for row in rows)

    def latest(self, region: str) -> dict[dt.date, Row]:
        """The latest row of each date (created_at, then record id), as regime_embeddings_latest."""
        best: dict[dt.date, Row] = {}
        for row in self.rows.values():
            if row.region != region:
                continue
            old = best.get(row.day)
            if old is None or (row.created, row.rid) > (old.created, old.rid):
                best[row.day] = row
        return best

    def usable(
        self, region: str, start: dt.date, end: dt.date
    ) -> tuple[list[dt.date], npt.NDArray[np.float32]]:
        """The window's usable dates, in order, and their latest vectors."""
        picked = [
            (day, vector)
            for day, row in sorted(self.latest(region).items())
            if start <= day <= end and (vector := decode(row.payload)) is not None
        ]
        return [d for d, _ in picked], np.array([v for _, v in picked], dtype=np.float32)


def vector_send(vector: Vector | None) -> bytes | None:
    """pgvector's binary form: dim, unused, then big-endian float32."""
    if vector is None:
        return None
    return struct.pack(">hh", DIM, 0) + np.asarray(vector, ">f4").tobytes()


BucketRow = tuple[str, int, int, int, int, int, dt.date | None, dt.date | None, bytes | None]
GroupRow = tuple[str, int, int, int, int, int, dt.date | None, dt.date | None, bool, list[float]]


def expected_sums(model: Model) -> tuple[list[BucketRow], list[GroupRow]]:
    """Both tables as bucket_sums--1.sql defines them, computed in numpy from the model."""
    buckets: list[BucketRow] = []
    partials: dict[tuple[str, int], Vector | None] = {}
    for region in sorted({row.region for row in model.rows.values()}):
        rows = [row for row in model.rows.values() if row.region == region]
        latest = model.latest(region)
        for bucket in sorted({bucket_of(row.day) for row in rows}):
            members = [row for row in rows if bucket_of(row.day) == bucket]
            dates = sorted(d for d in latest if bucket_of(d) == bucket)
            usable = [(d, v) for d in dates if (v := decode(latest[d].payload)) is not None]
            partial = float32_sum(np.array([v for _, v in usable])) if usable else None
            partials[region, bucket] = partial
            buckets.append((
                region, bucket, len(members), sum(julian_day(r.day) for r in members),
                len(dates), len(usable), usable[0][0] if usable else None,
                usable[-1][0] if usable else None, vector_send(partial),
            ))
    groups: list[GroupRow] = []
    for region, group in sorted({(b[0], b[1] // GROUP_BUCKETS) for b in buckets}):
        members_b = [b for b in buckets if b[0] == region and b[1] // GROUP_BUCKETS == group]
        sums = [p for b in members_b if (p := partials[region, b[1]]) is not None]
        state = float8_accumulate(sums)
        firsts = [b[6] for b in members_b if b[6] is not None]
        lasts = [b[7] for b in members_b if b[7] is not None]
        groups.append((
            region, group, sum(b[2] for b in members_b), sum(b[3] for b in members_b),
            sum(b[4] for b in members_b), sum(b[5] for b in members_b),
            min(firsts) if firsts else None, max(lasts) if lasts else None,
            any(b[2] > b[4] for b in members_b),
            [0.0] if state is None else [float(len(sums)), *state.tolist()],
        ))
    return buckets, groups


# --------------------------------------------------------------------------- the database


class Notice(NamedTuple):
    """A notice's fields, copied in the handler (psycopg frees the result after it)."""

    severity: str | None
    sqlstate: str | None
    message: str | None
    hint: str | None


def connect(dsn: str, notices: list[Notice] | None = None) -> Connection:
    """An autocommit connection; notices (the sync trigger's WARNINGs too) go to ``notices``."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '120s'")
    sink = notices if notices is not None else []
    conn.add_notice_handler(
        lambda d: sink.append(Notice(d.severity, d.sqlstate, d.message_primary, d.message_hint))
    )
    return conn


INSERT = (
    "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
    " regime_embedding, confidence, created_at) VALUES "
)
ENGINE_VALUES = "(%s, %s, %s, 'NEUTRAL', %s, 0.5, %s)"


def engine_tuple(row: Row) -> tuple[Any, ...]:
    return (row.rid, row.day, row.region, row.engine_bytes(), row.created)


def insert(
    conn: Connection, rows: Sequence[Row], how: Literal["rows", "statement", "copy"] = "rows"
) -> None:
    """Engine rows through the BYTEA path: one INSERT a row, one INSERT for all, or COPY."""
    if how == "rows":
        with conn.cursor() as cur:
            cur.executemany(INSERT + ENGINE_VALUES, [engine_tuple(r) for r in rows])
    elif how == "statement":
        conn.execute(
            INSERT + ", ".join([ENGINE_VALUES] * len(rows)),
            [value for r in rows for value in engine_tuple(r)],
        )
    else:
        with conn.cursor().copy(
            "COPY regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, created_at) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row((r.rid, r.day, r.region, "NEUTRAL", r.engine_bytes(), 0.5,
                                r.created))


def fetch(conn: Connection, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


# A bucket or group whose rows were all deleted keeps a row of zeros (the triggers never
# delete one, so that a writer waiting for it never loses it): not compared.
BUCKETS_SQL = (
    "SELECT region, bucket, n_rows, day_sum, n_dates, n_usable, first_date, last_date,"
    "       vector_send(partial)"
    "  FROM regime_bucket_sums WHERE n_rows > 0 ORDER BY region, bucket"
)
GROUPS_SQL = (
    "SELECT region, bucket_group, n_rows, day_sum, n_dates, n_usable, first_date, last_date,"
    "       dirty, state"
    "  FROM regime_bucket_group_sums WHERE n_rows > 0 ORDER BY region, bucket_group"
)
#: Rows of zero count that hold anything but zeros (none should).
EMPTIED_SQL = (
    "SELECT (SELECT count(*) FROM regime_bucket_sums"
    "         WHERE n_rows = 0 AND (day_sum <> 0 OR n_dates <> 0 OR n_usable <> 0"
    "            OR first_date IS NOT NULL OR last_date IS NOT NULL OR partial IS NOT NULL)),"
    "       (SELECT count(*) FROM regime_bucket_group_sums"
    "         WHERE n_rows = 0 AND (day_sum <> 0 OR n_dates <> 0 OR n_usable <> 0"
    "            OR first_date IS NOT NULL OR last_date IS NOT NULL OR dirty"
    "            OR state <> '{0}'))"
)


def stored_sums(conn: Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return (
        [tuple(r) for r in conn.execute(BUCKETS_SQL).fetchall()],
        [tuple(r) for r in conn.execute(GROUPS_SQL).fetchall()],
    )


def sums_text(conn: Connection) -> list[str]:
    """Both tables as text, row by row (dates Python cannot hold included)."""
    return [str(r[0]) for r in conn.execute(
        "SELECT b::text FROM regime_bucket_sums AS b WHERE n_rows > 0"
        " UNION ALL SELECT g::text FROM regime_bucket_group_sums AS g WHERE n_rows > 0"
        " ORDER BY 1").fetchall()]


def rebuilt_sums(conn: Connection, read: Callable[[Connection], Any] | None = None) -> Any:
    """What regime_bucket_sums_enable() rebuilds now, as ``read`` (default: stored_sums)
    reads it; rolled back, so nothing changes."""
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT regime_bucket_sums_enable()")
        return (read or stored_sums)(conn)


def assert_sums_current(conn: Connection, model: Model) -> None:
    """Both tables hold what numpy computes from the rows, and what a rebuild gives."""
    stored = stored_sums(conn)
    assert stored == expected_sums(model)
    assert stored == rebuilt_sums(conn)


class Proto(NamedTuple):
    """compute_regime_prototype's result, its floats as bytes (bit-for-bit comparisons)."""

    n_dates: int
    n_skipped: int
    center: bytes
    l2_norm: bytes
    dispersion: bytes
    first_date: dt.date
    last_date: dt.date

    def centre(self) -> Vector:
        return np.frombuffer(self.center[4:], ">f4").astype(np.float32)

    def dispersion_value(self) -> float:
        return float(struct.unpack(">d", self.dispersion)[0])


class Failure(NamedTuple):
    """An error, as a client sees it."""

    sqlstate: str | None
    message: str | None
    detail: str | None
    hint: str | None
    table: str | None
    column: str | None


CALL = (
    "SELECT p.n_dates, p.n_skipped, vector_send(p.center), float8send(p.l2_norm),"
    "       float8send(p.dispersion), p.first_date, p.last_date"
    "  FROM compute_regime_prototype(%s, %s, %s) AS p"
)


def failure(exc: psycopg.Error) -> Failure:
    d = exc.diag
    return Failure(exc.sqlstate, d.message_primary, d.message_detail, d.message_hint,
                   d.table_name, d.column_name)


def outcome_of(conn: Connection, query: str, params: Sequence[Any] = ()) -> Failure | None:
    """The error ``query`` raises, if any."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return failure(exc)
    return None


def compute(conn: Connection, region: str | None, start: Any, end: Any) -> Proto:
    return Proto(*fetch(conn, CALL, (region, start, end)))


def outcome(conn: Connection, region: str | None, start: Any, end: Any) -> Proto | Failure:
    """compute_regime_prototype's result, or its error."""
    try:
        return compute(conn, region, start, end)
    except psycopg.Error as exc:
        return failure(exc)


GRID = (
    "SELECT g.state, g.n_rows, g.day_sum, g.n_dates, g.n_usable, g.first_date, g.last_date,"
    "       g.dirty,"
    "       CASE WHEN g.n_usable > 0"
    "            THEN vector_send(vector_avg(ARRAY[g.n_usable::float8] || g.state[2:])) END"
    "  FROM regime_calendar_grid_state(%s, %s, %s, %s) AS g"
)


def grid_state(conn: Connection, region: str, start: dt.date, end: dt.date,
               stored: bool) -> tuple[Any, ...]:
    """regime_calendar_grid_state's row, with the centre it gives (vector_avg of the state)."""
    return fetch(conn, GRID, (region, start, end, stored))


def enable(conn: Connection) -> int:
    return int(fetch(conn, "SELECT regime_bucket_sums_enable()")[0])


def enabled(conn: Connection) -> bool:
    return bool(fetch(conn, "SELECT regime_bucket_sums_enabled()")[0])


def bucket_triggers(conn: Connection) -> list[tuple[str, str]]:
    return [
        (str(name), str(state))
        for name, state in conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'regimes'::regclass"
            "   AND tgname LIKE 'regime_pg_bucket_sums_%' ORDER BY 1"
        ).fetchall()
    ]


def assert_replays(conn: Connection, model: Model, region: str, start: dt.date,
                   end: dt.date) -> Proto:
    """The window's centre is numpy's replay of the calendar grid and the rows' grid."""
    result = compute(conn, region, start, end)
    dates, x = model.usable(region, start, end)
    assert result.n_dates == len(dates)
    assert result.center == vector_send(calendar_centre(dates, x)), (region, start, end)
    assert result.center == grid_state(conn, region, start, end, False)[8]
    return result


# --------------------------------------------------------------------------- data


def vectors(rng: np.random.Generator, n: int, scale: float = 3.0) -> npt.NDArray[np.float32]:
    return (rng.standard_normal((n, DIM)) * scale + 1).astype("<f4")


def engine_rows(rng: np.random.Generator, region: str, dates: Sequence[dt.date]) -> list[Row]:
    """Rows of ``dates`` with every case of the dedup rule: re-runs, a newer NULL or NaN
    hiding a date's vector, older undecodable rows, dates with a NULL or bad row only."""
    rows = []
    for k, day in enumerate(dates):
        payload: Payload = vectors(rng, 1)[0]
        if k % 61 == 3:
            payload = None
        elif k % 89 == 4:
            payload = BAD_BYTES
        rows.append(Row(region, day, payload))
        if k % 13 == 2:  # a newer re-run wins
            rows.append(Row(region, day, vectors(rng, 1, 0.5)[0], T0 + dt.timedelta(hours=1)))
        if k % 31 == 5:  # a newer NULL hides the date's vector
            rows.append(Row(region, day, None, T0 + dt.timedelta(hours=2)))
        if k % 23 == 7:  # an older row that does not convert
            rows.append(Row(region, day, BAD_BYTES, T0 - dt.timedelta(hours=1)))
        if k % 37 == 11:  # a newer NaN: the date is skipped
            rows.append(Row(region, day, NAN_BYTES, T0 + dt.timedelta(hours=3)))
    return rows


def spread_dates(rng: np.random.Generator, start: dt.date, n: int,
                 gap: tuple[int, int] | None = None) -> list[dt.date]:
    """``n`` dates from ``start``, 1 to 3 days apart, with an optional gap (after the
    gap[0]-th date, gap[1] days without any)."""
    out, day = [], start
    for k in range(n):
        out.append(day)
        day += days(int(rng.integers(1, 4)))
        if gap is not None and k == gap[0]:
            day += days(gap[1])
    return out


# --------------------------------------------------------------------------- the windows

_B = bucket_of(dt.date(2002, 3, 1))
_G = bucket_of(dt.date(2003, 1, 1)) // GROUP_BUCKETS + 1
_LG = bucket_of(dt.date(1952, 6, 1)) // GROUP_BUCKETS + 1

#: CAL: about 1,500 dates from 2001-02-10 with re-runs, NULLs and bad bytes, and a
#: 500-day gap (whole groups without rows) in 2005-2006.
CAL_WINDOWS: dict[str, tuple[dt.date, dt.date]] = {
    "one day": (dt.date(2002, 3, 4), dt.date(2002, 3, 4)),
    "inside a bucket": (bucket_start(_B) + days(3), bucket_start(_B) + days(11)),
    "one bucket": (bucket_start(_B), bucket_start(_B + 1) - days(1)),
    "two cut buckets": (bucket_start(_B) + days(9), bucket_start(_B + 1) + days(4)),
    "buckets aligned": (bucket_start(_B), bucket_start(_B + 7) - days(1)),
    "buckets cut": (bucket_start(_B) + days(1), bucket_start(_B + 20) - days(2)),
    "one group": (group_start(_G), group_start(_G + 1) - days(1)),
    "a group but a day": (group_start(_G) + days(1), group_start(_G + 1) - days(1)),
    "a group and a day": (group_start(_G) - days(1), group_start(_G + 1)),
    "groups aligned": (group_start(_G), group_start(_G + 3) - days(1)),
    "groups cut": (group_start(_G) + days(100), group_start(_G + 3) + days(20)),
    "one year": (dt.date(2003, 1, 1), dt.date(2003, 12, 31)),
    "a year unaligned": (dt.date(2002, 7, 15), dt.date(2003, 7, 14)),
    "over the gap": (dt.date(2003, 6, 1), dt.date(2007, 5, 31)),
    "everything": (dt.date(2000, 1, 1), dt.date(2012, 12, 31)),
}

#: LONG: 20,000 adversarial rows, one a date, from 1950-01-01 over about 110 years
#: with a 2,000-day gap in 2013-2018: long windows (4,096 days or more) over many groups.
LONG_WINDOWS: dict[str, tuple[dt.date, dt.date]] = {
    "long, everything": (dt.date(1949, 12, 25), dt.date(2070, 1, 1)),
    "long, groups aligned": (group_start(_LG), group_start(_LG + 30) - days(1)),
    "long, cut": (dt.date(1961, 3, 7), dt.date(1978, 11, 19)),
    "long, over the gap": (dt.date(2005, 2, 2), dt.date(2030, 10, 10)),
    "long, one year": (dt.date(1970, 1, 1), dt.date(1970, 12, 31)),
}

WINDOWS: dict[str, tuple[str, dt.date, dt.date]] = {
    **{name: ("CAL", *w) for name, w in CAL_WINDOWS.items()},
    **{name: ("LONG", *w) for name, w in LONG_WINDOWS.items()},
}

PLANS: dict[str, tuple[str, ...]] = {
    "default": (),
    "sequential scans": ("SET enable_indexscan = off", "SET enable_bitmapscan = off"),
    "forced parallel": FORCE_PARALLEL,
}


@dataclass(frozen=True)
class Calendar:
    """A database with CAL and LONG, its results before and after the sums were enabled."""

    dsn: str
    model: Model
    disabled: dict[str, Proto]
    enabled: dict[str, dict[str, Proto]]


@pytest.fixture(scope="module")
def calendar(pg_server: Server, migrated_template: str) -> Iterator[Calendar]:
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    rng = np.random.default_rng(18)
    model = Model()
    cal = engine_rows(rng, "CAL", spread_dates(rng, dt.date(2001, 2, 10), 1500, (700, 500)))
    ordinals = dt.date(1950, 1, 1).toordinal() + np.sort(
        rng.choice(38_000, size=20_000, replace=False)
    ).astype(np.int64)
    ordinals[12_000:] += 2_000
    x = adversarial(20_000, seed=18)
    model.add(cal)
    model.add([Row("LONG", dt.date.fromordinal(int(o)), v) for o, v in zip(ordinals, x,
                                                                           strict=True)])
    try:
        with connect(dsn) as conn:
            insert(conn, cal)
            copy_vectors(conn, "LONG", ordinals, x)
            conn.execute("VACUUM ANALYZE regimes")
            disabled = {w: compute(conn, *WINDOWS[w]) for w in WINDOWS}
            enable(conn)
        results: dict[str, dict[str, Proto]] = {}
        for plan, settings in PLANS.items():
            with connect(dsn) as conn:
                for setting in settings:
                    conn.execute(setting)
                results[plan] = {w: compute(conn, *WINDOWS[w]) for w in WINDOWS}
        yield Calendar(dsn, model, disabled, results)
    finally:
        drop_database(pg_server, name)


# --------------------------------------------------------------------------- bit for bit


def test_the_enabled_sums_are_the_rows_sums(calendar: Calendar) -> None:
    with connect(calendar.dsn) as conn:
        assert enabled(conn)
        assert stored_sums(conn) == expected_sums(calendar.model)
        n_groups = fetch(conn, "SELECT count(*) FROM regime_bucket_group_sums"
                               " WHERE region = 'LONG'")
    assert n_groups[0] > 150  # many groups, and the gap's missing


@pytest.mark.parametrize("window", WINDOWS)
def test_centre_is_the_calendar_grid_bit_for_bit(calendar: Calendar, window: str) -> None:
    region, start, end = WINDOWS[window]
    result = calendar.enabled["default"][window]
    dates, x = calendar.model.usable(region, start, end)
    assert result.n_dates == len(dates) > 0
    centre = result.centre()
    assert result.center == vector_send(calendar_centre(dates, x))
    assert_within_bound(centre, x)
    assert struct.unpack(">d", result.l2_norm)[0] == pytest.approx(
        float(np.linalg.norm(centre.astype(np.float64))), rel=1e-12
    )
    for plan in PLANS:  # every plan: the same bits, dispersion included
        assert calendar.enabled[plan][window] == result, plan


@pytest.mark.parametrize("window", WINDOWS)
def test_stored_and_rows_grids_are_the_same(calendar: Calendar, window: str) -> None:
    """From the sums or from the rows: the same float8 state, counts, dates and dirty
    groups, and vector_avg of the rows' state is the centre computed."""
    region, start, end = WINDOWS[window]
    with connect(calendar.dsn) as conn:
        stored = grid_state(conn, region, start, end, True)
        rows = grid_state(conn, region, start, end, False)
    assert stored == rows
    assert rows[8] == calendar.enabled["default"][window].center


@pytest.mark.parametrize("window", WINDOWS)
def test_counts_and_dates_are_the_window_grids(calendar: Calendar, window: str) -> None:
    region, start, end = WINDOWS[window]
    new, old = calendar.enabled["default"][window], calendar.disabled[window]
    assert (new.n_dates, new.n_skipped, new.first_date, new.last_date) == (
        old.n_dates, old.n_skipped, old.first_date, old.last_date)
    dates, x = calendar.model.usable(region, start, end)
    assert_within_bound(old.centre(), x)
    if region == "LONG":  # no duplicate date: prototypes--3.sql's documented window grid
        expected = documented_centre(x, dates, start, end)
        assert old.center == vector_send(expected)
    if new.center == old.center:  # same centre: the same exact sum, but for its roundings
        assert new.dispersion_value() == pytest.approx(old.dispersion_value(), rel=1e-15)


def test_the_two_grids_differ_somewhere(calendar: Calendar) -> None:
    """The calendar grid is really in use: some centre differs from the window grid's."""
    assert any(calendar.enabled["default"][w].center != calendar.disabled[w].center
               for w in WINDOWS)


@pytest.mark.parametrize("window", WINDOWS)
def test_dispersion_is_the_exact_mean_distance(calendar: Calendar, window: str) -> None:
    region, start, end = WINDOWS[window]
    result = calendar.enabled["default"][window]
    with connect(calendar.dsn) as conn:
        d = np.array([v for (v,) in conn.execute(
            "SELECT e.embedding_vector <-> c.center"
            "  FROM compute_regime_prototype(%s, %s, %s) AS c, regime_embeddings_latest AS e"
            " WHERE e.region = %s AND e.as_of_date BETWEEN %s AND %s"
            "   AND e.embedding_vector IS NOT NULL ORDER BY e.as_of_date",
            (region, start, end, region, start, end)).fetchall()], dtype=np.float64)
    assert len(d) == result.n_dates
    dispersion = result.dispersion_value()
    exact = math.fsum(d.tolist()) / len(d)
    assert abs(dispersion - exact) <= 2.0**-33 + 8 * 2.0**-53 * exact
    assert dispersion == pytest.approx(exact, rel=1e-9, abs=0)
    # numpy's own distances to the centre (pgvector adds the squares in float32)
    _, x = calendar.model.usable(region, start, end)
    mine = np.linalg.norm(x.astype(np.float64) - result.centre().astype(np.float64), axis=1)
    assert np.allclose(mine, d, rtol=1e-5, atol=1e-6)


def test_many_windows_at_once_agree(calendar: Calendar) -> None:
    """compute_regime_prototypes and saved sets run the same function per window."""
    names = ["one group", "buckets cut", "over the gap", "everything"]
    document = {f"W{k}": {"start_date": str(WINDOWS[w][1]), "end_date": str(WINDOWS[w][2])}
                for k, w in enumerate(names)}
    with connect(calendar.dsn) as conn:
        rows = conn.execute(
            "SELECT label, vector_send(center), float8send(dispersion)"
            "  FROM compute_regime_prototypes('CAL', %s) ORDER BY label", (Jsonb(document),)
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"W{k}", calendar.enabled["default"][w].center,
         calendar.enabled["default"][w].dispersion)
        for k, w in enumerate(names)
    ]


# --------------------------------------------------------------------------- triggers

#: Windows of the small data set (US: 2018-01-01 .. about 2019-08, EU: 2019).
SMALL_WINDOWS: dict[str, tuple[str, dt.date, dt.date]] = {
    "US, everything": ("US", dt.date(2017, 1, 1), dt.date(2020, 12, 31)),
    "US, one year": ("US", dt.date(2018, 3, 3), dt.date(2019, 3, 2)),
    "US, one group": ("US", group_start(bucket_of(dt.date(2018, 6, 1)) // 16 + 1),
                      group_start(bucket_of(dt.date(2018, 6, 1)) // 16 + 2) - days(1)),
    "US, in a bucket": ("US", bucket_start(bucket_of(dt.date(2018, 5, 1))) + days(2),
                        bucket_start(bucket_of(dt.date(2018, 5, 1))) + days(12)),
    "EU, everything": ("EU", dt.date(2019, 1, 1), dt.date(2019, 12, 31)),
}


def small_rows(rng: np.random.Generator) -> list[Row]:
    """About 400 rows: US every other day or so from 2018, EU in 2019, every dedup case."""
    return (engine_rows(rng, "US", spread_dates(rng, dt.date(2018, 1, 1), 250))
            + engine_rows(rng, "EU", spread_dates(rng, dt.date(2019, 1, 3), 90)))


def assert_windows_replay(conn: Connection, model: Model) -> None:
    """Every small window whose region has usable rows: numpy's calendar grid, bit for bit."""
    for region, start, end in SMALL_WINDOWS.values():
        if model.usable(region, start, end)[0]:
            assert_replays(conn, model, region, start, end)


def test_triggers_keep_the_sums(db: str) -> None:
    rng = np.random.default_rng(2)
    model = Model()
    with connect(db) as conn:
        assert enable(conn) == 0 and enabled(conn)
        assert bucket_triggers(conn) == [
            ("regime_pg_bucket_sums_delete", "O"), ("regime_pg_bucket_sums_insert", "O"),
            ("regime_pg_bucket_sums_truncate", "O"), ("regime_pg_bucket_sums_update", "O")]
        assert stored_sums(conn) == ([], [])

        def step(rows: Sequence[Row], how: Literal["rows", "statement", "copy"]) -> None:
            insert(conn, rows, how)
            model.add(rows)
            assert_sums_current(conn, model)

        rows = small_rows(rng)
        step(rows[:150], "rows")  # one INSERT statement a row
        step(rows[150:300], "statement")  # one statement, many buckets and groups
        step(rows[300:], "copy")  # COPY, engine BYTEA
        assert_windows_replay(conn, model)

        # re-runs of existing dates, newer: they win (and a newer NULL, a newer NaN)
        us = sorted(model.latest("US"))
        reruns = [Row("US", d, vectors(rng, 1)[0], T0 + dt.timedelta(days=1)) for d in us[::9]]
        reruns += [Row("US", us[5], None, T0 + dt.timedelta(days=2)),
                   Row("US", us[6], NAN_BYTES, T0 + dt.timedelta(days=2)),
                   Row("US", us[7], BAD_BYTES, T0 - dt.timedelta(days=2))]
        step(reruns, "statement")
        assert_windows_replay(conn, model)

        # binary COPY of vectors (the sync trigger off meanwhile), a new region
        ordinals = dt.date(2018, 2, 1).toordinal() + np.arange(0, 300, 2, dtype=np.int64)
        x = vectors(rng, len(ordinals))
        copy_vectors(conn, "ASIA", ordinals, x)
        model.add([Row("ASIA", dt.date.fromordinal(int(o)), v)
                   for o, v in zip(ordinals, x, strict=True)])
        ids = [str(r[0]) for r in conn.execute(
            "SELECT regime_record_id FROM regimes WHERE region = 'ASIA' ORDER BY as_of_date")]
        for row, rid in zip(sorted((r for r in model.rows.values() if r.region == "ASIA"),
                                   key=lambda r: r.day), ids, strict=True):
            del model.rows[row.rid]
            row.rid, row.created = rid, fetch(
                conn, "SELECT created_at FROM regimes WHERE regime_record_id = %s", (rid,))[0]
            model.rows[rid] = row
        assert_sums_current(conn, model)
        assert_replays(conn, model, "ASIA", dt.date(2018, 1, 1), dt.date(2018, 12, 31))

        def update(query: str, params: Sequence[Any], change: Callable[[Row], None],
                   rids: Sequence[str]) -> None:
            conn.execute(query, params)
            for rid in rids:
                change(model.rows[rid])
            assert_sums_current(conn, model)

        def set_payload(payload: Payload) -> Callable[[Row], None]:
            def change(row: Row) -> None:
                row.payload = payload
            return change

        us_rows = sorted((r for r in model.rows.values() if r.region == "US"),
                         key=lambda r: (r.day, r.rid))
        new = vectors(rng, 1)[0]
        picked = [r.rid for r in us_rows[10:200:7]]
        update("UPDATE regimes SET regime_embedding = %s WHERE regime_record_id = ANY(%s)",
               (new.tobytes(), picked), set_payload(new), picked)
        picked = [r.rid for r in us_rows[3:200:11]]
        update("UPDATE regimes SET regime_embedding = NULL WHERE regime_record_id = ANY(%s)",
               (picked,), set_payload(None), picked)
        picked = [r.rid for r in us_rows[4:200:13]]
        update("UPDATE regimes SET regime_embedding = %s WHERE regime_record_id = ANY(%s)",
               (BAD_BYTES, picked), set_payload(BAD_BYTES), picked)
        assert_windows_replay(conn, model)

        # the date moves a row to another bucket (and group); the region to another region
        def shift(n: int) -> Callable[[Row], None]:
            def change(row: Row) -> None:
                row.day += days(n)
            return change

        def move_to(region: str) -> Callable[[Row], None]:
            def change(row: Row) -> None:
                row.region = region
            return change

        picked = [r.rid for r in us_rows[20:60:5]]
        update("UPDATE regimes SET as_of_date = as_of_date + 40 WHERE regime_record_id = ANY(%s)",
               (picked,), shift(40), picked)
        picked = [r.rid for r in us_rows[100:110]]
        update("UPDATE regimes SET as_of_date = as_of_date + 400"
               " WHERE regime_record_id = ANY(%s)", (picked,), shift(400), picked)
        picked = [r.rid for r in us_rows[200:230]]
        update("UPDATE regimes SET region = 'EU' WHERE regime_record_id = ANY(%s)",
               (picked,), move_to("EU"), picked)
        update("UPDATE regimes SET confidence = 0.7 WHERE false", (), move_to("EU"), [])
        assert_windows_replay(conn, model)

        # DELETE: some rows; then every row of a bucket and of a group (their sums go)
        def delete(query: str, params: Sequence[Any], rids: Sequence[str]) -> None:
            conn.execute(query, params)
            for rid in rids:
                del model.rows[rid]
            assert_sums_current(conn, model)

        picked = [r.rid for r in model.rows.values() if r.region == "US"][::17]
        delete("DELETE FROM regimes WHERE regime_record_id = ANY(%s)", (picked,), picked)
        bucket = bucket_of(dt.date(2018, 4, 1))
        picked = [r.rid for r in model.rows.values()
                  if r.region == "US" and bucket_of(r.day) == bucket]
        delete("DELETE FROM regimes WHERE region = 'US' AND as_of_date BETWEEN %s AND %s",
               (bucket_start(bucket), bucket_start(bucket + 1) - days(1)), picked)
        group = bucket // GROUP_BUCKETS + 1
        picked = [r.rid for r in model.rows.values()
                  if r.region == "US" and bucket_of(r.day) // GROUP_BUCKETS == group]
        delete("DELETE FROM regimes WHERE region = 'US' AND as_of_date BETWEEN %s AND %s",
               (group_start(group), group_start(group + 1) - days(1)), picked)
        # the emptied group keeps a row of zeros (never deleted), as do its buckets
        assert fetch(conn, "SELECT n_rows, n_dates, state FROM regime_bucket_group_sums"
                           " WHERE region = 'US' AND bucket_group = %s", (group,)) == (0, 0, [0.0])
        assert fetch(conn, EMPTIED_SQL) == (0, 0)
        assert_windows_replay(conn, model)

        # a rolled-back transaction leaves the sums as they were
        before = stored_sums(conn)
        with conn.transaction(force_rollback=True):
            insert(conn, [Row("US", dt.date(2018, 9, 9), vectors(rng, 1)[0])], "statement")
            conn.execute("DELETE FROM regimes WHERE region = 'EU'")
            assert stored_sums(conn) != before
        assert stored_sums(conn) == before

        # a row dated infinity is in no bucket
        conn.execute(INSERT + "('inf', 'infinity', 'US', 'NEUTRAL', NULL, 0.5, now())")
        assert_sums_current(conn, model)
        conn.execute("DELETE FROM regimes WHERE regime_record_id = 'inf'")
        assert_sums_current(conn, model)

        # TRUNCATE: no row, no sum; then the triggers go on
        conn.execute("TRUNCATE regimes")
        model.rows.clear()
        assert stored_sums(conn) == ([], [])
        step(small_rows(rng)[:80], "statement")
        assert_windows_replay(conn, model)


def loaded(dsn: str, seed: int = 3, enabled_: bool = True,
           notices: list[Notice] | None = None) -> tuple[Connection, Model]:
    """A connection to ``dsn`` with the small data set inserted (and the sums enabled)."""
    model = Model()
    conn = connect(dsn, notices)
    rows = small_rows(np.random.default_rng(seed))
    insert(conn, rows, "statement")
    model.add(rows)
    conn.execute("ANALYZE regimes")
    if enabled_:
        enable(conn)
    return conn, model


# --------------------------------------------------------------------------- staleness

STALE = "regime-pg: the stored bucket sums of region"


def stale_warnings(notices: list[Notice]) -> list[Notice]:
    """The staleness WARNINGs among ``notices`` (which are then emptied)."""
    found = [n for n in notices if (n.message or "").startswith(STALE)]
    notices.clear()
    return found


def replica_insert(conn: Connection, rows: Sequence[Row]) -> None:
    """Rows written with session_replication_role = replica: no trigger fires, so the
    vector is given directly."""
    conn.execute("SET session_replication_role = replica")
    try:
        for row in rows:
            conn.execute(
                "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
                " regime_embedding, embedding_vector, confidence, created_at)"
                " VALUES (%s, %s, %s, 'NEUTRAL', %s, regime_embedding_to_vector(%s), 0.5, %s)",
                (row.rid, row.day, row.region, row.engine_bytes(), row.engine_bytes(),
                 row.created))
    finally:
        conn.execute("RESET session_replication_role")


def test_stale_sums_warn_and_give_the_rows_result(db: str) -> None:
    notices: list[Notice] = []
    conn, model = loaded(db, notices=notices)
    with conn:
        region, start, end = SMALL_WINDOWS["US, one year"]
        _, inner_end = SMALL_WINDOWS["US, one group"][1:]
        assert compute(conn, region, start, end) and not stale_warnings(notices)
        before = stored_sums(conn)

        # a new date inside a stored group of the window, and a re-run of a date
        rng = np.random.default_rng(4)
        day = dt.date(2018, 8, 14)
        rerun = max(d for d in model.latest("US") if d < day)
        rows = [Row("US", day, vectors(rng, 1)[0]),
                Row("US", rerun, vectors(rng, 1)[0], T0 + dt.timedelta(days=5))]
        replica_insert(conn, rows)
        model.add(rows)
        assert stored_sums(conn) == before  # no trigger fired

        stale = compute(conn, region, start, end)
        warnings = stale_warnings(notices)
        assert len(warnings) == 1 and warnings[0].severity == "WARNING"
        assert warnings[0].sqlstate == "01000"
        assert "regime_bucket_sums_enable()" in (warnings[0].hint or "")
        dates, x = model.usable(region, start, end)
        assert stale.center == vector_send(calendar_centre(dates, x))
        assert stale.n_dates == len(dates)

        # a window outside the stale buckets, and one cutting them (read from the rows)
        assert_replays(conn, model, "US", dt.date(2019, 1, 1), dt.date(2019, 3, 1))
        assert_replays(conn, model, "US", day - days(2), day + days(3))
        assert not stale_warnings(notices)

        enable(conn)  # the repair
        assert stored_sums(conn) == expected_sums(model)
        assert compute(conn, region, start, end) == stale
        assert not stale_warnings(notices)

        # a DELETE and a moved date that bypass the triggers
        victim = next(r for r in model.rows.values()
                      if r.region == "US" and dt.date(2018, 9, 1) <= r.day <= inner_end)
        moved = next(r for r in model.rows.values()
                     if r.region == "US" and r.rid != victim.rid
                     and dt.date(2018, 10, 1) <= r.day <= dt.date(2018, 12, 1))
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM regimes WHERE regime_record_id = %s", (victim.rid,))
        conn.execute("UPDATE regimes SET as_of_date = as_of_date + 20"
                     " WHERE regime_record_id = %s", (moved.rid,))
        conn.execute("RESET session_replication_role")
        del model.rows[victim.rid]
        moved.day += days(20)
        for _ in range(2):  # the same answer again: nothing was repaired in between
            stale = compute(conn, region, start, end)
            assert len(stale_warnings(notices)) == 1
            dates, x = model.usable(region, start, end)
            assert stale.center == vector_send(calendar_centre(dates, x))
        enable(conn)
        assert compute(conn, region, start, end) == stale
        assert not stale_warnings(notices)

        # TRUNCATE bypassing the triggers: the region is gone, the error as disabled
        conn.execute("SET session_replication_role = replica")
        conn.execute("TRUNCATE regimes")
        conn.execute("RESET session_replication_role")
        assert stored_sums(conn) != ([], [])
        error = outcome(conn, region, start, end)
        assert len(stale_warnings(notices)) == 1
        conn.execute("SELECT regime_bucket_sums_disable()")
        assert outcome(conn, region, start, end) == error
        assert isinstance(error, Failure) and error.sqlstate == "42704"  # unknown region


# --------------------------------------------------------------------------- concurrency


def wait_until_blocked(dsn: str, pid: int, future: Future[Any]) -> None:
    """Until the backend ``pid`` waits for a lock (a guard of 60 s, not a timing)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while watcher.execute(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND NOT granted)", (pid,)
        ).fetchone() != (True,):
            assert not future.done(), f"the second writer did not wait: {future.result()}"
            assert time.monotonic() < deadline, "the second writer never waited"
            time.sleep(0.02)


@pytest.mark.parametrize("case", ["existing bucket", "new bucket", "bucket emptied"])
def test_read_committed_writers_of_one_bucket_queue(db: str, case: str) -> None:
    conn, model = loaded(db)
    rng = np.random.default_rng(5)
    bucket = bucket_of(dt.date(2018, 6, 1) if case != "new bucket" else dt.date(2020, 6, 1))
    day = bucket_start(bucket) + days(7)
    first = [Row("US", day, vectors(rng, 1)[0])]
    second = [Row("US", day + days(1), vectors(rng, 1)[0]),
              Row("US", day - days(7), vectors(rng, 1)[0], T0 + dt.timedelta(days=1))]
    emptied = [r.rid for r in model.rows.values()
               if r.region == "US" and bucket_of(r.day) == bucket]
    with connect(db) as one, connect(db) as two, ThreadPoolExecutor(max_workers=1) as pool:
        one.autocommit = two.autocommit = False
        if case == "bucket emptied":
            one.execute("DELETE FROM regimes WHERE regime_record_id = ANY(%s)", (emptied,))
        else:
            insert(one, first, "statement")

        def write() -> None:
            insert(two, second, "statement")
            two.commit()

        future = pool.submit(write)
        wait_until_blocked(db, two.info.backend_pid, future)
        one.commit()
        future.result()
    if case == "bucket emptied":
        for rid in emptied:
            del model.rows[rid]
    else:
        model.add(first)
    model.add(second)
    with conn:
        assert_sums_current(conn, model)
        assert_replays(conn, model, "US", bucket_start(bucket - 20), bucket_start(bucket + 20))


@pytest.mark.parametrize("case", ["existing bucket", "new bucket"])
def test_repeatable_read_second_writer_gets_a_serialization_failure(db: str, case: str) -> None:
    conn, model = loaded(db)
    rng = np.random.default_rng(6)
    bucket = bucket_of(dt.date(2018, 6, 1) if case == "existing bucket" else dt.date(2020, 6, 1))
    first = [Row("US", bucket_start(bucket) + days(7), vectors(rng, 1)[0])]
    second = [Row("US", bucket_start(bucket) + days(8), vectors(rng, 1)[0])]
    with conn, connect(db) as one, connect(db) as two, ThreadPoolExecutor(max_workers=1) as pool:
        one.autocommit = two.autocommit = False
        two.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        insert(one, first, "statement")
        fetch(two, "SELECT count(*) FROM regimes")  # the snapshot: before one commits

        def write() -> None:
            try:
                insert(two, second, "statement")
            finally:
                two.rollback()

        future = pool.submit(write)
        wait_until_blocked(db, two.info.backend_pid, future)
        one.commit()
        with pytest.raises(psycopg.errors.SerializationFailure) as failure:
            future.result()
        assert failure.value.sqlstate == "40001"
        model.add(first)
        assert_sums_current(conn, model)
        insert(two, second, "statement")  # the retry
        two.commit()
        model.add(second)
        assert_sums_current(conn, model)


# --------------------------------------------------------------------------- privileges


@pytest.fixture
def role(pg_server: Server, db: str) -> Iterator[str]:
    """A role (NOLOGIN: used with SET ROLE) that may read regimes, nothing of the sums."""
    name = f"regime_pg_sums_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT SELECT ON regimes, regime_embeddings_latest TO {}").format(
            sql.Identifier(name)))
    yield name
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@contextmanager
def as_role(conn: Connection, name: str) -> Iterator[None]:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")


def corrupt_stored_sums(conn: Connection) -> None:
    """Wrong stored vectors with the right counts: the staleness check cannot see it, so a
    centre computed from the stored sums is wrong, one computed from the rows is not."""
    conn.execute("UPDATE regime_bucket_group_sums SET state[2] = state[2] + 1000"
                 " WHERE array_length(state, 1) > 1")
    conn.execute("UPDATE regime_bucket_sums SET partial = partial + partial"
                 " WHERE partial IS NOT NULL")


def small_results(conn: Connection) -> dict[str, Proto | Failure]:
    return {w: outcome(conn, *SMALL_WINDOWS[w]) for w in SMALL_WINDOWS}


def test_a_role_that_cannot_read_the_sums_computes_from_the_rows(db: str, role: str) -> None:
    conn, _ = loaded(db)
    with conn:
        expected = small_results(conn)
        with as_role(conn, role):
            assert fetch(conn, "SELECT has_table_privilege('regime_bucket_sums', 'SELECT'),"
                               " has_table_privilege('regime_bucket_group_sums', 'SELECT')") == (
                False, False)
            assert small_results(conn) == expected  # same bits, from the rows
        corrupt_stored_sums(conn)
        assert small_results(conn) != expected  # the superuser reads the stored sums
        with as_role(conn, role):
            assert small_results(conn) == expected  # the role does not
        # SELECT on one table only is not enough to use them
        conn.execute(sql.SQL("GRANT SELECT ON regime_bucket_sums TO {}").format(
            sql.Identifier(role)))
        with as_role(conn, role):
            assert small_results(conn) == expected
        enable(conn)
        assert small_results(conn) == expected


def test_a_writer_of_regimes_keeps_the_sums_without_privileges_on_them(
        db: str, role: str) -> None:
    """The triggers run as the owner (SECURITY DEFINER): a role that may write regimes but
    has no privilege on the sums keeps them by every kind of write, and cannot write them
    itself."""
    conn, model = loaded(db, enabled_=False)
    ident = sql.Identifier(role)
    with conn:
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON regimes TO {}")
                     .format(ident))
        enable(conn)
        rng = np.random.default_rng(7)
        rows = [Row("US", dt.date(2018, 7, 1) + days(k), vectors(rng, 1)[0],
                    T0 + dt.timedelta(days=3)) for k in range(20)]
        with as_role(conn, role):
            insert(conn, rows[:10], "rows")
            insert(conn, rows[10:], "statement")
            conn.execute("UPDATE regimes SET regime_embedding = NULL"
                         " WHERE regime_record_id = %s", (rows[0].rid,))
            conn.execute("DELETE FROM regimes WHERE regime_record_id = %s", (rows[1].rid,))
            denied = outcome_of(conn, "UPDATE regime_bucket_sums SET n_rows = 0")
            assert denied is not None and denied.sqlstate == "42501"
        model.add(rows)
        rows[0].payload = None
        del model.rows[rows[1].rid]
        assert_sums_current(conn, model)
        with as_role(conn, role):
            conn.execute("TRUNCATE regimes")
        assert stored_sums(conn) == ([], [])


def test_enable_refuses_under_row_security_and_outside_read_committed(db: str) -> None:
    """enable() would show aggregates of rows a policy hides, and under REPEATABLE READ
    its snapshot would miss rows committed while it waited for its lock: it refuses both,
    and nothing changes."""
    conn, _ = loaded(db, enabled_=False)
    with conn:
        conn.execute("ALTER TABLE regimes ENABLE ROW LEVEL SECURITY")
        refused = outcome_of(conn, "SELECT regime_bucket_sums_enable()")
        assert refused is not None and refused.sqlstate == "0A000", refused
        assert "row-level security" in (refused.message or "")
        conn.execute("ALTER TABLE regimes DISABLE ROW LEVEL SECURITY")
        assert not enabled(conn) and bucket_triggers(conn) == []
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            refused = outcome_of(conn, "SELECT regime_bucket_sums_enable()")
        assert refused is not None and refused.sqlstate == "25000", refused
        assert not enabled(conn) and bucket_triggers(conn) == []


def test_row_level_security_computes_from_the_rows(db: str, role: str) -> None:
    """While regimes has row-level security, no role uses the stored sums: they hold rows
    a policy may hide.  A role that may read the sums sees only its rows' centre."""
    conn, model = loaded(db)
    with conn:
        expected = small_results(conn)
        conn.execute(sql.SQL("GRANT SELECT ON regime_bucket_sums, regime_bucket_group_sums"
                             " TO {}").format(sql.Identifier(role)))
        corrupt_stored_sums(conn)
        conn.execute("ALTER TABLE regimes ENABLE ROW LEVEL SECURITY")
        conn.execute(sql.SQL("CREATE POLICY regime_pg_sums_test ON regimes FOR SELECT TO {}"
                             " USING (as_of_date < '2018-09-01' OR region = 'EU')").format(
            sql.Identifier(role)))
        assert small_results(conn) == expected  # the superuser: not subject, from the rows
        visible = Model({rid: r for rid, r in model.rows.items()
                         if r.day < dt.date(2018, 9, 1) or r.region == "EU"})
        with as_role(conn, role):
            for name, (region, start, end) in SMALL_WINDOWS.items():
                dates, x = visible.usable(region, start, end)
                result = compute(conn, region, start, end)
                assert result.n_dates == len(dates) and result.center == vector_send(
                    calendar_centre(dates, x)), name
            assert compute(conn, *SMALL_WINDOWS["EU, everything"]) == expected["EU, everything"]
            # a window wholly hidden: as if the rows were not there
            hidden = outcome(conn, "US", dt.date(2019, 1, 1), dt.date(2019, 6, 30))
            assert isinstance(hidden, Failure) and hidden.sqlstate == "P0002"
        conn.execute("ALTER TABLE regimes DISABLE ROW LEVEL SECURITY")
        assert small_results(conn) != expected  # the stored (corrupted) sums again
        enable(conn)
        assert small_results(conn) == expected


# --------------------------------------------------------------------------- on and off


def test_disable_goes_back_to_the_window_grid(db: str) -> None:
    conn, model = loaded(db, enabled_=False)
    with conn:
        assert not enabled(conn) and bucket_triggers(conn) == []
        before = small_results(conn)
        n_buckets = len(expected_sums(model)[0])
        assert enable(conn) == n_buckets
        assert enable(conn) == n_buckets  # twice: a rebuild, the same triggers
        assert len(bucket_triggers(conn)) == 4
        assert_sums_current(conn, model)
        on = small_results(conn)
        assert on != before

        # one trigger disabled: not enabled, the window grid; enable() puts it back
        conn.execute("ALTER TABLE regimes DISABLE TRIGGER regime_pg_bucket_sums_update")
        assert not enabled(conn)
        assert small_results(conn) == before
        enable(conn)
        assert enabled(conn) and {s for _, s in bucket_triggers(conn)} == {"O"}
        assert len(bucket_triggers(conn)) == 4
        assert small_results(conn) == on

        conn.execute("SELECT regime_bucket_sums_disable()")
        assert not enabled(conn) and bucket_triggers(conn) == []
        assert stored_sums(conn) == ([], [])
        assert small_results(conn) == before  # bit for bit, the dispersion too
        insert(conn, [Row("US", dt.date(2018, 5, 5), np.ones(DIM, "<f4"))], "statement")
        assert stored_sums(conn) == ([], [])  # nothing is kept
        conn.execute("SELECT regime_bucket_sums_disable()")  # twice: fine


def down_revision_of(revision: str) -> str:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    down = script.get_revision(revision).down_revision
    assert isinstance(down, str)
    return down


def engine_rows_md5(conn: Connection) -> tuple[Any, ...]:
    return fetch(conn, "SELECT count(*), md5(string_agg(r::text, ',' ORDER BY regime_record_id))"
                       "  FROM regimes AS r")


def test_downgrade_while_enabled_removes_triggers_and_tables(db: str) -> None:
    conn, _ = loaded(db, enabled_=False)
    with conn:
        before = small_results(conn)
        enable(conn)
        rows = engine_rows_md5(conn)
    migrate.downgrade(db, down_revision_of("0018"))
    with connect(db) as conn:
        assert bucket_triggers(conn) == []
        assert fetch(conn, "SELECT to_regclass('regime_bucket_sums'),"
                           " to_regclass('regime_bucket_group_sums'),"
                           " to_regprocedure('regime_bucket_sums_enable()')") == (None,) * 3
        assert engine_rows_md5(conn) == rows
        assert small_results(conn) == before
        insert(conn, [Row("US", dt.date(2018, 5, 5), np.ones(DIM, "<f4"))], "statement")
    migrate.upgrade(db)
    with connect(db) as conn:
        assert not enabled(conn) and stored_sums(conn) == ([], [])


# --------------------------------------------------------------------------- errors

ERROR_WINDOWS: dict[str, tuple[Any, Any, Any]] = {
    "unknown region": ("ZZ", dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
    "unknown region, long": ("ZZ", dt.date(1990, 1, 1), dt.date(2018, 12, 31)),
    "empty window": ("US", dt.date(2030, 1, 1), dt.date(2030, 12, 31)),
    "empty, long": ("US", dt.date(2030, 1, 1), dt.date(2045, 12, 31)),
    "empty, in a bucket": ("US", dt.date(2030, 1, 2), dt.date(2030, 1, 4)),
    "only NULL embeddings": ("NUL", dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
    "only NULL, long": ("NUL", dt.date(2000, 1, 1), dt.date(2030, 12, 31)),
    "only NULL, in a bucket": ("NUL", dt.date(2018, 3, 2), dt.date(2018, 3, 5)),
    "end before start": ("US", dt.date(2018, 12, 31), dt.date(2018, 1, 1)),
    "NULL region": (None, dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
    "NULL end": ("US", dt.date(2018, 1, 1), None),
    "infinite end": ("US", dt.date(2018, 1, 1), "infinity"),
    "region too long": ("X" * 33, dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
}


def test_errors_are_unchanged(db: str) -> None:
    conn, _ = loaded(db, enabled_=False)
    with conn:
        rows = [Row("NUL", dt.date(2018, 1, 1) + days(3 * k), None if k % 2 else BAD_BYTES)
                for k in range(100)]
        insert(conn, rows, "statement")
        disabled = {w: outcome(conn, *ERROR_WINDOWS[w]) for w in ERROR_WINDOWS}
        enable(conn)
        for name, params in ERROR_WINDOWS.items():
            assert isinstance(disabled[name], Failure), name
            assert outcome(conn, *params) == disabled[name], name
        assert disabled["only NULL embeddings"].sqlstate == "P0002"  # type: ignore[union-attr]


def test_distances_adding_up_past_2_to_the_31_use_version_5s_sums(db: str) -> None:
    """The one-pass distance scan caps each distance at 2^31 - 1; a window whose distances
    add up to (2^31 - 1) or more is summed by regime_window_distances instead: the
    dispersion is then exactly its sum over the window, divided by the dates (here about
    1.96e9 a row, 60 rows, with a duplicate date traded for the latest row)."""
    conn, _ = loaded(db)
    with conn:
        big = np.full(DIM, 1e8, dtype="<f4")
        rows = [Row("HUGE", dt.date(2018, 1, 1) + days(k), big * (3 if k % 2 else 1))
                for k in range(60)]
        rows.append(Row("HUGE", dt.date(2018, 1, 5), big * 5, T0 + dt.timedelta(hours=1)))
        insert(conn, rows, "statement")
        start, end = dt.date(2018, 1, 1), dt.date(2018, 3, 1)
        result = compute(conn, "HUGE", start, end)
        assert result.n_dates == 60
        # what version 5 sums over every row, the duplicate date's rows traded exactly
        expected = fetch(
            conn,
            "SELECT (d.all_rows - o.older) / 60 FROM (SELECT %s::vector AS c) AS p,"
            " LATERAL regime_window_distances('HUGE', %s, %s, p.c) AS d(all_rows),"
            " LATERAL (SELECT r.embedding_vector <-> p.c FROM regimes AS r"
            "           WHERE r.region = 'HUGE' AND r.as_of_date = '2018-01-05'"
            "             AND r.created_at = %s) AS o(older)",
            ("[" + ",".join(map(repr, result.centre().tolist())) + "]", start, end, T0))[0]
        assert result.dispersion_value() == pytest.approx(expected, rel=1e-12)
        assert result.dispersion_value() * 60 > 2**31


FIRST_DAY, LAST_DAY = "4714-11-24 BC", "5874897-12-31"


def test_windows_at_the_extreme_dates(db: str) -> None:
    """Windows from PostgreSQL's first date or to its last: the disabled path's counts and
    dates, the centre of the calendar grid."""
    conn, model = loaded(db, enabled_=False)
    with conn:
        windows = [("US", FIRST_DAY, "2019-12-31"), ("US", FIRST_DAY, LAST_DAY),
                   ("US", "2018-06-01", LAST_DAY), ("US", "4714-11-25 BC", "2019-12-31")]
        disabled = [outcome(conn, *w) for w in windows]
        enable(conn)
        for window, old in zip(windows, disabled, strict=True):
            new = outcome(conn, *window)
            assert isinstance(new, Proto) and isinstance(old, Proto), (window, new)
            assert new[:2] + new[5:] == old[:2] + old[5:], window
            dates, x = model.usable("US", new.first_date, new.last_date)
            assert new.center == vector_send(calendar_centre(dates, x)), window


def test_rows_at_the_extreme_dates(db: str) -> None:
    """Rows dated in the first and the last calendar buckets: kept like any other."""
    conn, model = loaded(db)
    with conn:
        ones = np.ones(DIM, "<f4").tobytes()
        # the four dates twice (a re-run: groups with a duplicate date, traded)
        for k, day in enumerate(2 * [FIRST_DAY, "4714-12-08 BC", "5874897-12-20", LAST_DAY]):
            failure = outcome_of(
                conn, INSERT + "(%s, %s::date, 'EDGE', 'NEUTRAL', %s, 0.5, now() + %s)",
                (f"edge-{k}", day, ones, dt.timedelta(hours=k)))
            assert failure is None, (day, failure)
        assert sums_text(conn) == rebuilt_sums(conn, sums_text)
        assert fetch(conn, "SELECT array_agg(n_rows ORDER BY bucket) FROM regime_bucket_sums"
                           " WHERE region = 'EDGE'") == ([4, 2, 2],)
        query = ("SELECT p.n_dates, p.center = %s::vector, p.dispersion, p.first_date::text,"
                 "       p.last_date::text FROM compute_regime_prototype('EDGE', %s, %s) AS p")
        every = "[" + ",".join(["1"] * DIM) + "]"
        assert fetch(conn, query, (every, FIRST_DAY, LAST_DAY)) == (
            4, True, 0.0, "4714-11-24 BC", LAST_DAY)
        assert fetch(conn, query, (every, "5874897-01-01", LAST_DAY)) == (
            2, True, 0.0, "5874897-12-20", LAST_DAY)
        conn.execute("DELETE FROM regimes WHERE region = 'EDGE'")
        assert stored_sums(conn) == rebuilt_sums(conn) == expected_sums(model)
