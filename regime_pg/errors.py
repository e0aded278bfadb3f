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


class InstallationNotFoundError(SchemaNotReadyError):
    """No schema of the database holds regime-pg (or not the one ``regime_pg.schema`` names)."""


class AmbiguousInstallationError(SchemaNotReadyError):
    """Several schemas hold regime-pg: the setting ``regime_pg.schema`` must name one."""


class ExtensionMissingError(SchemaNotReadyError):
    """pgvector is not installed in the database (or this role may not install it)."""

    sqlstate = "42501"


class InsufficientPrivilegeError(RegimePgError):
    """This role lacks a grant (see ``regime-pg roles``)."""

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


class UnknownPrototypeSetError(NoDataError):
    """No stored prototype set has that name."""

    sqlstate = "42704"


class PrototypeSetExistsError(RegimePgError):
    """A prototype set of that name exists already: a new version is a new name."""

    sqlstate = "23505"


class PrototypeSetFrozenError(RegimePgError):
    """A saved prototype set never changes; only a whole-set delete is allowed."""

    sqlstate = "55000"


class InvalidSetNameError(InvalidInputError):
    """A set name breaks the rule ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``."""

    sqlstate = "22P02"


class RegionMismatchError(InvalidInputError):
    """A prototype set of one region was used on another region's embeddings."""

    sqlstate = "22023"


# (SQLSTATE, diagnostics table or None, diagnostics column or None) -> class,
# for errors the server functions raise on purpose; the most specific key wins.
_BY_DIAGNOSTICS: dict[tuple[str, str | None, str | None], type[RegimePgError]] = {
    ("22023", None, None): InvalidInputError,
    ("22023", "regimes", "as_of_date"): InvalidWindowError,
    ("22023", "regime_prototype_sets", "region"): RegionMismatchError,
    ("22007", None, None): InvalidWindowError,
    ("22008", None, None): InvalidWindowError,
    ("22032", None, None): InvalidWindowsDocumentError,
    ("22P02", None, None): InvalidLabelError,
    ("22P02", "regime_prototype_sets", None): InvalidSetNameError,
    ("22000", None, None): DimensionMismatchError,
    ("22000", "regime_prototype_set_members", "l2_norm"): InvalidDocumentError,
    ("22001", None, None): InvalidInputError,
    ("22003", None, None): InvalidInputError,
    ("22004", None, None): InvalidInputError,
    ("23505", "regime_prototype_sets", None): PrototypeSetExistsError,
    ("55000", None, None): PrototypeSetFrozenError,
    ("P0002", None, None): EmptyWindowError,
    ("42704", None, None): UnknownRegionError,
    ("42704", "regime_prototype_sets", None): UnknownPrototypeSetError,
    ("42883", None, None): SchemaNotReadyError,
    ("42P01", None, None): SchemaNotReadyError,
    ("42501", None, None): InsufficientPrivilegeError,
}


def error_class(
    sqlstate: str, table: str | None = None, column: str | None = None
) -> type[RegimePgError] | None:
    """The regime-pg class for an error's SQLSTATE and diagnostics, or None.

    >>> error_class("42704", "regime_prototype_sets", "name").__name__
    'UnknownPrototypeSetError'
    >>> error_class("42704", "regimes", "region").__name__
    'UnknownRegionError'
    """
    for key in ((sqlstate, table, column), (sqlstate, table, None), (sqlstate, None, None)):
        if key in _BY_DIAGNOSTICS:
            return _BY_DIAGNOSTICS[key]
    return None


def translate(exc: psycopg.Error) -> RegimePgError | psycopg.Error:
    """Map a psycopg error to the regime-pg class for its SQLSTATE and diagnostics.

    Returns the original exception when the SQLSTATE is not one of ours,
    so unexpected server errors keep their full psycopg detail.

    >>> translate(psycopg.OperationalError("connection refused")).__class__.__name__
    'ConnectionFailedError'
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        if isinstance(exc, psycopg.OperationalError):
            return ConnectionFailedError(_first_line(str(exc)) or "cannot connect")
        if isinstance(exc, psycopg.DataError):  # client-side, e.g. NUL in a string
            return InvalidInputError(_first_line(str(exc)))
        return exc
    if sqlstate.startswith("08") or sqlstate.startswith("28") or sqlstate == "3D000":
        return ConnectionFailedError(_message(exc))
    cls = error_class(sqlstate, exc.diag.table_name, exc.diag.column_name)
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
