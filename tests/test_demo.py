"""``regime-pg demo`` end to end on the real arch data, against throwaway databases.

Per PostgreSQL major the module runs the demo twice on one fresh, empty
database (a reduced date range keeps it quick):

1. as a real process, the console script, without ``--output-dir`` (files go to
   the working directory), on ``FIRST_RANGE``;
2. after engine rows that are not the demo's were added, in-process with
   ``--quiet`` and ``--output-dir`` on ``SECOND_RANGE``, inside the first.

Every test then checks the database and files the two runs left behind; the
failure tests check that a rejected or failed run leaves every row of
``regimes`` as it was (a checksum of all columns, ``ctid`` and ``xmin``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from regime_pg.cli import main
from regime_pg.client import prototypes_document
from regime_pg.connection import connect, vector_to_numpy
from regime_pg.demo.encoder import encode, load_market
from regime_pg.demo.pipeline import DEMO_WINDOWS, DemoRegionResult, write_documents
from regime_pg.document import PrototypeDocument, load_document
from regime_pg.errors import RegimePgError
from regime_pg.migrate import current_revision, head_revision
from regime_pg.prototypes import DateWindow, RegimePrototype
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import insert_rows

DIM = 384
REGIONS = ("US", "US_TECH")
WINDOWS = {
    "CRISIS": DateWindow(dt.date(2008, 9, 15), dt.date(2009, 3, 9)),
    "NEUTRAL": DateWindow(dt.date(2017, 1, 1), dt.date(2017, 12, 31)),
}
FIRST_RANGE = (dt.date(2007, 6, 1), dt.date(2018, 3, 29))
SECOND_RANGE = (dt.date(2008, 1, 1), dt.date(2017, 12, 31))
DEMO_SOURCE = "regime-pg demo"
DEMO_METADATA = {"source": DEMO_SOURCE, "encoder": "regime-pg-demo-ohlcv-v1"}
CONSOLE_SCRIPT = Path(sys.executable).parent / "regime-pg"
SUBPROCESS_TIMEOUT_S = 600  # a hang guard only, never asserted as a duration
TABLE_HEADER = "region   label    window                 n_dates   l2_norm dispersion"
NO_ARCH = (
    "import sys\n"
    "sys.modules['arch'] = None  # import arch now fails, as if it were not installed\n"
    "from regime_pg.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


@dataclass(frozen=True)
class DemoRuns:
    dsn: str
    first_dir: Path
    first: subprocess.CompletedProcess[str]
    second_dir: Path
    second_out: str
    second_err: str
    second_code: int
    foreign_before: list[tuple[object, ...]]
    foreign_ids: list[str]


def _foreign_rows(dsn: str, ids: list[str]) -> list[tuple[object, ...]]:
    """Every column of the given rows, the vector as text."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT regime_record_id, as_of_date, region, regime_label, regime_embedding,"
            " embedding_ref, confidence, metadata, created_at, embedding_vector::text"
            " FROM regimes WHERE regime_record_id = ANY(%s) ORDER BY regime_record_id",
            (ids,),
        ).fetchall()


def _insert_foreign_rows(dsn: str) -> list[str]:
    """Rows the demo does not own: an engine row of US, rows of other regions."""
    rng = np.random.default_rng(3)
    old = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = insert_rows(conn, "US", [dt.date(1998, 12, 31)],
                          [rng.standard_normal(DIM).astype("<f4")], created_at=old)
        ids += insert_rows(conn, "EU", [dt.date(2017, 3, 1), dt.date(2017, 3, 2)],
                           rng.standard_normal((2, DIM)).astype("<f4"), created_at=old)
        # a US row inside the reloaded range that someone else wrote (other source)
        conn.execute(
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, metadata, created_at)"
            " VALUES ('engine-US-2012-06-01', '2012-06-01', 'US', 'NEUTRAL', %s, 0.9,"
            " '{\"source\": \"regime-engine\"}', %s)",
            (rng.standard_normal(DIM).astype("<f4").tobytes(), old),
        )
        # labelled as the demo's, but of a region the demo does not load
        conn.execute(
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence, metadata, created_at)"
            " VALUES ('demo-JP-2017-03-01', '2017-03-01', 'JP', 'UNCLASSIFIED', %s, 0,"
            " %s, %s)",
            (rng.standard_normal(DIM).astype("<f4").tobytes(), json.dumps(DEMO_METADATA), old),
        )
    return [*ids, "engine-US-2012-06-01", "demo-JP-2017-03-01"]


