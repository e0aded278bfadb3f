"""Where regime-pg is installed in a database, found without trusting the search_path.

The client names every regime-pg object with its schema, so a session whose
search_path lists a schema holding look-alikes first still reaches the real
ones (finding F13 in docs/hardening.md).  The schema is the one holding
regime-pg's version table (``regime_pg_alembic_version``, beside
``regimes``), looked up in ``pg_catalog`` with every name qualified:

* the session setting ``regime_pg.schema``, when set, names it (and must hold
  the table): ``options='-c regime_pg.schema=analytics'`` in the DSN, or
  ``ALTER ROLE ... SET regime_pg.schema = 'analytics'``;
* otherwise the one schema holding the table; none raises
  ``InstallationNotFoundError``, several ``AmbiguousInstallationError``, so a
  planted look-alike installation gives an error, never a forged result.

The answer is cached per connection object: set ``regime_pg.schema`` before
a connection's first call.  Errors are not cached.

>>> from regime_pg import connect
>>> with connect() as conn:                                     # doctest: +SKIP
...     installation_schema(conn)
'public'
>>> with connect() as conn:                                     # doctest: +SKIP
...     conn.execute(qualified(conn, "SELECT {schema}.regime_embedding_dim()")).fetchone()
(384,)
"""

from __future__ import annotations

import weakref
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from regime_pg.connection import translated_errors
from regime_pg.errors import AmbiguousInstallationError, InstallationNotFoundError

#: regime-pg's Alembic version table, created beside ``regimes`` by the first
#: migration.  Equal to ``regime_pg.migrate.VERSION_TABLE`` (a test checks it);
#: not imported from there, since that module loads Alembic.
VERSION_TABLE = "regime_pg_alembic_version"

#: The session setting that names the schema when a database holds several.
SCHEMA_SETTING = "regime_pg.schema"

_FOUND: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = weakref.WeakKeyDictionary()

# Every catalog, function and operator qualified: nothing here resolves through the
# session's search_path.  Temporary tables never count (any session may create one).
_LOOKUP = """
SELECT pg_catalog.current_setting(%(setting)s, true),
       ARRAY(SELECT n.nspname
               FROM pg_catalog.pg_class AS c
               JOIN pg_catalog.pg_namespace AS n
                 ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE c.relname OPERATOR(pg_catalog.=) %(table)s
                AND c.relkind OPERATOR(pg_catalog.=) 'r'
                AND c.relpersistence OPERATOR(pg_catalog.<>) 't'
              ORDER BY n.nspname)
"""


def installation_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema of regime-pg's installation in the database of ``conn``.

    Raises ``InstallationNotFoundError`` when no schema (or not the one
    ``regime_pg.schema`` names) holds regime-pg, and
    ``AmbiguousInstallationError`` when several do and the setting is unset;
    both are ``SchemaNotReadyError``.
    """
    found = _FOUND.get(conn)
    if found is not None:
        return found
    with translated_errors(), conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(_LOOKUP, {"setting": SCHEMA_SETTING, "table": VERSION_TABLE}).fetchone()
    assert row is not None
    setting, schemas = row[0], list(row[1])
    if setting:
        if setting not in schemas:
            raise InstallationNotFoundError(
                f"{SCHEMA_SETTING} names the schema {str(setting)[:80]!r}, which holds no "
                f"regime-pg installation (no table {VERSION_TABLE}); "
                f"installed in: {_names(schemas)}"
            )
        found = str(setting)
    elif len(schemas) == 1:
        found = str(schemas[0])
    elif not schemas:
        raise InstallationNotFoundError(
            f"regime-pg is not installed in this database (no schema holds {VERSION_TABLE}); "
            "run: regime-pg migrate"
        )
    else:
        raise AmbiguousInstallationError(
            f"regime-pg is installed in several schemas of this database: {_names(schemas)}; "
            f"set {SCHEMA_SETTING} to the one to use, e.g. "
            f"options='-c {SCHEMA_SETTING}=<schema>' in the DSN, "
            f"or ALTER ROLE ... SET {SCHEMA_SETTING} = '<schema>'"
        )
    _FOUND[conn] = found
    return found


def qualified(
    conn: psycopg.Connection[Any], template: LiteralString, **parts: sql.Composable
) -> sql.Composed:
    """``template`` with ``{schema}`` the installation's schema (quoted) and ``parts`` filled in.

    Values stay ``%s`` parameters, bound by ``execute``.

    >>> qualified(conn, "SELECT {schema}.regime_prototypes_json(%s, %s)")  # doctest: +SKIP
    Composed([SQL('SELECT '), Identifier('public'), SQL('.regime_prototypes_json(%s, %s)')])
    """
    schema = sql.Identifier(installation_schema(conn))
    return sql.SQL(template).format(schema=schema, **parts)


def _names(schemas: list[Any]) -> str:
    return ", ".join(repr(str(s)[:80]) for s in schemas) if schemas else "none"
