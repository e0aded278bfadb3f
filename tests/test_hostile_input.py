"""Hostile input on every surface: psql, SQL with bound parameters, Python, the CLI.

Regions, labels, set names and windows full of quotes, semicolons,
backslashes, NUL, unicode (right-to-left marks, emoji, combining marks,
look-alikes), 10 KB strings, JSON nested 10,000 deep, dates like 'infinity',
year 10000, '0000-01-01', '2018-02-30', and SQL injection payloads.  Each one
gets a clear error (a SQLSTATE in SQL, a typed exception in Python, one line
and a non-zero exit in the CLI) or a correct result, and nothing is written:
every table's rows are checksummed before and after.

Then bounded fuzzing (hypothesis): raw bytes and text for
``PrototypeDocument.loads``; windows JSON for the server-side parser
``regime_windows_from_json`` (through ``compute_regime_prototypes``); documents
for ``save_regime_prototype_set_from_document`` (no half-imported set).

The outcome matrix is kept in docs/hardening.md.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Jsonb

from regime_pg import (
    DateWindow,
    InvalidDocumentError,
    InvalidInputError,
    InvalidLabelError,
    InvalidWindowError,
    PrototypeDocument,
    RegimePgError,
    UnknownRegionError,
    compute_prototypes,
    load_document,
    prototypes_document,
)
from regime_pg.cli import main as cli_main
from regime_pg.connection import connect
from regime_pg.model import NumericRegimeModel, StoredEmbeddingEncoder
from regime_pg.prototypes import RegimePrototype
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384
SUBPROCESS_TIMEOUT_S = 120  # a hang guard, never asserted as a duration

#: A region that exists, hostile characters and all: binding must find it.
ODD_REGION = "Ü'\"; --\\ 🚀"
WINDOWS = {
    "CRISIS": {"start_date": "2018-09-01", "end_date": "2018-12-31"},
    "NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-06-30"},
}


def nested(depth: int, leaf: Any = 1) -> Any:
    """``{"a": {"a": ... leaf}}``, ``depth`` objects deep (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_text(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@dataclass(frozen=True)
class Deep:
    """A JSON value ``depth`` objects deep; written as text, since json.dumps would recurse."""

    depth: int


def json_text(value: Any) -> str:
    """``value`` as JSON text, each ``Deep`` (at the top or one level down) written out."""
    deep: dict[str, Deep] = {}

    def mark(v: Any) -> Any:
        if isinstance(v, Deep):
            key = f"@@deep{len(deep)}@@"
            deep[key] = v
            return key
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        return v

    text = json.dumps(mark(value))
    for key, d in deep.items():
        text = text.replace(json.dumps(key), nested_text(d.depth))
    return text


def python_value(value: Any) -> Any:
    """``value`` with each ``Deep`` as a real nested dict."""
    if isinstance(value, Deep):
        return nested(value.depth)
    if isinstance(value, dict):
        return {k: python_value(x) for k, x in value.items()}
    return value


# --------------------------------------------------------------------------- the inputs

#: Regions: (value, SQLSTATE from compute_regime_prototype or "ok",
#:           Python exception or None, CLI exit status).
#: "client" means psycopg refuses the value before sending it (NUL in text).
REGIONS: dict[str, tuple[str, str, type[Exception] | None, int]] = {
    "sql injection": ("US'); DROP TABLE regimes; --", "42704", UnknownRegionError, 1),
    "identifier injection": ('US"; DROP TABLE regimes; --', "42704", UnknownRegionError, 1),
    "quote": ("O'Brien", "42704", UnknownRegionError, 1),
    "semicolon": ("US;", "42704", UnknownRegionError, 1),
    "backslash": ("US\\", "42704", UnknownRegionError, 1),
    "backslash quote": ("US\\'", "42704", UnknownRegionError, 1),
    "psycopg placeholders": ("US%s%(x)s%%", "42704", UnknownRegionError, 1),
    "newline": ("US\nDROP TABLE regimes", "42704", UnknownRegionError, 1),
    "NUL": ("US\x00", "client", InvalidInputError, 1),
    "right-to-left override": ("\u202eSU", "42704", UnknownRegionError, 1),
    "emoji": ("US🚀", "42704", UnknownRegionError, 1),
    "combining mark": ("U\u0301S", "42704", UnknownRegionError, 1),
    "zero-width space": ("U\u200bS", "42704", UnknownRegionError, 1),
    "fullwidth look-alike": ("\uff35\uff33", "42704", UnknownRegionError, 1),
    "lower case": ("us", "42704", UnknownRegionError, 1),
    "padded": (" US ", "42704", UnknownRegionError, 1),
    "LIKE wildcard": ("U%", "42704", UnknownRegionError, 1),
    "regex": (".*", "42704", UnknownRegionError, 1),
    "NULL word": ("NULL", "42704", UnknownRegionError, 1),
    "dollar quoting": ("$$; DROP TABLE regimes; $$", "42704", UnknownRegionError, 1),
    "psql variable": (":'region'", "42704", UnknownRegionError, 1),
    "psql meta-command": ("\\! touch pwned", "42704", UnknownRegionError, 1),
    "empty": ("", "42704", InvalidInputError, 1),
    "33 characters": ("U" * 33, "22001", InvalidInputError, 1),
    "10 KB": ("U" * 10240, "22001", InvalidInputError, 1),
    "existing odd region": (ODD_REGION, "ok", None, 0),
}

#: Labels (keys of the windows object): SQLSTATE from compute_regime_prototypes.
LABELS: dict[str, tuple[str, str]] = {
    "lower case": ("neutral", "22P02"),
    "sql injection": ("NEUTRAL'); DROP TABLE regimes; --", "22P02"),
    "semicolon": ("NEUTRAL;", "22P02"),
    "backslash": ("NEUTRAL\\", "22P02"),
    "33 characters": ("N" * 33, "22P02"),
    "10 KB": ("N" * 10240, "22P02"),
    "empty": ("", "22P02"),
    "Greek capital nu look-alike": ("\u039dEUTRAL", "22P02"),
    "trailing newline": ("NEUTRAL\n", "22P02"),
    "emoji": ("NEUTRAL🚀", "22P02"),
    "right-to-left override": ("NEUTRAL\u202e", "22P02"),
    "combining mark": ("NEUTRA\u0301L", "22P02"),
    "NUL (JSON \\u0000)": ("NEUTRAL\x00", "22P05"),
}

#: Window start dates (end 2018-12-31) in windows JSON: SQLSTATE or "ok".
JSON_DATES: dict[str, tuple[Any, str]] = {
    "infinity": ("infinity", "22007"),
    "-infinity": ("-infinity", "22007"),
    "year 10000": ("10000-01-01", "22007"),
    "2018-02-30": ("2018-02-30", "22007"),
    "2018-13-01": ("2018-13-01", "22007"),
    "epoch": ("epoch", "22007"),
    "no zero padding": ("2018-1-1", "22007"),
    "leading space": (" 2018-01-01", "22007"),
    "with time": ("2018-01-01T00:00:00", "22007"),
    "BC": ("2018-01-01 BC", "22007"),
    "Arabic-Indic digits": ("\u0662\u0660\u0661\u0668-\u0660\u0661-\u0660\u0661", "22007"),
    "fullwidth digits": ("\uff12\uff10\uff11\uff18-\uff10\uff11-\uff10\uff11", "22007"),
    "sql injection": ("2018-01-01'); DROP TABLE regimes; --", "22007"),
    "10 KB": ("2" * 10240, "22007"),
    "number": (20180101, "22007"),
    "null": (None, "22007"),
    "nested 10,000 deep": (Deep(10_000), "22007"),
    "year 9999": ("9999-12-31", "22023"),  # after the end date: reversed
    "a calendar date": ("2018-01-01", "ok"),
}

#: Strings of the right shape that are no calendar dates (the window parser took them
#: through to_date, which reads month or day 00 as 01 and year 0000 as 1 BC, until
#: commit c07521a).
SHAPED_NON_DATES = {
    "0000-01-01": "0000-01-01",
    "2018-00-00": "2018-00-00",
    "2018-01-00": "2018-01-00",
    "2018-00-15": "2018-00-15",
    "2019-02-29": "2019-02-29",
}
JSON_DATES.update({case: (value, "22007") for case, value in SHAPED_NON_DATES.items()})

#: Window dates bound as date parameters of compute_regime_prototype (PostgreSQL's date input).
DATE_PARAMETERS: dict[str, tuple[str, str]] = {
    "infinity": ("infinity", "22008"),
    "-infinity": ("-infinity", "22008"),
    "year 0000": ("0000-01-01", "22008"),
    "2018-02-30": ("2018-02-30", "22008"),
    "garbage": ("2018-01-01'); DROP TABLE regimes; --", "22007"),
    "year 10000": ("10000-01-01", "22023"),  # a date, after the end: reversed
    "epoch (1970-01-01)": ("epoch", "ok"),
    "4713 BC": ("4713-01-01 BC", "ok"),
}

#: Whole windows documents.
WINDOWS_DOCUMENTS: dict[str, tuple[Any, str]] = {
    "array": ([], "22032"),
    "empty object": ({}, "22032"),
    "string": ("NEUTRAL", "22032"),
    "null": (None, "22032"),
    "extra key": ({"NEUTRAL": {**WINDOWS["NEUTRAL"], "x": 1}}, "22032"),
    "missing key": ({"NEUTRAL": {"start_date": "2018-01-01"}}, "22032"),
    "window is an array": ({"NEUTRAL": ["2018-01-01", "2018-12-31"]}, "22032"),
    "nested 10,000 deep": (Deep(10_000), "22P02"),
    "window nested 10,000 deep": ({"NEUTRAL": Deep(10_000)}, "22032"),
    "1,000 labels": ({f"L{i}": WINDOWS["NEUTRAL"] for i in range(1_000)}, "ok"),
}

#: Set names: SQLSTATE from save_regime_prototype_set, or "ok".
SET_NAMES: dict[str, tuple[str, str]] = {
    "sql injection": ("x'); DROP TABLE regimes; --", "22P02"),
    "identifier injection": ('x"; DROP TABLE regime_prototype_sets; --', "22P02"),
    "space": ("us 2018", "22P02"),
    "empty": ("", "22P02"),
    "65 characters": ("s" * 65, "22P02"),
    "10 KB": ("s" * 10240, "22P02"),
    "leading dot": (".hidden", "22P02"),
    "leading hyphen": ("-rf", "22P02"),
    "slash": ("../../etc/passwd", "22P02"),
    "backslash": ("a\\b", "22P02"),
    "unicode letter": ("ünicode", "22P02"),
    "emoji": ("set-🚀", "22P02"),
    "right-to-left override": ("set\u202e", "22P02"),
    "trailing newline": ("set\n", "22P02"),
    "NUL": ("set\x00", "client"),
    "64 characters": ("s" * 64, "ok"),
    "dots and hyphens": ("us-2018.v1_a", "ok"),
}


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Database:
    dsn: str
    has_sets: bool
    psql: str | None


@pytest.fixture(scope="module")
def database(pg_server: Server, migrated_template: str) -> Iterator[Database]:
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rng = np.random.default_rng(99)
            dates = business_days(dt.date(2018, 1, 1), 260)
            x = rng.standard_normal((len(dates), DIM)).astype("<f4")
            x[[d >= dt.date(2018, 8, 1) for d in dates]] += np.float32(2.5)
            insert_rows(conn, "US", dates, x)
            insert_rows(conn, ODD_REGION, dates, x)
            has_sets = conn.execute(
                "SELECT to_regproc('save_regime_prototype_set') IS NOT NULL"
            ).fetchone() == (True,)
            if has_sets:
                conn.execute(
                    "SELECT save_regime_prototype_set('base', 'US', %s)", (Jsonb(WINDOWS),)
                )
        yield Database(dsn, has_sets, str(pg_server.psql) if pg_server.psql else None)
    finally:
        drop_database(pg_server, name)


def snapshot(dsn: str) -> dict[str, Any]:
    """Every table of the database, with its rows' physical identity (ctid, xmin).

    Any INSERT, UPDATE (a new row version), DELETE, TRUNCATE or DROP changes it;
    reading the row identities is far cheaper than reading the 1.5 kB embeddings.
    """
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            "   AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1"
        ).fetchall()
        return {
            str(t): conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(x.ctid::text || ':' ||"
                    " x.xmin::text, ',' ORDER BY x.ctid), '')) FROM {} AS x"
                ).format(sql.SQL(str(t)))
            ).fetchone()
            for (t,) in tables
        }


