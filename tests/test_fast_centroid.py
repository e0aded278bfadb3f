"""The two-level centroid (prototypes--2.sql, 0009; --3.sql, 0010) against numpy and v1.

* Accuracy: on adversarial data (large common offsets, mixed magnitudes,
  drift and spikes, 120,000 rows in one window) every coordinate of the
  centre is within 1e-6 * mean_i |x_ij| of numpy's float64 mean, on the long
  window (custom plans, parallel or not) and on a one-year window (cached
  plans); a plain float32 sum(vector) misses that bound on the same data.
* The algorithm as documented: numpy replays it (float32 bucket sums, float8
  sums of those, one rounding) and gets the same bits, serial or parallel.
* Same answers as prototypes--1.sql: the same database is computed at head,
  downgraded to 0008 (the v1 definitions) and computed again; counts, dates
  and errors are equal, centres within the bound of numpy's mean.
* Parallel query: the functions are PARALLEL SAFE, pgvector's aggregates
  combine partial states, and the statement the function runs on a long
  window gets parallel workers when parallel query is cheap (forced here
  with parallel_setup_cost = parallel_tuple_cost = 0).

No timing assertions: speed is measured by ``python -m bench``.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from bench.statements import bucket_bounds, explain, function_statements
from regime_pg import migrate
from regime_pg.connection import Connection, use_vector_types, vector_to_numpy
from tests.conftest import (
    FORCE_PARALLEL,
    Server,
    create_database,
    database_dsn,
    drop_database,
    workers_launched,
)
from tests.routines import routines_query

DIM = 384
EPOCH = dt.date(2000, 1, 1).toordinal()  # PostgreSQL's date zero
ADV_START = dt.date(1700, 1, 1)
ADV_ROWS = 120_000
ONE_YEAR = (dt.date(1900, 1, 1), dt.date(1900, 12, 31))


def within_bound(center: npt.NDArray[Any], rows: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """|c_j - c*_j| / (1e-6 * mean_i |x_ij|) per coordinate (<= 1 meets the goal)."""
    x = rows.astype(np.float64)
    exact = x.mean(axis=0)
    scale = np.abs(x).mean(axis=0)
    return np.abs(np.asarray(center, dtype=np.float64) - exact) / (1e-6 * scale)


def adversarial(n: int, seed: int = 20261125) -> npt.NDArray[np.float32]:
    """n x 384 float32 rows that a float32 running sum gets wrong."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, DIM), dtype=np.float32)
    cols = np.arange(96)
    # a large common offset, small spread
    x[:, 0:96] = 1e4 * (1 + cols / 96) + rng.standard_normal((n, 96))
    # mixed magnitudes, row by row: 1e-3 .. 1e6, around a positive mean
    scale = 10.0 ** rng.integers(-3, 7, size=(n, 1))
    x[:, 96:192] = scale * (0.5 + rng.standard_normal((n, 96)))
    # tiny but normal values with an offset
    x[:, 192:288] = 1e-20 * (100 + rng.standard_normal((n, 96)))
    # drift over the window, with rare spikes
    drift = np.linspace(-50, 50, n, dtype=np.float64)[:, None]
    spikes = np.where(rng.random((n, 96)) < 1e-3, 1e7, 0.0)
    x[:, 288:384] = drift + rng.standard_normal((n, 96)) + spikes
    return x


