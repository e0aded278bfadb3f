"""The demo job: real index data in, prototype documents out.

Fills ``regimes`` for US (S&P 500) and US_TECH (NASDAQ Composite) with the
demo encoder's embeddings, written the way the Regime Engine writes them
(float32 BYTEA only, so the sync trigger converts every row), then
calibrates NEUTRAL on 2017 and CRISIS on 2008-09-15..2009-03-09 in the
database.

The input bars run 1999-01-04..2018-12-31; the encoder's first 314 trading
days are its warm-up, so the embeddings run 2000-03-31..2018-12-31 (4717 per
region). A ``start``/``end`` range must contain both calibration windows:
:func:`check_range` rejects any other range before anything is read or
written, and :func:`run_demo` replaces the rows of both regions and
calibrates them in one transaction, so a failure leaves ``regimes`` as it was.

Demo rows carry ``metadata = {"source": "regime-pg demo", ...}``; a new run
deletes those rows of the region and nothing else, so it can be re-run.

>>> from regime_pg.demo.pipeline import demo_record_id
>>> demo_record_id("US", datetime.date(2017, 1, 3))
'demo-US-2017-01-03'
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from regime_pg.atomic import cannot_write, write_files_atomically
from regime_pg.client import prototypes_document
from regime_pg.connection import Connection, translated_errors
from regime_pg.demo.encoder import encode, load_market
from regime_pg.document import PrototypeDocument
from regime_pg.errors import InvalidInputError, NoDataError
from regime_pg.installation import qualified
from regime_pg.prototypes import DateWindow, RegimeLabel

log = logging.getLogger("regime_pg.demo")

DEMO_SOURCE = "regime-pg demo"
DEMO_ENCODER = "regime-pg-demo-ohlcv-v1"
DEMO_REGIONS: tuple[str, ...] = ("US", "US_TECH")
DEMO_WINDOWS: dict[str, DateWindow] = {
    RegimeLabel.CRISIS.value: DateWindow(datetime.date(2008, 9, 15), datetime.date(2009, 3, 9)),
    RegimeLabel.NEUTRAL.value: DateWindow(datetime.date(2017, 1, 1), datetime.date(2017, 12, 31)),
}
#: The engine's regime_label for rows nobody classified yet.
UNCLASSIFIED = "UNCLASSIFIED"


def demo_record_id(region: str, as_of_date: datetime.date) -> str:
    """The regime_record_id of a demo row."""
    return f"demo-{region}-{as_of_date.isoformat()}"


#: One region's encoded demo rows: ``(as_of_date, float32 vector)``, ascending.
Embeddings = list[tuple[datetime.date, NDArray[np.float32]]]


def check_range(start: datetime.date | None, end: datetime.date | None) -> None:
    """Reject a ``start``/``end`` range that is reversed or misses a calibration window.

    Raises :class:`InvalidInputError` with one line naming the range and the
    windows; ``None`` is an open end. Reads and writes nothing.

    >>> check_range(datetime.date(2008, 1, 1), datetime.date(2017, 12, 31))
    >>> check_range(datetime.date(2005, 1, 1), datetime.date(2010, 12, 31))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    regime_pg.errors.InvalidInputError: --start 2005-01-01 --end 2010-12-31 does not cover ...
    """
    if start is not None and end is not None and end < start:
        raise InvalidInputError(f"--end {end} is before --start {start}")
    first = min(window.start_date for window in DEMO_WINDOWS.values())
    last = max(window.end_date for window in DEMO_WINDOWS.values())
    if (start is None or start <= first) and (end is None or end >= last):
        return
    given = " ".join(
        f"--{name} {day}" for name, day in (("start", start), ("end", end)) if day is not None
    )
    windows = ", ".join(
        f"{label} {window.start_date}..{window.end_date}"
        for label, window in sorted(DEMO_WINDOWS.items())
    )
    fixes = []
    if start is not None and start > first:
        fixes.append(f"--start {first} or earlier")
    if end is not None and end < last:
        fixes.append(f"--end {last} or later")
    raise InvalidInputError(
        f"{given} does not cover the demo's calibration windows ({windows}): "
        f"give {' and '.join(fixes)}"
    )


def encode_regions(
    start: datetime.date | None = None, end: datetime.date | None = None
) -> dict[str, Embeddings]:
    """Check the range, then encode every demo region; nothing touches the database.

    Raises :class:`InvalidInputError` for a range :func:`check_range` rejects,
    :class:`~regime_pg.demo.encoder.DemoDataUnavailable` without ``arch``, and
    :class:`NoDataError` if a region has no embedding in a calibration window
    (which the shipped data always has).
    """
    check_range(start, end)
    encoded = {region: encode(load_market(region), start, end) for region in DEMO_REGIONS}
    for region, embeddings in encoded.items():
        days = [day for day, _ in embeddings]
        for label, window in sorted(DEMO_WINDOWS.items()):
            if not any(window.start_date <= day <= window.end_date for day in days):
                raise NoDataError(
                    f"the demo data has no embedding for region {region!r} in the "
                    f"{label} window {window.start_date}..{window.end_date}"
                )
    return encoded


def load_region(
    conn: Connection,
    region: str,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    *,
    embeddings: Embeddings | None = None,
) -> int:
    """Replace the region's demo rows with freshly encoded ones; returns the row count.

    The delete and the load are one transaction (a savepoint inside the
    caller's transaction, if there is one). ``embeddings`` are rows
    :func:`encode_regions` already made; without them the region is encoded
    here for ``start``/``end``.
    """
    if embeddings is None:
        embeddings = encode(load_market(region), start, end)
    metadata = json.dumps({"source": DEMO_SOURCE, "encoder": DEMO_ENCODER})
    with translated_errors(), conn.transaction(), conn.cursor() as cur:
        delete = qualified(
            conn,
            "DELETE FROM {schema}.regimes"
            " WHERE region OPERATOR(pg_catalog.=) %s"
            "   AND (metadata OPERATOR(pg_catalog.->>) 'source') OPERATOR(pg_catalog.=) %s",
        )
        cur.execute(delete, (region, DEMO_SOURCE))
        copy_in = qualified(
            conn,
            "COPY {schema}.regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, metadata) FROM STDIN",
        )
        with cur.copy(copy_in) as copy:
            for as_of_date, vector in embeddings:
                copy.write_row(
                    (
                        demo_record_id(region, as_of_date),
                        as_of_date,
                        region,
                        UNCLASSIFIED,
                        vector.astype("<f4").tobytes(),
                        0.0,
                        metadata,
                    )
                )
    log.info("loaded %d %s rows", len(embeddings), region)
    return len(embeddings)


@dataclass(frozen=True)
class DemoRegionResult:
    """What the demo computed for one region."""

    region: str
    rows: int
    document: PrototypeDocument
    path: Path

    @property
    def centre_distance(self) -> float:
        """L2 distance between the CRISIS and NEUTRAL centres (float64)."""
        by_label = self.document.by_label()
        crisis = by_label[RegimeLabel.CRISIS.value].center.astype(np.float64)
        neutral = by_label[RegimeLabel.NEUTRAL.value].center.astype(np.float64)
        return float(np.linalg.norm(crisis - neutral))


def run_demo(
    conn: Connection,
    output_dir: Path,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    *,
    encoded: dict[str, Embeddings] | None = None,
) -> list[DemoRegionResult]:
    """Load both demo regions, calibrate, write ``regime_prototypes_<REGION>.json``.

    The range is checked and both regions are encoded first (or ``encoded``,
    from :func:`encode_regions` on the same range, is used), before anything
    is written. Then one transaction replaces the demo rows of every region,
    computes every document and writes the files: an error anywhere in it
    rolls the rows of both regions back to what they were. The files are
    written just before the commit (:func:`write_documents`), so a file that
    cannot be written rolls the rows back too.
    """
    if encoded is None:
        encoded = encode_regions(start, end)
    results = []
    with conn.transaction():
        for region in DEMO_REGIONS:
            rows = load_region(conn, region, embeddings=encoded[region])
            document = prototypes_document(conn, region, DEMO_WINDOWS)
            path = output_dir / f"regime_prototypes_{region}.json"
            results.append(DemoRegionResult(region, rows, document, path))
        write_documents(results)
    return results


def write_documents(results: list[DemoRegionResult]) -> None:
    """Write every result's document to its path, all or none as far as a filesystem allows.

    One call of :func:`~regime_pg.atomic.write_files_atomically`: every
    document is written whole before any is renamed into place, so a full
    disk, a missing permission or a directory in a file's place replaces no
    file; a symbolic link is written through and kept.  Raises
    :class:`RegimePgError` naming the file that could not be written.
    """
    try:
        write_files_atomically([(result.path, result.document.dumps()) for result in results])
    except OSError as exc:
        raise cannot_write(exc.filename, exc) from exc
    for result in results:
        log.info("wrote %s", result.path)


def format_table(results: list[DemoRegionResult]) -> str:
    """The short summary table the demo prints."""
    lines = [
        f"{'region':<8} {'label':<8} {'window':<22} {'n_dates':>7} {'l2_norm':>9} "
        f"{'dispersion':>10}"
    ]
    for result in results:
        for prototype in result.document.prototypes:
            assert prototype.window is not None
            window = f"{prototype.window.start_date}..{prototype.window.end_date}"
            lines.append(
                f"{result.region:<8} {prototype.label!s:<8} {window:<22} "
                f"{prototype.n_dates:>7} {prototype.l2_norm:>9.4f} {prototype.dispersion:>10.4f}"
            )
        lines.append(
            f"{result.region:<8} distance between CRISIS and NEUTRAL centres: "
            f"{result.centre_distance:.4f}"
        )
    return "\n".join(lines) + "\n"
