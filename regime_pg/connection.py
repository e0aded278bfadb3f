"""Which database to talk to, and opening a connection to it.

The DSN comes from, in order: the ``dsn`` argument (the CLI's ``--dsn``),
the ``REGIME_PG_DSN`` environment variable, else the embedded server, which
is started when it is not running.

>>> import os
>>> os.environ["REGIME_PG_DSN"] = "postgresql://localhost/engine"
>>> resolve_dsn(None)
'postgresql://localhost/engine'
>>> resolve_dsn("dbname=other")
'dbname=other'
>>> del os.environ["REGIME_PG_DSN"]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

from regime_pg.errors import ExtensionMissingError, translate

DSN_ENV = "REGIME_PG_DSN"

#: The database regime-pg uses on its embedded server.
EMBEDDED_DATABASE = "regime_pg"

Connection = psycopg.Connection[tuple[object, ...]]


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: ``dsn``, else ``$REGIME_PG_DSN``, else the embedded server's.

    On the embedded server (started when it is not running) regime-pg uses the
    database ``regime_pg``, created on first use.
    """
    if dsn:
        return dsn
    from_env = os.environ.get(DSN_ENV)
    if from_env:
        return from_env
    from regime_pg import embedded

    return embedded.ensure_database(embedded.start(), EMBEDDED_DATABASE)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise psycopg errors of known SQLSTATEs as regime-pg exceptions."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def connect(dsn: str | None = None, *, autocommit: bool = True) -> Connection:
    """Open a connection with pgvector's types registered.

    >>> conn = connect()                      # doctest: +SKIP
    >>> conn.execute("SELECT 1").fetchone()   # doctest: +SKIP
    (1,)
    """
    with translated_errors():
        conn = psycopg.connect(resolve_dsn(dsn), autocommit=autocommit)
    use_vector_types(conn)
    return conn


def use_vector_types(conn: Connection) -> None:
    """Register pgvector's types on ``conn`` (vectors load as float32 numpy arrays)."""
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:
        conn.close()
        raise ExtensionMissingError(
            "pgvector is not installed in this database; run: regime-pg migrate"
        ) from exc


def vector_to_numpy(value: object) -> npt.NDArray[np.float32]:
    """A pgvector value as loaded by psycopg, as a float32 numpy array."""
    if isinstance(value, Vector):
        return value.to_numpy().astype(np.float32, copy=False)
    return np.asarray(value, dtype=np.float32)
