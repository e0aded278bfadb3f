"""regime-pg's Alembic migrations on both starting points, against a real PostgreSQL.

(a) an empty database, (b) a database the Regime Engine already uses (its own
``alembic_version`` at '0027'), (c) refusal of a ``regimes`` of another shape,
(d) the batched, resumable backfill, (e) pgvector without the privilege to
create it, (f) released SQL files pinned by checksum, so history replays,
(g) a downgrade to any revision gives every routine as the upgrade to it
created it.

Every downgrade is checked against a catalog snapshot taken before the first
upgrade: regime-pg must leave nothing behind and change nothing it did not
create.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection as SAConnection

from regime_pg import _resources, migrate
from regime_pg.connection import Connection, use_vector_types, vector_to_numpy
from regime_pg.errors import ExtensionMissingError, MigrationError
from regime_pg.migration_ops import backfill_embedding_vectors
from tests.engine import ENGINE_SCHEMA_SQL, business_days, create_engine_schema, insert_rows
from tests.routines import routines_query

DIM = 384
REPO = Path(__file__).resolve().parents[1]
HEAD = migrate.head_revision()
LOGGER = "regime_pg.migrate"

#: The engine's columns of ``regimes`` (name, type, NOT NULL, default, storage).
ENGINE_COLUMNS: list[tuple[object, ...]] = [
    ("regime_record_id", "character varying(64)", True, None, "x"),
    ("as_of_date", "date", True, None, "p"),
    ("region", "character varying(32)", True, None, "x"),
    ("regime_label", "character varying(32)", True, None, "x"),
    ("regime_embedding", "bytea", False, None, "x"),
    ("embedding_ref", "character varying(255)", False, None, "x"),
    ("confidence", "double precision", True, None, "p"),
    ("metadata", "jsonb", False, None, "x"),
    ("created_at", "timestamp with time zone", True, "now()", "p"),
]
#: What regime-pg adds: the vector, stored PLAIN (inline), nullable.
VECTOR_COLUMN: tuple[object, ...] = ("embedding_vector", "vector(384)", False, None, "p")

ENGINE_ROW_MD5 = """
    SELECT count(*),
           md5(coalesce(string_agg(ROW(regime_record_id, as_of_date, region, regime_label,
                                       regime_embedding, embedding_ref, confidence, metadata,
                                       created_at)::text,
                                   E'\\n' ORDER BY regime_record_id), ''))
      FROM regimes
     WHERE %(ids)s::text[] IS NULL OR regime_record_id = ANY(%(ids)s::text[])
"""

SPECIAL = np.array(
    [
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1.1754942e-38,
        1.17549435e-38,
        3.4028235e38,
        -3.4028235e38,
        1.0,
        -2.5,
        0.1,
        1e-40,
        65504.0,
        -1e-38,
    ],
    dtype="<f4",
)

# --------------------------------------------------------------------------- helpers


def _connect(dsn: str) -> Connection:
    return psycopg.connect(dsn, autocommit=True)


_USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"
)

_SNAPSHOT_QUERIES = {
    "schemas": f"SELECT n.nspname FROM pg_namespace AS n WHERE {_USER_NS} ORDER BY 1",
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind
          FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE {_USER_NS} ORDER BY 1, 2""",
    "columns": f"""
        SELECT n.nspname, c.relname, a.attnum, a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attstorage
          FROM pg_attribute AS a
          JOIN pg_class AS c ON c.oid = a.attrelid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE {_USER_NS} AND c.relkind NOT IN ('i', 'I') AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2, 3""",
    "indexes": f"""
        SELECT n.nspname, c.relname, pg_get_indexdef(c.oid)
          FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE {_USER_NS} ORDER BY 1, 2""",
    "constraints": f"""
        SELECT n.nspname, co.conrelid::regclass::text, co.conname, pg_get_constraintdef(co.oid)
          FROM pg_constraint AS co JOIN pg_namespace AS n ON n.oid = co.connamespace
         WHERE {_USER_NS} ORDER BY 1, 2, 3""",
    "functions": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind
          FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE {_USER_NS} ORDER BY 1, 2, 3""",
    "types": f"""
        SELECT n.nspname, t.typname, t.typtype
          FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
         WHERE {_USER_NS} ORDER BY 1, 2""",
    "operators": f"""
        SELECT n.nspname, o.oprname, o.oprleft::regtype::text, o.oprright::regtype::text
          FROM pg_operator AS o JOIN pg_namespace AS n ON n.oid = o.oprnamespace
         WHERE {_USER_NS} ORDER BY 1, 2, 3, 4""",
    "access_methods": "SELECT amname FROM pg_am ORDER BY 1",
    "extensions": """
        SELECT extname, extversion, extnamespace::regnamespace::text
          FROM pg_extension ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, tgenabled
          FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "comments": f"""
        SELECT n.nspname, c.relname, d.objsubid, d.description
          FROM pg_description AS d
          JOIN pg_class AS c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE {_USER_NS} ORDER BY 1, 2, 3""",
}

Snapshot = dict[str, list[tuple[object, ...]]]


def catalog_snapshot(dsn: str) -> Snapshot:
    """Every object of the user schemas (and the extensions) that a migration could touch."""
    with _connect(dsn) as conn:
        return {
            key: [tuple(row) for row in conn.execute(query.encode()).fetchall()]
            for key, query in _SNAPSHOT_QUERIES.items()
        }


