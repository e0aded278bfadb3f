"""regime-pg on a declaratively partitioned ``regimes`` (by region LIST, by date RANGE).

The engine's ``regimes`` has ``PRIMARY KEY (regime_record_id)``.  A partitioned
table can only have a primary key that contains the partition key, so the
engine's table would be created with ``PRIMARY KEY (regime_record_id, region)``
(LIST by region) or ``(regime_record_id, as_of_date)`` (RANGE by date): see
docs/scaling.md.  With that one change, regime-pg migrates the partitioned
table unchanged (the column, its PLAIN storage, the trigger and the backfill
all recurse to the partitions), every function gives the same results as on a
plain table holding the same rows, and a one-region (or one-year) window reads
one partition only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from bench.engine_schema import PartitionScheme, engine_schema_sql
from bench.statements import explain, function_statements
from regime_pg import migrate
from regime_pg.connection import use_vector_types, vector_to_numpy
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import ENGINE_SCHEMA_SQL, create_engine_schema, insert_rows

DIM = 384

WINDOWS = {
    "ALL": {"start_date": "2015-06-01", "end_date": "2020-06-30"},
    "Y2017": {"start_date": "2017-01-01", "end_date": "2017-12-31"},
    "EDGE": {"start_date": "2017-12-20", "end_date": "2018-01-12"},
    "NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-12-31"},
}


@pytest.fixture
def plain_db(pg_server: Server) -> Iterator[str]:
    """A second fresh empty database, for the plain table."""
    name = create_database(pg_server)
    yield database_dsn(pg_server.admin_dsn, name)
    drop_database(pg_server, name)


def engine_rows(seed: int = 5) -> list[tuple[str, dt.date, object, dt.datetime]]:
    """The same engine rows for both tables: re-runs, NULLs, bytes that do not convert."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    rows: list[tuple[str, dt.date, object, dt.datetime]] = []
    for region, scale in (("US", 3.0), ("EU", 5.0), ("JP", 1.0)):
        offset = rng.standard_normal(DIM).astype("<f4")
        day = dt.date(2016, 1, 4)
        k = 0
        while day <= dt.date(2019, 12, 31):
            if day.weekday() < 5:
                vec = (rng.standard_normal(DIM) * scale + offset).astype("<f4")
                rows.append((region, day, vec, t0))
                if k % 37 == 3:  # a re-run: the newer row wins
                    rows.append((region, day, (vec * 2).astype("<f4"),
                                 t0 + dt.timedelta(hours=1)))
                if k % 53 == 7:  # a newer NULL hides the date
                    rows.append((region, day, None, t0 + dt.timedelta(hours=2)))
                if k % 61 == 11:  # the date's latest row does not convert
                    rows[-1] = (region, day, b"\x00\x01", rows[-1][3])
                k += 1
            day += dt.timedelta(days=1)
    return rows


def load(dsn: str, rows: list[tuple[str, dt.date, object, dt.datetime]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: None)
        for created in sorted({r[3] for r in rows}):
            for region in sorted({r[0] for r in rows}):
                picked = [r for r in rows if r[3] == created and r[0] == region]
                if picked:
                    insert_rows(conn, region, [r[1] for r in picked], [r[2] for r in picked],  # type: ignore[misc]
                                created_at=created)
        conn.execute("VACUUM ANALYZE")


def results(dsn: str) -> list[Any]:
    out: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        use_vector_types(conn)
        for region in ("US", "EU", "JP"):
            for window in WINDOWS.values():
                row = conn.execute(
                    "SELECT * FROM compute_regime_prototype(%s, %s, %s)",
                    (region, window["start_date"], window["end_date"]),
                ).fetchone()
                out.append(row)
            out.extend(conn.execute(
                "SELECT * FROM compute_regime_prototypes(%s, %s)", (region, json.dumps(WINDOWS))
            ).fetchall())
            out.append(conn.execute(
                "SELECT regime_prototypes_json(%s, %s)", (region, json.dumps(WINDOWS))
            ).fetchone())
    return out


def same(partitioned: Any, plain: Any) -> None:
    """Equal, centres bit for bit; dispersions (float8 sums in scan order) to 1e-12."""
    assert len(partitioned) == len(plain)
    for a, b in zip(partitioned, plain, strict=True):
        if isinstance(a[0], dict):  # the document
            assert a[0].keys() == b[0].keys()
            for label, entry in a[0]["prototypes"].items():
                other = b[0]["prototypes"][label]
                assert entry["center"] == other["center"]
                assert entry["dispersion"] == pytest.approx(other["dispersion"], rel=1e-12)
                assert {k: v for k, v in entry.items() if k != "dispersion"} == \
                    {k: v for k, v in other.items() if k != "dispersion"}
            continue
        offset = len(a) - 10
        assert np.array_equal(vector_to_numpy(a[offset + 5]), vector_to_numpy(b[offset + 5]))
        assert a[offset + 7] == pytest.approx(b[offset + 7], rel=1e-12)
        assert [v for i, v in enumerate(a) if i not in (offset + 5, offset + 7)] == \
            [v for i, v in enumerate(b) if i not in (offset + 5, offset + 7)]


@pytest.mark.parametrize("scheme", ["list", "range"])
def test_same_results_as_a_plain_table(
    empty_db: str, plain_db: str, scheme: PartitionScheme
) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn, scheme)
    with psycopg.connect(plain_db, autocommit=True) as conn:
        create_engine_schema(conn)
    rows = engine_rows()
    # half the rows before the migration (backfilled), half after (the trigger)
    half = len(rows) // 2
    for dsn in (empty_db, plain_db):
        load(dsn, rows[:half])
        migrate.upgrade(dsn)
        load(dsn, rows[half:])
    with psycopg.connect(empty_db) as conn:
        kinds = conn.execute(
            "SELECT c.relkind, count(p.*) FROM pg_class AS c"
            " LEFT JOIN pg_inherits AS p ON p.inhparent = c.oid"
            " WHERE c.oid = 'regimes'::regclass GROUP BY c.relkind"
        ).fetchone()
        storage = conn.execute(
            "SELECT DISTINCT a.attstorage FROM pg_attribute AS a JOIN pg_inherits AS i"
            " ON a.attrelid = i.inhrelid WHERE i.inhparent = 'regimes'::regclass"
            " AND a.attname = 'embedding_vector'"
        ).fetchall()
        missing = conn.execute(
            "SELECT count(*) FROM regimes"
            " WHERE embedding_vector IS NULL AND length(regime_embedding) = 1536"
        ).fetchone()
    assert kinds is not None and kinds[0] == "p" and kinds[1] >= 3
    assert storage == [("p",)]  # PLAIN on every partition
    assert missing == (0,)  # backfilled and trigger-converted on every partition
    same(results(empty_db), results(plain_db))