@pytest.fixture
def unchanged(database: Database) -> Iterator[None]:
    """Every table's rows are the same after the test as before it."""
    before = snapshot(database.dsn)
    yield
    assert snapshot(database.dsn) == before


def sqlstate_of(conn: psycopg.Connection[Any], query: str, params: tuple[object, ...]) -> str:
    """ "ok", the SQLSTATE of the server's error, or "client" if psycopg refused to send."""
    try:
        conn.execute(query, params).fetchall()
    except psycopg.DataError as exc:
        if exc.sqlstate is None:
            return "client"
        return exc.sqlstate
    except psycopg.Error as exc:
        assert exc.sqlstate is not None, exc
        return exc.sqlstate
    return "ok"


def with_start(start: Any) -> dict[str, Any]:
    return {"NEUTRAL": {"start_date": start, "end_date": "2018-12-31"}}


# --------------------------------------------------------------------------- SQL, bound


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(REGIONS), ids=list(REGIONS))
def test_sql_hostile_regions(database: Database, case: str) -> None:
    region, expected, _, _ = REGIONS[case]
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        one = sqlstate_of(
            conn,
            "SELECT * FROM compute_regime_prototype(%s, %s, %s)",
            (region, "2018-01-01", "2018-06-30"),
        )
        many = sqlstate_of(
            conn, "SELECT * FROM compute_regime_prototypes(%s, %s)", (region, Jsonb(WINDOWS))
        )
        document = sqlstate_of(
            conn, "SELECT regime_prototypes_json(%s, %s)", (region, Jsonb(WINDOWS))
        )
        outcomes = [one, many, document]
        if database.has_sets:
            outcomes.append(
                sqlstate_of(
                    conn,
                    "SELECT * FROM classify_regimes(%s, '2018-01-01', '2018-12-31', 'base')",
                    (region,),
                )
            )
        if expected == "ok":
            row = conn.execute(
                "SELECT regime_prototypes_json(%s, %s) ->> 'region'", (region, Jsonb(WINDOWS))
            ).fetchone()
            assert row == (region,)
    if database.has_sets and expected == "ok":
        # the set 'base' is of region US: another region is refused, by name
        assert outcomes == ["ok", "ok", "ok", "22023"]
    else:
        assert outcomes == [expected] * len(outcomes)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(LABELS), ids=list(LABELS))