@pytest.fixture(scope="module")
def runs(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRuns]:
    name = create_database(pg_server)  # empty: the demo migrates it
    dsn = database_dsn(pg_server.admin_dsn, name)
    base = tmp_path_factory.mktemp(f"demo-pg{pg_server.major}")
    logger = logging.getLogger("regime_pg")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REGIME_PG_DATA_DIR", str(base / "default-embedded-dir-guard"))
            mp.delenv("REGIME_PG_DSN", raising=False)
            first_dir = base / "first"
            first_dir.mkdir()
            first = subprocess.run(
                [str(CONSOLE_SCRIPT), "demo", "--dsn", dsn,
                 "--start", FIRST_RANGE[0].isoformat(), "--end", FIRST_RANGE[1].isoformat()],
                cwd=first_dir, capture_output=True, text=True, check=False,
                timeout=SUBPROCESS_TIMEOUT_S,
            )
            foreign_ids = _insert_foreign_rows(dsn) if first.returncode == 0 else []
            foreign_before = _foreign_rows(dsn, foreign_ids)
            second_dir = base / "second" / "nested"  # created by the demo
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["demo", "--dsn", dsn, "--output-dir", str(second_dir),
                             "--start", SECOND_RANGE[0].isoformat(),
                             "--end", SECOND_RANGE[1].isoformat(), "--quiet"])
            assert not (base / "default-embedded-dir-guard").exists()
        yield DemoRuns(dsn, first_dir, first, second_dir, out.getvalue(), err.getvalue(), code,
                       foreign_before, foreign_ids)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
        drop_database(pg_server, name)


@pytest.fixture(autouse=True)
def _no_default_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    guard = tmp_path / "default-embedded-dir-guard"
    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(guard))
    monkeypatch.delenv("REGIME_PG_DSN", raising=False)
    logger = logging.getLogger("regime_pg")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    assert not guard.exists(), "a command fell back to the default embedded server"


def _encoded(region: str, days: tuple[dt.date, dt.date]) -> list[tuple[dt.date, np.ndarray]]:
    return encode(load_market(region), days[0], days[1])


def _trading_days(region: str, window: DateWindow) -> int:
    index = load_market(region).index
    start, end = str(window.start_date), str(window.end_date)
    return int(((index >= start) & (index <= end)).sum())


def _demo_fingerprint(dsn: str) -> tuple[object, ...]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(regime_record_id || encode(regime_embedding, 'hex')"
            " || created_at::text, ',' ORDER BY regime_record_id))"
            " FROM regimes WHERE metadata ->> 'source' = %s",
            (DEMO_SOURCE,),
        ).fetchone()
    assert row is not None
    return tuple(row)


# --------------------------------------------------------------------------- the runs


def test_both_runs_succeed_and_report_progress_only_when_asked(runs: DemoRuns) -> None:
    assert runs.first.returncode == 0, runs.first.stderr
    assert runs.second_code == 0 and runs.second_err == ""
    first_count = len(_encoded("US", FIRST_RANGE))
    lines = runs.first.stderr.splitlines()
    assert lines[0] == "regime-pg: migrating"
    assert all(line.startswith("regime-pg: ") for line in lines)
    assert not any(line.startswith("regime-pg: error") for line in lines)
    # both regions are loaded and calibrated in one transaction, then the files written
    assert lines[-4:] == [
        f"regime-pg: loaded {first_count} US rows",
        f"regime-pg: loaded {len(_encoded('US_TECH', FIRST_RANGE))} US_TECH rows",
        "regime-pg: wrote regime_prototypes_US.json",
        "regime-pg: wrote regime_prototypes_US_TECH.json",
    ]
    assert current_revision(runs.dsn) == head_revision()


def test_files_equal_prototypes_document_byte_for_byte(runs: DemoRuns) -> None:
    assert DEMO_WINDOWS == WINDOWS
    assert sorted(p.name for p in runs.first_dir.iterdir()) == [
        "regime_prototypes_US.json", "regime_prototypes_US_TECH.json"
    ]
    assert sorted(p.name for p in runs.second_dir.iterdir()) == [
        "regime_prototypes_US.json", "regime_prototypes_US_TECH.json"
    ]
    with connect(runs.dsn) as conn:
        for region in REGIONS:
            expected = prototypes_document(conn, region, WINDOWS).dumps().encode("utf-8")
            name = f"regime_prototypes_{region}.json"
            second = (runs.second_dir / name).read_bytes()
            assert second == expected
            # the windows lie inside both ranges: the first run wrote the same bytes
            assert (runs.first_dir / name).read_bytes() == expected
            assert second.endswith(b"}\n") and not second.endswith(b"\n\n")
            document = json.loads(second)
            assert document["region"] == region and document["embedding_dim"] == DIM
            assert list(document["prototypes"]) == ["CRISIS", "NEUTRAL"]
    us = (runs.second_dir / "regime_prototypes_US.json").read_bytes()
    assert us != (runs.second_dir / "regime_prototypes_US_TECH.json").read_bytes()


