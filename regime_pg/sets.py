"""Stored prototype sets: save, import, show, export, delete, fit the temperature.

A set is a named, immutable group of prototypes of one region with the
temperature to classify with; the server keeps it in
``regime_prototype_sets`` / ``regime_prototype_set_members``. A new version
is a new name.  Every statement names its objects with their schema
(``regime_pg.installation``), never through the session's search_path.

>>> from regime_pg import connect
>>> from regime_pg.sets import save_set
>>> with connect() as conn:                                       # doctest: +SKIP
...     saved = save_set(conn, "us-2018-v1", "US",
...                      {"NEUTRAL": ("2018-01-01", "2018-12-31")}, temperature=None)
...     saved.temperature, saved.fit.separable
(0.86, True)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from regime_pg.client import WindowLike, check_region, windows_json
from regime_pg.connection import Connection, translated_errors
from regime_pg.document import PrototypeDocument, check_l2_norms
from regime_pg.errors import InvalidDocumentError, RegionMismatchError
from regime_pg.installation import qualified
from regime_pg.softmax import TemperatureFit

_SET_COLUMNS = sql.SQL(
    "name, region, encoder_model_id, embedding_dim, temperature, windows, source, "
    "fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable, created_at, created_by"
)


@dataclass(frozen=True)
class PrototypeSetInfo:
    """A stored set's row, without its prototypes."""

    name: str
    region: str
    encoder_model_id: str
    embedding_dim: int
    temperature: float
    windows: dict[str, Any]
    source: str
    created_at: dt.datetime
    created_by: str
    #: How the temperature was fitted, or None when it was given.
    fit: TemperatureFit | None


@dataclass(frozen=True)
class PrototypeSet:
    """A stored set with its prototypes, as a document."""

    info: PrototypeSetInfo
    document: PrototypeDocument

    @property
    def name(self) -> str:
        """The set's name."""
        return self.info.name

    @property
    def temperature(self) -> float:
        """The temperature to classify with."""
        return self.info.temperature


