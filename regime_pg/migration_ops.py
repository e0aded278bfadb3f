"""Building blocks the Alembic revisions in ``migrations/versions`` share.

Revisions call these with the connection Alembic gives them, so each
revision file stays a short list of what it changes.

>>> from regime_pg.migration_ops import REQUIRED_REGIMES_COLUMNS
>>> REQUIRED_REGIMES_COLUMNS["regime_embedding"]
'bytea'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import Connection

from regime_pg._resources import read_sql
from regime_pg.errors import ExtensionMissingError, MigrationError

log = logging.getLogger("regime_pg.migrate")

#: Columns of the engine's ``regimes`` that regime-pg reads, with their types.
REQUIRED_REGIMES_COLUMNS: dict[str, str] = {
    "regime_record_id": "character varying",
    "as_of_date": "date",
    "region": "character varying",
    "regime_embedding": "bytea",
    "created_at": "timestamp with time zone",
}

#: The oldest pgvector with everything the SQL uses (avg/sum of vector, casts).
MIN_PGVECTOR = (0, 5, 0)

#: How long one attempt to lock ``regimes`` for a DDL may wait, in ms, unless the
#: session sets its own ``lock_timeout`` (e.g. ``PGOPTIONS='-c lock_timeout=200ms'``).
#: While a DDL waits for its lock, every later insert of the engine waits behind it.
DDL_LOCK_TIMEOUT_MS = 1000
#: Attempts before giving up, and the pause between two (the engine writes meanwhile).
DDL_LOCK_ATTEMPTS = 60
DDL_LOCK_PAUSE_S = 2.0


def driver(conn: Connection) -> psycopg.Connection[tuple[object, ...]]:
    """The psycopg connection under an Alembic/SQLAlchemy connection."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def fetch_value(conn: Connection, query: str, params: tuple[object, ...] = ()) -> object:
    """The first column of the first row of ``query`` (None when no row)."""
    row = driver(conn).execute(query, params).fetchone()
    return None if row is None else row[0]


def run_sql(conn: Connection, sql: str) -> None:
    """Run ``sql`` (one or more statements) with regime-pg's object search_path."""
    set_object_search_path(conn)
    driver(conn).execute(sql.encode("utf-8"))


def run_sql_file(conn: Connection, name: str) -> None:
    """Run released SQL file ``name`` with regime-pg's object search_path.

    Objects are created in the schema of ``regimes`` (else the current
    schema), and functions pin that search_path with ``SET search_path FROM
    CURRENT``: pg_catalog first (implicitly), then that schema, pgvector's
    schema, and pg_temp last so temporary tables can never shadow ours.
    """
    run_sql(conn, read_sql(name))


def released_statement(name: str, head: str) -> str:
    """The statement of released SQL file ``name`` that starts with ``head``.

    It ends with its dollar-quoted body (``$$;``) when it has one, else at its
    first ``;`` at the end of a line.

    >>> released_statement("prototypes--1.sql", "CREATE FUNCTION compute_regime_prototype(")[-28:]
    'NULL, start_date, end_date);'
    """
    return _statement_at(read_sql(name), head)


def _statement_at(text: str, head: str) -> str:
    start = text.index(head)
    end = text.index(";\n", start) + 1
    if "$$" in text[start:end]:
        end = text.index("\n$$;\n", start) + len("\n$$;")
    return text[start:end]


def released_function(name: str, function: str) -> str:
    """``CREATE OR REPLACE`` text of ``function`` as released file ``name`` defines it.

    Downgrades put back an earlier definition with it: replacing keeps the
    function's privileges, which dropping and creating it again would lose.

    >>> released_function("prototypes--1.sql", "compute_regime_prototype").split("(")[0]
    'CREATE OR REPLACE FUNCTION compute_regime_prototype'
    """
    return _released_replacement(name, "FUNCTION", function, "(")