def test_compute_on_the_demo_data_gives_the_demo_file(
    runs: DemoRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["compute", "--region", "US_TECH",
                 "--neutral-start", "2017-01-01", "--neutral-end", "2017-12-31",
                 "--crisis-start", "2008-09-15", "--crisis-end", "2009-03-09",
                 "--dsn", runs.dsn])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.encode() == (runs.second_dir / "regime_prototypes_US_TECH.json").read_bytes()


def test_printed_table(runs: DemoRuns) -> None:
    # the same table from the process and the in-process run
    assert runs.first.stdout == runs.second_out
    lines = runs.second_out.split("\n")
    assert lines[-1] == ""  # one trailing newline
    lines = lines[:-1]
    assert lines[0] == TABLE_HEADER
    assert len(lines) == 1 + 3 * len(REGIONS)
    with psycopg.connect(runs.dsn) as conn:
        for i, region in enumerate(REGIONS):
            block = lines[1 + 3 * i: 4 + 3 * i]
            document = PrototypeDocument.loads(
                (runs.second_dir / f"regime_prototypes_{region}.json").read_bytes()
            )
            by_label = document.by_label()
            for line, (label, window) in zip(block[:2], WINDOWS.items(), strict=True):
                row = conn.execute(
                    "SELECT count(DISTINCT as_of_date) FROM regimes WHERE region = %s"
                    " AND as_of_date BETWEEN %s AND %s AND embedding_vector IS NOT NULL",
                    (region, window.start_date, window.end_date),
                ).fetchone()
                assert row is not None
                n_dates = row[0]
                assert n_dates == _trading_days(region, window)
                assert n_dates == {"CRISIS": 121, "NEUTRAL": 251}[label]
                prototype = by_label[label]
                assert prototype.n_dates == n_dates
                assert line.split() == [
                    region, label, f"{window.start_date}..{window.end_date}", str(n_dates),
                    f"{prototype.l2_norm:.4f}", f"{prototype.dispersion:.4f}",
                ]
            crisis = by_label["CRISIS"].center.astype(np.float64)
            neutral = by_label["NEUTRAL"].center.astype(np.float64)
            distance = float(np.linalg.norm(crisis - neutral))
            assert distance > 1.0
            assert block[2] == (
                f"{region:<8} distance between CRISIS and NEUTRAL centres: {distance:.4f}"
            )


def test_centres_equal_numpy_mean_of_the_stored_float32_bytes(runs: DemoRuns) -> None:
    with psycopg.connect(runs.dsn) as conn:
        for region in REGIONS:
            document = PrototypeDocument.loads(
                (runs.second_dir / f"regime_prototypes_{region}.json").read_bytes()
            )
            for label, window in WINDOWS.items():
                stored = conn.execute(
                    "SELECT regime_embedding FROM regimes WHERE region = %s"
                    " AND as_of_date BETWEEN %s AND %s ORDER BY as_of_date",
                    (region, window.start_date, window.end_date),
                ).fetchall()
                rows = np.stack([np.frombuffer(r[0], dtype="<f4") for r in stored])
                assert rows.shape == (_trading_days(region, window), DIM)
                expected = rows.astype(np.float64).mean(axis=0)
                scale = np.abs(rows.astype(np.float64)).mean(axis=0)
                prototype = document.by_label()[label]
                center = prototype.center.astype(np.float64)
                assert np.all(np.abs(center - expected) <= 1e-6 * scale + 1e-30)
                # the zero padding (dims 378..383) averages to exactly 0
                assert np.all(prototype.center[378:] == 0)
                assert prototype.l2_norm == pytest.approx(np.linalg.norm(expected), rel=1e-6)
                assert prototype.n_dates == len(rows) and prototype.n_skipped == 0
                assert prototype.first_date == min(
                    d for d in load_market(region).index.date if d >= window.start_date
                )


