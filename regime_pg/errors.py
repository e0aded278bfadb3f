"""The exceptions regime-pg raises, as one class hierarchy.

Every error the server functions raise on purpose carries a SQLSTATE;
:func:`translate` turns the psycopg exception into the matching class here,
so callers catch ``regime_pg.EmptyWindowError`` rather than parse messages.

>>> try:
...     raise EmptyWindowError("no usable embedding for region 'US' in 2018-01-01..2018-01-02")
... except RegimePgError as exc:
...     print(type(exc).__name__, exc.sqlstate)
EmptyWindowError P0002
"""

from __future__ import annotations

import psycopg


class RegimePgError(Exception):
    """Base class of every error regime-pg raises on purpose."""

    #: The SQLSTATE the server uses for this kind of error, if any.
    sqlstate: str | None = None


class ConnectionFailedError(RegimePgError):
    """The database cannot be reached (bad DSN, server down, authentication)."""

    sqlstate = "08000"


class EmbeddedServerError(RegimePgError):
    """The embedded PostgreSQL server could not be started, stopped or found."""


class SchemaNotReadyError(RegimePgError):
    """The database lacks pgvector or regime-pg's migrations."""

    sqlstate = "42883"


class ExtensionMissingError(SchemaNotReadyError):
    """pgvector is not installed and this role may not install it."""

    sqlstate = "42501"


class MigrationError(RegimePgError):
    """A migration refused to run (unexpected table shape, missing privilege, ...)."""


class InvalidInputError(RegimePgError):
    """An argument was rejected before anything was computed or written."""

    sqlstate = "22023"


class InvalidWindowError(InvalidInputError):
    """A date window is reversed, out of range or not a date."""

    sqlstate = "22023"


class InvalidWindowsDocumentError(InvalidInputError):
    """The windows JSON (label -> start_date/end_date) is malformed."""

    sqlstate = "22032"


class InvalidLabelError(InvalidInputError):
    """A label does not follow the label rule (``^[A-Z][A-Z0-9_]{0,31}$``)."""

    sqlstate = "22P02"


class DimensionMismatchError(InvalidInputError):
    """An embedding or prototype does not have the expected dimension."""

    sqlstate = "22000"


class InvalidDocumentError(RegimePgError):
    """A prototype document (JSON file) is malformed."""


class NoDataError(RegimePgError):
    """The request was valid but there is nothing to compute from."""


class EmptyWindowError(NoDataError):
    """A window holds no usable embedding for the region."""

    sqlstate = "P0002"


class UnknownRegionError(NoDataError):
    """The region has no rows at all in ``regimes``."""

    sqlstate = "42704"


# SQLSTATE -> class, for errors the server functions raise on purpose.
_BY_SQLSTATE: dict[str, type[RegimePgError]] = {
    "22023": InvalidWindowError,
    "22007": InvalidWindowError,
    "22008": InvalidWindowError,
    "22032": InvalidWindowsDocumentError,
    "22P02": InvalidLabelError,
    "22000": DimensionMismatchError,
    "P0002": EmptyWindowError,
    "42704": UnknownRegionError,
    "42883": SchemaNotReadyError,
    "42P01": SchemaNotReadyError,
    "42501": ExtensionMissingError,
}


def translate(exc: psycopg.Error) -> RegimePgError | psycopg.Error:
    """Map a psycopg error to the regime-pg class for its SQLSTATE.

    Returns the original exception when the SQLSTATE is not one of ours,
    so unexpected server errors keep their full psycopg detail.

    >>> translate(psycopg.OperationalError("connection refused")).__class__.__name__
    'ConnectionFailedError'
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        if isinstance(exc, psycopg.OperationalError):
            return ConnectionFailedError(_first_line(str(exc)) or "cannot connect")
        return exc
    if sqlstate.startswith("08") or sqlstate.startswith("28") or sqlstate == "3D000":
        return ConnectionFailedError(_message(exc))
    cls = _BY_SQLSTATE.get(sqlstate)
    if cls is None:
        return exc
    if cls is SchemaNotReadyError:
        return cls(f"{_message(exc)} (is the database migrated? run: regime-pg migrate)")
    return cls(_message(exc))


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or _first_line(str(exc))
    if diag.message_hint:
        text = f"{text} (hint: {diag.message_hint})"
    return text


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
