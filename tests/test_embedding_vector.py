"""The vector(384) copy of the engine's float32 BYTEA: bit-exact, synced by trigger."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from regime_pg.connection import Connection, vector_to_numpy
from tests.engine import insert_rows

DIM = 384
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


def _stored_vector(conn: Connection, record_id: str) -> np.ndarray | None:
    row = conn.execute(
        "SELECT embedding_vector FROM regimes WHERE regime_record_id = %s", (record_id,)
    ).fetchone()
    assert row is not None
    return None if row[0] is None else vector_to_numpy(row[0])


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="<f4").view("<u4")


def test_special_values_are_bit_exact(conn: Connection) -> None:
    embedding = np.resize(SPECIAL, DIM).astype("<f4")
    (record_id,) = insert_rows(conn, "US", [dt.date(2018, 1, 2)], [embedding])
    stored = _stored_vector(conn, record_id)
    assert stored is not None
    assert np.array_equal(_bits(stored), _bits(embedding))
    assert np.signbit(stored[1])  # -0.0 kept


finite_float32 = arrays(
    np.float32,
    DIM,
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(embedding=finite_float32)
def test_random_float32_are_bit_exact(conn: Connection, embedding: np.ndarray) -> None:
    raw = embedding.astype("<f4").tobytes()
    row = conn.execute("SELECT regime_embedding_to_vector(%s)", (raw,)).fetchone()
    assert row is not None
    assert np.array_equal(_bits(vector_to_numpy(row[0])), _bits(np.frombuffer(raw, dtype="<f4")))


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=arrays(np.uint32, DIM, elements=st.integers(0, 2**32 - 1)))
def test_decode_matches_numpy_for_any_bit_pattern(conn: Connection, words: np.ndarray) -> None:
    raw = words.astype("<u4").tobytes()
    row = conn.execute("SELECT regime_float32le_decode(%s)::text", (raw,)).fetchone()
    assert row is not None
    decoded = np.array([float(x) for x in row[0].strip("{}").split(",")], dtype="<f4")
    expected = np.frombuffer(raw, dtype="<f4")
    finite = np.isfinite(expected)
    assert np.array_equal(_bits(decoded[finite]), _bits(expected[finite]))
    assert np.array_equal(np.isnan(decoded), np.isnan(expected))
    assert np.array_equal(np.isposinf(decoded), np.isposinf(expected))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00" * 12, "expected 1536 bytes"),
        (np.zeros(DIM + 1, dtype="<f4").tobytes(), "expected 1536 bytes"),
        (np.full(DIM, np.nan, dtype="<f4").tobytes(), "NaN or infinite"),
        (np.r_[np.zeros(DIM - 1), np.inf].astype("<f4").tobytes(), "NaN or infinite"),
    ],
)
def test_unconvertible_bytes_warn_and_leave_null(
    conn: Connection, payload: bytes, reason: str
) -> None:
    notices: list[tuple[str | None, str]] = []  # a Diagnostic is only valid inside the handler
    conn.add_notice_handler(
        lambda d: notices.append((d.severity_nonlocalized, d.message_primary or ""))
    )
    (record_id,) = insert_rows(conn, "US", [dt.date(2018, 1, 2)], [payload])
    assert _stored_vector(conn, record_id) is None
    warnings = [message for severity, message in notices if severity == "WARNING"]
    assert len(warnings) == 1
    assert record_id in warnings[0]
    assert reason in warnings[0]


def test_strict_conversion_raises(conn: Connection) -> None:
    with pytest.raises(psycopg.errors.DataException, match="expected 1536 bytes"):
        conn.execute("SELECT regime_embedding_to_vector(%s)", (b"\x00" * 8,))


def test_update_of_bytea_resyncs_and_null_clears(conn: Connection) -> None:
    first = np.ones(DIM, dtype="<f4")
    (record_id,) = insert_rows(conn, "US", [dt.date(2018, 1, 2)], [first])
    second = np.arange(DIM, dtype="<f4")
    conn.execute(
        "UPDATE regimes SET regime_embedding = %s WHERE regime_record_id = %s",
        (second.tobytes(), record_id),
    )
    stored = _stored_vector(conn, record_id)
    assert stored is not None and np.array_equal(stored, second)
    conn.execute(
        "UPDATE regimes SET regime_embedding = NULL WHERE regime_record_id = %s", (record_id,)
    )
    assert _stored_vector(conn, record_id) is None


def test_vector_is_stored_inline(conn: Connection) -> None:
    row = conn.execute(
        "SELECT attstorage FROM pg_attribute "
        "WHERE attrelid = 'regimes'::regclass AND attname = 'embedding_vector'"
    ).fetchone()
    assert row == ("p",)