def copy_vectors(
    conn: Connection, region: str, ordinals: npt.NDArray[np.int64], x: npt.NDArray[np.float32]
) -> None:
    """Bulk rows by binary COPY, the vector written directly (trigger off meanwhile).

    The BYTEA-to-vector conversion is tested in test_embedding_vector; here only
    the arithmetic on 120,000 vectors matters, so the rows skip the trigger's
    ~0.3 ms per row and carry no BYTEA.
    """
    n = len(ordinals)
    prefix = f"{region}-{uuid.uuid4().hex[:8]}-".encode()
    ids = np.char.add(prefix, np.char.zfill(np.arange(n).astype("S10"), 10))
    rows = np.zeros(
        n,
        np.dtype(
            [
                ("nfields", ">i2"),
                ("id_len", ">i4"),
                ("id", f"S{len(prefix) + 10}"),
                ("date_len", ">i4"),
                ("date", ">i4"),
                ("region_len", ">i4"),
                ("region", f"S{len(region)}"),
                ("label_len", ">i4"),
                ("label", "S7"),
                ("conf_len", ">i4"),
                ("conf", ">f8"),
                ("vec_len", ">i4"),
                ("dim", ">i2"),
                ("unused", ">i2"),
                ("vec", ">f4", (DIM,)),
            ]
        ),
    )
    rows["nfields"] = 6
    rows["id_len"], rows["id"] = len(prefix) + 10, ids
    rows["date_len"], rows["date"] = 4, ordinals - EPOCH
    rows["region_len"], rows["region"] = len(region), region.encode()
    rows["label_len"], rows["label"] = 7, b"NEUTRAL"
    rows["conf_len"], rows["conf"] = 8, 0.5
    rows["vec_len"], rows["dim"], rows["vec"] = 4 + 4 * DIM, DIM, x
    conn.execute("ALTER TABLE regimes DISABLE TRIGGER regime_pg_embedding_sync")
    with conn.cursor().copy(
        "COPY regimes (regime_record_id, as_of_date, region, regime_label, confidence,"
        " embedding_vector) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for start in range(0, n, 10_000):
            copy.write(rows[start : start + 10_000].tobytes())
        copy.write(struct.pack(">h", -1))
    conn.execute("ALTER TABLE regimes ENABLE TRIGGER regime_pg_embedding_sync")


@dataclass(frozen=True)
class Adversarial:
    dsn: str
    major: int
    x: npt.NDArray[np.float32]
    dates: list[dt.date]


@pytest.fixture(scope="module")
def adv(pg_server: Server, migrated_template: str) -> Iterator[Adversarial]:
    """One database per server with 120,000 adversarial rows in region ADV."""
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    x = adversarial(ADV_ROWS)
    ordinals = ADV_START.toordinal() + np.arange(ADV_ROWS, dtype=np.int64)
    with psycopg.connect(dsn, autocommit=True) as conn:
        copy_vectors(conn, "ADV", ordinals, x)
        conn.execute("VACUUM ANALYZE regimes")
    dates = [dt.date.fromordinal(int(o)) for o in ordinals]
    try:
        yield Adversarial(dsn, pg_server.major, x, dates)
    finally:
        drop_database(pg_server, name)


def connect(dsn: str) -> Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    use_vector_types(conn)
    return conn


def prototype(conn: Connection, region: str, start: dt.date, end: dt.date) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT n_dates, n_skipped, center, first_date, last_date, l2_norm, dispersion"
        "  FROM compute_regime_prototype(%s, %s, %s)",
        (region, start, end),
    ).fetchone()
    assert row is not None
    return row


# --------------------------------------------------------------------------- accuracy


def test_long_window_meets_the_bound_where_float32_sum_does_not(adv: Adversarial) -> None:
    with connect(adv.dsn) as conn:
        n_dates, n_skipped, center, first, last, l2_norm, _ = prototype(
            conn, "ADV", adv.dates[0], adv.dates[-1]
        )
        naive = conn.execute(
            "SELECT sum(embedding_vector) FROM regimes WHERE region = 'ADV'"
        ).fetchone()
    assert (n_dates, n_skipped, first, last) == (ADV_ROWS, 0, adv.dates[0], adv.dates[-1])
    ratio = within_bound(vector_to_numpy(center), adv.x)
    assert ratio.max() <= 1.0, f"coordinate {ratio.argmax()} at {ratio.max():.3f} of the bound"
    assert l2_norm == pytest.approx(np.linalg.norm(vector_to_numpy(center).astype(np.float64)))
    # the data is adversarial: one float32 running sum over the window misses the bound
    assert naive is not None
    naive_ratio = within_bound(vector_to_numpy(naive[0]).astype(np.float64) / ADV_ROWS, adv.x)
    assert naive_ratio.max() > 1.0


