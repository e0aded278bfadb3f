"""Regimes over time: classify a date range with a stored set, write CSV, draw a plot.

The rows come from ``classify_regimes`` in SQL (one per date with a usable
stored embedding); the plot (PNG, SVG or PDF, from the file's suffix) shows
the distance to each prototype over time, the label as a coloured band, and
the set's calibration windows.

>>> from regime_pg.timeline import TimelineRow, csv_text
>>> row = TimelineRow(datetime.date(2020, 3, 16), "CRISIS", "CRISIS", 0.97,
...                   {"CRISIS": 8.5, "NEUTRAL": 12.25})
>>> print(csv_text([row]), end="")
as_of_date,label,raw_label,confidence,distance_CRISIS,distance_NEUTRAL
2020-03-16,CRISIS,CRISIS,0.97,8.5,12.25
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regime_pg.atomic import write_atomically
from regime_pg.connection import Connection, translated_errors
from regime_pg.errors import InvalidInputError, RegimePgError
from regime_pg.installation import qualified
from regime_pg.prototypes import DateLike, DateWindow, as_date

#: Band colours for the engine's labels; other labels get matplotlib's cycle.
LABEL_COLOURS = {
    "CRISIS": "#d62728",
    "RISK_OFF": "#ff7f0e",
    "CARRY": "#2ca02c",
    "NEUTRAL": "#1f77b4",
}

#: The plot formats, by file suffix (matplotlib draws others too; these are the useful ones).
PLOT_FORMATS = ("png", "svg", "pdf")


@dataclass(frozen=True)
class TimelineRow:
    """One classified date."""

    as_of_date: datetime.date
    label: str
    raw_label: str
    confidence: float
    distances: Mapping[str, float]


def classify_history(
    conn: Connection,
    set_name: str,
    start: DateLike,
    end: DateLike,
    min_duration: int = 1,
) -> list[TimelineRow]:
    """Every date of the set's region in [start, end], classified in SQL (``classify_regimes``).

    ``start`` and ``end`` are read with ``as_date`` (a datetime is its date part).
    """
    first, last = as_date(start, "start_date"), as_date(end, "end_date")
    with translated_errors():
        statement = qualified(
            conn,
            "SELECT c.as_of_date, c.label, c.raw_label, c.confidence, c.distances"
            "  FROM {schema}.regime_prototype_set(%s) AS s,"
            "       LATERAL {schema}.classify_regimes(s.region, %s, %s, s.name, %s) AS c"
            " ORDER BY c.as_of_date",
        )
        rows: list[tuple[Any, ...]] = conn.execute(
            statement, (set_name, first, last, min_duration)
        ).fetchall()
    return [
        TimelineRow(day, label, raw, float(confidence), dict(distances))
        for day, label, raw, confidence, distances in rows
    ]


def csv_text(rows: Sequence[TimelineRow], labels: Sequence[str] | None = None) -> str:
    """The rows as CSV: date, label, raw label, confidence, one distance column per label.

    ``labels`` names the distance columns (default: those of the rows), so an
    empty range still gets the full header.
    """
    labels = sorted(labels if labels is not None else {k for row in rows for k in row.distances})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["as_of_date", "label", "raw_label", "confidence", *(f"distance_{k}" for k in labels)]
    )
    for row in rows:
        writer.writerow(
            [
                row.as_of_date.isoformat(),
                row.label,
                row.raw_label,
                repr(row.confidence),
                *(repr(row.distances[k]) for k in labels),
            ]
        )
    return out.getvalue()


def label_runs(rows: Sequence[TimelineRow]) -> list[tuple[str, datetime.date, datetime.date]]:
    """Consecutive runs of one label: (label, first date, last date)."""
    runs: list[tuple[str, datetime.date, datetime.date]] = []
    for row in rows:
        if runs and runs[-1][0] == row.label:
            runs[-1] = (row.label, runs[-1][1], row.as_of_date)
        else:
            runs.append((row.label, row.as_of_date, row.as_of_date))
    return runs


def require_matplotlib() -> None:
    """Select the Agg backend, or say how to install matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise RegimePgError(
            "the timeline plot needs matplotlib: pip install 'regime-pg[plot]'"
        ) from None
    matplotlib.use("Agg")


def plot_format(path: Path, what: str = "plot_timeline") -> str:
    """The format to draw ``path`` in, from its suffix: one of ``PLOT_FORMATS``.

    Any other suffix raises ``InvalidInputError``, the one message for it:
    ``what`` names who takes the path (the CLI says ``--output``).

    >>> plot_format(Path("timeline.SVG"))
    'svg'
    >>> plot_format(Path("timeline.jpg"), "--output")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    regime_pg.errors.InvalidInputError: --output takes a file ending in .png, .svg or .pdf ...
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise InvalidInputError(
            f"{what} takes a file ending in .png, .svg or .pdf (the plot's format), "
            f"got {str(path)!r}"
        )
    return suffix


def plot_timeline(
    rows: Sequence[TimelineRow],
    windows: Mapping[str, DateWindow],
    path: Path,
    title: str,
) -> None:
    """Draw the timeline into ``path``, whole or not at all; its suffix picks the format."""
    image = render_timeline(rows, windows, title, plot_format(path))
    write_atomically(path, image)


def render_timeline(
    rows: Sequence[TimelineRow],
    windows: Mapping[str, DateWindow],
    title: str,
    image_format: str = "png",
) -> bytes:
    """The timeline drawn in ``image_format``: distances over time, label band, windows."""
    if not rows:
        raise RegimePgError("nothing to plot: no classified dates in the range")
    require_matplotlib()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = sorted({label for row in rows for label in row.distances})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {k: LABEL_COLOURS.get(k, cycle[i % len(cycle)]) for i, k in enumerate(labels)}
    dates = [row.as_of_date for row in rows]

    fig, (ax, band) = plt.subplots(
        2, 1, figsize=(12, 5.5), sharex=True, gridspec_kw={"height_ratios": [5, 1]}
    )
    for label in labels:
        ax.plot(
            dates,
            [row.distances[label] for row in rows],
            lw=0.8,
            color=colours[label],
            label=f"distance to {label}",
        )
    for label, window in sorted(windows.items()):
        ax.axvspan(
            window.start_date, window.end_date, color=colours.get(label, "grey"), alpha=0.15, lw=0
        )
        ax.annotate(
            f"{label} window",
            (window.start_date, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -12),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_ylabel("L2 distance")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    # each run's band reaches the next run's first date: no white gap over weekends
    runs = label_runs(rows)
    ends = [first for _, first, _ in runs[1:]] + [runs[-1][2] + datetime.timedelta(days=1)]
    for (label, first, _), end in zip(runs, ends, strict=True):
        band.axvspan(first, end, color=colours[label], lw=0)
    band.set_yticks([])
    band.set_ylabel("label")
    band.legend(
        handles=[Patch(color=colours[k], label=k) for k in labels],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35),
        ncol=len(labels),
        fontsize=8,
    )
    fig.tight_layout()
    image = io.BytesIO()
    try:
        fig.savefig(image, format=image_format, dpi=110)
    finally:
        plt.close(fig)
    return image.getvalue()