def assert_same_catalog(before: Snapshot, after: Snapshot) -> None:
    for key in before:
        assert after[key] == before[key], key


def regimes_columns(conn: Connection, table: str = "regimes") -> list[tuple[object, ...]]:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attstorage
          FROM pg_attribute AS a
          LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (table,),
    ).fetchall()
    return [tuple(row) for row in rows]


def regimes_indexes(conn: Connection, table: str = "regimes") -> list[tuple[object, ...]]:
    """(primary, unique, column names) of each index of ``table``."""
    rows = conn.execute(
        """
        SELECT i.indisprimary, i.indisunique,
               ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                       JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                      ORDER BY k.ord)
          FROM pg_index AS i
         WHERE i.indrelid = %s::regclass
         ORDER BY 1 DESC, 3
        """,
        (table,),
    ).fetchall()
    return [(bool(p), bool(u), tuple(cols)) for p, u, cols in rows]


def engine_row_md5(dsn: str, ids: list[str] | None = None) -> tuple[object, ...]:
    with _connect(dsn) as conn:
        row = conn.execute(ENGINE_ROW_MD5, {"ids": ids}).fetchone()
    assert row is not None
    return tuple(row)


def engine_versions(dsn: str) -> list[tuple[object, ...]]:
    with _connect(dsn) as conn:
        return [tuple(r) for r in conn.execute("SELECT * FROM alembic_version").fetchall()]


def stored(dsn: str) -> dict[str, tuple[bytes | None, np.ndarray | None]]:
    """regime_record_id -> (BYTEA, vector as float32 or None), read in binary: bit-exact."""
    with _connect(dsn) as conn:
        use_vector_types(conn)
        with conn.cursor(binary=True) as cur:
            rows = cur.execute(
                "SELECT regime_record_id, regime_embedding, embedding_vector FROM regimes"
            ).fetchall()
    return {
        str(rid): (
            None if raw is None else bytes(raw),
            None if vec is None else vector_to_numpy(vec),
        )
        for rid, raw, vec in rows
    }


def convertible(raw: bytes | None) -> bool:
    if raw is None or len(raw) != 4 * DIM:
        return False
    return bool(np.all(np.isfinite(np.frombuffer(raw, dtype="<f4"))))


def assert_vectors_match_bytes(dsn: str) -> dict[str, tuple[bytes | None, np.ndarray | None]]:
    """Every convertible row's vector equals numpy.frombuffer of its bytes, bit for bit;
    every other row's vector is NULL."""
    rows = stored(dsn)
    for rid, (raw, vec) in rows.items():
        if convertible(raw):
            assert raw is not None
            assert vec is not None, f"row {rid} has no vector"
            expected = np.frombuffer(raw, dtype="<f4")
            assert np.array_equal(vec.astype("<f4").view("<u4"), expected.view("<u4")), rid
        else:
            assert vec is None, f"row {rid} has a vector from unconvertible bytes"
    return rows


def migrate_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


def assert_warned_exactly(warnings: list[str], bad: dict[str, str], quiet: list[str]) -> None:
    """One warning per unconvertible row, naming it and the reason; none for the others."""
    for rid, reason in bad.items():
        naming = [w for w in warnings if rid in w]
        assert len(naming) == 1, (rid, warnings)
        assert "embedding_vector left NULL" in naming[0]
        assert reason in naming[0]
    for rid in quiet:
        assert not [w for w in warnings if rid in w], rid


def compute_prototype(dsn: str, region: str, start: dt.date, end: dt.date) -> tuple[object, ...]:
    with _connect(dsn) as conn:
        use_vector_types(conn)
        with conn.cursor(binary=True) as cur:
            row = cur.execute(
                "SELECT n_dates, n_skipped, center, l2_norm, first_date, last_date"
                "  FROM compute_regime_prototype(%s::text, %s::date, %s::date)",
                (region, start, end),
            ).fetchone()
    assert row is not None
    return tuple(row)


def assert_prototype(
    dsn: str, region: str, rows: dict[str, tuple[bytes | None, object]], dates: dict[str, dt.date]
) -> None:
    """compute_regime_prototype over all of ``rows`` equals numpy's float64 mean."""
    good = [rid for rid, (raw, _) in rows.items() if convertible(raw)]
    x = np.stack([np.frombuffer(rows[rid][0], dtype="<f4") for rid in good])
    start, end = min(dates.values()), max(dates.values())
    n_dates, n_skipped, center, l2_norm, first, last = compute_prototype(dsn, region, start, end)
    assert n_dates == len(good)
    assert n_skipped == len(rows) - len(good)
    expected = x.astype(np.float64).mean(axis=0)
    got = vector_to_numpy(center).astype(np.float64)
    scale = np.abs(x.astype(np.float64)).mean(axis=0)
    assert np.all(np.abs(got - expected) <= 1e-6 * scale + 1e-30)
    assert math.isclose(float(l2_norm), float(np.linalg.norm(got)), rel_tol=1e-6)
    assert first == min(dates[rid] for rid in good)
    assert last == max(dates[rid] for rid in good)


def installation_facts(dsn: str) -> dict[str, str]:
    with _connect(dsn) as conn:
        return {
            str(k): str(v)
            for k, v in conn.execute("SELECT key, value FROM regime_pg_installation").fetchall()
        }