def test_sql_hostile_labels(database: Database, case: str) -> None:
    label, expected = LABELS[case]
    windows = Jsonb({label: WINDOWS["NEUTRAL"]})
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        assert (
            sqlstate_of(conn, "SELECT * FROM compute_regime_prototypes('US', %s)", (windows,))
            == expected
        )
        assert sqlstate_of(conn, "SELECT regime_prototypes_json('US', %s)", (windows,)) == expected
        assert sqlstate_of(conn, "SELECT regime_label_is_valid(%s)", (label,)) in ("ok", "client")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(JSON_DATES), ids=list(JSON_DATES))
def test_sql_hostile_window_dates(database: Database, case: str) -> None:
    start, expected = JSON_DATES[case]
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        outcome = sqlstate_of(
            conn,
            "SELECT * FROM compute_regime_prototypes('US', %s::jsonb)",
            (json_text(with_start(start)),),
        )
        reversed_end = sqlstate_of(
            conn,
            "SELECT * FROM compute_regime_prototypes('US', %s::jsonb)",
            (json_text({"NEUTRAL": {"start_date": "2018-01-01", "end_date": start}}),),
        )
    assert outcome == expected
    assert reversed_end == ("ok" if expected == "22023" else expected)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(DATE_PARAMETERS), ids=list(DATE_PARAMETERS))
