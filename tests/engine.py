"""Test helpers that write rows the way the Regime Engine does: float32 BYTEA only."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import psycopg

ENGINE_SCHEMA_SQL = """
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('0027');
CREATE TABLE regimes (
    regime_record_id varchar(64) PRIMARY KEY,
    as_of_date date NOT NULL,
    region varchar(32) NOT NULL,
    regime_label varchar(32) NOT NULL,
    regime_embedding bytea NULL,
    embedding_ref varchar(255) NULL,
    confidence double precision NOT NULL,
    metadata jsonb NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_regimes_region_date ON regimes (region, as_of_date);
"""


def create_engine_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """What the Regime Engine's own Alembic chain (at '0027') leaves behind."""
    conn.execute(ENGINE_SCHEMA_SQL.encode())


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