def _info(row: Mapping[str, Any]) -> PrototypeSetInfo:
    fit = None
    if row["fit_n"] is not None:
        fit = TemperatureFit(
            temperature=float(row["temperature"]),
            log_loss=float(row["fit_log_loss"]),
            log_loss_at_1=float(row["fit_log_loss_at_1"]),
            n=int(row["fit_n"]),
            separable=bool(row["fit_separable"]),
        )
    return PrototypeSetInfo(
        name=row["name"],
        region=row["region"],
        encoder_model_id=row["encoder_model_id"],
        embedding_dim=int(row["embedding_dim"]),
        temperature=float(row["temperature"]),
        windows=dict(row["windows"]),
        source=row["source"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        fit=fit,
    )


def _fetch_set(conn: Connection, template: LiteralString, params: tuple[Any, ...]) -> PrototypeSet:
    """The set row ``template`` selects (``{columns}``) and its document, in one transaction."""
    with translated_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(qualified(conn, template, columns=_SET_COLUMNS), params).fetchone()
        assert row is not None
        document = cur.execute(
            qualified(conn, "SELECT {schema}.regime_prototype_set_json(%s) AS document"),
            (row["name"],),
        ).fetchone()
    assert document is not None
    return PrototypeSet(_info(row), PrototypeDocument.from_json(document["document"]))


def save_set(
    conn: Connection,
    name: str,
    region: str,
    windows: Mapping[str, WindowLike],
    temperature: float | None = 1.0,
) -> PrototypeSet:
    """Compute and store a named set in one transaction; ``temperature=None`` fits it.

    Raises ``PrototypeSetExistsError`` when the name is taken.
    """
    return _fetch_set(
        conn,
        "SELECT {columns} FROM {schema}.save_regime_prototype_set(%s, %s, %s, %s)",
        (name, check_region(region), Jsonb(windows_json(windows)), temperature),
    )


def import_set(
    conn: Connection, name: str, document: PrototypeDocument, temperature: float | None = 1.0
) -> PrototypeSet:
    """Store a prototype document as a named set; ``temperature=None`` fits it.

    The document's region must be printable: a stored region is shown to
    other users by ``regime-pg sets list``.  Each prototype's ``l2_norm``
    must be the norm of its centre (``check_l2_norms``), else
    ``InvalidDocumentError`` names the prototype and nothing is stored.
    """
    if not document.region.isprintable():
        raise InvalidDocumentError(
            f"the document's region {document.region[:40]!r} holds control characters"
        )
    check_l2_norms(document)
    return _fetch_set(
        conn,
        "SELECT {columns} FROM {schema}.save_regime_prototype_set_from_document(%s, %s, %s)",
        (name, Jsonb(document.to_json()), temperature),
    )


def get_set(conn: Connection, name: str) -> PrototypeSet:
    """A stored set; ``UnknownPrototypeSetError`` when there is none of that name."""
    return _fetch_set(conn, "SELECT {columns} FROM {schema}.regime_prototype_set(%s)", (name,))


def list_sets(conn: Connection) -> list[PrototypeSetInfo]:
    """Every stored set, oldest first."""
    with translated_errors(), conn.cursor(row_factory=dict_row) as cur:
        statement = qualified(
            conn,
            "SELECT {columns} FROM {schema}.regime_prototype_sets ORDER BY created_at, name",
            columns=_SET_COLUMNS,
        )
        rows = cur.execute(statement).fetchall()
    return [_info(row) for row in rows]


def delete_set(conn: Connection, name: str) -> None:
    """Delete a whole set; ``UnknownPrototypeSetError`` when there is none of that name."""
    with translated_errors():
        conn.execute(qualified(conn, "SELECT {schema}.delete_regime_prototype_set(%s)"), (name,))


def fit_set_temperature(
    conn: Connection, region: str, windows: Mapping[str, WindowLike]
) -> TemperatureFit:
    """The temperature the server would fit for these windows (nothing is stored)."""
    params = (check_region(region), Jsonb(windows_json(windows)))
    with translated_errors():
        statement = qualified(
            conn,
            "SELECT temperature, log_loss, log_loss_at_1, n, separable"
            " FROM {schema}.fit_regime_temperature(%s, %s)",
        )
        row = conn.execute(statement, params).fetchone()
    assert row is not None
    return TemperatureFit(
        temperature=float(str(row[0])),
        log_loss=float(str(row[1])),
        log_loss_at_1=float(str(row[2])),
        n=int(str(row[3])),
        separable=bool(row[4]),
    )


def check_set_region(name: str, set_region: str, region: str) -> None:
    """Refuse to apply set ``name`` of ``set_region`` to another region, as SQL does.

    Raises ``RegionMismatchError`` with the server's message and hint
    (``regime_check_prototype_set_region``, sql/classify--1.sql), so a
    refusal reads the same from Python and from ``classify_regimes``.

    >>> check_set_region("us-v1", "US", "US")
    >>> check_set_region("us-v1", "US", "EU")
    Traceback (most recent call last):
    ...
    regime_pg.errors.RegionMismatchError: prototype set 'us-v1' was saved for region 'US', \
not for region 'EU' (hint: Classify a region with a set saved for that region.)
    """
    check_prototypes_region(f"prototype set {_quote_literal(name)}", "a set", set_region, region)


def check_prototypes_region(owner: str, kind: str, saved_region: str, region: str) -> None:
    """Refuse to apply the prototypes of ``owner`` (a set, a document; ``kind`` says
    which, for the hint), saved for ``saved_region``, to another region.

    Regions are quoted as ``quote_literal`` does: ``check_set_region`` gives SQL's message.

    >>> check_prototypes_region("prototype document", "a document", "US", "EU")
    Traceback (most recent call last):
    ...
    regime_pg.errors.RegionMismatchError: prototype document was saved for region 'US', \
not for region 'EU' (hint: Classify a region with a document saved for that region.)
    """
    if region != saved_region:
        raise RegionMismatchError(
            f"{owner} was saved for region {_quote_literal(saved_region)}, "
            f"not for region {_quote_literal(region)} "
            f"(hint: Classify a region with {kind} saved for that region.)"
        )


def _quote_literal(text: str) -> str:
    r"""``text`` as PostgreSQL's ``quote_literal`` writes it: quotes doubled, and
    backslashes doubled behind an ``E`` prefix.

    >>> print(_quote_literal("O'Hare"), _quote_literal("a\\b"))
    'O''Hare' E'a\\b'
    """
    body = text.replace("'", "''").replace("\\", "\\\\")
    return f"E'{body}'" if "\\" in text else f"'{body}'"


def windows_text(windows: Mapping[str, Any]) -> str:
    """A set's windows as compact sorted JSON, for display."""
    return json.dumps(windows, sort_keys=True, separators=(", ", ": "))