def released_view(name: str, view: str) -> str:
    """``CREATE OR REPLACE VIEW`` text of ``view`` as released file ``name`` defines it.

    The view counterpart of :func:`released_function`: replacing a view (same
    columns) keeps its privileges and its comment, which dropping and creating
    it again would lose, and leaves the functions that read it alone.

    >>> released_view("prototypes--1.sql", "regime_embeddings_latest").split(" AS")[0]
    'CREATE OR REPLACE VIEW regime_embeddings_latest WITH (security_invoker = true)'
    """
    return _released_replacement(name, "VIEW", view, " ")


def _released_replacement(name: str, kind: str, object_name: str, after: str) -> str:
    """The one ``CREATE [OR REPLACE] kind object_name`` statement of released file
    ``name``, as ``CREATE OR REPLACE``; ``after`` is what follows the name."""
    text = read_sql(name)
    heads = [h for h in (f"CREATE {kind} {object_name}{after}",
                         f"CREATE OR REPLACE {kind} {object_name}{after}")
             if h in text]
    if len(heads) != 1 or text.count(heads[0]) != 1:
        raise MigrationError(
            f"{name} does not define {kind.lower()} {object_name} exactly once"
        )
    body = _statement_at(text, heads[0])
    return f"CREATE OR REPLACE {kind} " + body[len(heads[0]) - len(object_name) - 1 :]


def target_schema(conn: Connection) -> str:
    """The schema regime-pg installs into: that of ``regimes``, else the current one."""
    schema = fetch_value(
        conn,
        "SELECT coalesce((SELECT relnamespace::regnamespace::text FROM pg_class"
        "                 WHERE oid = to_regclass('regimes')), current_schema())",
    )
    if schema is None:
        raise MigrationError("no current schema: set search_path to the schema for regimes")
    return str(schema)


def set_object_search_path(conn: Connection) -> None:
    """SET LOCAL search_path to the target schema, pgvector's schema, pg_temp."""
    driver(conn).execute(
        """
        SELECT set_config('search_path',
                          array_to_string(ARRAY(SELECT quote_ident(s)
                                                  FROM unnest(%s::text[]) WITH ORDINALITY AS u(s, n)
                                                 WHERE s IS NOT NULL
                                                 GROUP BY s
                                                 ORDER BY min(n)), ', ') || ', pg_temp',
                          true)
        """,
        (
            [
                target_schema(conn),
                fetch_value(
                    conn,
                    "SELECT extnamespace::regnamespace::text FROM pg_extension "
                    "WHERE extname = 'vector'",
                ),
            ],
        ),
    )