def test_one_year_window_meets_the_bound(adv: Adversarial) -> None:
    start, end = ONE_YEAR
    picked = np.array([start <= d <= end for d in adv.dates])
    with connect(adv.dsn) as conn:
        for _ in range(7):  # past the plan cache's five custom plans: the generic one too
            n_dates, _, center, *_ = prototype(conn, "ADV", start, end)
            assert n_dates == picked.sum() == 365
            assert within_bound(vector_to_numpy(center), adv.x[picked]).max() <= 1.0


def documented_centre(
    x: npt.NDArray[np.float32], dates: list[dt.date], start: dt.date, end: dt.date
) -> npt.NDArray[np.float32]:
    """The centre as prototypes--3.sql documents it, in numpy, for a window without duplicates.

    Float32 sums over 15-day buckets in date order; float8 sums of those in
    bucket order within each part (one part under 4096 days, else 8); the
    parts added in order; divided by the number of dates, rounded once.
    """
    offsets = np.array([(d - start).days for d in dates])
    inside = (offsets >= 0) & (offsets <= (end - start).days)
    rows, buckets = x[inside], offsets[inside] // 15
    n_buckets = (end - start).days // 15 + 1
    parts = 1 if (end - start).days < 4096 else 8
    total = np.zeros(DIM, dtype=np.float64)
    for p in range(parts):
        part = np.zeros(DIM, dtype=np.float64)
        for b in range(p * n_buckets // parts, (p + 1) * n_buckets // parts):
            members = rows[buckets == b]
            if len(members) == 0:
                continue
            bucket = members[0].copy()
            for row in members[1:]:
                bucket = bucket + row  # float32, as pgvector's sum(vector)
            part += bucket.astype(np.float64)
        total += part
    return (total / len(rows)).astype(np.float32)


def test_centre_is_the_documented_computation_bit_for_bit(adv: Adversarial) -> None:
    """Two levels, one rounding: numpy's replay of the algorithm gives the same bits."""
    windows = [ONE_YEAR, (adv.dates[0], adv.dates[-1])]
    with connect(adv.dsn) as conn:
        for setting in FORCE_PARALLEL:
            conn.execute(setting)
        for start, end in windows:
            center = vector_to_numpy(prototype(conn, "ADV", start, end)[2])
            expected = documented_centre(adv.x, adv.dates, start, end)
            assert center.tobytes() == expected.tobytes(), (start, end)


def test_parallel_workers_give_the_same_bits(adv: Adversarial) -> None:
    """Every sum runs in a fixed order: serial or parallel, the centre is the same bits."""
    with connect(adv.dsn) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        serial = prototype(conn, "ADV", adv.dates[0], adv.dates[-1])
        conn.execute("RESET max_parallel_workers_per_gather")
        for setting in FORCE_PARALLEL:
            conn.execute(setting)
        parallel = prototype(conn, "ADV", adv.dates[0], adv.dates[-1])
        rows = conn.execute(
            "SELECT label, n_dates FROM compute_regime_prototypes('ADV', %s)",
            (
                json.dumps(
                    {
                        "ALL": {"start_date": str(adv.dates[0]), "end_date": str(adv.dates[-1])},
                        "YEAR": {"start_date": str(ONE_YEAR[0]), "end_date": str(ONE_YEAR[1])},
                    }
                ),
            ),
        ).fetchall()
    assert parallel[:2] == serial[:2] and parallel[3:6] == serial[3:6]
    assert np.array_equal(vector_to_numpy(parallel[2]), vector_to_numpy(serial[2]))
    # the dispersion adds float8 distances in scan order: equal to ~1e-15
    assert parallel[6] == pytest.approx(serial[6], rel=1e-12)
    assert rows == [("ALL", ADV_ROWS), ("YEAR", 365)]


def test_a_call_starts_parallel_workers(adv: Adversarial) -> None:
    """The call itself, not only its statements run on their own, gets workers on a long window.

    PL/pgSQL's SELECT ... INTO runs with a row limit and gets no worker; the
    long-window statements are RETURN QUERY of their own functions.
    """
    with connect(adv.dsn) as conn:
        before = workers_launched(conn)
        if before is None:
            pytest.skip("pg_stat_database.parallel_workers_launched is new in PostgreSQL 18")
        for setting in FORCE_PARALLEL:
            conn.execute(setting)
        prototype(conn, "ADV", adv.dates[0], adv.dates[-1])
        after = workers_launched(conn)
    assert after is not None
    assert after - before >= 2  # the 8 parts, then the dispersion's scan


def test_scan_order_changes_no_bit(db: str) -> None:
    """Rows read in physical order or in date order, serially or in parallel: same bits."""
    rng = np.random.default_rng(16)
    days = [dt.date(2015, 1, 5) + dt.timedelta(days=k * 7 // 5) for k in range(600)]
    order = rng.permutation(len(days))  # physical order != date order
    x = (rng.standard_normal((len(days), DIM)) * 3 + 1).astype("<f4")
    t0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    windows = [
        (dt.date(2016, 1, 1), dt.date(2016, 12, 31)),  # cached plans
        (dt.date(2010, 1, 1), dt.date(2025, 12, 31)),
    ]  # >= 4096 days: parts
    plans = {
        "sequential": ["enable_indexscan", "enable_bitmapscan"],
        "index": ["enable_seqscan", "enable_bitmapscan"],
        "bitmap": ["enable_seqscan", "enable_indexscan"],
    }
    with connect(db) as conn:
        insert_engine_rows(conn, [("US", days[i], x[i], t0) for i in order])
        conn.execute("ANALYZE regimes")
        for start, end in windows:
            centres = {}
            for plan, settings in plans.items():
                for name in settings:
                    conn.execute(f"SET {name} = off")
                centres[plan] = vector_to_numpy(prototype(conn, "US", start, end)[2])
                conn.execute("RESET ALL")
            for setting in FORCE_PARALLEL:
                conn.execute(setting)
            centres["parallel"] = vector_to_numpy(prototype(conn, "US", start, end)[2])
            conn.execute("RESET ALL")
            first = centres["sequential"]
            assert all(np.array_equal(c, first) for c in centres.values()), (start, end)


# --------------------------------------------------------------------------- plans
# The statements the functions run, taken from their installed source by the
# benchmark's own extractor (bench.statements), so both show the same plans.


def test_long_window_statements_get_parallel_workers(adv: Adversarial) -> None:
    """Workers take parts of the window; each part is a constant-memory nested loop."""
    window = ("ADV", adv.dates[0], adv.dates[-1])
    n_buckets = (adv.dates[-1] - adv.dates[0]).days // 15 + 1
    bounds = bucket_bounds(adv.dates[0], adv.dates[-1])
    with connect(adv.dsn) as conn:
        statements = function_statements(conn)
        conn.execute("SET plan_cache_mode = force_custom_plan")  # as for long windows
        for setting in FORCE_PARALLEL:
            conn.execute(setting)
        center = prototype(conn, *window)[2]
        parts, _ = explain(conn, statements["parts"], (*window, bounds))
        dispersion, _ = explain(conn, statements["dispersion"], (*window, center))
        buckets, _ = explain(conn, statements["buckets"], (*window, 0, n_buckets - 1))
    for nodes in (parts, dispersion):
        gathers = [n for n in nodes if n["Node Type"] in ("Gather", "Gather Merge")]
        assert gathers and all(g["Workers Planned"] >= 1 for g in gathers), nodes[0]
        assert nodes[0]["Actual Rows"] == 1
    assert any(n["Node Type"] == "Append" and n.get("Parallel Aware") for n in parts)
    assert sum(n["Node Type"] == "Function Scan" for n in parts) == 8
    assert any(n.get("Partial Mode") == "Partial" for n in dispersion)
    # one index range scan per bucket, in date order: no sort, no hash table
    types = {n["Node Type"] for n in buckets}
    assert {"Nested Loop", "Index Scan"} <= types and not types & {"Sort", "Hash", "Gather"}


PARALLEL_SAFE_ROUTINES = (
    "compute_regime_prototype(text,date,date)",
    "compute_regime_prototypes(text,jsonb)",
    "regime_prototypes_json(text,jsonb)",
    "regime_prototype_for_window(text,text,date,date)",
    "regime_prototype_compute(text,text,date,date)",
    "regime_prototype_compute_custom_plans(text,text,date,date)",
    "regime_window_bucket_states(text,date,date,integer,integer)",
    "regime_window_parts(text,date,date,integer[])",
    "regime_window_distances(text,date,date,vector)",
    "regime_check_region(text)",
    "regime_check_window(text,text,date,date)",
    "regime_window_name(text,text)",
)


def test_parallel_safety_flags(conn: Connection) -> None:
    flags = dict(
        conn.execute(
            "SELECT p.oid::regprocedure::text, p.proparallel FROM pg_proc AS p"
            " WHERE p.oid::regprocedure::text = ANY(%s)",
            (list(PARALLEL_SAFE_ROUTINES),),
        ).fetchall()
    )
    assert flags == dict.fromkeys(PARALLEL_SAFE_ROUTINES, "s")
    # pgvector's sum and avg of vector: parallel safe, with a combine function,
    # so workers can each aggregate part of a window and the leader combine them
    rows = conn.execute(
        """
        SELECT p.proname, p.proparallel, a.aggcombinefn::text
          FROM pg_aggregate AS a JOIN pg_proc AS p ON p.oid = a.aggfnoid
         WHERE p.proname IN ('sum', 'avg') AND p.proargtypes[0] = 'vector'::regtype
         ORDER BY 1
        """
    ).fetchall()
    assert [(name, par) for name, par, _ in rows] == [("avg", "s"), ("sum", "s")]
    assert all(combine != "-" for _, _, combine in rows), rows


# --------------------------------------------------------------------------- same as v1


def v1_rows() -> list[tuple[str, dt.date, object, dt.datetime]]:
    """Engine rows with every case of the dedup rule, over bucket edges (15 days)."""
    rng = np.random.default_rng(11)
    t0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)

    def vec(scale: float = 5.0) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(DIM) * scale + 3).astype("<f4")

    nan = np.full(DIM, np.nan, "<f4").tobytes()
    rows: list[tuple[str, dt.date, object, dt.datetime]] = []
    day0 = dt.date(2019, 1, 1)
    for k in range(120):  # region A: daily, with re-runs, NULLs and bad bytes
        day = day0 + dt.timedelta(days=k)
        rows.append(("A", day, vec(), t0))
        if k % 7 == 3:
            rows.append(("A", day, vec(), t0 + dt.timedelta(hours=1)))  # newer wins
        if k % 11 == 5:
            rows.append(("A", day, None, t0 + dt.timedelta(hours=2)))  # newer NULL hides
        if k % 13 == 6:
            rows.append(("A", day, b"\x01\x02", t0 - dt.timedelta(hours=1)))  # older, bad
        if k % 17 == 8:
            rows.append(("A", day, nan, t0))  # same created_at: record id decides
    for k in range(6000):  # region B: business days over 23 years, a few re-runs
        day = dt.date(2000, 1, 3) + dt.timedelta(days=k * 7 // 5)
        rows.append(("B", day, vec(1e3), t0))
        if k % 997 == 1:
            rows.append(("B", day, vec(1e3), t0 + dt.timedelta(days=1)))
    for k in range(20):  # region C: nothing usable
        rows.append(("C", day0 + dt.timedelta(days=k), None if k % 2 else b"\x00", t0))
    return rows


V1_WINDOWS = [
    ("A", dt.date(2019, 1, 1), dt.date(2019, 4, 30)),
    ("A", dt.date(2019, 1, 4), dt.date(2019, 1, 4)),
    ("A", dt.date(2019, 1, 7), dt.date(2019, 2, 20)),
    ("A", dt.date(2019, 1, 12), dt.date(2019, 1, 12)),
    ("A", dt.date(2018, 12, 20), dt.date(2019, 1, 16)),
    ("B", dt.date(2000, 1, 1), dt.date(2024, 12, 31)),  # >= 4096 days: custom plans
    ("B", dt.date(2003, 6, 1), dt.date(2004, 5, 31)),
    ("C", dt.date(2019, 1, 1), dt.date(2019, 12, 31)),  # no usable embedding
    ("A", dt.date(2030, 1, 1), dt.date(2030, 12, 31)),  # empty window
    ("Z", dt.date(2019, 1, 1), dt.date(2019, 12, 31)),  # unknown region
]

V1_DOCUMENT = {
    "Q1": {"start_date": "2019-01-01", "end_date": "2019-03-31"},
    "Q2": {"start_date": "2019-04-01", "end_date": "2019-06-30"},
    "EDGE": {"start_date": "2019-01-15", "end_date": "2019-01-31"},
}


def results(conn: Connection) -> list[object]:
    out: list[object] = []
    for region, start, end in V1_WINDOWS:
        try:
            row = conn.execute(
                "SELECT * FROM compute_regime_prototype(%s, %s, %s)", (region, start, end)
            ).fetchone()
            assert row is not None
            out.append(tuple(row))
        except psycopg.Error as exc:
            out.append((exc.sqlstate, exc.diag.message_primary, exc.diag.column_name))
    rows = conn.execute(
        "SELECT * FROM compute_regime_prototypes('A', %s)", (json.dumps(V1_DOCUMENT),)
    ).fetchall()
    out.extend(tuple(r) for r in rows)
    doc = conn.execute(
        "SELECT regime_prototypes_json('A', %s)", (json.dumps(V1_DOCUMENT),)
    ).fetchone()
    assert doc is not None
    out.append(doc[0])
    return out


def expected_usable(
    rows: list[tuple[str, dt.date, object, dt.datetime]], ids: list[str]
) -> dict[tuple[str, dt.date], npt.NDArray[np.float32] | None]:
    """Per (region, date): the latest row's vector, None when it is not usable."""
    latest: dict[tuple[str, dt.date], tuple[dt.datetime, str, object]] = {}
    for (region, day, payload, created), rid in zip(rows, ids, strict=True):
        key = (region, day)
        if key not in latest or (created, rid) > latest[key][:2]:
            latest[key] = (created, rid, payload)
    out: dict[tuple[str, dt.date], npt.NDArray[np.float32] | None] = {}
    for key, (_, _, payload) in latest.items():
        vec = None
        if isinstance(payload, np.ndarray):
            vec = payload
        elif isinstance(payload, bytes) and len(payload) == 4 * DIM:
            arr = np.frombuffer(payload, "<f4")
            vec = arr if np.all(np.isfinite(arr)) else None
        out[key] = vec
    return out


def assert_same(v2: object, v1: object, usable: npt.NDArray[np.float32] | None) -> None:
    if isinstance(v2, dict) and isinstance(v1, dict):  # the prototype documents
        assert v2.keys() == v1.keys() and v2["region"] == v1["region"]
        for label, entry in v2["prototypes"].items():
            old = v1["prototypes"][label]
            floats = ("center", "l2_norm", "dispersion")
            assert {k: v for k, v in entry.items() if k not in floats} == {
                k: v for k, v in old.items() if k not in floats
            }
            assert entry["l2_norm"] == pytest.approx(old["l2_norm"], rel=1e-6)
            assert entry["dispersion"] == pytest.approx(old["dispersion"], rel=1e-6)
        return
    assert isinstance(v2, tuple) and isinstance(v1, tuple)
    if len(v2) == 3:  # an error: the same SQLSTATE, message and column
        assert v2 == v1
        return
    offset = len(v2) - 10  # compute_regime_prototypes rows start with the label
    c2, c1 = v2[offset + 5], v1[offset + 5]
    same = [i for i in range(len(v2)) if i not in (offset + 5, offset + 6, offset + 7)]
    assert [v2[i] for i in same] == [v1[i] for i in same]
    assert v2[offset + 6] == pytest.approx(v1[offset + 6], rel=1e-6)  # l2_norm
    assert v2[offset + 7] == pytest.approx(v1[offset + 7], rel=1e-6)  # dispersion
    if usable is not None:
        assert within_bound(vector_to_numpy(c2), usable).max() <= 1.0
        assert within_bound(vector_to_numpy(c1), usable).max() <= 1.0


def insert_engine_rows(
    conn: Connection, rows: list[tuple[str, dt.date, object, dt.datetime]]
) -> list[str]:
    """Insert as the engine does (BYTEA only; the trigger converts); the record ids."""
    ids = [uuid.uuid4().hex for _ in rows]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, created_at)"
            " VALUES (%s, %s, %s, 'NEUTRAL', %s, 0.5, %s)",
            [
                (
                    rid,
                    day,
                    region,
                    payload.tobytes() if isinstance(payload, np.ndarray) else payload,
                    created,
                )
                for rid, (region, day, payload, created) in zip(ids, rows, strict=True)
            ],
        )
    return ids


