"""Test helpers that write rows the way the Regime Engine does: float32 BYTEA only."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import psycopg

# The engine's schema is defined once, in bench (the migration-safety benchmark builds it
# too); many tests import it from here.
from bench.engine_schema import ENGINE_SCHEMA_SQL as ENGINE_SCHEMA_SQL
from bench.engine_schema import create_engine_schema as create_engine_schema


def insert_rows(
    conn: psycopg.Connection[tuple[object, ...]],
    region: str,
    dates: Sequence[dt.date],
    embeddings: Iterable[npt.NDArray[np.float32] | bytes | None],
    created_at: dt.datetime | None = None,
) -> list[str]:
    """Insert one engine row per date, the embedding as float32 little-endian BYTEA."""
    ids = []
    rows = []
    for as_of_date, embedding in zip(dates, embeddings, strict=True):
        record_id = uuid.uuid4().hex
        ids.append(record_id)
        if embedding is None or isinstance(embedding, bytes):
            payload = embedding
        else:
            payload = np.asarray(embedding, dtype="<f4").tobytes()
        rows.append(
            (
                record_id,
                as_of_date,
                region,
                "NEUTRAL",
                payload,
                0.5,
                created_at or dt.datetime.now(dt.UTC),
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return ids


def business_days(start: dt.date, count: int) -> list[dt.date]:
    """``count`` consecutive weekdays from ``start``."""
    days: list[dt.date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days