def regclass(dsn: str, name: str) -> object:
    with _connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s)::text", (name,)).fetchone()
    assert row is not None
    return row[0]


def _alembic_cli(*args: str, dsn_env: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``alembic`` command, run from the repository root (pyproject [tool.alembic])."""
    script = Path(sys.executable).with_name("alembic")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]
    env = {k: v for k, v in os.environ.items() if k != "REGIME_PG_DSN"}
    # regime_pg from this checkout, as the tests use it (not another installed copy).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if dsn_env is not None:
        env["REGIME_PG_DSN"] = dsn_env
    return subprocess.run(
        [*command, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# ------------------------------------------------------------------ (a) empty database


def test_empty_database_upgrade_downgrade_upgrade(empty_db: str) -> None:
    before = catalog_snapshot(empty_db)
    assert migrate.current_revision(empty_db) is None

    migrate.upgrade(empty_db)

    assert migrate.current_revision(empty_db) == HEAD
    with _connect(empty_db) as conn:
        columns = regimes_columns(conn)
        assert columns == [*ENGINE_COLUMNS, VECTOR_COLUMN]
        # The same columns the engine's own migration creates (built aside, rolled back).
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE SCHEMA regime_pg_test_engine_reference")
            conn.execute("SET LOCAL search_path TO regime_pg_test_engine_reference")
            create_engine_schema(conn)
            reference = regimes_columns(conn, "regime_pg_test_engine_reference.regimes")
            reference_indexes = regimes_indexes(conn, "regime_pg_test_engine_reference.regimes")
        assert columns[:-1] == reference
        indexes = regimes_indexes(conn)
        assert (
            indexes
            == reference_indexes
            == [
                (True, True, ("regime_record_id",)),
                (False, False, ("region", "as_of_date")),
            ]
        )
        assert conn.execute("SELECT * FROM regime_pg_alembic_version").fetchall() == [(HEAD,)]
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)
        assert conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'regimes'::regclass"
            " AND tgname = 'regime_pg_embedding_sync' AND tgenabled = 'O'"
        ).fetchone() == (1,)
    assert installation_facts(empty_db) == {
        "created_regimes_table": "true",
        "created_vector_extension": "true",
    }

    migrate.downgrade(empty_db)

    assert migrate.current_revision(empty_db) is None
    assert_same_catalog(before, catalog_snapshot(empty_db))

    # And again, this time used the way the engine uses it.
    migrate.upgrade(empty_db)
    assert migrate.current_revision(empty_db) == HEAD
    rng = np.random.default_rng(11)
    dates = business_days(dt.date(2019, 1, 1), 6)
    embeddings: list[np.ndarray | bytes | None] = list(rng.standard_normal((5, DIM)).astype("<f4"))
    embeddings.append(None)
    with _connect(empty_db) as conn:
        ids = insert_rows(conn, "US", dates, embeddings)
    rows = assert_vectors_match_bytes(empty_db)
    assert_prototype(empty_db, "US", rows, dict(zip(ids, dates, strict=True)))


def test_alembic_cli_reads_pyproject_configuration(empty_db: str) -> None:
    """``alembic upgrade head`` from the repository root: no alembic.ini, DSN via -x or env."""
    with _connect(empty_db) as conn:
        create_engine_schema(conn)
        (bad,) = insert_rows(conn, "US", [dt.date(2020, 3, 2)], [b"\x00" * 12])
        (good,) = insert_rows(conn, "US", [dt.date(2020, 3, 3)], [np.ones(DIM, dtype="<f4")])
    engine_state = catalog_snapshot(empty_db)

    done = _alembic_cli("-x", f"dsn={empty_db}", "upgrade", "head")
    assert done.returncode == 0, done.stderr
    # No logging configured by the CLI: the row's WARNING still reaches stderr.
    assert f"regimes row {bad}" in done.stderr
    assert "embedding_vector left NULL" in done.stderr
    assert good not in done.stderr

    current = _alembic_cli("current", dsn_env=empty_db)
    assert current.returncode == 0, current.stderr
    assert current.stdout.split() == [HEAD, "(head)"]
    assert migrate.current_revision(empty_db) == HEAD
    assert engine_versions(empty_db) == [("0027",)]
    assert_vectors_match_bytes(empty_db)

    down = _alembic_cli("downgrade", "base", dsn_env=empty_db)
    assert down.returncode == 0, down.stderr
    assert_same_catalog(engine_state, catalog_snapshot(empty_db))


# ------------------------------------------------------------ (b) the engine's database


def _engine_database(dsn: str) -> tuple[list[str], dict[str, dt.date], dict[str, str], list[str]]:
    """The engine at '0027' with rows written its way; returns ids, dates, bad rows, quiet rows."""
    rng = np.random.default_rng(2026)
    us_dates = business_days(dt.date(2018, 1, 1), 11)
    eu_dates = business_days(dt.date(2018, 1, 1), 3)
    nan = rng.standard_normal(DIM).astype("<f4")
    nan[17] = np.nan
    inf = rng.standard_normal(DIM).astype("<f4")
    inf[0] = -np.inf
    us: list[np.ndarray | bytes | None] = [
        *rng.standard_normal((6, DIM)).astype("<f4"),
        np.resize(SPECIAL, DIM).astype("<f4"),
        None,
        b"\x01" * 12,
        nan,
        inf,
    ]
    with _connect(dsn) as conn:
        create_engine_schema(conn)
        us_ids = insert_rows(conn, "US", us_dates, us)
        eu_embeddings = list(rng.standard_normal((3, DIM)).astype("<f4"))
        eu_ids = insert_rows(conn, "EU", eu_dates, eu_embeddings)
        conn.execute(
            "UPDATE regimes SET metadata = jsonb_build_object('run', regime_record_id, 'n', 1),"
            " embedding_ref = 'emb/' || regime_record_id, confidence = 0.125,"
            " regime_label = 'CRISIS' WHERE region = 'EU'"
        )
    bad = {
        us_ids[8]: "expected 1536 bytes",
        us_ids[9]: "NaN or infinite",
        us_ids[10]: "NaN or infinite",
    }
    quiet = [*us_ids[:8], *eu_ids]
    dates = dict(zip(us_ids, us_dates, strict=True))
    return [*us_ids, *eu_ids], dates, bad, quiet


def test_engine_database_upgrade_downgrade_upgrade(
    empty_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ids, us_dates, bad, quiet = _engine_database(empty_db)
    before = catalog_snapshot(empty_db)
    rows_before = engine_row_md5(empty_db)
    assert rows_before[0] == len(ids)
    with _connect(empty_db) as conn:
        columns_before = regimes_columns(conn)
        indexes_before = regimes_indexes(conn)
    assert columns_before == ENGINE_COLUMNS

    migrate.upgrade(empty_db)

    assert migrate.current_revision(empty_db) == HEAD
    assert engine_versions(empty_db) == [("0027",)]
    after_upgrade = catalog_snapshot(empty_db)
    # Everything of the engine's is still there, as it was ...
    for key in ("schemas", "relations", "columns", "indexes", "constraints", "triggers"):
        assert set(before[key]) <= set(after_upgrade[key]), key
    # ... and the only column added to an existing relation is regimes.embedding_vector;
    # the other new columns belong to regime-pg's own new relations (all named regime_*).
    new_columns = set(after_upgrade["columns"]) - set(before["columns"])
    old_relations = {r[1] for r in before["relations"]}
    assert sorted((c[1], c[3]) for c in new_columns if c[1] in old_relations) == [
        ("regimes", "embedding_vector")
    ]
    assert {"regime_pg_alembic_version", "regime_pg_installation"} <= {c[1] for c in new_columns}
    assert all(str(c[1]).startswith("regime_") for c in new_columns if c[1] not in old_relations)
    with _connect(empty_db) as conn:
        assert regimes_columns(conn) == [*columns_before, VECTOR_COLUMN]
        assert regimes_indexes(conn) == indexes_before
    assert engine_row_md5(empty_db) == rows_before  # the backfill changed no engine column
    assert installation_facts(empty_db) == {"created_vector_extension": "true"}
    rows = assert_vectors_match_bytes(empty_db)
    assert sum(vec is not None for _, vec in rows.values()) == len(ids) - 1 - len(bad)
    assert_warned_exactly(migrate_warnings(caplog), bad, quiet)

    # The engine keeps writing BYTEA only; the trigger fills the vectors.
    rng = np.random.default_rng(7)
    more_dates = business_days(dt.date(2018, 3, 1), 5)
    more: list[np.ndarray | bytes | None] = [
        *rng.standard_normal((3, DIM)).astype("<f4"),
        None,
        b"\x00" * (4 * DIM - 4),
    ]
    with _connect(empty_db) as conn:
        more_ids = insert_rows(conn, "US", more_dates, more)
    rows = assert_vectors_match_bytes(empty_db)
    us_dates.update(zip(more_ids, more_dates, strict=True))
    assert_prototype(empty_db, "US", {rid: rows[rid] for rid in us_dates}, us_dates)
    bad[more_ids[4]] = "got 1532 bytes"
    rows_before_downgrade = engine_row_md5(empty_db)

    migrate.downgrade(empty_db)

    assert migrate.current_revision(empty_db) is None
    assert engine_versions(empty_db) == [("0027",)]
    with _connect(empty_db) as conn:
        assert regimes_columns(conn) == columns_before
        assert regimes_indexes(conn) == indexes_before
    assert engine_row_md5(empty_db, ids) == rows_before
    assert engine_row_md5(empty_db) == rows_before_downgrade
    assert_same_catalog(before, catalog_snapshot(empty_db))  # vector extension dropped too

    caplog.clear()
    migrate.upgrade(empty_db)

    assert migrate.current_revision(empty_db) == HEAD
    assert engine_versions(empty_db) == [("0027",)]
    rows = assert_vectors_match_bytes(empty_db)
    assert sum(vec is not None for _, vec in rows.values()) == len(rows) - 2 - len(bad)
    assert_warned_exactly(migrate_warnings(caplog), bad, [*quiet, *more_ids[:4]])
    assert_prototype(empty_db, "US", {rid: rows[rid] for rid in us_dates}, us_dates)


def test_downgrade_keeps_a_vector_extension_regime_pg_did_not_create(empty_db: str) -> None:
    with _connect(empty_db) as conn:
        conn.execute("CREATE EXTENSION vector")
        create_engine_schema(conn)
        insert_rows(conn, "US", [dt.date(2021, 1, 4)], [np.full(DIM, 0.5, dtype="<f4")])
    before = catalog_snapshot(empty_db)
    rows_before = engine_row_md5(empty_db)

    migrate.upgrade(empty_db)
    assert installation_facts(empty_db) == {}
    assert_vectors_match_bytes(empty_db)
    migrate.downgrade(empty_db)

    after = catalog_snapshot(empty_db)
    assert [e[0] for e in after["extensions"]] == ["plpgsql", "vector"]
    assert_same_catalog(before, after)
    assert engine_row_md5(empty_db) == rows_before


# ------------------------------------------------------------------------ (c) refusal

_OTHER_SHAPES = {
    "as_of_date_text": (
        ("as_of_date date NOT NULL", "as_of_date text NOT NULL"),
        "column as_of_date is text, expected date",
    ),
    "no_regime_embedding": (
        ("    regime_embedding bytea NULL,\n", ""),
        "column regime_embedding (bytea) is missing",
    ),
    "own_embedding_vector": (
        ("    metadata jsonb NULL,\n", "    metadata jsonb NULL,\n    embedding_vector bytea,\n"),
        "already has a column embedding_vector",
    ),
}


@pytest.mark.parametrize("shape", sorted(_OTHER_SHAPES))
def test_regimes_of_another_shape_is_refused_without_change(empty_db: str, shape: str) -> None:
    (old, new), message = _OTHER_SHAPES[shape]
    schema_sql = ENGINE_SCHEMA_SQL.replace(old, new)
    assert schema_sql != ENGINE_SCHEMA_SQL
    with _connect(empty_db) as conn:
        conn.execute(schema_sql.encode())
    before = catalog_snapshot(empty_db)

    with pytest.raises(MigrationError, match="regimes table is not the Regime Engine's") as info:
        migrate.upgrade(empty_db)

    assert message in str(info.value)
    assert migrate.current_revision(empty_db) is None
    assert regclass(empty_db, "regime_pg_alembic_version") is None
    assert regclass(empty_db, "regime_pg_installation") is None
    assert_same_catalog(before, catalog_snapshot(empty_db))


def test_downgrade_keeps_a_regimes_table_holding_the_engines_rows(empty_db: str) -> None:
    """regime-pg created regimes, the engine wrote to it: base removes regime-pg, not the rows."""
    migrate.upgrade(empty_db)
    rng = np.random.default_rng(5)
    dates = business_days(dt.date(2020, 1, 1), 4)
    with _connect(empty_db) as conn:
        insert_rows(conn, "US", dates, list(rng.standard_normal((4, DIM)).astype("<f4")))
    rows_before = engine_row_md5(empty_db)

    migrate.downgrade(empty_db)

    assert migrate.current_revision(empty_db) is None
    assert regclass(empty_db, "regime_pg_installation") is None
    assert engine_row_md5(empty_db) == rows_before
    with _connect(empty_db) as conn:
        assert regimes_columns(conn) == ENGINE_COLUMNS  # embedding_vector removed
    # From now on the table is the engine's: upgrading adopts it, base keeps it even empty.
    migrate.upgrade(empty_db)
    assert installation_facts(empty_db) == {"created_vector_extension": "true"}
    with _connect(empty_db) as conn:
        conn.execute("DELETE FROM regimes")
    migrate.downgrade(empty_db)
    assert regclass(empty_db, "regimes") is not None


def test_downgrade_of_an_empty_table_regime_pg_created_drops_it(empty_db: str) -> None:
    before = catalog_snapshot(empty_db)
    migrate.upgrade(empty_db)
    with _connect(empty_db) as conn:
        insert_rows(conn, "US", [dt.date(2020, 1, 2)], [np.ones(DIM, dtype="<f4")])
        conn.execute("DELETE FROM regimes")
    migrate.downgrade(empty_db)
    assert_same_catalog(before, catalog_snapshot(empty_db))


def test_downgrade_below_0007_refuses_while_sets_are_stored(db: str) -> None:
    """Sets are users' calibrations: the downgrade stops, whole, until they are deleted."""
    dates = business_days(dt.date(2021, 1, 1), 30)
    rng = np.random.default_rng(6)
    windows = '{"NEUTRAL": {"start_date": "2021-01-01", "end_date": "2021-02-28"}}'
    with _connect(db) as conn:
        insert_rows(conn, "US", dates, list(rng.standard_normal((30, DIM)).astype("<f4")))
        for name in ("keep-me", "and-me"):
            conn.execute("SELECT save_regime_prototype_set(%s, 'US', %s)", (name, windows))
    before = catalog_snapshot(db)

    with pytest.raises(MigrationError) as info:
        migrate.downgrade(db, "0006")

    assert str(info.value) == (
        "prototype sets are stored ('and-me', 'keep-me'): a downgrade below 0007 would drop "
        "them; export the ones to keep (regime-pg sets export NAME), delete them "
        "(regime-pg sets delete NAME), then downgrade"
    )
    assert migrate.current_revision(db) == HEAD
    assert_same_catalog(before, catalog_snapshot(db))
    with _connect(db) as conn:
        for name in ("keep-me", "and-me"):
            conn.execute("SELECT delete_regime_prototype_set(%s)", (name,))
    migrate.downgrade(db, "0006")
    assert migrate.current_revision(db) == "0006"
    assert regclass(db, "regime_prototype_sets") is None


@pytest.mark.parametrize("with_index", [True, False])
def test_regimes_without_the_window_index_is_accepted_with_a_warning(
    empty_db: str, caplog: pytest.LogCaptureFixture, with_index: bool
) -> None:
    index = "CREATE INDEX ix_regimes_region_date ON regimes (region, as_of_date);"
    assert index in ENGINE_SCHEMA_SQL
    with _connect(empty_db) as conn:
        conn.execute(ENGINE_SCHEMA_SQL.replace("" if with_index else index, "").encode())
        if not with_index:
            # an index that does not lead with (region, as_of_date) does not count
            conn.execute("CREATE INDEX ix_other ON regimes (as_of_date, region)")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        migrate.upgrade(empty_db)
    index_warnings = [w for w in migrate_warnings(caplog) if "index" in w]
    assert index_warnings == ([] if with_index else [
        "regimes has no index on (region, as_of_date): every prototype window will scan the "
        "whole table; the engine's own schema has ix_regimes_region_date"
    ])


def test_a_server_older_than_supported_is_refused_before_anything_is_written(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL needs PostgreSQL 15 (views WITH (security_invoker)): older servers stop at once.

    No older server is available here, so the oldest supported version is raised above
    this server's for the test.
    """
    from regime_pg import migration_ops

    before = catalog_snapshot(empty_db)
    with _connect(empty_db) as conn:
        number, version = conn.execute(
            "SELECT current_setting('server_version_num')::integer,"
            " current_setting('server_version')"
        ).fetchone() or (0, "")
    monkeypatch.setattr(migration_ops, "MIN_SERVER_VERSION_NUM", int(str(number)) + 1)

    with pytest.raises(MigrationError) as info:
        migrate.upgrade(empty_db)

    assert str(info.value) == (
        f"regime-pg needs PostgreSQL 15 or later (views with security_invoker); "
        f"this server is {version}"
    )
    assert_same_catalog(before, catalog_snapshot(empty_db))
    monkeypatch.undo()
    migrate.upgrade(empty_db)
    assert migrate.current_revision(empty_db) == HEAD


# ----------------------------------------------------------- (d) batched, resumable backfill


class Interrupted(Exception):
    pass


@pytest.fixture
def sa_connection(db: str) -> Iterator[SAConnection]:
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(db),
        isolation_level="AUTOCOMMIT",
        poolclass=pool.NullPool,
    )
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _insert_without_trigger(
    conn: Connection, dates: list[dt.date], embeddings: list[np.ndarray | bytes | None]
) -> list[str]:
    conn.execute("ALTER TABLE regimes DISABLE TRIGGER regime_pg_embedding_sync")
    try:
        return insert_rows(conn, "US", dates, embeddings)
    finally:
        conn.execute("ALTER TABLE regimes ENABLE TRIGGER regime_pg_embedding_sync")


def _expected_progress(dsn: str, batch_size: int) -> list[tuple[int, int]]:
    """(done, todo) after each batch of ``batch_size`` rows in regime_record_id order."""
    with _connect(dsn) as conn:
        flags = [
            bool(f)
            for (f,) in conn.execute(
                "SELECT embedding_vector IS NULL AND regime_embedding IS NOT NULL"
                "  FROM regimes ORDER BY regime_record_id"
            ).fetchall()
        ]
    todo = sum(flags)
    done, out = 0, []
    for start in range(0, len(flags), batch_size):
        done += sum(flags[start : start + batch_size])
        out.append((done, todo))
    return out


def _missing(dsn: str) -> int:
    with _connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM regimes WHERE embedding_vector IS NULL"
            " AND regime_embedding IS NOT NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_backfill_in_batches_reports_progress_and_resumes(
    db: str, sa_connection: SAConnection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    rng = np.random.default_rng(5)
    dates = business_days(dt.date(2017, 1, 2), 24)
    with _connect(db) as conn:
        synced_embeddings = list(rng.standard_normal((5, DIM)).astype("<f4"))
        synced = insert_rows(conn, "US", dates[:5], synced_embeddings)
        cleared_embeddings: list[np.ndarray | bytes | None] = [
            *rng.standard_normal((17, DIM)).astype("<f4"),
            b"\x02" * 12,
            None,
        ]
        cleared = _insert_without_trigger(conn, dates[5:], cleared_embeddings)
    assert all(vec is not None for rid, (_, vec) in stored(db).items() if rid in synced)
    assert all(vec is None for rid, (_, vec) in stored(db).items() if rid in cleared)

    expected = _expected_progress(db, 5)
    assert len(expected) == math.ceil(24 / 5)
    assert expected[-1] == (18, 18)
    calls: list[tuple[int, int]] = []
    n = backfill_embedding_vectors(
        sa_connection, batch_size=5, progress=lambda d, t: calls.append((d, t))
    )
    assert n == 18
    assert calls == expected  # one call per batch, monotone, ending at todo
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert_vectors_match_bytes(db)
    assert _missing(db) == 1  # the 12-byte row: still NULL
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "backfill: 18 rows to convert" in messages
    assert "backfill: 18/18 rows" in messages

    # Clear every vector (an UPDATE of embedding_vector alone does not fire the trigger).
    with _connect(db) as conn:
        conn.execute("UPDATE regimes SET embedding_vector = NULL")
    assert _missing(db) == 23
    expected = _expected_progress(db, 4)

    def stop_after_two(done: int, todo: int) -> None:
        calls.append((done, todo))
        if len(calls) == 2:
            raise Interrupted

    calls.clear()
    with pytest.raises(Interrupted):
        backfill_embedding_vectors(sa_connection, batch_size=4, progress=stop_after_two)
    assert calls == expected[:2]
    with _connect(db) as conn:
        first_eight = [
            str(r)
            for (r,) in conn.execute(
                "SELECT regime_record_id FROM regimes ORDER BY regime_record_id LIMIT 8"
            ).fetchall()
        ]
    rows = stored(db)
    # The two committed batches stayed, nothing past them was touched.
    for rid, (raw, vec) in rows.items():
        assert (vec is not None) == (rid in first_eight and convertible(raw)), rid
    remaining = _missing(db)
    assert remaining == 23 - sum(convertible(rows[rid][0]) for rid in first_eight)

    calls.clear()
    assert (
        backfill_embedding_vectors(
            sa_connection, batch_size=4, progress=lambda d, t: calls.append((d, t))
        )
        == remaining
    )
    assert calls[-1] == (remaining, remaining)
    assert len(calls) == len(expected)
    assert_vectors_match_bytes(db)
    assert _missing(db) == 1


def test_stopped_backfill_is_finished_by_the_next_upgrade(db: str) -> None:
    """A backfill stopped mid-way leaves the version at 0004; the next upgrade finishes it."""
    migrate.downgrade(db, "0004")
    assert migrate.current_revision(db) == "0004"
    rng = np.random.default_rng(3)
    dates = business_days(dt.date(2016, 1, 4), 9)
    with _connect(db) as conn:
        embeddings = list(rng.standard_normal((9, DIM)).astype("<f4"))
        ids = _insert_without_trigger(conn, dates, embeddings)
    assert _missing(db) == len(ids)

    migrate.upgrade(db)

    assert migrate.current_revision(db) == HEAD
    assert _missing(db) == 0
    rows = assert_vectors_match_bytes(db)
    assert_prototype(db, "US", rows, dict(zip(ids, dates, strict=True)))


# ------------------------------------------------------ (e) pgvector without the privilege


def test_pgvector_without_privilege_is_a_clear_error_and_leaves_nothing(empty_db: str) -> None:
    role = f"regime_pg_test_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    with _connect(empty_db) as admin:
        may = admin.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if may != (True,):
            pytest.skip("the test server's role may not create roles")
        assert admin.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
        ).fetchone() == (0,)
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        database = admin.info.dbname
    try:
        before = catalog_snapshot(empty_db)
        user_dsn = psycopg.conninfo.make_conninfo(empty_db, user=role, password=password)

        with pytest.raises(ExtensionMissingError) as info:
            migrate.upgrade(user_dsn)

        message = str(info.value)
        assert "ask the database administrator" in message
        assert "CREATE EXTENSION vector" in message
        assert role in message and database in message
        assert migrate.current_revision(empty_db) is None
        for name in ("regime_pg_alembic_version", "regime_pg_installation", "regimes"):
            assert regclass(empty_db, name) is None, name
        assert_same_catalog(before, catalog_snapshot(empty_db))
    finally:
        with _connect(empty_db) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# ---------------------------------------------------- (f) the migration history replays


@pytest.fixture
def sql_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of sql/ that regime-pg reads instead of the real one (never edited)."""
    copy = tmp_path / "sql"
    shutil.copytree(_resources.sql_dir(), copy)
    _resources._released_checksums.cache_clear()
    monkeypatch.setattr(_resources, "sql_dir", lambda: copy)
    yield copy
    _resources._released_checksums.cache_clear()


def test_released_sql_files_match_their_checksums() -> None:
    directory = _resources.sql_dir()
    files = sorted(p.name for p in directory.glob("*.sql"))
    listed = sorted(
        line.split(maxsplit=1)[1].lstrip("*")
        for line in (directory / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    assert not set(files) - set(listed), "SQL files not pinned in sql/SHA256SUMS"
    assert not set(listed) - set(files), "sql/SHA256SUMS lists files that are missing"
    for name in files:
        assert _resources.read_sql(name) == (directory / name).read_text(encoding="utf-8")


def test_read_sql_rejects_a_modified_or_unlisted_file(sql_copy: Path) -> None:
    assert _resources.read_sql("regimes--1.sql").startswith("-- The Regime Engine")
    target = sql_copy / "prototypes--1.sql"
    target.write_bytes(target.read_bytes() + b"-- an innocent edit\n")
    with pytest.raises(_resources.ResourceError, match=r"prototypes--1\.sql differs from the"):
        _resources.read_sql("prototypes--1.sql")
    (sql_copy / "unreleased--9.sql").write_text("SELECT 1;\n", encoding="utf-8")
    with pytest.raises(_resources.ResourceError, match=r"unreleased--9\.sql is not listed"):
        _resources.read_sql("unreleased--9.sql")


def test_upgrade_with_a_modified_sql_file_fails_and_changes_nothing(
    sql_copy: Path, empty_db: str
) -> None:
    target = sql_copy / "embedding_vector--1.sql"
    target.write_text(
        target.read_text(encoding="utf-8").replace("RETURN 384;", "RETURN 383;"), encoding="utf-8"
    )
    before = catalog_snapshot(empty_db)
    with pytest.raises(_resources.ResourceError, match=r"embedding_vector--1\.sql differs"):
        migrate.upgrade(empty_db)
    assert migrate.current_revision(empty_db) is None
    assert_same_catalog(before, catalog_snapshot(empty_db))


def test_history_is_one_linear_chain() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [HEAD]
    chain = [rev.revision for rev in script.walk_revisions("base", "heads")][::-1]
    assert chain == [f"{n:04d}" for n in range(1, len(chain) + 1)]
    assert chain[-1] == HEAD
    for previous, rev in itertools.pairwise(chain):
        assert script.get_revision(rev).down_revision == previous


def test_function_revisions_take_no_lock_on_regimes(empty_db: str) -> None:
    """0010 to 0014, 0016, 0017 and 0019 to 0022 change functions only: both ways, they
    run while regimes is locked.  0015 replaces the view, whose query names regimes: like any
    query it takes ACCESS SHARE on regimes, so it runs beside an engine's open insert
    (ROW EXCLUSIVE), both ways (0018 likewise: the next test)."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn)
    migrate.upgrade(empty_db, "0009")
    # a lock wait fails after 2 s instead of hanging the test
    waiting = psycopg.conninfo.make_conninfo(empty_db, options="-c lock_timeout=2000")

    def while_locked(up: str, down: str) -> None:
        with psycopg.connect(empty_db) as holder:
            holder.execute("LOCK TABLE regimes IN ACCESS EXCLUSIVE MODE")
            migrate.upgrade(waiting, up)
            assert migrate.current_revision(waiting) == up
            migrate.downgrade(waiting, down)
            assert migrate.current_revision(waiting) == down
            migrate.upgrade(waiting, up)
            holder.rollback()

    while_locked("0014", "0009")
    with psycopg.connect(empty_db) as engine:
        insert_rows(engine, "US", [dt.date(2020, 1, 2)], [np.ones(DIM, dtype="<f4")])
        migrate.upgrade(waiting, "0015")
        migrate.downgrade(waiting, "0014")
        migrate.upgrade(waiting, "0015")
        assert migrate.current_revision(waiting) == "0015"
        engine.rollback()
    while_locked("0017", "0015")
    assert migrate.current_revision(empty_db) == "0017"
    migrate.upgrade(empty_db, "0018")  # reads regimes' definition: the next test
    while_locked("0022", "0018")
    assert migrate.current_revision(empty_db) == "0022"


def test_bucket_sums_revision_does_not_wait_for_the_engines_writes(empty_db: str) -> None:
    """0018 reads regimes' definition (ACCESS SHARE), so it runs beside a writer's open
    transaction, both ways; it adds no trigger (regime_bucket_sums_enable() does)."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn)
    before = str(ScriptDirectory.from_config(migrate.alembic_config())
                 .get_revision("0018").down_revision)
    migrate.upgrade(empty_db, before)
    waiting = psycopg.conninfo.make_conninfo(empty_db, options="-c lock_timeout=2000")
    with psycopg.connect(empty_db) as writer:
        writer.execute("LOCK TABLE regimes IN ROW EXCLUSIVE MODE")
        migrate.upgrade(waiting, "0018")
        with _connect(waiting) as conn:
            triggers = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'regimes'::regclass"
                " AND tgname LIKE 'regime_pg_bucket_sums%'"
            ).fetchone()
        assert triggers == (0,)
        migrate.downgrade(waiting, before)
        assert migrate.current_revision(waiting) == before
        writer.rollback()


#: Every routine regime-pg created in public: definition, flags, cost, settings,
#: privileges and comment (aggregates have no pg_get_functiondef).
ROUTINES = routines_query(
    "p.oid::regprocedure::text, p.prokind,"
    " CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,"
    " p.prosecdef, p.proparallel, p.provolatile, p.procost, p.proconfig, p.proacl,"
    " obj_description(p.oid, 'pg_proc')"
)


#: Every view regime-pg created in public: definition, options, privileges, comment.
VIEWS = """
    SELECT c.oid::regclass::text, pg_get_viewdef(c.oid), c.reloptions, c.relacl,
           obj_description(c.oid, 'pg_class')
      FROM pg_class AS c
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'
     ORDER BY 1
"""


def routines(dsn: str) -> list[tuple[object, ...]]:
    """The routines (``ROUTINES``), then the views (``VIEWS``)."""
    with _connect(dsn) as conn:
        return [tuple(row) for query in (ROUTINES, VIEWS) for row in conn.execute(query).fetchall()]


def test_every_downgrade_gives_the_routines_of_a_fresh_install(empty_db: str) -> None:
    """Up one revision at a time from base, then down one at a time from head: at
    every revision the routines and views are exactly those the upgrade to it
    created (definitions, flags, settings, options, privileges, comments), so
    each downgrade puts back the released definitions."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    chain = [rev.revision for rev in script.walk_revisions("base", "heads")][::-1]
    fresh: dict[str, list[tuple[object, ...]]] = {}
    for revision in chain:
        migrate.upgrade(empty_db, revision)
        fresh[revision] = routines(empty_db)
    assert fresh[HEAD] != fresh[chain[-2]]
    # 0015 changes the view only: the walk sees views too
    assert [r for r in fresh["0015"] if r[0] == "regime_embeddings_latest"] != [
        r for r in fresh["0014"] if r[0] == "regime_embeddings_latest"
    ]
    for revision in reversed(chain[:-1]):
        migrate.downgrade(empty_db, revision)
        assert routines(empty_db) == fresh[revision], revision
