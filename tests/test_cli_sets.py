"""``regime-pg compute --save`` and ``regime-pg sets ...`` against real servers.

In-process through ``regime_pg.cli.main`` with capsys, ``--dsn`` always given
(``REGIME_PG_DATA_DIR`` points into ``tmp_path`` so that a command that forgot
it could never reach a default embedded server).  Every test gets its own
database, cloned from a template holding synthetic engine rows for region US.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from regime_pg.client import prototypes_document
from regime_pg.connection import connect
from regime_pg.prototypes import DateWindow
from regime_pg.sets import fit_set_temperature, get_set, list_sets, save_set
from tests.cli_support import (  # noqa: F401
    Result,
    assert_one_error,
    cli,
    isolated_cli,
    run_with_closed_stdout,
)
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384
WINDOWS = {
    "CRISIS": DateWindow(dt.date(2018, 7, 1), dt.date(2018, 12, 31)),
    "NEUTRAL": DateWindow(dt.date(2018, 1, 1), dt.date(2018, 6, 30)),
}
FLAGS = [
    "--region",
    "US",
    "--neutral-start",
    "2018-01-01",
    "--neutral-end",
    "2018-06-30",
    "--crisis-start",
    "2018-07-01",
    "--crisis-end",
    "2018-12-31",
]


@pytest.fixture(scope="module")
def data_template(pg_server: Server, migrated_template: str) -> Iterator[str]:
    """A migrated database with 2018 rows of region US: calm first half, stressed second."""
    name = create_database(pg_server, template=migrated_template)
    rng = np.random.default_rng(7)
    dates = business_days(dt.date(2018, 1, 1), 261)
    x = rng.standard_normal((len(dates), DIM))
    x[[i for i, d in enumerate(dates) if d.month >= 7], :8] += 0.6  # overlapping regimes
    try:
        with psycopg.connect(database_dsn(pg_server.admin_dsn, name), autocommit=True) as conn:
            insert_rows(conn, "US", dates, x.astype("<f4"))
        yield name
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def dsn(pg_server: Server, data_template: str) -> Iterator[str]:
    name = create_database(pg_server, template=data_template)
    yield database_dsn(pg_server.admin_dsn, name)
    drop_database(pg_server, name)


#: The CLI's hint names the CLI command, not the SQL function the server's hint names.
V1_EXISTS = (
    "prototype set 'v1' already exists (hint: A saved set never changes: save the new "
    "version under a new name, or delete it first: regime-pg sets delete v1)"
)


def set_names(dsn: str) -> list[str]:
    with connect(dsn) as conn:
        return [info.name for info in list_sets(conn)]


# --------------------------------------------------------------------------- compute --save


def test_compute_save_stores_the_set_and_prints_the_same_document(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    plain = cli(capsys, "compute", *FLAGS, "--dsn", dsn)
    assert (plain.code, plain.err) == (0, "")
    saved = cli(capsys, "compute", *FLAGS, "--save", "us-2018-v1", "--dsn", dsn)
    assert saved == Result(0, plain.out, "regime-pg: saved set us-2018-v1 (temperature 1)\n")
    with connect(dsn) as conn:
        stored = get_set(conn, "us-2018-v1")
        assert plain.out == prototypes_document(conn, "US", WINDOWS).dumps()
    assert stored.document.dumps() == plain.out
    assert (stored.temperature, stored.info.fit, stored.info.source) == (1.0, None, "computed")
    assert stored.info.windows == {k: w.to_json() for k, w in WINDOWS.items()}


def test_compute_save_with_a_fitted_temperature_to_a_file(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    output = tmp_path / "regime_prototypes_US.json"
    result = cli(
        capsys,
        "compute",
        *FLAGS,
        "--save",
        "fitted",
        "--fit-temperature",
        "--output",
        output,
        "--dsn",
        dsn,
    )
    assert (result.code, result.out) == (0, "")
    with connect(dsn) as conn:
        stored = get_set(conn, "fitted")
        expected_fit = fit_set_temperature(conn, "US", WINDOWS)
        document = prototypes_document(conn, "US", WINDOWS).dumps()
    fit = stored.info.fit
    assert fit == expected_fit and stored.temperature == fit.temperature
    assert not fit.separable and 0 < fit.temperature < 1e3
    assert result.err.splitlines() == [
        f"regime-pg: saved set fitted: fitted temperature {fit.temperature:.4g} (log-loss "
        f"{fit.log_loss:.4g}, {fit.log_loss_at_1:.4g} at T=1, {fit.n} calibration dates)",
        f"regime-pg: wrote {output}",
    ]
    assert output.read_text(encoding="utf-8") == document
    # --quiet silences the progress, not the result.
    quiet = cli(
        capsys, "-q", "compute", *FLAGS, "--save", "fitted-2", "--fit-temperature", "--dsn", dsn
    )
    assert quiet == Result(0, document, "")


def test_compute_save_with_a_given_temperature(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    result = cli(capsys, "compute", *FLAGS, "--save", "warm", "--temperature", "2.5", "--dsn", dsn)
    assert (result.code, result.err) == (0, "regime-pg: saved set warm (temperature 2.5)\n")
    with connect(dsn) as conn:
        stored = get_set(conn, "warm")
    assert (stored.temperature, stored.info.fit) == (2.5, None)
    assert result.out == stored.document.dumps()


@pytest.mark.parametrize("flags", [["--temperature", "2"], ["--fit-temperature"]])
def test_temperature_flags_need_save(
    capsys: pytest.CaptureFixture[str], dsn: str, flags: list[str]
) -> None:
    result = cli(capsys, "compute", *FLAGS, *flags, "--dsn", dsn)
    assert result == Result(
        2, "", "regime-pg: error: --temperature and --fit-temperature go with --save NAME\n"
    )
    assert set_names(dsn) == []


def test_fit_temperature_with_one_window_exit_2(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    neutral = FLAGS[:6]
    result = cli(capsys, "compute", *neutral, "--save", "x", "--fit-temperature", "--dsn", dsn)
    assert result == Result(
        2,
        "",
        "regime-pg: error: --fit-temperature needs two labelled windows or more: with one "
        "prototype every confidence is 1, whatever the temperature\n",
    )
    assert set_names(dsn) == []


def test_temperature_and_fit_temperature_together_exit_2(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    result = cli(
        capsys,
        "compute",
        *FLAGS,
        "--save",
        "x",
        "--temperature",
        "2",
        "--fit-temperature",
        "--dsn",
        dsn,
    )
    assert_one_error(result, 2, "not allowed with argument")
    assert set_names(dsn) == []


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["--save", "bad name"], 1, "does not follow the set name rule"),
        (
            ["--save", "x", "--temperature", "0"],
            2,
            "argument --temperature: temperature must be a positive finite number, got '0'",
        ),
        (["--save", "x", "--temperature", "nan"], 2, "positive finite number, got 'nan'"),
        (["--save", "x", "--temperature", "inf"], 2, "positive finite number, got 'inf'"),
        (["--save", "x", "--temperature", "warm"], 2, "invalid float value"),
        (["--save", "x", "--window", "ONLY=2030-01-01:2030-01-31"], 1, "no usable embedding"),
    ],
)
def test_compute_save_errors_save_nothing(
    capsys: pytest.CaptureFixture[str], dsn: str, extra: list[str], code: int, fragment: str
) -> None:
    assert_one_error(cli(capsys, "compute", *FLAGS, *extra, "--dsn", dsn), code, fragment)
    assert set_names(dsn) == []


def test_compute_save_of_an_existing_name(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    assert cli(capsys, "compute", *FLAGS, "--save", "v1", "--dsn", dsn).code == 0
    output = tmp_path / "out.json"
    result = cli(
        capsys,
        "compute",
        *FLAGS,
        "--save",
        "v1",
        "--temperature",
        "3",
        "--output",
        output,
        "--dsn",
        dsn,
    )
    assert result == Result(1, "", f"regime-pg: error: {V1_EXISTS}\n")
    assert not output.exists()
    with connect(dsn) as conn:
        assert get_set(conn, "v1").temperature == 1.0


@pytest.mark.parametrize(
    "temperature", [[], ["--temperature", "2"], ["--fit-temperature"]], ids=["t1", "t2", "fit"]
)
def test_compute_save_with_an_unwritable_output_saves_nothing(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path, temperature: list[str]
) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    missing = tmp_path / "no-such-dir" / "x.json"
    for output, reason in ((missing, "No such file or directory"), (directory, "Is a directory")):
        argv = ["compute", *FLAGS, "--save", "v1", *temperature, "--output", output]
        result = cli(capsys, *argv, "--dsn", dsn)
        assert result == Result(1, "", f"regime-pg: error: cannot write {output}: {reason}\n")
        assert set_names(dsn) == []
        assert [p.name for p in tmp_path.iterdir()] == ["a-directory"]
        assert list(directory.iterdir()) == []
    # the same command to a writable path: the set and the file, as before
    output = tmp_path / "v1.json"
    result = cli(
        capsys, "compute", *FLAGS, "--save", "v1", *temperature, "--output", output, "--dsn", dsn
    )
    assert (result.code, result.out) == (0, "")
    assert result.err.startswith("regime-pg: saved set v1")
    assert result.err.endswith(f"\nregime-pg: wrote {output}\n")
    with connect(dsn) as conn:
        stored = get_set(conn, "v1")
    assert output.read_text(encoding="utf-8") == stored.document.dumps()
    assert (stored.info.fit is not None) == (temperature == ["--fit-temperature"])


REFUSE_AT_COMMIT = """
CREATE FUNCTION test_refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'doomed' THEN
        RAISE EXCEPTION 'set % refused at commit', NEW.name;
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER test_refuse_doomed AFTER INSERT ON regime_prototype_sets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_doomed();
"""


def test_compute_save_whose_commit_fails_leaves_no_file(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(REFUSE_AT_COMMIT)  # a deferred check: it fails the commit, not the save
    output = tmp_path / "doomed.json"
    result = cli(capsys, "compute", *FLAGS, "--save", "doomed", "--output", output, "--dsn", dsn)
    assert result == Result(1, "", "regime-pg: error: set doomed refused at commit\n")
    assert list(tmp_path.iterdir()) == []
    assert set_names(dsn) == []
    # to stdout: printed before the commit failed (it cannot be taken back); exit 1 and the
    # error line say the set was not saved
    printed = cli(capsys, "compute", *FLAGS, "--save", "doomed", "--dsn", dsn)
    assert printed.code == 1 and printed.err == "regime-pg: error: set doomed refused at commit\n"
    with connect(dsn) as conn:
        assert printed.out == prototypes_document(conn, "US", WINDOWS).dumps()
    assert set_names(dsn) == []
    # any other name commits
    saved = cli(capsys, "compute", *FLAGS, "--save", "v1", "--output", output, "--dsn", dsn)
    assert saved.code == 0 and set_names(dsn) == ["v1"] and output.exists()


# --------------------------------------------------------------------------- sets list / show


def test_sets_list_and_show(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    assert cli(capsys, "sets", "list", "--dsn", dsn) == Result(0, "", "")
    assert (
        cli(capsys, "compute", *FLAGS, "--save", "given", "--temperature", "2.5", "--dsn", dsn).code
        == 0
    )
    assert (
        cli(capsys, "compute", *FLAGS, "--save", "fitted", "--fit-temperature", "--dsn", dsn).code
        == 0
    )
    listing = cli(capsys, "sets", "list", "--dsn", dsn)
    assert (listing.code, listing.err) == (0, "")
    with connect(dsn) as conn:
        infos = list_sets(conn)
        fitted = get_set(conn, "fitted")
        user = conn.execute("SELECT current_user").fetchone()
    assert user is not None
    windows = (
        '{"CRISIS": {"end_date": "2018-12-31", "start_date": "2018-07-01"}, '
        '"NEUTRAL": {"end_date": "2018-06-30", "start_date": "2018-01-01"}}'
    )
    assert listing.out.splitlines() == [
        f"{info.name}\tUS\tT={temperature}\t{info.created_at:%Y-%m-%d %H:%M:%S%z}"
        f"\t{user[0]}\t{windows}"
        for info, temperature in zip(
            infos, ["2.5", f"{fitted.temperature:.6g} (fitted)"], strict=True
        )
    ]
    assert [info.name for info in infos] == ["given", "fitted"]

    shown = cli(capsys, "sets", "show", "fitted", "--dsn", dsn)
    assert (shown.code, shown.err) == (0, "")
    lines = shown.out.splitlines()
    fit = fitted.info.fit
    assert fit is not None
    assert lines[:3] == [
        "name:          fitted",
        "region:        US",
        "encoder:       num-regime-core-v1 (384 dimensions)",
    ]
    assert lines[3] == f"temperature:   {fitted.temperature:.6g}"
    assert lines[5] == "source:        computed"
    assert lines[6].startswith(f"fit:           log-loss {fit.log_loss:.6g} (at T=1: ")
    assert lines[6].endswith(f"), {fit.n} calibration dates")
    assert lines[7].split() == ["label", "window", "n_dates", "l2_norm", "dispersion"]
    by_label = fitted.document.by_label()
    for line, label in zip(lines[8:], ["CRISIS", "NEUTRAL"], strict=True):
        p = by_label[label]
        assert line.split() == [
            label,
            str(p.window),
            str(p.n_dates),
            f"{p.l2_norm:.4f}",
            f"{p.dispersion:.4f}",
        ]
    given = cli(capsys, "sets", "show", "given", "--dsn", dsn)
    assert "temperature:   2.5\n" in given.out and "fit:" not in given.out


# --------------------------------------------------------------------------- export / import


def test_export_writes_the_bytes_compute_writes(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    computed = tmp_path / "computed.json"
    assert cli(capsys, "compute", *FLAGS, "--output", computed, "--dsn", dsn).code == 0
    assert (
        cli(capsys, "compute", *FLAGS, "--save", "v1", "--fit-temperature", "--dsn", dsn).code == 0
    )
    exported = tmp_path / "exported.json"
    result = cli(capsys, "sets", "export", "v1", "--output", exported, "--dsn", dsn)
    assert result == Result(0, "", f"regime-pg: wrote {exported}\n")
    assert exported.read_bytes() == computed.read_bytes()
    to_stdout = cli(capsys, "sets", "export", "v1", "--dsn", dsn)
    assert to_stdout == Result(0, computed.read_text(encoding="utf-8"), "")


def test_import_then_export_gives_the_same_bytes(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    source = tmp_path / "source.json"
    assert cli(capsys, "compute", *FLAGS, "--output", source, "--dsn", dsn).code == 0
    imported = cli(capsys, "sets", "import", source, "--name", "from-file", "--dsn", dsn)
    assert imported == Result(0, "", "regime-pg: saved set from-file (temperature 1)\n")
    back = tmp_path / "back.json"
    assert cli(capsys, "sets", "export", "from-file", "--output", back, "--dsn", dsn).code == 0
    assert back.read_bytes() == source.read_bytes()
    # A second import of the exported file, with a fitted temperature: the same fit as
    # compute --save --fit-temperature, and the same bytes once more.
    refit = cli(
        capsys, "sets", "import", back, "--name", "refit", "--fit-temperature", "--dsn", dsn
    )
    assert refit.code == 0 and "regime-pg: saved set refit: fitted temperature " in refit.err
    with connect(dsn) as conn:
        stored = get_set(conn, "refit")
        assert stored.info.fit == fit_set_temperature(conn, "US", WINDOWS)
        assert stored.info.source == "document"
    assert cli(capsys, "sets", "export", "refit", "--dsn", dsn).out == source.read_text("utf-8")
    given = cli(
        capsys, "sets", "import", back, "--name", "given", "--temperature", "0.5", "--dsn", dsn
    )
    assert given == Result(0, "", "regime-pg: saved set given (temperature 0.5)\n")
    assert set_names(dsn) == ["from-file", "refit", "given"]


def _windowless(text: str) -> str:
    document = json.loads(text)
    del document["prototypes"]["CRISIS"]["window"]
    return json.dumps(document)


def _small(text: str) -> str:
    return json.dumps(
        {"embedding_dim": 2, "region": "US", "prototypes": {"NEUTRAL": {"center": [1.0, 2.0]}}}
    )


def _bad_label(text: str) -> str:
    return text.replace('"CRISIS"', '"crisis"')


@pytest.mark.parametrize(
    ("mangle", "flags", "fragment"),
    [
        (lambda text: text[: len(text) // 2], [], "not valid JSON"),
        (lambda text: "", [], "not valid JSON"),
        (lambda text: text.replace('"region": "US"', '"region": 7'), [], "'region'"),
        (_bad_label, [], "label rule"),
        (_small, [], "embedding_dim is 2"),  # refused by the server, in its transaction
        (_windowless, ["--fit-temperature"], "prototypes CRISIS have no window"),
        (lambda text: text.replace('"US"', '"EU"'), ["--fit-temperature"], "unknown region 'EU'"),
    ],
    ids=["truncated", "empty", "region-type", "label", "dimension", "windowless", "region"],
)
def test_import_of_a_malformed_file_imports_nothing(
    capsys: pytest.CaptureFixture[str],
    dsn: str,
    tmp_path: Path,
    mangle: object,
    flags: list[str],
    fragment: str,
) -> None:
    source = tmp_path / "source.json"
    assert (
        cli(capsys, "compute", *FLAGS, "--save", "existing", "--output", source, "--dsn", dsn).code
        == 0
    )
    before = cli(capsys, "sets", "list", "--dsn", dsn)
    bad = tmp_path / "bad.json"
    assert callable(mangle)
    bad.write_text(mangle(source.read_text(encoding="utf-8")), encoding="utf-8")
    result = cli(capsys, "sets", "import", bad, "--name", "half", *flags, "--dsn", dsn)
    assert_one_error(result, 1, fragment)
    assert cli(capsys, "sets", "list", "--dsn", dsn) == before
    with connect(dsn) as conn:
        members = conn.execute(
            "SELECT count(*) FROM regime_prototype_set_members WHERE set_name = 'half'"
        ).fetchone()
    assert members == (0,)


def test_import_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    source = tmp_path / "source.json"
    assert (
        cli(capsys, "compute", *FLAGS, "--save", "v1", "--output", source, "--dsn", dsn).code == 0
    )
    assert cli(capsys, "sets", "import", source, "--name", "v1", "--dsn", dsn) == Result(
        1, "", f"regime-pg: error: {V1_EXISTS}\n"
    )
    assert_one_error(
        cli(capsys, "sets", "import", tmp_path / "missing.json", "--name", "v2", "--dsn", dsn),
        1,
        "cannot read",
    )
    assert_one_error(
        cli(capsys, "sets", "import", tmp_path, "--name", "v2", "--dsn", dsn), 1, "cannot read"
    )
    assert_one_error(
        cli(capsys, "sets", "import", source, "--name", "no good", "--dsn", dsn),
        1,
        "does not follow the set name rule",
    )
    assert_one_error(
        cli(capsys, "sets", "import", source, "--dsn", dsn),
        2,
        "the following arguments are required: --name",
    )
    assert_one_error(
        cli(capsys, "sets", "import", source, "--name", "v3", "--temperature", "-1", "--dsn", dsn),
        2,
        "argument --temperature: temperature must be a positive finite number, got '-1'",
    )
    assert set_names(dsn) == ["v1"]


def test_quiet_wherever_it_is_typed(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path
) -> None:
    assert cli(capsys, "compute", *FLAGS, "--save", "v1", "--dsn", dsn, "-q").code == 0
    listing = cli(capsys, "sets", "list", "--dsn", dsn)
    assert listing.code == 0 and listing.out.startswith("v1\t")
    for argv in (
        ["-q", "sets", "list", "--dsn", dsn],
        ["sets", "-q", "list", "--dsn", dsn],
        ["sets", "list", "-q", "--dsn", dsn],
        ["sets", "list", "--dsn", dsn, "--quiet"],
    ):
        assert cli(capsys, *argv) == listing, argv
    exported = tmp_path / "v1.json"
    assert cli(capsys, "sets", "export", "v1", "-q", "--output", exported, "--dsn", dsn) == Result(
        0, "", ""
    )
    assert cli(capsys, "sets", "export", "v1", "--dsn", dsn, "-q").out == exported.read_text()
    assert cli(capsys, "sets", "import", exported, "-q", "--name", "v2", "--dsn", dsn) == Result(
        0, "", ""
    )
    assert cli(capsys, "sets", "delete", "v2", "--dsn", dsn, "--quiet") == Result(0, "", "")
    assert set_names(dsn) == ["v1"]
    assert "--quiet" in cli(capsys, "sets", "list", "--help").out


# --------------------------------------------------------------------------- delete, unknown


def test_delete(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    with connect(dsn) as conn:
        save_set(conn, "keep", "US", WINDOWS)
        save_set(conn, "drop", "US", WINDOWS)
    assert cli(capsys, "sets", "delete", "drop", "--dsn", dsn) == Result(
        0, "", "regime-pg: deleted set drop\n"
    )
    assert set_names(dsn) == ["keep"]
    assert_one_error(
        cli(capsys, "sets", "delete", "drop", "--dsn", dsn), 1, "unknown prototype set 'drop'"
    )
    assert set_names(dsn) == ["keep"]


@pytest.mark.parametrize("action", ["show", "export", "delete"])
def test_unknown_set_is_one_error_line(
    capsys: pytest.CaptureFixture[str], dsn: str, tmp_path: Path, action: str
) -> None:
    result = cli(capsys, "sets", action, "nope", "--dsn", dsn)
    assert_one_error(result, 1, "unknown prototype set 'nope'")
    assert result.err.startswith("regime-pg: error: unknown prototype set 'nope' (hint: ")
    if action == "export":
        output = tmp_path / "nope.json"
        assert_one_error(
            cli(capsys, "sets", "export", "nope", "--output", output, "--dsn", dsn),
            1,
            "unknown prototype set",
        )
        assert not output.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["sets"],
        ["sets", "rename", "a", "b"],
        ["sets", "show"],
        ["sets", "delete"],
        ["sets", "list", "extra"],
    ],
)
def test_sets_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], dsn: str, argv: list[str]
) -> None:
    assert_one_error(cli(capsys, *argv, "--dsn", dsn), 2, "")


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_closed_stdout_exits_141_quietly(dsn: str, buffered: bool) -> None:
    with connect(dsn) as conn:
        for name in ("v1", "v2"):
            save_set(conn, name, "US", WINDOWS)
    for argv in (["sets", "list"], ["sets", "export", "v1"], ["sets", "show", "v1"]):
        done = run_with_closed_stdout(*argv, "--dsn", dsn, buffered=buffered)
        assert (done.returncode, done.stderr) == (141, b""), argv
    # compute --save writes the document before it commits: with nobody to read it, no set
    done = run_with_closed_stdout("compute", *FLAGS, "--save", "v3", "--dsn", dsn, "-q")
    assert (done.returncode, done.stderr) == (141, b"")
    assert set_names(dsn) == ["v1", "v2"]
