"""Compute prototypes on the server and bring back only the results.

The window's embeddings never leave the database: the server functions
``compute_regime_prototypes`` and ``regime_prototypes_json`` average them
there, and the client receives one float32 centre per label.  They are
called with their schema (``regime_pg.installation``), never through the
session's search_path.

>>> import datetime as dt
>>> from regime_pg import connect, compute_prototypes
>>> with connect() as conn:                                    # doctest: +SKIP
...     neutral, = compute_prototypes(conn, "US", {"NEUTRAL": ("2017-01-01", "2017-12-31")})
>>> neutral.label, neutral.center.shape, neutral.n_dates       # doctest: +SKIP
(<RegimeLabel.NEUTRAL: 'NEUTRAL'>, (384,), 251)
"""

from __future__ import annotations

import datetime as dt
import reprlib
from collections.abc import Mapping

from psycopg import sql
from psycopg.types.json import Jsonb

from regime_pg.connection import Connection, translated_errors, vector_to_numpy
from regime_pg.document import PrototypeDocument
from regime_pg.errors import InvalidInputError
from regime_pg.installation import qualified
from regime_pg.prototypes import DateLike, DateWindow, RegimePrototype, parse_label

#: A window as given by callers: a DateWindow, or a (start, end) pair of dates
#: in any form ``as_date`` reads (date, datetime, numpy.datetime64, ``YYYY-MM-DD``).
WindowLike = DateWindow | tuple[DateLike, DateLike]

_PROTOTYPE_COLUMNS = sql.SQL(
    "label, start_date, end_date, n_dates, n_skipped, center, l2_norm, dispersion, "
    "first_date, last_date"
)


def as_window(window: WindowLike) -> DateWindow:
    """A ``DateWindow`` from any accepted window form; its dates may be mixed.

    >>> as_window(("2018-01-01", dt.datetime(2018, 12, 31, 16, 0))).end_date
    datetime.date(2018, 12, 31)
    """
    if isinstance(window, DateWindow):
        return window
    if isinstance(window, tuple | list) and len(window) == 2:
        return DateWindow.parse(*window)
    raise InvalidInputError(
        f"a window is (start_date, end_date) as dates or YYYY-MM-DD strings, "
        f"got {reprlib.repr(window)}"
    )


def windows_json(windows: Mapping[str, WindowLike]) -> dict[str, dict[str, str]]:
    """The windows document the server functions take: label -> window.

    >>> windows_json({"NEUTRAL": ("2018-01-01", "2018-12-31")})
    {'NEUTRAL': {'end_date': '2018-12-31', 'start_date': '2018-01-01'}}
    """
    if not windows:
        raise InvalidInputError("at least one labelled window is needed")
    return {str(parse_label(label)): as_window(w).to_json() for label, w in windows.items()}


def check_region(region: str) -> str:
    """``region`` if it can name rows of ``regimes``; ``InvalidInputError`` otherwise."""
    if not isinstance(region, str) or not region or len(region) > 32 or "\x00" in region:
        raise InvalidInputError(
            f"region must be 1 to 32 characters without NUL, got {str(region)[:40]!r}"
        )
    return region


def compute_prototypes(
    conn: Connection, region: str, windows: Mapping[str, WindowLike]
) -> list[RegimePrototype]:
    """One ``RegimePrototype`` per labelled window, computed in one statement.

    Raises ``EmptyWindowError``, ``UnknownRegionError``, ``InvalidWindowError``,
    ``InvalidLabelError`` (all ``RegimePgError``) for the server's checks.
    """
    payload = Jsonb(windows_json(windows))
    params = (check_region(region), payload)
    with translated_errors():
        statement = qualified(
            conn,
            "SELECT {columns} FROM {schema}.compute_regime_prototypes(%s, %s)",
            columns=_PROTOTYPE_COLUMNS,
        )
        # centres as float32 bytes, not 384 decimals to format and parse
        rows = conn.execute(statement, params, binary=True).fetchall()
    return [_prototype_from_row(row) for row in rows]


def compute_prototype(
    conn: Connection, region: str, window: WindowLike, label: str = "NEUTRAL"
) -> RegimePrototype:
    """The prototype of one window, labelled ``label``."""
    (prototype,) = compute_prototypes(conn, region, {label: window})
    return prototype


def prototypes_document(
    conn: Connection, region: str, windows: Mapping[str, WindowLike]
) -> PrototypeDocument:
    """The prototype document as ``regime_prototypes_json`` builds it in SQL."""
    payload = Jsonb(windows_json(windows))
    params = (check_region(region), payload)
    with translated_errors():
        statement = qualified(conn, "SELECT {schema}.regime_prototypes_json(%s, %s)")
        row = conn.execute(statement, params).fetchone()
    assert row is not None
    return PrototypeDocument.from_json(row[0])


def _prototype_from_row(row: tuple[object, ...]) -> RegimePrototype:
    label, start, end, n_dates, n_skipped, center, l2_norm, dispersion, first, last = row
    assert isinstance(start, dt.date) and isinstance(end, dt.date)
    assert isinstance(first, dt.date) and isinstance(last, dt.date)
    return RegimePrototype(
        str(label),
        vector_to_numpy(center),
        window=DateWindow(start, end),
        n_dates=int(str(n_dates)),
        n_skipped=int(str(n_skipped)),
        l2_norm=float(str(l2_norm)),
        dispersion=float(str(dispersion)),
        first_date=first,
        last_date=last,
    )