def test_sql_hostile_date_parameters(database: Database, case: str) -> None:
    start, expected = DATE_PARAMETERS[case]
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        # n_dates only: a window of 4713 BC is a correct answer that Python dates cannot hold
        outcome = sqlstate_of(
            conn,
            "SELECT n_dates FROM compute_regime_prototype('US', %s, %s)",
            (start, "2018-12-31"),
        )
    assert outcome == expected


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(WINDOWS_DOCUMENTS), ids=list(WINDOWS_DOCUMENTS))
def test_sql_hostile_windows_documents(database: Database, case: str) -> None:
    document, expected = WINDOWS_DOCUMENTS[case]
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        outcome = sqlstate_of(
            conn,
            "SELECT count(*) FROM compute_regime_prototypes('US', %s::jsonb)",
            (json_text(document),),
        )
    assert outcome == expected


@pytest.mark.usefixtures("unchanged")
def test_sql_json_nested_deeper_than_the_server_allows(database: Database) -> None:
    """Past the server's stack: a clean program_limit_exceeded, the session lives on."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        outcome = sqlstate_of(
            conn,
            "SELECT * FROM compute_regime_prototypes('US', %s::jsonb)",
            (nested_text(1_000_000),),
        )
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert outcome == "54001"


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(SET_NAMES), ids=list(SET_NAMES))
def test_sql_hostile_set_names(database: Database, case: str) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    name, expected = SET_NAMES[case]
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        saved = sqlstate_of(
            conn, "SELECT * FROM save_regime_prototype_set(%s, 'US', %s)", (name, Jsonb(WINDOWS))
        )
        shown = sqlstate_of(conn, "SELECT regime_prototype_set_json(%s)", (name,))
        classified = sqlstate_of(
            conn, "SELECT * FROM classify_regimes('US', '2018-01-01', '2018-01-31', %s)", (name,)
        )
        deleted = sqlstate_of(conn, "SELECT delete_regime_prototype_set(%s)", (name,))
        imported = sqlstate_of(
            conn,
            "SELECT * FROM save_regime_prototype_set_from_document(%s,"
            " regime_prototype_set_json('base'))",
            (name,),
        )
        if imported == "ok":
            conn.execute("SELECT delete_regime_prototype_set(%s)", (name,))
    unknown = {"ok": "ok", "client": "client"}.get(expected, "42704")
    assert (saved, imported) == (expected, expected)
    assert (shown, classified, deleted) == (unknown, unknown, unknown)


# --------------------------------------------------------------------------- psql


def run_psql(database: Database, script: str, cwd: Path, **variables: str) -> tuple[int, str]:
    """The real psql: ON_ERROR_STOP, verbose errors (SQLSTATE shown), -v variables."""
    if database.psql is None:
        pytest.skip("no psql binary for this backend")
    argv = [
        database.psql,
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
        "-d",
        database.dsn,
    ]
    for name, value in variables.items():
        argv += ["-v", f"{name}={value}"]
    proc = subprocess.run(
        argv,
        input=script,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
        env={**os.environ, "PGCLIENTENCODING": "UTF8"},
    )
    if proc.returncode == 0:
        return 0, "ok"
    found = re.search(r"ERROR:\s+([0-9A-Z]{5}):", proc.stderr)
    assert proc.returncode == 3 and found, (proc.returncode, proc.stderr)
    return proc.returncode, found.group(1)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c in REGIONS if "\x00" not in REGIONS[c][0]])
def test_psql_hostile_regions(database: Database, tmp_path: Path, case: str) -> None:
    region, expected, _, _ = REGIONS[case]
    _, outcome = run_psql(
        database,
        "SELECT n_dates FROM compute_regime_prototype(:'region', :'start', :'end');\n"
        "SELECT count(*) FROM compute_regime_prototypes(:'region', :'windows');\n",
        tmp_path,
        region=region,
        start="2018-01-01",
        end="2018-06-30",
        windows=json.dumps(WINDOWS),
    )
    assert outcome == expected
    assert list(tmp_path.iterdir()) == []  # \! never ran


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c in LABELS if "\x00" not in LABELS[c][0]])
def test_psql_hostile_labels(database: Database, tmp_path: Path, case: str) -> None:
    label, expected = LABELS[case]
    _, outcome = run_psql(
        database,
        "SELECT regime_prototypes_json('US', :'windows');\n",
        tmp_path,
        windows=json.dumps({label: WINDOWS["NEUTRAL"]}),
    )
    assert outcome == expected


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(JSON_DATES), ids=list(JSON_DATES))
def test_psql_hostile_window_dates(database: Database, tmp_path: Path, case: str) -> None:
    start, expected = JSON_DATES[case]
    _, outcome = run_psql(
        database,
        "SELECT count(*) FROM compute_regime_prototypes('US', :'windows');\n",
        tmp_path,
        windows=json_text(with_start(start)),
    )
    assert outcome == expected


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(DATE_PARAMETERS), ids=list(DATE_PARAMETERS))
def test_psql_hostile_date_parameters(database: Database, tmp_path: Path, case: str) -> None:
    start, expected = DATE_PARAMETERS[case]
    _, outcome = run_psql(
        database,
        "SELECT n_dates FROM compute_regime_prototype('US', :'start', '2018-12-31');\n",
        tmp_path,
        start=start,
    )
    assert outcome == expected


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c in SET_NAMES if "\x00" not in SET_NAMES[c][0]])
def test_psql_hostile_set_names(database: Database, tmp_path: Path, case: str) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    name, expected = SET_NAMES[case]
    _, outcome = run_psql(
        database,
        "BEGIN;\nSELECT name FROM save_regime_prototype_set(:'name', 'US', :'windows');\n"
        "SELECT delete_regime_prototype_set(:'name');\nCOMMIT;\n",
        tmp_path,
        name=name,
        windows=json.dumps(WINDOWS),
    )
    assert outcome == expected


# --------------------------------------------------------------------------- Python


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(REGIONS), ids=list(REGIONS))
def test_python_hostile_regions(database: Database, case: str) -> None:
    region, _, error, _ = REGIONS[case]
    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}
    with connect(database.dsn) as conn:
        if error is None:
            assert len(compute_prototypes(conn, region, windows)) == 2
            assert prototypes_document(conn, region, windows).region == region
            return
        with pytest.raises(error):
            compute_prototypes(conn, region, windows)
        with pytest.raises(error):
            prototypes_document(conn, region, windows)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(LABELS), ids=list(LABELS))
def test_python_hostile_labels(database: Database, case: str) -> None:
    label, _ = LABELS[case]
    with connect(database.dsn) as conn, pytest.raises(InvalidLabelError):
        compute_prototypes(conn, "US", {label: ("2018-01-01", "2018-06-30")})


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(JSON_DATES), ids=list(JSON_DATES))
def test_python_hostile_window_dates(database: Database, case: str) -> None:
    start, expected = JSON_DATES[case]
    start = python_value(start)
    with connect(database.dsn) as conn:
        if expected == "ok":
            assert len(compute_prototypes(conn, "US", {"NEUTRAL": (start, "2018-12-31")})) == 1
            return
        error: type[Exception] = InvalidWindowError if isinstance(start, str) else InvalidInputError
        with pytest.raises(error):
            compute_prototypes(conn, "US", {"NEUTRAL": (start, "2018-12-31")})


@pytest.mark.parametrize("start", [*SHAPED_NON_DATES.values(), "infinity", "10000-01-01"])
def test_python_refuses_what_is_no_calendar_date(start: str) -> None:
    with pytest.raises(InvalidWindowError):
        DateWindow.parse(start, "2018-12-31")


MALFORMED_WINDOWS: dict[str, Any] = {
    "one date": ("2018-01-01",),
    "three dates": ("2018-01-01", "2018-02-01", "2018-03-01"),
    "a string": "2018-01-01..2018-12-31",
    "None": None,
    "a number": 20180101,
    "a dict": {"start_date": "2018-01-01"},
}


@pytest.mark.parametrize("case", list(MALFORMED_WINDOWS), ids=list(MALFORMED_WINDOWS))
def test_python_malformed_windows_are_typed(case: str) -> None:
    from regime_pg.client import windows_json

    with pytest.raises(InvalidInputError):
        windows_json({"NEUTRAL": MALFORMED_WINDOWS[case]})


def _document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "embedding_dim": 2,
        "prototypes": {"NEUTRAL": {"center": [0.5, -1.0], "window": dict(WINDOWS["NEUTRAL"])}},
        "region": "US",
    }
    doc.update(changes)
    return doc


DOCUMENTS: dict[str, tuple[Any, bool]] = {
    # name: (document as JSON text or object, loads?)
    "region sql injection": (_document(region="US'); DROP TABLE regimes; --"), True),
    "region unicode": (_document(region=ODD_REGION), True),
    "region 10 KB": (_document(region="U" * 10240), False),
    "region NUL": (_document(region="US\x00"), False),
    "region not a string": (_document(region=["US"]), False),
    "label injection": (_document(prototypes={"A'); DROP TABLE x; --": {"center": [1, 2]}}), False),
    "label look-alike": (_document(prototypes={"\u039dEUTRAL": {"center": [1, 2]}}), False),
    "label 10 KB": (_document(prototypes={"N" * 10240: {"center": [1, 2]}}), False),
    "window infinity": (
        _document(
            prototypes={
                "A": {
                    "center": [1, 2],
                    "window": {"start_date": "infinity", "end_date": "2018-01-01"},
                }
            }
        ),
        False,
    ),
    "window year 10000": (
        _document(
            prototypes={
                "A": {
                    "center": [1, 2],
                    "window": {"start_date": "2018-01-01", "end_date": "10000-01-01"},
                }
            }
        ),
        False,
    ),
    "window 0000-01-01": (
        _document(
            prototypes={
                "A": {
                    "center": [1, 2],
                    "window": {"start_date": "0000-01-01", "end_date": "2018-01-01"},
                }
            }
        ),
        False,
    ),
    "window 2018-02-30": (
        _document(
            prototypes={
                "A": {
                    "center": [1, 2],
                    "window": {"start_date": "2018-02-30", "end_date": "2018-03-01"},
                }
            }
        ),
        False,
    ),
    "nested 10,000 deep": (nested_text(10_000), False),
    "centre nested 10,000 deep": (
        '{"embedding_dim": 1, "region": "US", "prototypes": '
        '{"A": {"center": ' + "[" * 10_000 + "]" * 10_000 + "}}}",
        False,
    ),
    "huge integer": (
        '{"embedding_dim": ' + "9" * 5000 + ', "prototypes": {}, "region": "US"}',
        False,
    ),
    "huge exponent": (_document(prototypes={"A": {"center": [1e308, 1e308]}}), False),
    "not UTF-8": (b'{"region": "\xff\xfe"}', False),
    "UTF-16": ('{"embedding_dim": 1}'.encode("utf-16"), False),
    "10 MB of spaces": (" " * 10_000_000, False),
}


@pytest.mark.parametrize("case", list(DOCUMENTS), ids=list(DOCUMENTS))
def test_python_hostile_documents(case: str, tmp_path: Path) -> None:
    document, loads = DOCUMENTS[case]
    text = document if isinstance(document, str | bytes) else json.dumps(document)
    if loads:
        doc = PrototypeDocument.loads(text)
        assert PrototypeDocument.loads(doc.dumps()) == doc
    else:
        with pytest.raises(InvalidDocumentError):
            PrototypeDocument.loads(text)
    path = tmp_path / "doc.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    if loads:
        load_document(path)
    else:
        with pytest.raises(InvalidDocumentError):
            load_document(path)


def test_python_document_path_hostile(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.json", tmp_path, tmp_path / ("x" * 300), Path("/dev/null")):
        with pytest.raises(InvalidDocumentError):
            load_document(path)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c in REGIONS if "\x00" not in REGIONS[c][0]])
def test_python_model_hostile_regions(database: Database, case: str) -> None:
    region, _, error, _ = REGIONS[case]
    centres = [
        RegimePrototype("NEUTRAL", np.zeros(DIM, np.float32)),
        RegimePrototype("CRISIS", np.ones(DIM, np.float32)),
    ]
    with connect(database.dsn) as conn:
        encoder = StoredEmbeddingEncoder(conn)
        model = NumericRegimeModel(encoder, {"US": "US", ODD_REGION: ODD_REGION}, 63, centres)
        if error is None:
            assert model.classify(dt.date(2018, 3, 1), region).region == region
            return
        with pytest.raises(InvalidInputError, match="has no instrument"):
            model.classify(dt.date(2018, 3, 1), region)
        with pytest.raises(RegimePgError):
            encoder.encode(region, dt.date(2018, 3, 1), 63)


def test_python_model_nul_region_is_typed(database: Database) -> None:
    """psycopg refuses a NUL client-side; translated_errors makes it InvalidInputError."""
    with connect(database.dsn) as conn, pytest.raises(InvalidInputError):
        StoredEmbeddingEncoder(conn).encode("US\x00", dt.date(2018, 3, 1), 63)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_days": 0},
        {"window_days": -1},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"temperature": 0.0},
        {"prototypes": []},
    ],
    ids=[
        "window_days 0",
        "window_days -1",
        "temperature NaN",
        "temperature inf",
        "temperature 0",
        "no prototypes",
    ],
)
def test_python_model_hostile_arguments(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "encoder": None,
        "region_instruments": {},
        "window_days": 63,
        "prototypes": [RegimePrototype("NEUTRAL", np.zeros(2, np.float32))],
    }
    with pytest.raises(InvalidInputError):
        NumericRegimeModel(**{**arguments, **kwargs})


# --------------------------------------------------------------------------- Python: sets


def sets_module() -> Any:
    return pytest.importorskip("regime_pg.sets")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(SET_NAMES), ids=list(SET_NAMES))
def test_python_sets_hostile_names(database: Database, case: str) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    sets = sets_module()
    from regime_pg.errors import InvalidSetNameError, UnknownPrototypeSetError
    from regime_pg.factory import model_from_set

    name, expected = SET_NAMES[case]
    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}
    with connect(database.dsn) as conn:
        document = sets.get_set(conn, "base").document
        if expected == "ok":
            assert sets.save_set(conn, name, "US", windows).name == name
            assert model_from_set(conn, name).temperature == 1.0
            sets.delete_set(conn, name)
            assert sets.import_set(conn, name, document).document == document
            sets.delete_set(conn, name)
            return
        save_error = InvalidInputError if expected == "client" else InvalidSetNameError
        unknown = InvalidInputError if expected == "client" else UnknownPrototypeSetError
        with pytest.raises(save_error):
            sets.save_set(conn, name, "US", windows)
        with pytest.raises(save_error):
            sets.import_set(conn, name, document)
        for call in (sets.get_set, sets.delete_set, model_from_set):
            with pytest.raises(unknown):
                call(conn, name)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c, (_, ok) in DOCUMENTS.items() if not ok])
def test_python_factory_hostile_documents(case: str, tmp_path: Path) -> None:
    from regime_pg.factory import model_from_document

    document, _ = DOCUMENTS[case]
    path = tmp_path / "doc.json"
    text = document if isinstance(document, str | bytes) else json.dumps(document)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    with pytest.raises(InvalidDocumentError):
        model_from_document(path)


# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Result]:
    """``regime-pg ...`` in-process; never the user's default embedded server."""
    import logging

    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(tmp_path / "no-default-server"))
    monkeypatch.delenv("REGIME_PG_DSN", raising=False)
    monkeypatch.chdir(tmp_path)
    logger = logging.getLogger("regime_pg")
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(logger, "propagate", logger.propagate)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            code = cli_main(list(argv))
        except SystemExit as exc:
            assert isinstance(exc.code, int)
            code = exc.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def assert_one_error(result: Result, code: int) -> None:
    assert result.code == code, result
    assert result.out == ""
    assert result.err.startswith("regime-pg: error: ") and result.err.count("\n") == 1, result
    assert "Traceback" not in result.err