def test_same_results_as_the_v1_definitions(db: str) -> None:
    rows = v1_rows()
    with connect(db) as conn:
        conn.add_notice_handler(lambda diag: None)  # the trigger's WARNINGs on bad bytes
        ids = insert_engine_rows(conn, rows)
        conn.execute("VACUUM ANALYZE regimes")
        v2 = results(conn)
    migrate.downgrade(db, "0008")
    with connect(db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'regime_prototype_compute%'"
        ).fetchone() == (0,)
        v1 = results(conn)
    migrate.upgrade(db)
    with connect(db) as conn:
        again = results(conn)
    latest = expected_usable(rows, ids)
    windows = [
        *V1_WINDOWS,
        *(
            ("A", dt.date.fromisoformat(w["start_date"]), dt.date.fromisoformat(w["end_date"]))
            for _, w in sorted(V1_DOCUMENT.items())
        ),
        None,
    ]
    assert len(v2) == len(v1) == len(again) == len(windows)
    for window, new, old, newer in zip(windows, v2, v1, again, strict=True):
        usable = None
        if window is not None:
            region, start, end = window
            picked = [
                v
                for (r, d), v in sorted(latest.items(), key=lambda kv: kv[0][1])
                if r == region and start <= d <= end and v is not None
            ]
            usable = np.array(picked) if picked else None
        assert_same(new, old, usable)
        assert newer == new  # deterministic


