"""The demo job: real index data in, prototype documents out.

Fills ``regimes`` for US (S&P 500) and US_TECH (NASDAQ Composite) with the
demo encoder's embeddings, written the way the Regime Engine writes them
(float32 BYTEA only, so the sync trigger converts every row), then
calibrates NEUTRAL on 2017 and CRISIS on 2008-09-15..2009-03-09 in the
database.

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

from regime_pg.client import prototypes_document
from regime_pg.connection import Connection, translated_errors
from regime_pg.demo.encoder import encode, load_market
from regime_pg.document import PrototypeDocument, save_document
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


def load_region(
    conn: Connection,
    region: str,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
) -> int:
    """Replace the region's demo rows with freshly encoded ones; returns the row count."""
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
) -> list[DemoRegionResult]:
    """Load both demo regions, calibrate, write ``regime_prototypes_<REGION>.json``."""
    results = []
    for region in DEMO_REGIONS:
        rows = load_region(conn, region, start, end)
        document = prototypes_document(conn, region, DEMO_WINDOWS)
        path = output_dir / f"regime_prototypes_{region}.json"
        save_document(document, path)
        log.info("wrote %s", path)
        results.append(DemoRegionResult(region, rows, document, path))
    return results


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