NEUTRAL_2018 = ["--neutral-start", "2018-01-01", "--neutral-end", "2018-06-30"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(REGIONS), ids=list(REGIONS))
def test_cli_hostile_regions(database: Database, cli: Callable[..., Result], case: str) -> None:
    region, _, _, code = REGIONS[case]
    result = cli("compute", "--region", region, *NEUTRAL_2018, "--dsn", database.dsn, "-q")
    if code == 0:
        assert result.code == 0 and result.err == ""
        assert json.loads(result.out)["region"] == region
    else:
        assert_one_error(result, code)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(LABELS), ids=list(LABELS))
def test_cli_hostile_labels(database: Database, cli: Callable[..., Result], case: str) -> None:
    label, _ = LABELS[case]
    result = cli(
        "compute",
        "--region",
        "US",
        *NEUTRAL_2018,
        "--window",
        f"{label}=2018-09-01:2018-12-31",
        "--dsn",
        database.dsn,
    )
    assert_one_error(result, 2)  # the label rule is checked before connecting


CLI_DATES = {
    **{case: value for case, (value, _) in JSON_DATES.items() if isinstance(value, str)},
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(CLI_DATES), ids=list(CLI_DATES))
def test_cli_hostile_dates(database: Database, cli: Callable[..., Result], case: str) -> None:
    value = CLI_DATES[case]
    flag = cli(
        "compute",
        "--region",
        "US",
        "--neutral-start",
        value,
        "--neutral-end",
        "2018-12-31",
        "--dsn",
        database.dsn,
        "-q",
    )
    window = cli(
        "compute",
        "--region",
        "US",
        *NEUTRAL_2018,
        "--window",
        f"CRISIS={value}:2018-12-31",
        "--dsn",
        database.dsn,
        "-q",
    )
    if value == "2018-01-01":
        assert flag.code == 0 and window.code == 0
    else:
        # not a YYYY-MM-DD date (argparse, or --window's parser), or reversed: argument errors
        assert_one_error(flag, 2)
        assert_one_error(window, 2)
    assert list(Path.cwd().iterdir()) == []