#: Every routine regime-pg created in public, as its definition, flags and comment show it.
ROUTINES = routines_query(
    "p.oid::regprocedure::text, p.prokind,"
    " CASE WHEN p.prokind = 'f' THEN pg_get_functiondef(p.oid) END,"
    " p.proparallel, p.provolatile, p.proconfig, obj_description(p.oid, 'pg_proc')"
)


@pytest.mark.parametrize("earlier", ["0008", "0009"])
def test_downgrade_restores_the_earlier_definitions_exactly(empty_db: str, earlier: str) -> None:
    """Down from head to 0008 (v1) or 0009 (v2): every routine as a fresh install has it."""
    migrate.upgrade(empty_db, earlier)
    with psycopg.connect(empty_db) as conn:
        before = conn.execute(ROUTINES).fetchall()
    migrate.upgrade(empty_db)
    with psycopg.connect(empty_db) as conn:
        names = {r[0] for r in conn.execute(ROUTINES).fetchall()}
    assert {
        "regime_prototype_compute(text,text,date,date)",
        "regime_window_bucket_states(text,date,date,integer,integer)",
        "regime_vector_sum_state(vector)",
    } <= names
    migrate.downgrade(empty_db, earlier)
    with psycopg.connect(empty_db) as conn:
        after = conn.execute(ROUTINES).fetchall()
    assert after == before
