"""Stored bucket sums: the centroid's opt-in accelerator, switched on, off, or inspected.

While enabled, statement triggers on ``regimes`` keep the sums of every
15-day calendar bucket and 240-day group (``sql/bucket_sums--1.sql``), and
``compute_regime_prototype`` reads them instead of the window's rows for the
centre.  Enabling needs the owner of ``regimes`` (it creates triggers); it
also rebuilds sums gone stale.  Writers of ``regimes`` need no grant: the
triggers run as the owner of regime-pg's objects.

>>> from regime_pg import connect
>>> with connect() as conn:                                     # doctest: +SKIP
...     enable(conn)
...     status(conn)
66667
BucketSumsStatus(enabled=True, regions=1, buckets=66667, groups=4167)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from regime_pg.connection import translated_errors
from regime_pg.installation import qualified


@dataclass(frozen=True)
class BucketSumsStatus:
    """Whether the sums are kept, and how many rows they hold."""

    enabled: bool
    regions: int
    buckets: int
    groups: int


def enable(conn: psycopg.Connection[Any]) -> int:
    """Create the triggers (if missing) and fill the sums; the number of buckets stored.

    Commits unless ``conn`` is inside a transaction of the caller's.
    """
    with translated_errors(), conn.transaction():
        enabling = qualified(conn, "SELECT {schema}.regime_bucket_sums_enable()")
        row = conn.execute(enabling).fetchone()
    assert row is not None
    return int(str(row[0]))


def disable(conn: psycopg.Connection[Any]) -> None:
    """Drop the triggers and empty the sums: centroids use the window grid again."""
    with translated_errors(), conn.transaction():
        conn.execute(qualified(conn, "SELECT {schema}.regime_bucket_sums_disable()"))


def status(conn: psycopg.Connection[Any]) -> BucketSumsStatus:
    """Whether the sums are enabled, and their regions, buckets and groups."""
    with translated_errors():
        row = conn.execute(
            qualified(
                conn,
                "SELECT {schema}.regime_bucket_sums_enabled(),"
                " (SELECT count(DISTINCT region) FROM {schema}.regime_bucket_sums),"
                " (SELECT count(*) FROM {schema}.regime_bucket_sums),"
                " (SELECT count(*) FROM {schema}.regime_bucket_group_sums)",
            )
        ).fetchone()
    assert row is not None
    return BucketSumsStatus(bool(row[0]), int(str(row[1])), int(str(row[2])), int(str(row[3])))