@pytest.mark.usefixtures("unchanged")
def test_cli_hostile_output_and_dsn(
    database: Database, cli: Callable[..., Result], tmp_path: Path
) -> None:
    for output in (tmp_path / "no-such-dir" / "x.json", tmp_path, Path("/proc/version")):
        assert_one_error(
            cli(
                "compute",
                "--region",
                "US",
                *NEUTRAL_2018,
                "--output",
                str(output),
                "--dsn",
                database.dsn,
                "-q",
            ),
            1,
        )
    for dsn in (
        "host=/nonexistent dbname=x'; DROP TABLE regimes; --",
        database.dsn + "&options=-c%20search_path%3Devil",
        "dbname=" + "x" * 10240,
    ):
        result = cli("compute", "--region", "US", *NEUTRAL_2018, "--dsn", dsn, "-q")
        assert result.code in (0, 1)
        if result.code:
            assert_one_error(result, 1)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c in SET_NAMES if SET_NAMES[c][1] != "ok"])
def test_cli_sets_hostile_names(
    database: Database, cli: Callable[..., Result], case: str, tmp_path: Path
) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    name, _ = SET_NAMES[case]
    document = tmp_path / "base.json"
    assert (
        cli("-q", "sets", "export", "base", "--output", str(document), "--dsn", database.dsn).code
        == 0
    )
    for argv in (
        ["sets", "import", str(document), "--name", name],
        ["sets", "show", name],
        ["sets", "export", name],
        ["sets", "delete", name],
        ["timeline", "--set", name, "--start", "2018-01-01", "--end", "2018-12-31", "--csv", "-"],
    ):
        # a name that looks like an option is an argument error (2), the others 1
        assert_one_error(cli("-q", *argv, "--dsn", database.dsn), 2 if name[:1] == "-" else 1)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", [c for c, (_, ok) in DOCUMENTS.items() if not ok])
