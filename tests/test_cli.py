"""The ``regime-pg`` command line against real PostgreSQL servers (16 and 18).

Most calls run in-process through ``regime_pg.cli.main`` (fast, output captured
with capsys); a few run the installed console script and ``python -m regime_pg``
as real subprocesses. Every database command gets ``--dsn`` of a test database,
and ``REGIME_PG_DATA_DIR`` points into ``tmp_path`` so that a command which
forgot its DSN could never reach the user's default embedded server (the
tests check that nothing appeared there).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
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

from regime_pg import embedded
from regime_pg.client import compute_prototypes, prototypes_document
from regime_pg.connection import connect
from regime_pg.document import PrototypeDocument
from regime_pg.migrate import current_revision, head_revision
from regime_pg.prototypes import DateWindow, RegimeLabel
from tests.cli_support import Result, cli, run_with_closed_stdout
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384
CONSOLE_SCRIPT = Path(sys.executable).parent / "regime-pg"
SUBPROCESS_TIMEOUT_S = 300  # a hang guard only, never asserted as a duration

# The calibration script's flags, exactly as its users type them (plus --output F).
CALIBRATION_FLAGS = [
    "--region",
    "US",
    "--neutral-start",
    "2018-01-01",
    "--neutral-end",
    "2018-12-31",
    "--crisis-start",
    "2020-03-01",
    "--crisis-end",
    "2020-04-30",
]
CALIBRATION_WINDOWS = {
    "CRISIS": DateWindow(dt.date(2020, 3, 1), dt.date(2020, 4, 30)),
    "NEUTRAL": DateWindow(dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
}
NEUTRAL_ONLY = ["--region", "US", "--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"]


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class EngineData:
    """A migrated database holding engine rows for US (and a little EU)."""

    dsn: str
    dates: list[dt.date]
    vectors: np.ndarray  # float32, one row per date, region US

    def window_rows(self, window: DateWindow) -> np.ndarray:
        keep = [i for i, d in enumerate(self.dates) if window.start_date <= d <= window.end_date]
        return self.vectors[keep]


@pytest.fixture(scope="module")
def engine_db(pg_server: Server, migrated_template: str) -> Iterator[EngineData]:
    """One database per module and server, filled the way the engine writes (float32 BYTEA).

    The compute tests only read it.
    """
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    rng = np.random.default_rng(20180101)
    dates = business_days(dt.date(2017, 12, 1), 650)  # .. 2020-06
    vectors = rng.standard_normal((len(dates), DIM)) * 2.0 + rng.standard_normal(DIM)
    vectors = vectors.astype("<f4")
    # a stress period that looks different, so CRISIS and NEUTRAL centres differ
    crisis = [i for i, d in enumerate(dates) if dt.date(2020, 3, 1) <= d <= dt.date(2020, 4, 30)]
    vectors[crisis] += np.float32(5.0)
    eu_dates = business_days(dt.date(2018, 1, 1), 40)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            insert_rows(conn, "US", dates, vectors)
            # another region in the same windows: must not leak into US prototypes
            insert_rows(conn, "EU", eu_dates, np.full((len(eu_dates), DIM), 1e3, dtype="<f4"))
        yield EngineData(dsn, dates, vectors)
    finally:
        drop_database(pg_server, name)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No stray default server or DSN; the CLI's logging setup undone after each test."""
    guard = tmp_path / "default-embedded-dir-must-not-be-created"
    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(guard))
    monkeypatch.delenv("REGIME_PG_DSN", raising=False)
    monkeypatch.delenv("REGIME_PG_EMBEDDED_MAJOR", raising=False)
    logger = logging.getLogger("regime_pg")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield guard
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    assert not guard.exists(), "a command fell back to the default embedded server"


# --------------------------------------------------------------------------- helpers


