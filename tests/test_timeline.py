"""``regime-pg timeline``: the PNG is real and non-trivial, the CSV is classify_regimes.

One database per module and server holds synthetic engine rows for region US
(three regimes, calibrated on 2018's first three quarters, then runs of random
length) and two saved sets; the tests only read it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from regime_pg.connection import connect
from regime_pg.errors import InvalidInputError
from regime_pg.sets import save_set
from regime_pg.timeline import LABEL_COLOURS, classify_history, plot_format, plot_timeline
from tests.cli_support import Result, assert_one_error, cli, isolated_cli  # noqa: F401
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384
LABELS = ["CRISIS", "NEUTRAL", "RISK_OFF"]
WINDOWS = {
    "NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-03-31"},
    "CRISIS": {"start_date": "2018-04-01", "end_date": "2018-06-30"},
    "RISK_OFF": {"start_date": "2018-07-01", "end_date": "2018-09-30"},
}
START, END = "2018-01-01", "2019-12-31"
#: figsize (12, 5.5) inches at 110 dpi, as plot_timeline draws it
PNG_SIZE = (1320, 605)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Timeline:
    dsn: str
    #: dates with a newer NULL row: no usable embedding, so no CSV row
    hidden: list[dt.date]


@pytest.fixture(scope="module")
def timeline_db(pg_server: Server, migrated_template: str) -> Iterator[Timeline]:
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    rng = np.random.default_rng(1999)
    dates = business_days(dt.date(2018, 1, 1), 2 * 261)
    regime = []
    for day in dates:
        if day < dt.date(2018, 10, 1):
            regime.append(1 if day.month <= 3 else 0 if day.month <= 6 else 2)
    while len(regime) < len(dates):  # then runs of 1 to 25 dates of random regimes
        regime += [int(rng.integers(0, 3))] * int(rng.integers(1, 26))
    x = rng.standard_normal((len(dates), DIM))
    for i, k in enumerate(regime[: len(dates)]):
        x[i, 8 * k : 8 * k + 8] += 1.5
    hidden = [dates[300], dates[301], dates[450]]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            insert_rows(conn, "US", dates, x.astype("<f4"))
            insert_rows(
                conn,
                "US",
                hidden,
                [None] * len(hidden),
                created_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            )
            insert_rows(conn, "EU", dates[:50], x[:50].astype("<f4"))
        with connect(dsn) as conn:
            labelled = {k: (w["start_date"], w["end_date"]) for k, w in WINDOWS.items()}
            save_set(conn, "tl-fitted", "US", labelled, temperature=None)
            save_set(conn, "tl-t1", "US", labelled, temperature=1.0)
            save_set(conn, "eu-v1", "EU", {"NEUTRAL": ("2018-01-01", "2018-02-28")})
        yield Timeline(dsn, hidden)
    finally:
        drop_database(pg_server, name)


def classify_regimes(dsn: str, set_name: str, min_duration: int = 1) -> list[tuple[Any, ...]]:
    """The SQL rows, read with plain psycopg (no regime-pg code)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT as_of_date, label, raw_label, confidence, distances"
            "  FROM classify_regimes('US', %s, %s, %s, %s)",
            (START, END, set_name, min_duration),
        ).fetchall()


def assert_csv_equals_sql(text: str, rows: list[tuple[Any, ...]]) -> None:
    """Same dates, labels, raw labels; every float's text reads back to the SQL value."""
    records = list(csv.reader(io.StringIO(text)))
    assert text.endswith("\n") and "\r" not in text
    assert records[0] == [
        "as_of_date",
        "label",
        "raw_label",
        "confidence",
        *(f"distance_{k}" for k in LABELS),
    ]
    assert len(records) == len(rows) + 1
    for record, (day, label, raw, confidence, distances) in zip(records[1:], rows, strict=True):
        assert record[:3] == [day.isoformat(), label, raw]
        values = [confidence, *(distances[k] for k in LABELS)]
        assert [float(v) for v in record[3:]] == values
        assert record[3:] == [repr(v) for v in values]  # the shortest exact text


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


# --------------------------------------------------------------------------- PNG and CSV