def test_cli_sets_import_hostile_files(
    database: Database, cli: Callable[..., Result], case: str, tmp_path: Path
) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    document, _ = DOCUMENTS[case]
    path = tmp_path / "doc.json"
    text = document if isinstance(document, str | bytes) else json.dumps(document)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    assert_one_error(
        cli("-q", "sets", "import", str(path), "--name", "hostile", "--dsn", database.dsn), 1
    )


def test_cli_sets_list_prints_no_control_characters(
    database: Database, cli: Callable[..., Result]
) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        document = conn.execute("SELECT regime_prototype_set_json('base')").fetchone()
        assert document is not None
        forged = {**document[0], "region": "US\nfake\tXX\t\x1b]0;pwned\x07"}
        conn.execute(
            "SELECT save_regime_prototype_set_from_document('forged', %s)", (Jsonb(forged),)
        )
        try:
            listed = cli("-q", "sets", "list", "--dsn", database.dsn)
            shown = cli("-q", "sets", "show", "forged", "--dsn", database.dsn)
        finally:
            conn.execute("SELECT delete_regime_prototype_set('forged')")
    assert listed.code == 0 and shown.code == 0
    assert len(listed.out.splitlines()) == 2  # 'base' and 'forged', one line each
    assert "\x1b" not in listed.out + shown.out


# --------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)

date_like = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z"),
    st.sampled_from(
        [
            "infinity",
            "-infinity",
            "epoch",
            "10000-01-01",
            "0000-01-01",
            "2018-02-30",
            "2018-00-00",
            JSON_DATES["Arabic-Indic digits"][0],
        ]
    ),
    st.text(max_size=12),
    json_values,
)

windows_like = st.one_of(
    json_values,
    st.dictionaries(
        st.one_of(
            st.sampled_from(["NEUTRAL", "CRISIS", "RISK_OFF", "neutral", "", "A" * 33]),
            st.text(max_size=8),
        ),
        st.one_of(
            st.fixed_dictionaries({"start_date": date_like, "end_date": date_like}),
            json_values,
        ),
        max_size=3,
    ),
)