def run_process(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        check=False,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def assert_one_error(result: Result, code: int, message: str | None = None) -> str:
    """Exit ``code``, nothing on stdout, exactly one ``regime-pg: error:`` line on stderr."""
    assert result.code == code, result
    assert result.out == ""
    assert result.err.endswith("\n") and result.err.count("\n") == 1, repr(result.err)
    assert result.err.startswith("regime-pg: error: "), repr(result.err)
    if message is not None:
        assert result.err == f"regime-pg: error: {message}\n"
    return result.err


def assert_center_matches(center: np.ndarray, rows: np.ndarray) -> None:
    """Centre within 1e-6 of numpy's float64 mean, relative to the mean magnitude."""
    expected = rows.astype(np.float64).mean(axis=0)
    scale = np.abs(rows.astype(np.float64)).mean(axis=0)
    assert center.dtype == np.float32 and center.shape == (DIM,)
    assert np.all(np.abs(center.astype(np.float64) - expected) <= 1e-6 * scale + 1e-30)


def assert_document_format(text: str) -> None:
    """Keys sorted, 2-space indent, exactly one trailing newline."""
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    lines = text.split("\n")
    assert lines[0] == "{"
    assert lines[1] == '  "embedding_dim": 384,'
    assert lines[2] == '  "prototypes": {'
    assert lines[-3] == '  "region": "US"'
    assert "\t" not in text


def sql_document(dsn: str, windows: dict[str, DateWindow]) -> object:
    """What ``regime_prototypes_json`` returns, parsed by psycopg (no regime-pg code)."""
    payload = json.dumps({label: w.to_json() for label, w in windows.items()})
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT regime_prototypes_json('US', %s::jsonb)", (payload,)).fetchone()
    assert row is not None
    return row[0]


# --------------------------------------------------------------------------- compute


def test_calibration_flags_verbatim_stdout_file_client_and_sql_identical(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    output = tmp_path / "regime_prototypes_US.json"
    written = cli(capsys, "compute", *CALIBRATION_FLAGS, "--output", output, "--dsn", engine_db.dsn)
    assert written == Result(0, "", f"regime-pg: wrote {output}\n")
    printed = cli(capsys, "compute", *CALIBRATION_FLAGS, "--dsn", engine_db.dsn)
    assert printed.code == 0 and printed.err == ""

    file_bytes = output.read_bytes()
    assert file_bytes == printed.out.encode("utf-8")
    with connect(engine_db.dsn) as conn:
        objects = compute_prototypes(conn, "US", CALIBRATION_WINDOWS)
        from_objects = PrototypeDocument("US", tuple(objects)).dumps()
        from_sql = prototypes_document(conn, "US", CALIBRATION_WINDOWS).dumps()
    assert from_objects.encode("utf-8") == file_bytes
    assert from_sql.encode("utf-8") == file_bytes
    assert json.loads(file_bytes) == sql_document(engine_db.dsn, CALIBRATION_WINDOWS)
    assert_document_format(printed.out)

    document = json.loads(file_bytes)
    assert list(document) == ["embedding_dim", "prototypes", "region"]
    assert document["embedding_dim"] == DIM and document["region"] == "US"
    assert list(document["prototypes"]) == ["CRISIS", "NEUTRAL"]
    for label, window in CALIBRATION_WINDOWS.items():
        entry = document["prototypes"][label]
        rows = engine_db.window_rows(window)
        assert entry["window"] == window.to_json()
        assert entry["n_dates"] == len(rows) and entry["n_skipped"] == 0
        center = np.array(entry["center"], dtype=np.float32)
        assert_center_matches(center, rows)
        assert entry["l2_norm"] == pytest.approx(
            np.linalg.norm(center.astype(np.float64)), rel=1e-12
        )
    # only US rows count: EU's 1e3 vectors in 2018 would move the NEUTRAL centre
    assert document["prototypes"]["NEUTRAL"]["n_dates"] == 261


def test_neutral_only_and_one_day_window(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData
) -> None:
    result = cli(capsys, "compute", *NEUTRAL_ONLY, "--dsn", engine_db.dsn)
    assert result.code == 0 and result.err == ""
    document = PrototypeDocument.loads(result.out)
    assert [str(p.label) for p in document.prototypes] == ["NEUTRAL"]
    assert document.prototypes[0].label is RegimeLabel.NEUTRAL

    # end == start is a valid window (end >= start): the centre is that day's vector
    day = cli(
        capsys,
        "compute",
        "--region",
        "US",
        "--neutral-start",
        "2018-03-01",
        "--neutral-end",
        "2018-03-01",
        "--dsn",
        engine_db.dsn,
    )
    assert day.code == 0
    (prototype,) = PrototypeDocument.loads(day.out).prototypes
    assert prototype.n_dates == 1
    stored = engine_db.vectors[engine_db.dates.index(dt.date(2018, 3, 1))]
    assert prototype.center.tobytes() == stored.tobytes()


def test_window_flag_adds_labels(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    output = tmp_path / "four.json"
    result = cli(
        capsys,
        "compute",
        *CALIBRATION_FLAGS,
        "--window",
        "RISK_OFF=2019-05-01:2019-06-28",
        "--window",
        "RECOVERY=2020-05-01:2020-05-29",
        "--output",
        output,
        "--dsn",
        engine_db.dsn,
        "--quiet",
    )
    assert result == Result(0, "", "")
    windows = {
        **CALIBRATION_WINDOWS,
        "RISK_OFF": DateWindow(dt.date(2019, 5, 1), dt.date(2019, 6, 28)),
        "RECOVERY": DateWindow(dt.date(2020, 5, 1), dt.date(2020, 5, 29)),
    }
    with connect(engine_db.dsn) as conn:
        expected = prototypes_document(conn, "US", windows).dumps()
    assert output.read_bytes() == expected.encode("utf-8")
    document = PrototypeDocument.loads(output.read_bytes())
    by_label = document.by_label()
    assert list(by_label) == ["CRISIS", "NEUTRAL", "RECOVERY", "RISK_OFF"]
    assert by_label["RISK_OFF"].label is RegimeLabel.RISK_OFF
    # a label outside the four stays a plain str
    assert by_label["RECOVERY"].label == "RECOVERY"
    assert not isinstance(by_label["RECOVERY"].label, RegimeLabel)
    for label, window in windows.items():
        assert by_label[label].window == window
        assert by_label[label].n_dates == len(engine_db.window_rows(window))
        assert_center_matches(by_label[label].center, engine_db.window_rows(window))


def test_output_replaces_an_existing_file_whole(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    output = tmp_path / "regime_prototypes_US.json"
    output.write_text("an old, longer file " * 2000)
    result = cli(capsys, "compute", *NEUTRAL_ONLY, "--output", output, "--dsn", engine_db.dsn)
    assert result.code == 0
    printed = cli(capsys, "compute", *NEUTRAL_ONLY, "--dsn", engine_db.dsn)
    assert output.read_bytes() == printed.out.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regime_prototypes_US.json"]


def test_progress_on_stderr_and_quiet_before_or_after_the_subcommand(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    output = tmp_path / "p.json"
    base = ["compute", *NEUTRAL_ONLY, "--output", output, "--dsn", engine_db.dsn]
    loud = cli(capsys, *base)
    assert loud == Result(0, "", f"regime-pg: wrote {output}\n")
    expected = output.read_bytes()
    output.unlink()
    assert cli(capsys, "--quiet", *base) == Result(0, "", "")
    assert output.read_bytes() == expected
    output.unlink()
    assert cli(capsys, *base, "-q") == Result(0, "", "")
    assert output.read_bytes() == expected
    output.unlink()
    assert cli(capsys, "-q", *base, "--quiet") == Result(0, "", "")
    assert output.read_bytes() == expected


def test_dsn_from_environment(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = cli(capsys, "compute", *NEUTRAL_ONLY, "--dsn", engine_db.dsn)
    monkeypatch.setenv("REGIME_PG_DSN", engine_db.dsn)
    from_env = cli(capsys, "compute", *NEUTRAL_ONLY)
    assert from_env == explicit and from_env.code == 0


BAD_DATE = "date must be a date as YYYY-MM-DD, got"
LABEL_RULE = (
    "does not follow the label rule: 1 to 32 upper-case letters, digits or underscores, "
    "starting with a letter (e.g. NEUTRAL, RISK_OFF)"
)
WINDOW_FORM = "--window takes LABEL=YYYY-MM-DD:YYYY-MM-DD, got"

USAGE_ERRORS = {
    "slashes": (
        ["--region", "US", "--neutral-start", "2018/01/01", "--neutral-end", "2018-12-31"],
        f"argument --neutral-start: {BAD_DATE} '2018/01/01'",
    ),
    "unpadded": (
        ["--region", "US", "--neutral-start", "2018-1-1", "--neutral-end", "2018-12-31"],
        f"argument --neutral-start: {BAD_DATE} '2018-1-1'",
    ),
    "not-a-calendar-date": (
        ["--region", "US", "--neutral-start", "2018-01-01", "--neutral-end", "2018-02-30"],
        "argument --neutral-end: date is not a calendar date: 2018-02-30",
    ),
    "time-appended": (
        ["--region", "US", "--neutral-start", "2018-01-01T00:00", "--neutral-end", "2018-12-31"],
        f"argument --neutral-start: {BAD_DATE} '2018-01-01T00:00'",
    ),
    "bad-crisis-date": (
        [*NEUTRAL_ONLY, "--crisis-start", "20200301", "--crisis-end", "2020-04-30"],
        f"argument --crisis-start: {BAD_DATE} '20200301'",
    ),
    "crisis-not-calendar": (
        [*NEUTRAL_ONLY, "--crisis-start", "2020-03-01", "--crisis-end", "2020-04-31"],
        "argument --crisis-end: date is not a calendar date: 2020-04-31",
    ),
    "missing-region": (
        ["--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"],
        "the following arguments are required: --region",
    ),
    "missing-neutral-start": (
        ["--region", "US", "--neutral-end", "2018-12-31"],
        "the following arguments are required: --neutral-start",
    ),
    "missing-neutral-end": (
        ["--region", "US", "--neutral-start", "2018-01-01"],
        "the following arguments are required: --neutral-end",
    ),
    "missing-all": (
        [],
        "the following arguments are required: --region, --neutral-start, --neutral-end",
    ),
    "flag-without-value": (
        ["--region", "US", "--neutral-start", "2018-01-01", "--neutral-end"],
        "argument --neutral-end: expected one argument",
    ),
    "unknown-flag": (
        [*NEUTRAL_ONLY, "--neutral-middle", "2018-06-01"],
        "unrecognized arguments: --neutral-middle 2018-06-01",
    ),
    # checked by regime-pg before it connects: argument errors too
    "neutral-reversed": (
        ["--region", "US", "--neutral-start", "2018-12-31", "--neutral-end", "2018-01-01"],
        "--neutral-end 2018-01-01 is before --neutral-start 2018-12-31",
    ),
    "crisis-reversed": (
        [*NEUTRAL_ONLY, "--crisis-start", "2020-04-30", "--crisis-end", "2020-03-01"],
        "--crisis-end 2020-03-01 is before --crisis-start 2020-04-30",
    ),
    "crisis-start-alone": (
        [*NEUTRAL_ONLY, "--crisis-start", "2020-03-01"],
        "--crisis-start and --crisis-end go together: give both or neither",
    ),
    "crisis-end-alone": (
        [*NEUTRAL_ONLY, "--crisis-end", "2020-04-30"],
        "--crisis-start and --crisis-end go together: give both or neither",
    ),
    "window-repeats-neutral": (
        [*NEUTRAL_ONLY, "--window", "NEUTRAL=2019-01-01:2019-12-31"],
        "label NEUTRAL is given twice",
    ),
    "window-repeats-crisis": (
        [*CALIBRATION_FLAGS, "--window", "CRISIS=2019-01-01:2019-02-28"],
        "label CRISIS is given twice",
    ),
    "window-twice": (
        [
            *NEUTRAL_ONLY,
            "--window",
            "CARRY=2019-01-01:2019-02-28",
            "--window",
            "CARRY=2019-03-01:2019-04-30",
        ],
        "label CARRY is given twice",
    ),
    "label-lower-case": (
        [*NEUTRAL_ONLY, "--window", "risk_off=2019-01-01:2019-02-28"],
        f"label 'risk_off' {LABEL_RULE}",
    ),
    "label-leading-digit": (
        [*NEUTRAL_ONLY, "--window", "1CRISIS=2019-01-01:2019-02-28"],
        f"label '1CRISIS' {LABEL_RULE}",
    ),
    "label-33-characters": (
        [*NEUTRAL_ONLY, "--window", "A" * 33 + "=2019-01-01:2019-02-28"],
        f"label '{'A' * 33}' {LABEL_RULE}",
    ),
    "label-empty": (
        [*NEUTRAL_ONLY, "--window", "=2019-01-01:2019-02-28"],
        f"label '' {LABEL_RULE}",
    ),
    "window-no-equals": (
        [*NEUTRAL_ONLY, "--window", "RISK_OFF"],
        f"{WINDOW_FORM} 'RISK_OFF'",
    ),
    "window-no-colon": (
        [*NEUTRAL_ONLY, "--window", "RISK_OFF=2019-01-01"],
        f"{WINDOW_FORM} 'RISK_OFF=2019-01-01'",
    ),
    "window-bad-start": (
        [*NEUTRAL_ONLY, "--window", "RISK_OFF=2019/01/01:2019-02-28"],
        "--window RISK_OFF start must be a date as YYYY-MM-DD, got '2019/01/01'",
    ),
    "window-bad-end": (
        [*NEUTRAL_ONLY, "--window", "RISK_OFF=2019-01-01:2019-02-30"],
        "--window RISK_OFF end is not a calendar date: 2019-02-30",
    ),
    "window-extra-part": (
        [*NEUTRAL_ONLY, "--window", "RISK_OFF=2019-01-01:2019-02-28:2019-03-31"],
        "--window RISK_OFF end must be a date as YYYY-MM-DD, got '2019-02-28:2019-03-31'",
    ),
    "window-reversed": (
        [*NEUTRAL_ONLY, "--window", "RISK_OFF=2019-02-28:2019-01-01"],
        "window is reversed: end_date 2019-01-01 is before start_date 2019-02-28",
    ),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS), ids=list(USAGE_ERRORS))
def test_compute_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path, case: str
) -> None:
    flags, message = USAGE_ERRORS[case]
    output = tmp_path / "out.json"
    result = cli(capsys, "compute", *flags, "--output", output, "--dsn", engine_db.dsn)
    assert_one_error(result, 2, message)
    assert list(tmp_path.iterdir()) == []


def test_command_level_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error(cli(capsys), 2, "the following arguments are required: COMMAND")
    # the choices are listed; other subcommands and actions may join them later
    line = assert_one_error(cli(capsys, "calibrate"), 2)
    assert line.startswith(
        "regime-pg: error: argument COMMAND: invalid choice: 'calibrate' (choose from 'compute', "
    )
    assert all(f"'{name}'" in line for name in ("compute", "migrate", "db", "demo"))
    line = assert_one_error(cli(capsys, "db", "restart"), 2)
    assert line.startswith("regime-pg: error: argument action: invalid choice: 'restart' ")
    assert all(f"'{name}'" in line for name in ("start", "stop", "status", "url"))
    assert_one_error(
        cli(capsys, "db", "start", "--major", "17"),
        2,
        "argument --major: invalid choice: 17 (choose from 16, 18)",
    )
    assert_one_error(
        cli(capsys, "demo", "--start", "2008-13-01"),
        2,
        "argument --start: date is not a calendar date: 2008-13-01",
    )
    # db's actions other than psql take no arguments
    assert_one_error(cli(capsys, "db", "status", "extra"), 2, "unrecognized arguments: extra")
    # checked before the demo connects or needs 'arch'
    assert_one_error(
        cli(capsys, "demo", "--start", "2017-06-01", "--end", "2017-01-01"),
        2,
        "--end 2017-01-01 is before --start 2017-06-01",
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    version = importlib.metadata.version("regime-pg")
    assert version.count(".") >= 2
    assert cli(capsys, "--version") == Result(0, f"regime-pg {version}\n", "")
    assert "--version" in cli(capsys, "--help").out


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "compute", "--help")
    assert result.code == 0 and result.err == ""
    for flag in (
        "--region",
        "--neutral-start",
        "--neutral-end",
        "--crisis-start",
        "--crisis-end",
        "--window",
        "--output",
        "--dsn",
        "--quiet",
    ):
        assert flag in result.out


SEMANTIC_ERRORS = {
    "unknown-region": (
        ["--region", "XX", "--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"],
        "unknown region 'XX': no rows in regimes "
        "(hint: Regions are case-sensitive, as the Regime Engine writes them.)",
    ),
    "region-wrong-case": (
        ["--region", "us", "--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"],
        "unknown region 'us': no rows in regimes "
        "(hint: Regions are case-sensitive, as the Regime Engine writes them.)",
    ),
    "region-empty": (
        ["--region", "", "--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"],
        "region must be 1 to 32 characters without NUL, got ''",
    ),
    "region-too-long": (
        ["--region", "R" * 33, "--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"],
        f"region must be 1 to 32 characters without NUL, got '{'R' * 33}'",
    ),
    "empty-neutral-window": (
        ["--region", "US", "--neutral-start", "2016-01-01", "--neutral-end", "2016-12-31"],
        "no usable embedding for region 'US', label NEUTRAL in window "
        "2016-01-01..2016-12-31 (0 dates skipped)",
    ),
    "empty-crisis-window-weekend": (
        [*NEUTRAL_ONLY, "--crisis-start", "2020-03-07", "--crisis-end", "2020-03-08"],
        "no usable embedding for region 'US', label CRISIS in window "
        "2020-03-07..2020-03-08 (0 dates skipped)",
    ),
}


@pytest.mark.parametrize("case", list(SEMANTIC_ERRORS), ids=list(SEMANTIC_ERRORS))
def test_compute_semantic_errors_exit_1(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path, case: str
) -> None:
    flags, message = SEMANTIC_ERRORS[case]
    output = tmp_path / "out.json"
    result = cli(capsys, "compute", *flags, "--output", output, "--dsn", engine_db.dsn)
    assert_one_error(result, 1, message)
    assert list(tmp_path.iterdir()) == []


def test_dsn_that_cannot_connect_exit_1(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    no_database = psycopg.conninfo.make_conninfo(engine_db.dsn, dbname="regime_pg_no_such_db")
    cases = {
        no_database: 'database "regime_pg_no_such_db" does not exist',
        f"host={tmp_path / 'no-socket-here'} dbname=x": "No such file or directory",
        "host=127.0.0.1 port=1 dbname=x connect_timeout=5": "127.0.0.1",
        "not a dsn": 'missing "=" after "not" in connection info string',
    }
    for dsn, fragment in cases.items():
        result = cli(
            capsys, "compute", *NEUTRAL_ONLY, "--output", tmp_path / "o.json", "--dsn", dsn
        )
        line = assert_one_error(result, 1)
        assert fragment in line, (dsn, line)
        assert "Traceback" not in line
    assert list(tmp_path.iterdir()) == []


def test_unmigrated_database_exit_1(capsys: pytest.CaptureFixture[str], empty_db: str) -> None:
    line = assert_one_error(cli(capsys, "compute", *NEUTRAL_ONLY, "--dsn", empty_db), 1)
    assert "regime-pg migrate" in line


def test_failed_command_leaves_existing_output_untouched(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    output = tmp_path / "regime_prototypes_US.json"
    good = cli(capsys, "compute", *CALIBRATION_FLAGS, "--output", output, "--dsn", engine_db.dsn)
    assert good.code == 0
    before = output.read_bytes()
    stat_before = output.stat()
    failures = [
        # empty window: fails in the database, after connecting
        (1, ["--region", "US", "--neutral-start", "2016-01-01", "--neutral-end", "2016-12-31"]),
        (1, ["--region", "XX", "--neutral-start", "2018-01-01", "--neutral-end", "2018-12-31"]),
        (2, [*NEUTRAL_ONLY, "--crisis-start", "2020-03-01"]),
        (2, ["--region", "US", "--neutral-start", "2018/01/01", "--neutral-end", "2018-12-31"]),
    ]
    for code, flags in failures:
        result = cli(capsys, "compute", *flags, "--output", output, "--dsn", engine_db.dsn)
        assert_one_error(result, code)
        assert output.read_bytes() == before
        assert output.stat().st_ino == stat_before.st_ino  # not even replaced
        assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary file


def test_output_path_errors_name_the_path_and_leave_no_temporary_file(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    (directory / "keep.txt").write_text("x")
    result = cli(capsys, "compute", *NEUTRAL_ONLY, "--output", directory, "--dsn", engine_db.dsn)
    assert_one_error(result, 1, f"cannot write {directory}: Is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]
    assert [p.name for p in directory.iterdir()] == ["keep.txt"]

    missing = tmp_path / "missing" / "out.json"
    result = cli(capsys, "compute", *NEUTRAL_ONLY, "--output", missing, "--dsn", engine_db.dsn)
    assert_one_error(result, 1, f"cannot write {missing}: No such file or directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]


# --------------------------------------------------------------------------- subprocesses


def test_console_script_and_python_m_write_the_same_bytes(
    capsys: pytest.CaptureFixture[str], engine_db: EngineData, tmp_path: Path
) -> None:
    expected = cli(capsys, "compute", *CALIBRATION_FLAGS, "--dsn", engine_db.dsn).out.encode()
    assert CONSOLE_SCRIPT.is_file(), f"console script missing at {CONSOLE_SCRIPT}"

    # relative --output: written into the working directory
    script = run_process(
        CONSOLE_SCRIPT,
        "compute",
        *CALIBRATION_FLAGS,
        "--output",
        "regime_prototypes_US.json",
        "--dsn",
        engine_db.dsn,
        cwd=tmp_path,
    )
    assert script.returncode == 0, script.stderr
    assert script.stdout == b""
    assert script.stderr == b"regime-pg: wrote regime_prototypes_US.json\n"
    assert (tmp_path / "regime_prototypes_US.json").read_bytes() == expected

    module = run_process(
        sys.executable,
        "-m",
        "regime_pg",
        "compute",
        *CALIBRATION_FLAGS,
        "--dsn",
        engine_db.dsn,
        cwd=tmp_path,
    )
    assert module.returncode == 0, module.stderr
    assert module.stdout == expected
    assert module.stderr == b""


def test_subprocess_exit_codes_and_one_error_line(engine_db: EngineData, tmp_path: Path) -> None:
    usage = run_process(
        CONSOLE_SCRIPT,
        "compute",
        "--region",
        "US",
        "--neutral-start",
        "2018/01/01",
        "--neutral-end",
        "2018-12-31",
        "--dsn",
        engine_db.dsn,
        cwd=tmp_path,
    )
    assert (usage.returncode, usage.stdout) == (2, b"")
    assert usage.stderr == (
        b"regime-pg: error: argument --neutral-start: "
        b"date must be a date as YYYY-MM-DD, got '2018/01/01'\n"
    )
    empty = run_process(
        sys.executable,
        "-m",
        "regime_pg",
        "compute",
        "--region",
        "US",
        "--neutral-start",
        "2016-01-01",
        "--neutral-end",
        "2016-12-31",
        "--dsn",
        engine_db.dsn,
        cwd=tmp_path,
    )
    assert (empty.returncode, empty.stdout) == (1, b"")
    assert empty.stderr == (
        b"regime-pg: error: no usable embedding for region 'US', label NEUTRAL in window "
        b"2016-01-01..2016-12-31 (0 dates skipped)\n"
    )
    help_text = run_process(sys.executable, "-m", "regime_pg", "--help", cwd=tmp_path)
    assert help_text.returncode == 0 and help_text.stderr == b""
    assert help_text.stdout.startswith(b"usage: regime-pg ")
    for command in (b"compute", b"migrate", b"db", b"demo"):
        assert command in help_text.stdout


# --------------------------------------------------------------------------- migrate


def _table_exists(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    assert row is not None
    return bool(row[0])


def test_migrate_upgrades_to_head_and_downgrades_to_base(
    capsys: pytest.CaptureFixture[str], empty_db: str
) -> None:
    head = head_revision()
    assert current_revision(empty_db) is None
    up = cli(capsys, "migrate", "--dsn", empty_db)
    assert up.code == 0 and up.out == ""
    assert up.err.endswith(f"regime-pg: database at revision {head}\n")
    assert current_revision(empty_db) == head
    assert _table_exists(empty_db, "regimes")

    again = cli(capsys, "migrate", "--dsn", empty_db, "--quiet")
    assert again == Result(0, "", "")
    assert current_revision(empty_db) == head

    down = cli(capsys, "migrate", "--dsn", empty_db, "--downgrade", "base")
    assert down.code == 0 and down.out == ""
    assert down.err.endswith("regime-pg: database at revision base\n")
    assert current_revision(empty_db) is None
    # regime-pg created regimes in this database, so base removes it
    assert not _table_exists(empty_db, "regimes")
    assert not _table_exists(empty_db, "regime_pg_alembic_version")


def test_migrate_to_a_revision_then_on_to_head(
    capsys: pytest.CaptureFixture[str], empty_db: str
) -> None:
    assert cli(capsys, "migrate", "--dsn", empty_db, "--revision", "0002", "-q").code == 0
    assert current_revision(empty_db) == "0002"
    assert _table_exists(empty_db, "regimes")
    with psycopg.connect(empty_db) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'regimes'::regclass "
                "AND attnum > 0 AND NOT attisdropped"
            )
        ]
    assert "embedding_vector" not in columns
    result = cli(capsys, "migrate", "--dsn", empty_db)
    assert result.code == 0
    assert current_revision(empty_db) == head_revision()
    assert cli(capsys, "migrate", "--dsn", empty_db, "--downgrade", "0004", "-q").code == 0
    assert current_revision(empty_db) == "0004"


def test_migrate_uses_regime_pg_dsn_when_dsn_is_absent(
    capsys: pytest.CaptureFixture[str], empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGIME_PG_DSN", empty_db)
    result = cli(capsys, "migrate")
    assert result.code == 0
    assert result.err.endswith(f"regime-pg: database at revision {head_revision()}\n")
    assert current_revision(empty_db) == head_revision()
    assert cli(capsys, "migrate", "--downgrade", "base").code == 0
    assert current_revision(empty_db) is None
    # --dsn wins over the environment
    monkeypatch.setenv("REGIME_PG_DSN", "host=/nonexistent-socket-dir dbname=x")
    assert cli(capsys, "migrate", "--dsn", empty_db, "-q") == Result(0, "", "")
    assert current_revision(empty_db) == head_revision()


def test_migrate_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], empty_db: str, tmp_path: Path
) -> None:
    assert_one_error(
        cli(capsys, "migrate", "--dsn", empty_db, "--revision", "9999"),
        1,
        "Can't locate revision identified by '9999'",
    )
    assert_one_error(
        cli(capsys, "migrate", "--dsn", empty_db, "--downgrade", "9999"),
        1,
        "Can't locate revision identified by '9999'",
    )
    assert current_revision(empty_db) is None
    line = assert_one_error(
        cli(capsys, "migrate", "--dsn", f"host={tmp_path / 'nowhere'} dbname=x"), 1
    )
    assert "No such file or directory" in line
    no_database = psycopg.conninfo.make_conninfo(empty_db, dbname="regime_pg_no_such_db")
    line = assert_one_error(cli(capsys, "migrate", "--dsn", no_database), 1)
    assert 'database "regime_pg_no_such_db" does not exist' in line


# --------------------------------------------------------------------------- db


def _status_lines(result: Result) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in result.out.splitlines())


def test_db_start_status_url_stop(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    try:
        before = cli(capsys, "db", "status", "--data-dir", data_dir)
        assert before.code == 3 and before.err == ""
        assert _status_lines(before) == {
            "running": "no",
            "data directory": str(data_dir),
            "postgresql major": "not initialised",
        }
        assert_one_error(
            cli(capsys, "db", "url", "--data-dir", data_dir),
            1,
            "embedded server is not running; start it with: regime-pg db start",
        )
        assert cli(capsys, "db", "stop", "--data-dir", data_dir).out == "not running\n"

        started = cli(capsys, "db", "start", "--data-dir", data_dir, "-q")
        assert started.code == 0 and started.err == ""
        assert started.out.count("\n") == 1
        uri = started.out.strip()
        with psycopg.connect(uri) as conn:
            row = conn.execute(
                "SELECT current_database(), current_setting('server_version_num')::int / 10000,"
                " EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector')"
            ).fetchone()
        assert row == ("regime_pg", embedded.DEFAULT_MAJOR, True)

        # idempotent: a second start returns the same URI
        assert cli(capsys, "db", "start", "--data-dir", data_dir, "-q") == Result(0, uri + "\n", "")
        assert_one_error(
            cli(capsys, "db", "start", "--data-dir", data_dir, "--major", "16"),
            1,
            f"{data_dir} was initialised by PostgreSQL 18, not 16; "
            "start it with major 18 or use another data directory",
        )

        running = cli(capsys, "db", "status", "--data-dir", data_dir)
        assert running.code == 0 and running.err == ""
        fields = _status_lines(running)
        assert list(fields) == ["running", "data directory", "postgresql major", "pid", "url"]
        assert fields["running"] == "yes"
        assert fields["data directory"] == str(data_dir)
        assert fields["postgresql major"] == str(embedded.DEFAULT_MAJOR)
        assert int(fields["pid"]) == embedded.status(data_dir).pid
        assert fields["url"] == uri

        assert cli(capsys, "db", "url", "--data-dir", data_dir) == Result(0, uri + "\n", "")
        # status as a real process: the exit code the shell sees
        proc = run_process(CONSOLE_SCRIPT, "db", "status", "--data-dir", data_dir, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.startswith(b"running: yes\n")

        stopped = cli(capsys, "db", "stop", "--data-dir", data_dir)
        assert stopped.code == 0 and stopped.out == "stopped\n"
        assert not embedded.status(data_dir).running
        assert cli(capsys, "db", "stop", "--data-dir", data_dir).out == "not running\n"

        proc = run_process(CONSOLE_SCRIPT, "db", "status", "--data-dir", data_dir, cwd=tmp_path)
        assert proc.returncode == 3
        assert (
            proc.stdout
            == (
                f"running: no\ndata directory: {data_dir}\n"
                f"postgresql major: {embedded.DEFAULT_MAJOR}\n"
            ).encode()
        )
        assert proc.stderr == b""
    finally:
        embedded.stop(data_dir)


def test_db_psql_hands_every_argument_to_psql(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "pg"

    def psql(*argv: str, db_options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CONSOLE_SCRIPT, "db", "--data-dir", data_dir, *db_options, "psql", *argv],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=SUBPROCESS_TIMEOUT_S,
        )

    try:
        assert cli(capsys, "db", "start", "--data-dir", data_dir, "-q").code == 0
        done = psql("-X", "-A", "-t", "-c", "SELECT current_database(), 1 + 1")
        assert (done.returncode, done.stdout, done.stderr) == (0, b"regime_pg|2\n", b"")
        (tmp_path / "q1.sql").write_text("SELECT 'from a file';\n")
        done = psql("-XAt", "-f", "q1.sql")
        assert (done.returncode, done.stdout, done.stderr) == (0, b"from a file\n", b"")
        # the former form, after "--", still works; --major and --data-dir go before psql
        done = psql("--", "-XAtc", "SELECT 3", db_options=("--major", "18"))
        assert (done.returncode, done.stdout, done.stderr) == (0, b"3\n", b"")
        # psql reads a bare word as a database name, on the embedded server
        done = psql("-XAt", "postgres", "-c", "SELECT current_database()")
        assert (done.returncode, done.stdout) == (0, b"postgres\n")
        done = psql("q1.sql")  # not silently nothing: psql says what it tried
        assert (done.returncode, done.stdout) == (2, b"")
        assert b'database "q1.sql" does not exist' in done.stderr
        # psql's own exit status comes back
        done = psql("-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 1/0")
        assert done.returncode == 1 and b"division by zero" in done.stderr
    finally:
        embedded.stop(data_dir)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_closed_stdout_exits_141_quietly(tmp_path: Path, buffered: bool) -> None:
    # db status of a server that is not running: three lines to stdout, status 3 otherwise
    data_dir = tmp_path / "pg"
    status = run_with_closed_stdout("db", "status", "--data-dir", data_dir, buffered=buffered)
    assert (status.returncode, status.stderr) == (141, b"")
    assert not (tmp_path / "pg").exists()
    if buffered:  # unbuffered, argparse ignores the failed write itself and exits 0
        for argv in (["--help"], ["--version"], ["sets", "list", "--help"]):
            done = run_with_closed_stdout(*argv)
            assert (done.returncode, done.stderr) == (141, b""), argv
