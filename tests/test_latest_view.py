"""A NULL created_at never wins the dedup (prototypes--6.sql, revision 0015; finding F16).

regime-pg accepts an existing ``regimes`` whose ``created_at`` is nullable (the
shape check asks for the type only).  The view ``regime_embeddings_latest``,
through which every function reads duplicate dates, ordered ``created_at
DESC``, NULL first: a row without ``created_at`` beat every dated row of its
date.  Since 0015 it orders ``DESC NULLS LAST``.

The data are constant vectors, so every expected value is worked out by hand:

======  ==========================================  ==========  =============
date    rows (record id: created_at, embedding)     winner      before 0015
======  ==========================================  ==========  =============
D1      a: 2020-01-01, 1.0;  b: NULL, 9.0           a (1.0)     b (9.0)
D2      c: NULL, 2.0;  d: NULL, 4.0                 d (4.0): the greatest id, both times
D3      c3: NULL, 3.0                               c3 (3.0), both times
D4      e: NULL, no embedding;  f: 2019-01-01, 5.0  f (5.0)     e (skipped)
======  ==========================================  ==========  =============
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import psycopg
import pytest

from regime_pg import migrate
from regime_pg.connection import Connection

DIM = 384
REGION = "NUL"
D1, D2, D3, D4 = (dt.date(2021, 3, d) for d in (1, 2, 3, 4))
UTC = dt.UTC
ROWS: list[tuple[str, dt.date, dt.datetime | None, float | None]] = [
    ("a", D1, dt.datetime(2020, 1, 1, tzinfo=UTC), 1.0),
    ("b", D1, None, 9.0),
    ("c", D2, None, 2.0),
    ("d", D2, None, 4.0),
    ("c3", D3, None, 3.0),
    ("e", D4, None, None),
    ("f", D4, dt.datetime(2019, 1, 1, tzinfo=UTC), 5.0),
]
SQRT_384 = math.sqrt(DIM)

#: (date, record id, created_at, first coordinate) of the view, fixed and released.
VIEW_FIXED = [
    (D1, "a", ROWS[0][2], 1.0),
    (D2, "d", None, 4.0),
    (D3, "c3", None, 3.0),
    (D4, "f", ROWS[6][2], 5.0),
]
VIEW_RELEASED = [
    (D1, "b", None, 9.0),
    (D2, "d", None, 4.0),
    (D3, "c3", None, 3.0),
    (D4, "e", None, None),
]
#: compute_regime_prototype over D1..D4: n_dates, n_skipped, the centre's value
#: (every coordinate), l2_norm, dispersion, first and last date.
PROTOTYPE_FIXED = (4, 0, 3.25, 3.25 * SQRT_384, 1.25 * SQRT_384, D1, D4)  # (1+4+3+5)/4
PROTOTYPE_RELEASED = (3, 1, 16 / 3, None, None, D1, D3)  # (9+4+3)/3; D4 skipped
#: classify_regimes with LOW (all 1.0) and HIGH (all 9.0): D4's 5.0 is a tie, and
#: ties go to the first label in byte order, at confidence 1/2.
CLASSIFIED_FIXED = [(D1, "LOW"), (D2, "LOW"), (D3, "LOW"), (D4, "HIGH")]
CLASSIFIED_RELEASED = [(D1, "HIGH"), (D2, "LOW"), (D3, "LOW")]


def load(conn: Connection) -> None:
    """The rows above, in a regimes whose created_at may be NULL; the LOW/HIGH set."""
    conn.execute("ALTER TABLE regimes ALTER COLUMN created_at DROP NOT NULL")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, created_at)"
            " VALUES (%s, %s, %s, 'NEUTRAL', %s, 0.5, %s)",
            [
                (rid, day, REGION,
                 None if value is None else np.full(DIM, value, dtype="<f4").tobytes(), created)
                for rid, day, created, value in ROWS
            ],
        )
    document = {
        "embedding_dim": DIM,
        "region": REGION,
        "prototypes": {"LOW": {"center": [1.0] * DIM}, "HIGH": {"center": [9.0] * DIM}},
    }
    conn.execute("SELECT save_regime_prototype_set_from_document('low-high', %s, 1.0)",
                 (json.dumps(document),))


@pytest.fixture
def nullable(conn: Connection) -> Connection:
    load(conn)
    return conn


def view(conn: Connection) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT as_of_date, regime_record_id, created_at, (embedding_vector::real[])[1]"
        "  FROM regime_embeddings_latest WHERE region = %s ORDER BY as_of_date",
        (REGION,),
    ).fetchall()
    return [tuple(r) for r in rows]


def prototype(conn: Connection) -> tuple[Any, ...]:
    """n_dates, n_skipped, the centre (all coordinates equal), l2_norm, dispersion, dates."""
    row = conn.execute(
        "SELECT n_dates, n_skipped, center::real[], l2_norm, dispersion, first_date, last_date"
        "  FROM compute_regime_prototype(%s, %s, %s)",
        (REGION, D1, D4),
    ).fetchone()
    assert row is not None
    center = set(row[2])
    assert len(center) == 1, "every coordinate is the same mean"
    return (row[0], row[1], center.pop(), *row[3:])


def classified(conn: Connection) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT as_of_date, label, confidence FROM classify_regimes(%s, %s, %s, 'low-high')",
        (REGION, D1, D4),
    ).fetchall()
    labels = [(r[0], r[1]) for r in rows]
    same = conn.execute(
        "SELECT as_of_date, label FROM classify_regime_labels(%s, %s, %s, 'low-high')",
        (REGION, D1, D4),
    ).fetchall()
    assert [tuple(r) for r in same] == labels
    return labels


def assert_fixed(conn: Connection) -> None:
    assert view(conn) == VIEW_FIXED
    n_dates, n_skipped, center, l2_norm, dispersion, first, last = prototype(conn)
    expected = PROTOTYPE_FIXED
    assert (n_dates, n_skipped, center, first, last) == (*expected[:3], *expected[5:])
    assert l2_norm == pytest.approx(expected[3], rel=1e-15)
    # the exact dispersion: within 2^-33 plus float8 rounding (prototypes--5.sql)
    assert dispersion == pytest.approx(expected[4], abs=2**-32)
    assert classified(conn) == CLASSIFIED_FIXED
    tie = conn.execute(
        "SELECT confidence FROM classify_regimes(%s, %s, %s, 'low-high')", (REGION, D4, D4)
    ).fetchone()
    assert tie == (0.5,)


def assert_released(conn: Connection) -> None:
    assert view(conn) == VIEW_RELEASED
    n_dates, n_skipped, center, _, _, first, last = prototype(conn)
    expected = PROTOTYPE_RELEASED
    assert (n_dates, n_skipped, first, last) == (*expected[:2], *expected[5:])
    assert center == pytest.approx(expected[2], rel=1e-7)
    assert classified(conn) == CLASSIFIED_RELEASED


def test_a_null_created_at_loses_to_any_dated_row(nullable: Connection) -> None:
    assert_fixed(nullable)


def test_the_fit_and_the_centroid_series_read_the_same_winners(nullable: Connection) -> None:
    """The temperature fit and the centroid series read the view too: D1 is 1.0 (LOW)."""
    series = nullable.execute(
        "SELECT as_of_date, n_dates, (center::real[])[1] FROM regime_centroid_series("
        "  %s, %s, %s, 1, 'low-high')",
        (REGION, D1, D4),
    ).fetchall()
    assert [tuple(r) for r in series] == [(D1, 1, 1.0), (D2, 1, 4.0), (D3, 1, 3.0), (D4, 1, 5.0)]
    windows = {"LOW": {"start_date": str(D1), "end_date": str(D1)},
               "HIGH": {"start_date": str(D4), "end_date": str(D4)}}
    fit = nullable.execute(
        "SELECT n, separable FROM fit_regime_temperature(%s, %s)", (REGION, json.dumps(windows))
    ).fetchone()
    # before 0015, D4's winner had no embedding: HIGH's window was empty (P0002)
    assert fit == (2, True)


def test_the_view_keeps_its_options_comment_and_privileges(db: str) -> None:
    query = (
        "SELECT reloptions, relacl::text[], obj_description(oid, 'pg_class')"
        "  FROM pg_class WHERE oid = 'regime_embeddings_latest'::regclass"
    )
    migrate.downgrade(db, "0014")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("GRANT SELECT ON regime_embeddings_latest TO PUBLIC")
        before = conn.execute(query).fetchone()
    migrate.upgrade(db)
    with psycopg.connect(db, autocommit=True) as conn:
        after = conn.execute(query).fetchone()
    assert before is not None and after == before
    assert after[0] == ["security_invoker=true"]
    assert "=r/" in " ".join(after[1])  # PUBLIC's SELECT, granted before the upgrade
    assert after[2] == "regime-pg: one row per (region, as_of_date), the latest created_at winning"


def test_downgrade_restores_the_released_view_and_upgrade_the_fix(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        load(conn)
        assert_fixed(conn)
    migrate.downgrade(db, "0014")
    with psycopg.connect(db, autocommit=True) as conn:
        assert_released(conn)
    migrate.upgrade(db)
    with psycopg.connect(db, autocommit=True) as conn:
        assert_fixed(conn)