def scanned_partitions(nodes: list[dict[str, Any]]) -> set[str]:
    """Partitions a plan read: pruned when planned, at executor start, or at each rescan
    (the per-bucket index scans of a RANGE-partitioned table: "never executed" elsewhere)."""
    return {str(n["Relation Name"]) for n in nodes
            if n.get("Relation Name", "").startswith("regimes") and n.get("Actual Loops", 1) > 0}


@pytest.mark.parametrize(("scheme", "region", "expected"), [
    ("list", "US", {"regimes_us"}),
    ("range", "US", {"regimes_2017"}),
])
def test_a_one_year_window_reads_one_partition(
    empty_db: str, scheme: PartitionScheme, region: str, expected: set[str]
) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn, scheme)
    migrate.upgrade(empty_db)
    load(empty_db, [r for r in engine_rows() if r[0] in ("US", "EU")])
    start, end = dt.date(2017, 1, 1), dt.date(2017, 12, 31)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        use_vector_types(conn)
        statements = function_statements(conn)
        center = conn.execute(
            "SELECT center FROM compute_regime_prototype(%s, %s, %s)", (region, start, end)
        ).fetchone()
        assert center is not None
        n_buckets = (end - start).days // 15 + 1
        window = (region, start, end)
        plans = {
            "centroid": explain(conn, statements["buckets"], (*window, 0, n_buckets - 1))[0],
            "dispersion": explain(conn, statements["dispersion"], (*window, center[0]))[0],
            # the dedup view (buckets with a duplicate date, classify_regimes): pruned too
            "view": explain(conn, "SELECT count(*) FROM regime_embeddings_latest"
                                  " WHERE region = $1 AND as_of_date BETWEEN $2::date AND $3::date",
                            window)[0],
        }
    for name, nodes in plans.items():
        assert scanned_partitions(nodes) == expected, (name, scanned_partitions(nodes))


def test_generic_plans_prune_at_executor_start(empty_db: str) -> None:
    """Cached (generic) plans of the functions prune with run-time parameters too."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn, "list")
    migrate.upgrade(empty_db)
    load(empty_db, [r for r in engine_rows() if r[0] in ("US", "EU")])
    with psycopg.connect(empty_db, autocommit=True) as conn:
        statements = function_statements(conn)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        nodes, _ = explain(conn, statements["dispersion"],
                           ("EU", dt.date(2018, 1, 1), dt.date(2018, 12, 31), "[" +
                            ",".join(["0"] * DIM) + "]"))
    # every scan of regimes prunes the other two partitions: the statement's, and that of
    # the subquery it keeps for distances adding up past 2^31 - 1 (prototypes--8.sql, not run)
    removed = [int(n.get("Subplans Removed", 0)) for n in nodes if n["Node Type"] == "Append"]
    assert removed and removed == [2] * len(removed), \
        [(n["Node Type"], n.get("Subplans Removed")) for n in nodes]
    assert scanned_partitions(nodes) == {"regimes_eu"}


@pytest.mark.parametrize(("scheme", "key", "clause"), [
    ("list", "region", "PARTITION BY LIST (region)"),
    ("range", "as_of_date", "PARTITION BY RANGE (as_of_date)"),
])
def test_the_partitioned_schema_changes_only_the_key_and_partitioning(
    scheme: PartitionScheme, key: str, clause: str
) -> None:
    """The partitioned DDL differs from the engine's only in its primary key (which must
    contain the partition key), PARTITION BY and the partitions: without them, it is the
    engine's DDL."""
    flat = re.sub(r"\s+", " ", engine_schema_sql(scheme))
    partitions = r" CREATE TABLE regimes_\w+ PARTITION OF regimes [^;]*;"
    assert len(re.findall(partitions, flat)) >= 3
    record_id = "regime_record_id varchar(64)"
    unpartitioned = (
        re.sub(partitions, "", flat)
        .replace(f", PRIMARY KEY (regime_record_id, {key}) ) {clause};", " );")
        .replace(f"{record_id} NOT NULL,", f"{record_id} PRIMARY KEY,")
    )
    assert unpartitioned == re.sub(r"\s+", " ", ENGINE_SCHEMA_SQL)