def test_demo_rows_are_the_encoder_output_written_as_the_engine_writes(runs: DemoRuns) -> None:
    with connect(runs.dsn) as conn:  # pgvector types registered: vectors load as numpy
        for region in REGIONS:
            rows = conn.execute(
                "SELECT regime_record_id, as_of_date, regime_label, regime_embedding,"
                " embedding_vector, confidence, metadata, embedding_ref"
                " FROM regimes WHERE region = %s AND metadata ->> 'source' = %s"
                " ORDER BY as_of_date",
                (region, DEMO_SOURCE),
            ).fetchall()
            encoded = _encoded(region, SECOND_RANGE)
            assert [r[1] for r in rows] == [day for day, _ in encoded]
            for row, (day, vector) in zip(rows, encoded, strict=True):
                record_id, _, label, blob, pgvector, confidence, metadata, ref = row
                assert record_id == f"demo-{region}-{day.isoformat()}"
                assert (label, confidence, metadata, ref) == (
                    "UNCLASSIFIED", 0.0, DEMO_METADATA, None
                )
                assert bytes(blob) == vector.astype("<f4").tobytes()
                # the trigger ran: the vector is the BYTEA, bit for bit
                assert pgvector is not None
                assert vector_to_numpy(pgvector).astype("<f4").tobytes() == bytes(blob)
        row = conn.execute(
            "SELECT count(*) FROM regimes WHERE regime_embedding IS NOT NULL"
            " AND embedding_vector IS NULL"
        ).fetchone()
        assert row == (0,)


def test_second_run_replaced_its_own_rows_and_nothing_else(runs: DemoRuns) -> None:
    assert len(runs.foreign_ids) == 5
    assert _foreign_rows(runs.dsn, runs.foreign_ids) == runs.foreign_before
    with psycopg.connect(runs.dsn) as conn:
        for region in REGIONS:
            expected = len(_encoded(region, SECOND_RANGE))
            first = len(_encoded(region, FIRST_RANGE))
            assert first > expected
            row = conn.execute(
                "SELECT count(*), count(DISTINCT as_of_date), min(as_of_date), max(as_of_date)"
                " FROM regimes WHERE region = %s AND metadata ->> 'source' = %s",
                (region, DEMO_SOURCE),
            ).fetchone()
            assert row is not None
            # not doubled, not the union of both runs: exactly the second run's dates
            assert row[0] == row[1] == expected
            assert row[2] >= SECOND_RANGE[0] and row[3] <= SECOND_RANGE[1]
        totals = dict(conn.execute(
            "SELECT region, count(*) FROM regimes GROUP BY region ORDER BY region"
        ).fetchall())
    assert totals == {
        "EU": 2,
        "JP": 1,
        "US": len(_encoded("US", SECOND_RANGE)) + 2,
        "US_TECH": len(_encoded("US_TECH", SECOND_RANGE)),
    }


# --------------------------------------------------------------------------- failures