def _valid_document_text() -> str:
    center = [round(0.001 * i, 3) for i in range(4)]
    return json.dumps(
        _document(
            embedding_dim=4,
            prototypes={
                "NEUTRAL": {"center": center, "l2_norm": 0.5, "window": dict(WINDOWS["NEUTRAL"])},
                "CRISIS": {
                    "center": center[::-1],
                    "n_dates": 3,
                    "first_date": "2018-01-02",
                    "last_date": "2018-01-04",
                },
            },
        )
    )


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few random slices replaced, deleted or duplicated."""
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + draw(st.text(max_size=6)) + text[j:]
    return text


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        mutated_text(_valid_document_text()),
        mutated_text(_valid_document_text()).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
def test_fuzz_document_loader(raw: str | bytes) -> None:
    try:
        doc = PrototypeDocument.loads(raw)
    except InvalidDocumentError:
        return
    assert PrototypeDocument.loads(doc.dumps()) == doc


def _server_outcome(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> str:
    """ "ok" or the SQLSTATE; asserts the error is a clean data error, not a crash."""
    outcome = sqlstate_of(conn, query, params)
    assert outcome == "ok" or outcome[:2] == "22" or outcome in ("P0002", "54001", "client"), (
        outcome,
        params,
    )
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the session (and server) lives on
    return outcome


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(windows=windows_like)
def test_fuzz_server_windows_parser(database: Database, windows: Any) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        outcome = _server_outcome(
            conn, "SELECT count(*) FROM compute_regime_prototypes('US', %s)", (Jsonb(windows),)
        )
    if outcome == "ok":
        assert isinstance(windows, dict) and windows


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.one_of(st.text(max_size=200), mutated_text(json.dumps(WINDOWS))))
def test_fuzz_server_windows_parser_raw_text(database: Database, text: str) -> None:
    """Raw text, parsed by the server's jsonb input and then by regime_windows_from_json."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        _server_outcome(conn, "SELECT count(*) FROM regime_windows_from_json(%s::jsonb)", (text,))


@st.composite
def mutated_document(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """A real prototype document with a few parts dropped, replaced or retyped."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        target: Any = doc
        path = draw(
            st.lists(
                st.sampled_from(
                    [
                        "prototypes",
                        "NEUTRAL",
                        "CRISIS",
                        "center",
                        "window",
                        "start_date",
                        "l2_norm",
                        "n_dates",
                        "region",
                        "embedding_dim",
                        "first_date",
                    ]
                ),
                max_size=4,
            )
        )
        for key in path:
            if isinstance(target, dict) and isinstance(target.get(key), dict | list):
                target = target[key]
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            action = draw(st.sampled_from(["drop", "replace", "rename"]))
            if action == "drop":
                del target[key]
            elif action == "replace":
                target[key] = draw(json_values | date_like)
            else:
                target[draw(st.text(max_size=8))] = target.pop(key)
        elif isinstance(target, list) and target:
            i = draw(st.integers(0, len(target) - 1))
            target[i] = draw(json_values)
    return doc


@pytest.fixture(scope="module")
def base_document(database: Database) -> dict[str, Any]:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed")
    with psycopg.connect(database.dsn) as conn:
        row = conn.execute("SELECT regime_prototypes_json('US', %s)", (Jsonb(WINDOWS),)).fetchone()
    assert row is not None
    return dict(row[0])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_fuzz_document_import_leaves_no_half_imported_set(
    database: Database, base_document: dict[str, Any], data: st.DataObject
) -> None:
    document = data.draw(mutated_document(base_document))
    name = "fuzzed"
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        outcome = _server_outcome(
            conn,
            "SELECT name FROM save_regime_prototype_set_from_document(%s, %s, 1.0)",
            (name, Jsonb(document)),
        )
        sets, members = conn.execute(
            "SELECT (SELECT count(*) FROM regime_prototype_sets WHERE name = %s),"
            " (SELECT count(*) FROM regime_prototype_set_members WHERE set_name = %s)",
            (name, name),
        ).fetchone() or (None, None)
        if outcome == "ok":
            assert sets == 1 and members == len(document["prototypes"])
            conn.execute("SELECT delete_regime_prototype_set(%s)", (name,))
        else:
            assert (sets, members) == (0, 0)
    # The Python loader, on the same document, raises a typed error or loads.
    with contextlib.suppress(InvalidDocumentError):
        PrototypeDocument.from_json(document)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_fuzz_python_import_leaves_no_half_imported_set(
    database: Database, base_document: dict[str, Any], data: st.DataObject
) -> None:
    """The Python path: PrototypeDocument.from_json, then regime_pg.sets.import_set."""
    sets = sets_module()
    obj = data.draw(mutated_document(base_document))
    try:
        document = PrototypeDocument.from_json(obj)
    except InvalidDocumentError:
        return
    name = "fuzzed-py"
    with connect(database.dsn) as conn:
        try:
            stored = sets.import_set(conn, name, document)
        except RegimePgError:
            stored = None
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM regime_prototype_sets WHERE name = %s),"
            " (SELECT count(*) FROM regime_prototype_set_members WHERE set_name = %s)",
            (name, name),
        ).fetchone()
        if stored is not None:
            assert counts == (1, len(document.prototypes))
            sets.delete_set(conn, name)
        else:
            assert counts == (0, 0)
