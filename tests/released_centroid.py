"""The released version 3 of the centroid, installed beside the current one for comparison.

``install_v3(conn)`` creates the functions of ``prototypes--3.sql`` (and the
one of ``prototypes--2.sql`` they call) under the names of ``V3_FUNCTIONS``,
taken from the released files (checked against ``sql/SHA256SUMS``) with
every call among them renamed, so ``regime_v3_for_window(region, NULL,
start, end)`` computes what revision 0010 did; ``reference_database``
makes a database of engine rows with that reference installed.

>>> V3_FUNCTIONS["regime_prototype_for_window"]
('prototypes--3.sql', 'regime_v3_for_window')
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from regime_pg.connection import Connection
from regime_pg.migration_ops import released_function
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.test_fast_centroid import insert_engine_rows

#: Released functions replaced or called on the way to the centre, callees first,
#: renamed for the reference: name in the released file -> (file, name in the test).
V3_FUNCTIONS = {
    "regime_window_distances": ("prototypes--3.sql", "regime_v3_distances"),
    "regime_window_bucket_states": ("prototypes--3.sql", "regime_v3_bucket_states"),
    "regime_window_parts": ("prototypes--3.sql", "regime_v3_parts"),
    "regime_prototype_compute": ("prototypes--3.sql", "regime_v3_compute"),
    "regime_prototype_compute_custom_plans": ("prototypes--2.sql", "regime_v3_custom_plans"),
    "regime_prototype_for_window": ("prototypes--3.sql", "regime_v3_for_window"),
}


def install_v3(conn: Connection) -> None:
    """The released version 3 of the centroid, under the names of V3_FUNCTIONS."""
    names = {old: new for old, (_, new) in V3_FUNCTIONS.items()}
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b")
    conn.execute("SET search_path = public")
    for function, (released, _) in V3_FUNCTIONS.items():
        text = pattern.sub(lambda m: names[m.group(1)], released_function(released, function))
        conn.execute(text.encode())
    conn.execute("RESET search_path")


@contextmanager
def reference_database(
    pg_server: Server, template: str, rows: list[tuple[str, dt.date, object, dt.datetime]]
) -> Iterator[tuple[str, list[str]]]:
    """A database from ``template`` holding ``rows`` (inserted as the engine does, then
    analysed) and version 3 (``install_v3``): its DSN and the rows' record ids.  Dropped
    on leaving."""
    name = create_database(pg_server, template=template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.add_notice_handler(lambda diag: None)  # the trigger's WARNINGs on bad bytes
            ids = insert_engine_rows(conn, rows)
            conn.execute("VACUUM ANALYZE regimes")
            install_v3(conn)
        yield dsn, ids
    finally:
        drop_database(pg_server, name)
