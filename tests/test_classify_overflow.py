"""Distances that overflow float32: one error everywhere (classify--4.sql, 0017; finding F18).

pgvector's ``<->`` sums the squared differences in float32, so an embedding
with values of about 1e18 is at distance Infinity from prototypes near 0.
When every distance of an embedding is infinite its confidence is undefined:
``classify_regime`` raised "division by zero" (22012), and ``classify_regimes``
and ``classify_regime_labels`` returned a confidence of NaN.  Since 0017 all
three raise numeric_value_out_of_range (22003) with one message naming the
overflow; an embedding whose nearest distance is finite is classified as
before (the prototypes at an infinite distance count as infinitely far).

The set ``ovf`` has A at 0 and B at 1e18 (float32 999999984306749440) on every
axis, so every value below is worked out by hand:

==========  ===========  ===============================  ======================
date        embedding    distances (A, B)                 result
==========  ===========  ===============================  ======================
D1          0.25         sqrt(384 * 0.0625) = sqrt(24),   A, confidence 1
                         Infinity
D2          1e18         Infinity, 0                      B, confidence 1
D3          -1e18        Infinity, Infinity               22003 (was NaN / 22012)
==========  ===========  ===============================  ======================

D1 also has an older row (0.5): windows holding D1 are read through
``regime_embeddings_latest``, the others from ``regimes`` directly.
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
from regime_pg.errors import InvalidInputError
from regime_pg.timeline import classify_history

DIM = 384
REGION = "OVF"
D1, D2, D3 = dt.date(2022, 1, 3), dt.date(2022, 1, 4), dt.date(2022, 1, 5)
BIG = float(np.float32(1e18))
SQRT_24 = math.sqrt(24.0)
FINE = [
    (D1, "A", 1.0, {"A": SQRT_24, "B": "Infinity"}, "A"),
    (D2, "B", 1.0, {"A": "Infinity", "B": 0.0}, "B"),
]
OVERFLOW_D3 = (
    "distance overflows float32: the embedding of region 'OVF' on 2022-01-05 is at an"
    " infinite distance from every prototype"
)
OVERFLOW_ONE = (
    "distance overflows float32: the embedding is at an infinite distance from every"
    " prototype of set 'ovf'"
)
DETAIL = (
    "pgvector sums the squared differences in float32, which overflows above about 3.4e38"
    " (values some 1e18 apart); the confidence is then undefined."
)


def vector_text(value: float) -> str:
    return "[" + ",".join([repr(value)] * DIM) + "]"


def load(conn: Connection) -> None:
    rows = [
        ("d1-old", D1, 0.5, dt.datetime(2022, 1, 1, tzinfo=dt.UTC)),
        ("d1", D1, 0.25, dt.datetime(2022, 2, 1, tzinfo=dt.UTC)),
        ("d2", D2, 1e18, dt.datetime(2022, 2, 1, tzinfo=dt.UTC)),
        ("d3", D3, -1e18, dt.datetime(2022, 2, 1, tzinfo=dt.UTC)),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, created_at)"
            " VALUES (%s, %s, %s, 'NEUTRAL', %s, 0.5, %s)",
            [(rid, day, REGION, np.full(DIM, value, dtype="<f4").tobytes(), created)
             for rid, day, value, created in rows],
        )
    document = {
        "embedding_dim": DIM,
        "region": REGION,
        "prototypes": {"A": {"center": [0.0] * DIM}, "B": {"center": [BIG] * DIM}},
    }
    conn.execute("SELECT save_regime_prototype_set_from_document('ovf', %s, 1.0)",
                 (json.dumps(document),))


@pytest.fixture
def overflow(conn: Connection) -> Connection:
    load(conn)
    return conn


def one(conn: Connection, value: float) -> tuple[Any, ...]:
    row = conn.execute("SELECT label, confidence, distances FROM classify_regime(%s, 'ovf')",
                       (vector_text(value),)).fetchone()
    assert row is not None
    return tuple(row)


def many(conn: Connection, end: dt.date, min_duration: int = 1) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT as_of_date, label, confidence, distances, raw_label"
        "  FROM classify_regimes(%s, %s, %s, 'ovf', %s)",
        (REGION, D1, end, min_duration),
    ).fetchall()
    return [tuple(r) for r in rows]


def labels_only(conn: Connection, start: dt.date, end: dt.date,
                min_duration: int = 1) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT as_of_date, label, confidence, raw_label"
        "  FROM classify_regime_labels(%s, %s, %s, 'ovf', %s)",
        (REGION, start, end, min_duration),
    ).fetchall()
    return [tuple(r) for r in rows]


def overflow_error(conn: Connection, query: str, params: tuple[Any, ...]) -> psycopg.Error:
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as caught:
        conn.execute(query, params).fetchall()
    assert caught.value.sqlstate == "22003"
    assert caught.value.diag.message_detail == DETAIL
    return caught.value


def test_finite_nearest_distance_is_classified(overflow: Connection) -> None:
    assert one(overflow, 0.25) == ("A", 1.0, {"A": SQRT_24, "B": "Infinity"})
    assert one(overflow, 1e18) == ("B", 1.0, {"A": "Infinity", "B": 0.0})
    assert one(overflow, 1e17)[:2] == ("A", 1.0)  # 384 * 1e34 fits in float32
    for min_duration in (1, 2):
        assert many(overflow, D2, min_duration) == FINE
        assert labels_only(overflow, D1, D2, min_duration) == [
            (r[0], r[1], r[2], r[4]) for r in FINE]
        assert labels_only(overflow, D2, D2, min_duration) == [(D2, "B", 1.0, "B")]


def test_every_distance_infinite_is_22003_in_every_function(overflow: Connection) -> None:
    error = overflow_error(overflow, "SELECT * FROM classify_regime(%s, 'ovf')",
                           (vector_text(-1e18),))
    assert error.diag.message_primary == OVERFLOW_ONE
    for query, start in (
        ("SELECT * FROM classify_regimes(%s, %s, %s, 'ovf', %s)", D1),  # through the view
        ("SELECT * FROM classify_regimes(%s, %s, %s, 'ovf', %s)", D2),  # regimes directly
        ("SELECT * FROM classify_regime_labels(%s, %s, %s, 'ovf', %s)", D1),
        ("SELECT * FROM classify_regime_labels(%s, %s, %s, 'ovf', %s)", D3),
    ):
        for min_duration in (1, 3):
            error = overflow_error(overflow, query, (REGION, start, D3, min_duration))
            assert error.diag.message_primary == OVERFLOW_D3, (query, start, min_duration)


def test_the_python_client_gets_invalid_input(overflow: Connection) -> None:
    with pytest.raises(InvalidInputError, match="distance overflows float32"):
        classify_history(overflow, "ovf", D1, D3, 1)
    assert [(h.as_of_date, h.label, h.confidence) for h in
            classify_history(overflow, "ovf", D1, D2, 1)] == [(D1, "A", 1.0), (D2, "B", 1.0)]


def test_the_error_function_is_never_folded_into_a_plan(overflow: Connection) -> None:
    """STABLE, so a call with constant arguments in a branch never taken never runs."""
    row = overflow.execute(
        "SELECT CASE WHEN x < 'Infinity' THEN x"
        "            ELSE regime_distance_overflow('OVF', '2022-01-05', 'ovf') END"
        "  FROM (VALUES (1.0::double precision)) AS v(x)"
    ).fetchone()
    assert row == (1.0,)
    flags = overflow.execute(
        "SELECT provolatile, proparallel FROM pg_proc"
        " WHERE oid = 'regime_distance_overflow(text, date, text)'::regprocedure"
    ).fetchone()
    assert flags == ("s", "s")


def test_downgrade_restores_nan_and_division_by_zero_and_upgrade_the_error(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        load(conn)
        head_fine = (many(conn, D2), conn.execute(
            "SELECT confidence::text, distances::text FROM classify_regimes(%s, %s, %s, 'ovf')",
            (REGION, D1, D2)).fetchall())
    migrate.downgrade(db, "0016")
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT * FROM classify_regime(%s, 'ovf')", (vector_text(-1e18),))
        rows = many(conn, D3)
        assert rows[:2] == FINE
        assert rows[2][0:2] == (D3, "A") and math.isnan(rows[2][2])
        lean = labels_only(conn, D3, D3)
        assert lean[0][:2] == (D3, "A") and math.isnan(lean[0][2])
        # what does not overflow is the same, bit for bit, before and after
        assert (many(conn, D2), conn.execute(
            "SELECT confidence::text, distances::text FROM classify_regimes(%s, %s, %s, 'ovf')",
            (REGION, D1, D2)).fetchall()) == head_fine
        assert conn.execute("SELECT to_regprocedure('regime_distance_overflow(text,date,text)')"
                            ).fetchone() == (None,)
    migrate.upgrade(db)
    with psycopg.connect(db, autocommit=True) as conn:
        overflow_error(conn, "SELECT * FROM classify_regime(%s, 'ovf')", (vector_text(-1e18),))
        error = overflow_error(conn, "SELECT * FROM classify_regimes(%s, %s, %s, 'ovf')",
                               (REGION, D1, D3))
        assert error.diag.message_primary == OVERFLOW_D3
        assert many(conn, D2) == FINE