def test_png_and_csv(
    capsys: pytest.CaptureFixture[str], timeline_db: Timeline, tmp_path: Path
) -> None:
    png, table = tmp_path / "timeline.png", tmp_path / "timeline.csv"
    result = cli(
        capsys,
        "timeline",
        "--set",
        "tl-fitted",
        "--start",
        START,
        "--end",
        END,
        "--output",
        png,
        "--csv",
        table,
        "--dsn",
        timeline_db.dsn,
    )
    rows = classify_regimes(timeline_db.dsn, "tl-fitted")
    assert result == Result(
        0,
        "",
        f"regime-pg: classified {len(rows)} dates\n"
        f"regime-pg: wrote {table}\nregime-pg: wrote {png}\n",
    )

    # The CSV: classify_regimes, one row per usable date, hidden dates left out.
    assert_csv_equals_sql(table.read_text(encoding="utf-8"), rows)
    dates = [row[0] for row in rows]
    assert len(dates) == 2 * 261 - len(timeline_db.hidden)
    assert not set(timeline_db.hidden) & set(dates)
    assert {row[1] for row in rows} == set(LABELS)
    assert all(row[1] == row[2] for row in rows)
    assert min(row[3] for row in rows) < 0.9  # the fitted temperature is informative

    # The PNG: real, of the drawn size, and not blank.
    data = png.read_bytes()
    assert png_size(data) == PNG_SIZE
    assert len(data) > 40_000
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
    rgb = np.round(pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = {tuple(int(c) for c in p) for p in np.unique(rgb, axis=0)}
    assert len(colours) > 100
    # Each label's band colour covers a good number of pixels.
    for label in LABELS:
        wanted = np.array(hex_rgb(LABEL_COLOURS[label]), dtype=np.uint8)
        assert int(np.all(rgb == wanted, axis=1).sum()) > 500, label
    white = np.all(rgb == 255, axis=1).mean()
    assert 0.2 < white < 0.95
    # The label band: along its middle row, labels follow each other with no white gap
    # (runs end where the next one starts, weekends included).
    image = rgb.reshape(PNG_SIZE[1], PNG_SIZE[0], 3)
    band = np.zeros(image.shape[:2], dtype=bool)
    for label in LABELS:
        band |= np.all(image == np.array(hex_rgb(LABEL_COLOURS[label]), np.uint8), axis=2)
    rows_in_band = np.flatnonzero(band.sum(axis=1) > PNG_SIZE[0] // 2)
    assert len(rows_in_band) > 30
    middle = image[rows_in_band[len(rows_in_band) // 2]]
    columns = np.flatnonzero(band[rows_in_band[len(rows_in_band) // 2]])
    segment = middle[columns[0] : columns[-1] + 1]
    assert not np.any(np.all(segment > 240, axis=1))


def test_min_duration(
    capsys: pytest.CaptureFixture[str], timeline_db: Timeline, tmp_path: Path
) -> None:
    table = tmp_path / "held.csv"
    result = cli(
        capsys,
        "timeline",
        "--set",
        "tl-t1",
        "--start",
        START,
        "--end",
        END,
        "--csv",
        table,
        "--min-duration",
        "5",
        "--dsn",
        timeline_db.dsn,
    )
    assert result.code == 0 and result.out == ""
    rows = classify_regimes(timeline_db.dsn, "tl-t1", 5)
    assert_csv_equals_sql(table.read_text(encoding="utf-8"), rows)
    absorbed = sum(row[1] != row[2] for row in rows)
    assert absorbed > 0
    # Same raw labels, confidences and distances as without min_duration.
    plain = classify_regimes(timeline_db.dsn, "tl-t1")
    assert [row[2:] for row in rows] == [row[2:] for row in plain]
    assert [row[1] for row in plain] == [row[2] for row in plain]
    # The PNG draws the held labels; it is as large as the plain one.
    png = tmp_path / "held.png"
    assert (
        cli(
            capsys,
            "timeline",
            "--set",
            "tl-t1",
            "--start",
            START,
            "--end",
            END,
            "--output",
            png,
            "--min-duration",
            "5",
            "--dsn",
            timeline_db.dsn,
        ).code
        == 0
    )
    assert png_size(png.read_bytes()) == PNG_SIZE


def test_csv_to_stdout(
    capsys: pytest.CaptureFixture[str], timeline_db: Timeline, tmp_path: Path
) -> None:
    result = cli(
        capsys,
        "timeline",
        "--set",
        "tl-fitted",
        "--start",
        "2019-01-01",
        "--end",
        "2019-03-31",
        "--csv",
        "-",
        "--dsn",
        timeline_db.dsn,
    )
    assert result.code == 0
    assert result.err.splitlines()[0].startswith("regime-pg: classified ")
    with psycopg.connect(timeline_db.dsn) as conn:
        rows = conn.execute(
            "SELECT as_of_date, label, raw_label, confidence, distances"
            "  FROM classify_regimes('US', '2019-01-01', '2019-03-31', 'tl-fitted')"
        ).fetchall()
    assert 55 < len(rows) < 66
    assert_csv_equals_sql(result.out, rows)
    # With a PNG as well, stdout still holds only the CSV; -q silences progress.
    png = tmp_path / "q1.png"
    both = cli(
        capsys,
        "timeline",
        "-q",
        "--set",
        "tl-fitted",
        "--start",
        "2019-01-01",
        "--end",
        "2019-03-31",
        "--csv",
        "-",
        "--output",
        png,
        "--dsn",
        timeline_db.dsn,
    )
    assert both == Result(0, result.out, "")
    assert png_size(png.read_bytes()) == PNG_SIZE


def test_classify_history_is_classify_regimes(timeline_db: Timeline) -> None:
    with connect(timeline_db.dsn) as conn:
        history = classify_history(conn, "tl-fitted", dt.date(2018, 1, 1), dt.date(2019, 12, 31), 3)
    rows = classify_regimes(timeline_db.dsn, "tl-fitted", 3)
    assert [
        (h.as_of_date, h.label, h.raw_label, h.confidence, dict(h.distances)) for h in history
    ] == rows


def test_classify_history_takes_the_calendar_dates_of_datetimes(timeline_db: Timeline) -> None:
    with connect(timeline_db.dsn) as conn:
        by_date = classify_history(conn, "tl-t1", dt.date(2018, 3, 1), dt.date(2018, 3, 31))
        by_datetime = classify_history(
            conn, "tl-t1", dt.datetime(2018, 3, 1, 16, 0), np.datetime64("2018-03-31T23:59")
        )
    assert [h.as_of_date for h in by_date] == business_days(dt.date(2018, 3, 1), 22)
    assert by_datetime == by_date


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (
            ["--set", "tl-t1", "--start", START, "--end", END],
            2,
            "say what to write: --output PLOT and/or --csv FILE",
        ),
        (
            ["--set", "nope", "--start", START, "--end", END, "--csv", "-"],
            1,
            "unknown prototype set 'nope'",
        ),
        (
            ["--set", "tl-t1", "--start", "2018-13-01", "--end", END, "--csv", "-"],
            2,
            "argument --start",
        ),
        (
            ["--set", "tl-t1", "--start", START, "--end", "31.12.2019", "--csv", "-"],
            2,
            "argument --end",
        ),
        (
            ["--set", "tl-t1", "--start", "2019-02-30", "--end", END, "--csv", "-"],
            2,
            "not a calendar date",
        ),
        (
            ["--set", "tl-t1", "--start", END, "--end", START, "--csv", "-"],
            2,
            f"--end {START} is before --start {END}",
        ),
        (
            ["--set", "tl-t1", "--start", START, "--end", END, "--csv", "-", "--min-duration", "0"],
            2,
            "argument --min-duration: must be at least 1, got 0",
        ),
        (
            [
                "--set",
                "tl-t1",
                "--start",
                START,
                "--end",
                END,
                "--csv",
                "-",
                "--min-duration",
                "two",
            ],
            2,
            "argument --min-duration",
        ),
        (["--start", START, "--end", END, "--csv", "-"], 2, "required: --set"),
        (["--set", "tl-t1", "--end", END, "--csv", "-"], 2, "required: --start"),
        (
            ["--set", "eu-v1", "--start", "2030-01-01", "--end", "2030-12-31", "--output", "x.png"],
            1,
            "nothing to plot",
        ),
    ],
    ids=[
        "no-output",
        "unknown-set",
        "bad-month",
        "bad-format",
        "bad-day",
        "reversed",
        "min-duration-0",
        "min-duration-text",
        "no-set",
        "no-start",
        "empty-range",
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
    timeline_db: Timeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
    fragment: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_error(cli(capsys, "timeline", *argv, "--dsn", timeline_db.dsn), code, fragment)
    assert not (tmp_path / "x.png").exists()


def test_unwritable_output_is_one_error_line(
    capsys: pytest.CaptureFixture[str], timeline_db: Timeline, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "x.csv"
    result = cli(
        capsys,
        "timeline",
        "-q",
        "--set",
        "tl-t1",
        "--start",
        START,
        "--end",
        END,
        "--csv",
        missing,
        "--dsn",
        timeline_db.dsn,
    )
    assert_one_error(result, 1, f"cannot write {missing}")


def test_empty_range_with_a_png_writes_nothing(
    capsys: pytest.CaptureFixture[str], timeline_db: Timeline, tmp_path: Path
) -> None:
    png, table = tmp_path / "empty.png", tmp_path / "empty.csv"
    result = cli(
        capsys,
        "timeline",
        "--set",
        "tl-t1",
        "--start",
        "2030-01-01",
        "--end",
        "2030-12-31",
        "--output",
        png,
        "--csv",
        table,
        "--dsn",
        timeline_db.dsn,
    )
    assert_one_error(result, 1, "nothing to plot: no classified dates in the range")
    assert not png.exists() and not table.exists()


# --------------------------------------------------------------------------- plot formats, paths


@pytest.mark.parametrize(
    ("name", "magic"),
    [("tl.svg", b"<?xml"), ("tl.pdf", b"%PDF-"), ("tl.PNG", PNG_MAGIC)],
)
def test_the_suffix_picks_the_plot_format(
    capsys: pytest.CaptureFixture[str],
    timeline_db: Timeline,
    tmp_path: Path,
    name: str,
    magic: bytes,
) -> None:
    plot = tmp_path / name
    argv = ["timeline", "--set", "tl-t1", "--start", START, "--end", END, "--output", plot]
    result = cli(capsys, *argv, "--dsn", timeline_db.dsn)
    assert result.code == 0 and result.out == ""
    assert result.err.endswith(f"regime-pg: wrote {plot}\n")
    data = plot.read_bytes()
    assert data.startswith(magic) and len(data) > 10_000
    if magic == PNG_MAGIC:
        assert png_size(data) == PNG_SIZE
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


@pytest.mark.parametrize("name", ["tl.txt", "tl_noext", "tl.jpg", "tl.png.bak", "-"])
def test_other_suffixes_are_refused_before_any_work(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["timeline", "--set", "tl-t1", "--start", START, "--end", END, "--csv", "tl.csv"]
    # a DSN that cannot connect: exit 2, not 1, shows nothing was tried
    result = cli(capsys, *argv, "--output", name, "--dsn", f"host={tmp_path / 'none'} dbname=x")
    assert result == Result(
        2,
        "",
        "regime-pg: error: --output takes a file ending in .png, .svg or .pdf "
        f"(the plot's format), got {name!r}\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_the_library_refuses_other_suffixes_with_the_same_message(tmp_path: Path) -> None:
    """One message, naming who takes the path: plot_timeline, or the CLI's --output."""
    expected = (
        "{} takes a file ending in .png, .svg or .pdf (the plot's format), got '{}'"
    )
    plot = tmp_path / "tl.jpg"
    with pytest.raises(InvalidInputError) as caught:
        plot_timeline([], {}, plot, "title")
    assert str(caught.value) == expected.format("plot_timeline", plot)
    with pytest.raises(InvalidInputError) as caught:
        plot_format(Path("tl.txt"), "--output")
    assert str(caught.value) == expected.format("--output", "tl.txt")
    assert [plot_format(Path(name)) for name in ("a.png", "b.SVG", "c.Pdf")] == [
        "png", "svg", "pdf"
    ]
    assert list(tmp_path.iterdir()) == []


def test_every_output_directory_is_checked_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], timeline_db: Timeline, tmp_path: Path
) -> None:
    a_file, a_directory = tmp_path / "a-file", tmp_path / "a-directory.png"
    a_file.write_text("x")
    a_directory.mkdir()
    csv_ok, png_ok, missing = tmp_path / "ok.csv", tmp_path / "ok.png", tmp_path / "missing"
    cases = [
        (["--csv", csv_ok, "--output", missing / "tl.png"], missing / "tl.png", "No such file"),
        (["--csv", missing / "tl.csv", "--output", png_ok], missing / "tl.csv", "No such file"),
        (["--csv", csv_ok, "--output", a_file / "tl.png"], a_file / "tl.png", "Not a directory"),
        (["--csv", csv_ok, "--output", a_directory], a_directory, "Is a directory"),
        (["--csv", a_directory, "--output", png_ok], a_directory, "Is a directory"),
    ]
    for flags, path, reason in cases:
        argv = ["timeline", "--set", "tl-t1", "--start", START, "--end", END, *flags]
        result = cli(capsys, *argv, "--dsn", timeline_db.dsn)
        message = f"regime-pg: error: cannot write {path}: {reason}"
        assert result.code == 1 and result.out == "" and result.err.startswith(message), result
        assert result.err.count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory.png", "a-file"]
        assert list(a_directory.iterdir()) == []


def test_help_names_the_plot_formats(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "timeline", "--help")
    assert result.code == 0 and "--output PLOT" in result.out
    assert "its suffix picks the format: .png, .svg or .pdf" in " ".join(result.out.split())