def test_demo_without_arch_is_one_error_line_and_changes_nothing(
    runs: DemoRuns, tmp_path: Path
) -> None:
    before = _demo_fingerprint(runs.dsn)
    out_dir = tmp_path / "out"
    for quiet in (["--quiet"], []):
        result = subprocess.run(
            [sys.executable, "-c", NO_ARCH, "demo", "--dsn", runs.dsn,
             "--output-dir", str(out_dir), *quiet],
            cwd=tmp_path, capture_output=True, text=True, check=False,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        error = (
            "regime-pg: error: the demo needs the optional 'arch' package: "
            "pip install 'regime-pg[demo]'\n"
        )
        if quiet:
            assert result.stderr == error
        else:
            # progress lines may come first; the error is one line, the last
            assert result.stderr.endswith(error)
            assert result.stderr.count("regime-pg: error:") == 1
            assert "Traceback" not in result.stderr
        assert not list(out_dir.glob("*.json"))
    assert _demo_fingerprint(runs.dsn) == before


def _table_checksum(dsn: str) -> tuple[object, ...]:
    """Every row of regimes, every column, with its ctid and xmin: any write changes it."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(r::text || ' ' || r.ctid::text || ' '"
            " || r.xmin::text, ',' ORDER BY r.regime_record_id)) FROM regimes AS r"
        ).fetchone()
    assert row is not None
    return tuple(row)


WINDOWS_TEXT = "CRISIS 2008-09-15..2009-03-09, NEUTRAL 2017-01-01..2017-12-31"


def _not_covered(given: str, fix: str) -> str:
    return (
        f"regime-pg: error: {given} does not cover the demo's calibration windows "
        f"({WINDOWS_TEXT}): give {fix}\n"
    )


OUT_OF_RANGE = {  # --start/--end -> the one error line
    # the user's report: US was reloaded with 2005-2010 only, then NEUTRAL-2017 failed
    ("2005-01-01", "2010-12-31"): _not_covered(
        "--start 2005-01-01 --end 2010-12-31", "--end 2017-12-31 or later"
    ),
    # no data at all: every US row was deleted, then "unknown region 'US'"
    ("2000-01-01", "2000-02-01"): _not_covered(
        "--start 2000-01-01 --end 2000-02-01", "--end 2017-12-31 or later"
    ),
    ("2017-01-01", "2017-12-31"): _not_covered(
        "--start 2017-01-01 --end 2017-12-31", "--start 2008-09-15 or earlier"
    ),
    ("2008-09-16", "2017-12-30"): _not_covered(
        "--start 2008-09-16 --end 2017-12-30",
        "--start 2008-09-15 or earlier and --end 2017-12-31 or later",
    ),
    ("2010-01-01", None): _not_covered("--start 2010-01-01", "--start 2008-09-15 or earlier"),
    (None, "2016-06-30"): _not_covered("--end 2016-06-30", "--end 2017-12-31 or later"),
    ("2017-06-01", "2017-01-01"): (
        "regime-pg: error: --end 2017-01-01 is before --start 2017-06-01\n"
    ),
}


def _range_flags(start: str | None, end: str | None) -> list[str]:
    return [*(["--start", start] if start else []), *(["--end", end] if end else [])]


def test_range_that_misses_a_window_exits_2_and_changes_nothing(
    runs: DemoRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _table_checksum(runs.dsn)
    assert before[0] != 0
    out_dir = tmp_path / "out"
    for (start, end), error in OUT_OF_RANGE.items():
        capsys.readouterr()
        code = main(["demo", "--dsn", runs.dsn, "--output-dir", str(out_dir),
                     *_range_flags(start, end)])
        out, err = capsys.readouterr()
        # checked before anything else: not even the "migrating" progress line
        assert (code, out, err) == (2, "", error), (start, end)
        assert not out_dir.exists()
        assert _table_checksum(runs.dsn) == before, (start, end)
    # the user's exact command, as a process
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "demo", "--dsn", runs.dsn, "--start", "2005-01-01",
         "--end", "2010-12-31"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == OUT_OF_RANGE[("2005-01-01", "2010-12-31")]
    assert list(tmp_path.iterdir()) == []
    assert _table_checksum(runs.dsn) == before


def test_range_at_the_window_bounds_loads_both_regions_alike(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["demo", "--dsn", db, "--output-dir", str(tmp_path), "--quiet",
                 "--start", "2008-09-15", "--end", "2017-12-31"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert [line.split()[3] for line in out.splitlines()[1:] if "distance" not in line] == [
        "121", "251", "121", "251"
    ]
    with psycopg.connect(db) as conn:
        dates = {
            region: [r[0] for r in conn.execute(
                "SELECT as_of_date FROM regimes WHERE region = %s ORDER BY as_of_date",
                (region,),
            ).fetchall()]
            for region in REGIONS
        }
    assert dates["US"] == dates["US_TECH"]
    assert dates["US"] == [day for day, _ in _encoded("US", (dt.date(2008, 9, 15),
                                                             dt.date(2017, 12, 31)))]
    assert (dates["US"][0], dates["US"][-1]) == (dt.date(2008, 9, 15), dt.date(2017, 12, 29))


def test_failure_in_the_transaction_leaves_both_regions_as_they_were(
    runs: DemoRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """US is deleted, loaded and calibrated, then US_TECH fails: nothing stays."""
    from regime_pg.demo import pipeline
    from regime_pg.errors import EmptyWindowError

    def failing(
        conn: psycopg.Connection, region: str, windows: dict[str, DateWindow]
    ) -> PrototypeDocument:
        if region == "US_TECH":
            raise EmptyWindowError(f"injected failure for {region}")
        return prototypes_document(conn, region, windows)

    before = _table_checksum(runs.dsn)
    out_dir = tmp_path / "out"
    with monkeypatch.context() as mp:
        mp.setattr(pipeline, "prototypes_document", failing)
        capsys.readouterr()
        # the full range: a committed US load would change the row count
        code = main(["demo", "--dsn", runs.dsn, "--output-dir", str(out_dir)])
        out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert f"regime-pg: loaded {len(encode(load_market('US')))} US rows" in err.splitlines()
    assert err.endswith("regime-pg: error: injected failure for US_TECH\n")
    assert err.count("regime-pg: error:") == 1
    assert list(out_dir.iterdir()) == []
    assert _table_checksum(runs.dsn) == before

    # a file that cannot be written (a directory in its place) rolls the rows back
    # too, and replaces no file: the US document is not written either
    (out_dir / "regime_prototypes_US_TECH.json").mkdir()
    code = main(["demo", "--dsn", runs.dsn, "--output-dir", str(out_dir), "--quiet"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (
        f"regime-pg: error: cannot write {out_dir / 'regime_prototypes_US_TECH.json'}: "
        "Is a directory\n"
    )
    assert [p.name for p in out_dir.iterdir()] == ["regime_prototypes_US_TECH.json"]
    assert _table_checksum(runs.dsn) == before


def _results(directory: Path) -> list[DemoRegionResult]:
    """Two small documents, as run_demo would write them into ``directory``."""
    return [
        DemoRegionResult(
            region,
            1,
            PrototypeDocument(region, (RegimePrototype("NEUTRAL", np.full(2, value, np.float32)),)),
            directory / f"regime_prototypes_{region}.json",
        )
        for region, value in zip(REGIONS, (0.25, 0.5), strict=True)
    ]


def test_documents_are_written_through_a_symlink_which_stays(tmp_path: Path) -> None:
    """``current`` links to the file the demo's name points at: it is updated, the link kept."""
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "us-2026-11.json"
    target.write_text("old\n")
    target.chmod(0o640)
    (tmp_path / "regime_prototypes_US.json").symlink_to("store/us-2026-11.json")
    results = _results(tmp_path)
    write_documents(results)
    link = tmp_path / "regime_prototypes_US.json"
    assert link.is_symlink() and str(link.readlink()) == "store/us-2026-11.json"
    assert target.read_text() == results[0].document.dumps()
    assert target.stat().st_mode & 0o777 == 0o640
    assert load_document(tmp_path / "regime_prototypes_US_TECH.json") == results[1].document
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "regime_prototypes_US.json", "regime_prototypes_US_TECH.json", "store"
    ]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["us-2026-11.json"]


