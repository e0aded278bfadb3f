"""The benchmark's data: engine rows, 384-d float32 embeddings, written two ways.

* Through the engine's path (``copy_through_trigger``): a binary COPY of the
  columns the engine writes, the embedding as little-endian float32 BYTEA only;
  the trigger ``regime_pg_embedding_sync`` converts every row (about 0.3 ms a
  row here, in PL/pgSQL).  Used for the B1 table.
* Batch-converted (``copy_batch_converted``), for the large tables: the client
  writes the same BYTEA and, next to it, the vector it converts to (numpy's
  float32 values, written in pgvector's binary format: the same bits), with the
  trigger disabled for the COPY.  ``verify_conversion`` then checks a random
  sample of rows against the trigger's own conversion function
  (``regime_embedding_to_vector``), bit for bit.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import cast

import numpy as np
import numpy.typing as npt

from regime_pg.connection import Connection

DIM = 384
PG_EPOCH = 730120  # date(2000, 1, 1).toordinal(): PostgreSQL's day zero
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_CHUNK = 20_000


def business_days(first: int, count: int) -> npt.NDArray[np.int64]:
    """``count`` consecutive weekdays (as date ordinals) from ordinal ``first`` on."""
    span = np.arange(first, first + count * 7 // 5 + 7, dtype=np.int64)
    weekdays = span[(span + 6) % 7 < 5]  # ordinal 1 (0001-01-01) is a Monday
    return weekdays[:count]


def calendar_days(first: int, count: int) -> npt.NDArray[np.int64]:
    return np.arange(first, first + count, dtype=np.int64)


def embeddings(rng: np.random.Generator, n: int, offset: npt.NDArray[np.float32],
               scale: float = 3.0) -> npt.NDArray[np.float32]:
    """n rows around ``offset``: what a regime encoder's output roughly looks like."""
    return (rng.standard_normal((n, DIM), dtype=np.float32) * scale + offset).astype("<f4")


def _rows(region: str, ordinals: npt.NDArray[np.int64], x: npt.NDArray[np.float32],
          with_vector: bool) -> npt.NDArray[np.void]:
    prefix = f"{region}-{uuid.uuid4().hex[:8]}-".encode()
    n = len(ordinals)
    fields = [
        ("nfields", ">i2"),
        ("id_len", ">i4"), ("id", f"S{len(prefix) + 10}"),
        ("date_len", ">i4"), ("date", ">i4"),
        ("region_len", ">i4"), ("region", f"S{len(region.encode())}"),
        ("label_len", ">i4"), ("label", "S7"),
        ("bytea_len", ">i4"), ("bytea", "<f4", (DIM,)),
        ("conf_len", ">i4"), ("conf", ">f8"),
    ]
    if with_vector:
        fields += [("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (DIM,))]
    rows = np.zeros(n, np.dtype(fields))
    rows["nfields"] = 7 if with_vector else 6
    rows["id_len"] = len(prefix) + 10
    rows["id"] = np.char.add(prefix, np.char.zfill(np.arange(n).astype("S10"), 10))
    rows["date_len"], rows["date"] = 4, ordinals - PG_EPOCH
    rows["region_len"], rows["region"] = len(region.encode()), region.encode()
    rows["label_len"], rows["label"] = 7, b"NEUTRAL"
    rows["bytea_len"], rows["bytea"] = 4 * DIM, x  # little-endian float32: numpy's tobytes()
    rows["conf_len"], rows["conf"] = 8, 0.5
    if with_vector:
        rows["vec_len"], rows["dim"], rows["vec"] = 4 + 4 * DIM, DIM, x  # pgvector binary
    return rows


def _copy(conn: Connection, rows: npt.NDArray[np.void], with_vector: bool) -> None:
    columns = "regime_record_id, as_of_date, region, regime_label, regime_embedding, confidence"
    if with_vector:
        columns += ", embedding_vector"
    with conn.cursor().copy(f"COPY regimes ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_HEADER)
        for start in range(0, len(rows), _CHUNK):
            copy.write(rows[start : start + _CHUNK].tobytes())
        copy.write(_TRAILER)


def copy_through_trigger(conn: Connection, region: str, ordinals: npt.NDArray[np.int64],
                         x: npt.NDArray[np.float32]) -> None:
    """Engine rows, BYTEA only: the sync trigger converts each one."""
    _copy(conn, _rows(region, ordinals, x, with_vector=False), with_vector=False)


def copy_regions_converted(conn: Connection, regions: list[str],
                           ordinals: npt.NDArray[np.int64], x: npt.NDArray[np.float32]) -> None:
    """One COPY of the same dates and vectors for each of ``regions`` (names of one length),
    BYTEA and the vector converted by the client; the triggers are left as they are."""
    first = _rows(regions[0], ordinals, x, with_vector=True)
    # filled slice by slice: np.concatenate would promote the fields to native byte order
    rows = np.empty(len(first) * len(regions), dtype=first.dtype)
    rows[:len(first)] = first
    for i, region in enumerate(regions[1:], start=1):
        rows[i * len(first):(i + 1) * len(first)] = _rows(region, ordinals, x, with_vector=True)
    _copy(conn, rows, with_vector=True)


def copy_batch_converted(conn: Connection, batches: Iterator[tuple[str, npt.NDArray[np.int64],
                                                                   npt.NDArray[np.float32]]]
                         ) -> int:
    """Engine rows with BYTEA and the vector converted by the client; trigger off meanwhile."""
    total = 0
    conn.execute("ALTER TABLE regimes DISABLE TRIGGER regime_pg_embedding_sync")
    try:
        for region, ordinals, x in batches:
            _copy(conn, _rows(region, ordinals, x, with_vector=True), with_vector=True)
            total += len(ordinals)
    finally:
        conn.execute("ALTER TABLE regimes ENABLE TRIGGER regime_pg_embedding_sync")
    return total


def verify_conversion(conn: Connection, sample: int = 1000) -> dict[str, int]:
    """A random sample of rows: the stored vector equals the trigger's conversion."""
    row = cast("tuple[int, int] | None", conn.execute(
        """
        SELECT count(*),
               count(*) FILTER (WHERE s.embedding_vector
                                      = regime_embedding_to_vector(s.regime_embedding))
          FROM (SELECT r.embedding_vector, r.regime_embedding
                  FROM regimes AS r TABLESAMPLE BERNOULLI (
                           least(100, 100.0 * %s / greatest(1, (SELECT count(*) FROM regimes))))
                 WHERE r.regime_embedding IS NOT NULL) AS s
        """,
        (sample,),
    ).fetchone())
    assert row is not None
    checked, equal = int(row[0]), int(row[1])
    if checked != equal:
        raise RuntimeError(
            f"batch conversion differs from the trigger's on {checked - equal} of {checked} rows"
        )
    return {"checked": checked, "equal": equal}