def record(conn: Connection, key: str, value: str) -> None:
    """Remember a fact about this installation (read by downgrades)."""
    driver(conn).execute(
        "INSERT INTO regime_pg_installation (key, value) VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def recorded(conn: Connection, key: str) -> str | None:
    """A fact recorded by :func:`record`, or None."""
    value = fetch_value(conn, "SELECT value FROM regime_pg_installation WHERE key = %s", (key,))
    return None if value is None else str(value)


def forget(conn: Connection, key: str) -> None:
    """Drop a recorded fact."""
    driver(conn).execute("DELETE FROM regime_pg_installation WHERE key = %s", (key,))


def regimes_shape_problems(conn: Connection) -> list[str]:
    """What makes an existing ``regimes`` unusable for regime-pg (empty: fine)."""
    rows = (
        driver(conn)
        .execute(
            """
        SELECT a.attname, format_type(a.atttypid, NULL)
          FROM pg_attribute AS a
         WHERE a.attrelid = to_regclass('regimes') AND a.attnum > 0 AND NOT a.attisdropped
        """
        )
        .fetchall()
    )
    found = {str(name): str(type_) for name, type_ in rows}
    problems = []
    for column, type_ in REQUIRED_REGIMES_COLUMNS.items():
        if column not in found:
            problems.append(f"column {column} ({type_}) is missing")
        elif found[column] != type_:
            problems.append(f"column {column} is {found[column]}, expected {type_}")
    if "embedding_vector" in found:
        problems.append("it already has a column embedding_vector that regime-pg did not add")
    return problems


#: The oldest PostgreSQL the SQL files run on (``server_version_num``): views
#: ``WITH (security_invoker)`` need 15.
MIN_SERVER_VERSION_NUM = 150000


def check_server_version(conn: Connection) -> None:
    """Refuse a server older than ``MIN_SERVER_VERSION_NUM`` before anything is written."""
    number = fetch_value(conn, "SELECT current_setting('server_version_num')::integer")
    if isinstance(number, int) and number < MIN_SERVER_VERSION_NUM:
        version = fetch_value(conn, "SELECT current_setting('server_version')")
        raise MigrationError(
            "regime-pg needs PostgreSQL 15 or later (views with security_invoker); "
            f"this server is {version}"
        )


def regimes_index_missing(conn: Connection) -> bool:
    """True when no valid btree index of ``regimes`` starts with ``(region, as_of_date)``.

    Every prototype function reads a window through such an index (the
    engine's ``ix_regimes_region_date``); without one, each 15-day bucket of a
    window is a scan of the whole table.
    """
    found = fetch_value(
        conn,
        """
        SELECT EXISTS (
            SELECT FROM pg_index AS i
              JOIN pg_class AS c ON c.oid = i.indexrelid
              JOIN pg_am AS am ON am.oid = c.relam
             WHERE i.indrelid = to_regclass('regimes')
               AND i.indisvalid
               AND am.amname = 'btree'
               AND i.indnkeyatts >= 2
               AND (SELECT array_agg(a.attname ORDER BY k.n)
                      FROM unnest((i.indkey::int2[])[0:1]) WITH ORDINALITY AS k(attnum, n)
                      JOIN pg_attribute AS a
                        ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
                   = ARRAY['region', 'as_of_date']::name[])
        """,
    )
    return found is not True


def ensure_pgvector(conn: Connection) -> bool:
    """Make sure pgvector is installed and recent enough; True if we created it."""
    installed = fetch_value(conn, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    created = False
    if installed is None:
        available = fetch_value(
            conn, "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        )
        if available is None:
            raise ExtensionMissingError(
                "pgvector is not available on this server; ask the database administrator "
                "to install the pgvector package (0.5.0 or newer) for this PostgreSQL"
            )
        raw = driver(conn)
        try:
            with raw.transaction():
                raw.execute("CREATE EXTENSION vector")
        except psycopg.errors.InsufficientPrivilege:
            user_db = raw.execute("SELECT current_user, current_database()").fetchone()
            assert user_db is not None
            raise ExtensionMissingError(
                f"role {user_db[0]} may not create extension vector; ask the database "
                f"administrator to run: CREATE EXTENSION vector; in database {user_db[1]}"
            ) from None
        installed = fetch_value(
            conn, "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        created = True
    version = _parse_version(str(installed))
    if version < MIN_PGVECTOR:
        raise MigrationError(
            f"pgvector {installed} is too old; regime-pg needs "
            f"{'.'.join(map(str, MIN_PGVECTOR))} or newer: ask the database administrator "
            "to run ALTER EXTENSION vector UPDATE"
        )
    return created


def lock_regimes_for_ddl(conn: Connection) -> None:
    """Take ACCESS EXCLUSIVE on ``regimes`` without making the engine queue for long.

    An ALTER TABLE waiting for its lock (behind a long transaction that read
    ``regimes``: a report, a pg_dump, a long calibration) makes every insert of
    the engine wait behind it, for as long as that transaction lasts.  So the
    lock is asked for with a short ``lock_timeout`` (the session's own, else
    :data:`DDL_LOCK_TIMEOUT_MS`) in a savepoint; when it times out the request
    leaves the queue, the engine's inserts go on, and it is asked again after
    :data:`DDL_LOCK_PAUSE_S`, at most :data:`DDL_LOCK_ATTEMPTS` times.  Then
    ``MigrationError`` names the sessions holding the table, and the whole
    migration transaction rolls back.  Once taken, the lock is held until the
    migration transaction commits, a few milliseconds later.
    """
    raw = driver(conn)
    table = sql.SQL("{}.{}").format(sql.Identifier(target_schema(conn)), sql.Identifier("regimes"))
    previous = str(fetch_value(conn, "SELECT current_setting('lock_timeout')"))
    timeout = previous if previous not in ("0", "0ms") else f"{DDL_LOCK_TIMEOUT_MS}ms"
    for attempt in range(1, DDL_LOCK_ATTEMPTS + 1):
        try:
            with raw.transaction():
                raw.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                raw.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            raw.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
            return
        except psycopg.errors.LockNotAvailable:
            holders = _lock_holders(conn)
            if attempt == DDL_LOCK_ATTEMPTS:
                raise MigrationError(
                    f"could not lock table regimes for the migration in {attempt} attempts of "
                    f"{timeout}: it is in use by {holders}; nothing was changed: run the "
                    "migration again when those sessions have ended"
                ) from None
            log.warning(
                "regimes is in use by %s; lock attempt %d of %d timed out after %s, "
                "retrying in %g s (the engine's inserts are not held meanwhile)",
                holders,
                attempt,
                DDL_LOCK_ATTEMPTS,
                timeout,
                DDL_LOCK_PAUSE_S,
            )
            time.sleep(DDL_LOCK_PAUSE_S)


def _lock_holders(conn: Connection) -> str:
    """The sessions holding a lock on ``regimes``, for messages."""
    rows = (
        driver(conn)
        .execute(
            """
            SELECT a.pid, a.application_name, a.state,
                   round(extract(epoch FROM now() - a.xact_start))::bigint
              FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
             WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.relation = (SELECT c.oid FROM pg_class AS c
                                  WHERE c.relname = 'regimes'
                                    AND c.relnamespace = %s::regnamespace)
             ORDER BY a.xact_start NULLS LAST, a.pid
             LIMIT 5
            """,
            (target_schema(conn),),
        )
        .fetchall()
    )
    if not rows:
        return "another session (gone by now)"
    # Without pg_read_all_stats, state and xact_start of other roles' sessions read NULL.
    return ", ".join(
        f"pid {pid} ({app or 'no application_name'}"
        + (f", {state}" if state else "")
        + (f", transaction open {age} s" if age is not None else "")
        + ")"
        for pid, app, state, age in rows
    )


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def backfill_embedding_vectors(
    conn: Connection,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Fill ``embedding_vector`` from the BYTEA of rows that lack it, in batches.

    Each batch commits on its own (run it inside Alembic's
    ``autocommit_block``), so a stopped backfill keeps what it did and the
    next run goes on with the rows still missing their vector.  Rows are
    converted by the sync trigger itself (``SET regime_embedding =
    regime_embedding``), so the backfill and the engine's inserts share one
    conversion path, warnings included.  Returns the number of rows touched.
    """
    raw = driver(conn)
    todo = int(
        str(
            fetch_value(
                conn,
                "SELECT count(*) FROM regimes "
                "WHERE embedding_vector IS NULL AND regime_embedding IS NOT NULL",
            )
        )
    )
    done = 0
    last_id: str | None = None
    log.info("backfill: %d rows to convert", todo)
    while True:
        # Two query texts, not "$1 IS NULL OR id > $1": each stays an index range
        # scan whatever plan caching decides.
        after = "" if last_id is None else "WHERE regime_record_id > %(after)s"
        row = raw.execute(
            f"""
            WITH batch AS (
                SELECT regime_record_id
                  FROM regimes
                 {after}
                 ORDER BY regime_record_id
                 LIMIT %(limit)s
            ), converted AS (
                UPDATE regimes AS r
                   SET regime_embedding = r.regime_embedding
                  FROM batch AS b
                 WHERE r.regime_record_id = b.regime_record_id
                   AND r.embedding_vector IS NULL
                   AND r.regime_embedding IS NOT NULL
             RETURNING 1
            )
            SELECT (SELECT max(regime_record_id) FROM batch),
                   (SELECT count(*) FROM converted)
            """,
            {"after": last_id, "limit": batch_size},
        ).fetchone()
        assert row is not None
        if row[0] is None:
            break
        last_id = str(row[0])
        done += int(str(row[1]))
        if progress is not None:
            progress(done, todo)
        log.info("backfill: %d/%d rows", done, todo)
    return done