def test_documents_are_written_all_or_none(tmp_path: Path) -> None:
    """A directory in the second file's place: the first file, behind its link, stays too."""
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "us-2026-11.json"
    target.write_text("old\n")
    (tmp_path / "regime_prototypes_US.json").symlink_to("store/us-2026-11.json")
    (tmp_path / "regime_prototypes_US_TECH.json").mkdir()
    with pytest.raises(RegimePgError) as caught:
        write_documents(_results(tmp_path))
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'regime_prototypes_US_TECH.json'}: Is a directory"
    )
    assert target.read_text() == "old\n"
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["us-2026-11.json"]


def test_no_data_in_a_window_exits_1_and_changes_nothing(
    runs: DemoRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked for every region before the first is touched (here the second lacks data)."""
    from regime_pg.demo import pipeline

    def short_nasdaq(region: str) -> object:
        frame = load_market(region)
        return frame.loc[:"2016-12-30"] if region == "US_TECH" else frame

    before = _table_checksum(runs.dsn)
    monkeypatch.setattr(pipeline, "load_market", short_nasdaq)
    capsys.readouterr()
    code = main(["demo", "--dsn", runs.dsn, "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (
        "regime-pg: error: the demo data has no embedding for region 'US_TECH' in the "
        "NEUTRAL window 2017-01-01..2017-12-31\n"
    )
    assert not (tmp_path / "out").exists()
    assert _table_checksum(runs.dsn) == before


def test_readme_states_what_the_demo_loads() -> None:
    """The encoder's warm-up: bars from 1999-01-04, embeddings from 2000-03-31."""
    for region in REGIONS:
        frame = load_market(region)
        embeddings = encode(frame)
        assert (str(frame.index[0].date()), str(frame.index[-1].date())) == (
            "1999-01-04", "2018-12-31"
        )
        assert (len(embeddings), embeddings[0][0], embeddings[-1][0]) == (
            4717, dt.date(2000, 3, 31), dt.date(2018, 12, 31)
        )
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    assert "loads them (2000-03-31..2018-12-31, 4717 per region" in readme
    assert "first 314 trading days" in readme
