"""Stored prototype sets in SQL: save, show, export, import, delete, immutability, races."""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
from typing import Any

import numpy as np
import psycopg
import pytest

from regime_pg import migrate
from regime_pg.connection import Connection, vector_to_numpy
from tests.engine import business_days, insert_rows

DIM = 384
WINDOWS = {
    "CALM": {"start_date": "2018-01-01", "end_date": "2018-06-29"},
    "STORM": {"start_date": "2018-07-02", "end_date": "2018-12-31"},
}
SET_COLUMNS = (
    "name, region, encoder_model_id, embedding_dim, temperature, windows, source, "
    "fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable"
)
MEMBER_COLUMNS = (
    "label, center, l2_norm, n_dates, n_skipped, dispersion, start_date, end_date, "
    "first_date, last_date"
)


def load_two_regimes(conn: Connection, region: str = "US", seed: int = 11) -> None:
    """260 business days of 2018: a calm first half and a stormy second half."""
    rng = np.random.default_rng(seed)
    dates = business_days(dt.date(2018, 1, 1), 260)
    x = rng.standard_normal((len(dates), DIM)).astype("<f4") * 2
    x[:130, 0] += 4
    x[130:, 0] -= 4
    insert_rows(conn, region, dates, x)


def save(conn: Connection, name: str, windows: dict[str, Any] = WINDOWS,
         temperature: float | None = 1.0, region: str = "US") -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {SET_COLUMNS} FROM save_regime_prototype_set(%s, %s, %s, %s)",
        (name, region, json.dumps(windows), temperature),
    ).fetchone()
    assert row is not None
    return row


def export(conn: Connection, name: str) -> Any:
    row = conn.execute("SELECT regime_prototype_set_json(%s)", (name,)).fetchone()
    assert row is not None
    return row[0]


def set_rows(conn: Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT s.*, (SELECT count(*) FROM regime_prototype_set_members AS m"
        "             WHERE m.set_name = s.name) FROM regime_prototype_sets AS s ORDER BY name"
    ).fetchall()


def expect_error(conn: Connection, query: str, params: tuple[Any, ...], sqlstate: str,
                 message: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query, params)
    assert caught.value.sqlstate == sqlstate, caught.value.diag.message_primary
    assert message in (caught.value.diag.message_primary or "")
    return caught.value


def same_json_value(a: Any, b: Any) -> bool:
    """Equal as JSON values: jsonb writes 3.4028235e38 as 340282350000000000000000000000000000000,
    which Python reads as an int, so numbers are compared as floats."""
    return bool(json.loads(json.dumps(a), parse_int=float) == json.loads(json.dumps(b),
                                                                       parse_int=float))


def norm64(center: np.ndarray) -> float:
    """The norm of a float32 centre, in float64: what vector_norm gives."""
    return float(np.linalg.norm(center.astype(np.float64)))


def f32(value: float) -> float:
    """The shortest decimal of a float32, as a JSON document holds it."""
    return float(str(np.float32(value))) + 0.0


# ---------------------------------------------------------------- save, show, delete


def test_save_show_and_delete(conn: Connection) -> None:
    load_two_regimes(conn)
    row = save(conn, "us-2018-v1", temperature=2.5)
    assert row == ("us-2018-v1", "US", "num-regime-core-v1", DIM, 2.5, WINDOWS, "computed",
                   None, None, None, None)
    extra = conn.execute(
        "SELECT created_by = current_user, now() - created_at < interval '1 minute'"
        "  FROM regime_prototype_sets WHERE name = 'us-2018-v1'"
    ).fetchone()
    assert extra == (True, True)
    shown = conn.execute(
        f"SELECT {SET_COLUMNS} FROM regime_prototype_set('us-2018-v1')").fetchone()
    assert shown == row

    members = conn.execute(
        f"SELECT {MEMBER_COLUMNS} FROM regime_prototype_set_members"
        " WHERE set_name = 'us-2018-v1' ORDER BY label").fetchall()
    computed = conn.execute(
        f"SELECT {MEMBER_COLUMNS} FROM compute_regime_prototypes('US', %s) ORDER BY label",
        (json.dumps(WINDOWS),)).fetchall()
    assert [m[0] for m in members] == ["CALM", "STORM"]
    for got, expected in zip(members, computed, strict=True):
        assert np.array_equal(vector_to_numpy(got[1]), vector_to_numpy(expected[1]))
        assert got[:1] + got[2:] == expected[:1] + expected[2:]

    assert conn.execute("SELECT delete_regime_prototype_set('us-2018-v1')").fetchone() == (True,)
    assert set_rows(conn) == []
    assert conn.execute("SELECT count(*) FROM regime_prototype_set_members").fetchone() == (0,)
    error = expect_error(conn, "SELECT delete_regime_prototype_set(%s)", ("us-2018-v1",),
                         "42704", "unknown prototype set 'us-2018-v1'")
    assert (error.diag.table_name, error.diag.column_name) == ("regime_prototype_sets", "name")


def test_unknown_set_is_42704_on_table_regime_prototype_sets(conn: Connection) -> None:
    load_two_regimes(conn)
    save(conn, "us-2018-v1")
    for call in ("regime_prototype_set(%s)", "regime_prototype_set_json(%s)",
                 "delete_regime_prototype_set(%s)"):
        error = expect_error(conn, f"SELECT * FROM {call}", ("US-2018-v1",), "42704",
                             "unknown prototype set 'US-2018-v1'")
        assert error.diag.table_name == "regime_prototype_sets"
        assert error.diag.column_name == "name"
        error = expect_error(conn, f"SELECT * FROM {call}", (None,), "22004", "must not be NULL")
        assert error.diag.table_name == "regime_prototype_sets"
    # An unknown region is told apart by its table.
    error = expect_error(conn, "SELECT save_regime_prototype_set('x', 'XX', %s)",
                         (json.dumps(WINDOWS),), "42704", "unknown region 'XX'")
    assert error.diag.table_name == "regimes"


def test_export_equals_regime_prototypes_json(conn: Connection) -> None:
    load_two_regimes(conn)
    save(conn, "us-2018-v1")
    computed = conn.execute("SELECT regime_prototypes_json('US', %s)",
                            (json.dumps(WINDOWS),)).fetchone()
    assert computed is not None
    assert export(conn, "us-2018-v1") == computed[0]
    same = conn.execute("SELECT regime_prototype_set_json('us-2018-v1')"
                        "       = regime_prototypes_json('US', %s)", (json.dumps(WINDOWS),))
    assert same.fetchone() == (True,)


@pytest.mark.parametrize(
    ("name", "sqlstate", "message"),
    [
        (None, "22004", "must not be NULL"),
        ("", "22P02", "set name rule"),
        ("-leading-hyphen", "22P02", "set name rule"),
        ("has space", "22P02", "set name rule"),
        ("ünïcode", "22P02", "set name rule"),
        ("x" * 65, "22P02", "set name rule"),
        ("semi;colon", "22P02", "set name rule"),
    ],
)
def test_set_name_rule(conn: Connection, name: str | None, sqlstate: str, message: str) -> None:
    load_two_regimes(conn)
    error = expect_error(conn, "SELECT save_regime_prototype_set(%s, 'US', %s)",
                         (name, json.dumps(WINDOWS)), sqlstate, message)
    assert (error.diag.table_name, error.diag.column_name) == ("regime_prototype_sets", "name")
    assert set_rows(conn) == []


def test_longest_and_odd_valid_names(conn: Connection) -> None:
    load_two_regimes(conn)
    for name in ("x" * 64, "0", "A.b_c-D", "us-2018-v1.2"):
        assert save(conn, name)[0] == name
    assert conn.execute("SELECT regime_prototype_set_name_is_valid(%s)", ("a\n",)).fetchone() == (
        False,)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_must_be_positive_and_finite(conn: Connection, temperature: float) -> None:
    load_two_regimes(conn)
    error = expect_error(conn, "SELECT save_regime_prototype_set('t', 'US', %s, %s)",
                         (json.dumps(WINDOWS), temperature), "22023",
                         "temperature must be a positive finite number")
    assert error.diag.column_name == "temperature"
    assert set_rows(conn) == []


@pytest.mark.parametrize(
    ("windows", "sqlstate", "message"),
    [
        ({"calm": WINDOWS["CALM"]}, "22P02", "label rule"),
        ({"CALM": {"start_date": "2018-01-01"}}, "22032", "must be {"),
        ({"CALM": {"start_date": "2018-06-01", "end_date": "2018-01-01"}}, "22023", "reversed"),
        ({"CALM": {"start_date": "2030-01-01", "end_date": "2030-06-01"}}, "P0002",
         "no usable embedding"),
    ],
)
def test_save_errors_write_nothing(conn: Connection, windows: dict[str, Any], sqlstate: str,
                                   message: str) -> None:
    load_two_regimes(conn)
    expect_error(conn, "SELECT save_regime_prototype_set('bad', 'US', %s)",
                 (json.dumps(windows),), sqlstate, message)
    assert set_rows(conn) == []


# ------------------------------------------------------------------ immutability


def test_saving_an_existing_name_is_23505_and_changes_nothing(conn: Connection) -> None:
    load_two_regimes(conn)
    save(conn, "us-2018-v1")
    before = (set_rows(conn), export(conn, "us-2018-v1"))
    other = {"CALM": WINDOWS["CALM"]}
    for call, params in [
        ("save_regime_prototype_set(%s, 'US', %s, 3.0)", ("us-2018-v1", json.dumps(other))),
        ("save_regime_prototype_set_from_document(%s, %s)",
         ("us-2018-v1", json.dumps(before[1]))),
    ]:
        error = expect_error(conn, f"SELECT {call}", params, "23505",
                             "prototype set 'us-2018-v1' already exists")
        assert error.diag.table_name == "regime_prototype_sets"
        assert error.diag.constraint_name == "regime_prototype_sets_pkey"
        assert "new name" in (error.diag.message_hint or "")
    assert (set_rows(conn), export(conn, "us-2018-v1")) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE regime_prototype_sets SET temperature = 2",
        "UPDATE regime_prototype_sets SET name = 'renamed'",
        "UPDATE regime_prototype_set_members SET l2_norm = 0 WHERE label = 'CALM'",
        "UPDATE regime_prototype_set_members SET center = center",
        "INSERT INTO regime_prototype_set_members (set_name, label, center)"
        " SELECT set_name, 'EXTRA', center FROM regime_prototype_set_members LIMIT 1",
        "DELETE FROM regime_prototype_set_members WHERE label = 'STORM'",
        "TRUNCATE regime_prototype_set_members",
        "TRUNCATE regime_prototype_sets CASCADE",
    ],
)
def test_a_saved_set_never_changes(conn: Connection, statement: str) -> None:
    conn.add_notice_handler(lambda d: None)
    load_two_regimes(conn)
    save(conn, "us-2018-v1")
    before = (set_rows(conn), export(conn, "us-2018-v1"))
    error = expect_error(conn, statement, (), "55000", "never change")
    assert error.diag.table_name in ("regime_prototype_sets", "regime_prototype_set_members")
    assert (set_rows(conn), export(conn, "us-2018-v1")) == before


def test_deleting_a_set_row_removes_the_whole_set(conn: Connection) -> None:
    load_two_regimes(conn)
    save(conn, "a")
    save(conn, "b")
    conn.execute("DELETE FROM regime_prototype_sets WHERE name = 'a'")
    assert [r[0] for r in set_rows(conn)] == ["b"]
    assert conn.execute(
        "SELECT set_name, count(*) FROM regime_prototype_set_members GROUP BY 1").fetchall() == [
        ("b", 2)]


def test_members_are_added_only_by_the_saving_transaction(conn: Connection) -> None:
    center = np.ones(DIM, dtype=np.float32)
    insert = ("INSERT INTO regime_prototype_set_members (set_name, label, center)"
              " VALUES (%s, %s, %s)")
    with conn.transaction():
        conn.execute(
            "INSERT INTO regime_prototype_sets (name, region, embedding_dim, temperature, windows,"
            " source, saving_xact) VALUES ('manual', 'US', 384, 1, '{}', 'document', '1')")
        # The trigger records the saving transaction, whatever the INSERT says.
        assert conn.execute(
            "SELECT saving_xact = pg_current_xact_id() FROM regime_prototype_sets").fetchone() == (
            True,)
        conn.execute(insert, ("manual", "A", center))
        with conn.transaction():  # a savepoint is still the saving transaction
            conn.execute(insert, ("manual", "B", center))
    expect_error(conn, insert, ("manual", "C", center), "55000",
                 "prototype C cannot be added")
    error = expect_error(conn, insert, ("nowhere", "C", center), "23503",
                         "no prototype set 'nowhere'")
    assert error.diag.column_name == "set_name"
    # Another transaction that saves a set of its own cannot add to this one.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState), conn.transaction():
        conn.execute("INSERT INTO regime_prototype_sets (name, region, embedding_dim,"
                     " temperature, windows, source) VALUES ('other', 'US', 384, 1, '{}',"
                     " 'document')")
        conn.execute(insert, ("other", "A", center))
        conn.execute(insert, ("manual", "D", center))
    # A set without prototypes is refused when its transaction commits.
    with pytest.raises(psycopg.errors.CheckViolation) as caught, conn.transaction():
        conn.execute("INSERT INTO regime_prototype_sets (name, region, embedding_dim,"
                     " temperature, windows, source) VALUES ('empty', 'US', 384, 1, '{}',"
                     " 'document')")
    assert "prototype set 'empty' has no prototypes" in str(caught.value)
    assert [(r[0], r[-1]) for r in set_rows(conn)] == [("manual", 2)]


# ------------------------------------------------------------------ concurrency


def test_concurrent_saves_of_one_name_exactly_one_wins(db: str, conn: Connection) -> None:
    load_two_regimes(conn)
    workers = 6
    barrier = threading.Barrier(workers)
    outcome: list[object] = [None] * workers

    def run(i: int) -> None:
        with psycopg.connect(db, autocommit=True) as own:
            own.execute("SET statement_timeout = '60s'")
            barrier.wait(timeout=30)
            try:
                own.execute("SELECT save_regime_prototype_set('race', 'US', %s, %s)",
                            (json.dumps(WINDOWS), 1.0 + i))
                outcome[i] = "saved"
            except psycopg.Error as exc:
                outcome[i] = (exc.sqlstate, exc.diag.message_primary)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert outcome.count("saved") == 1, outcome
    losers = [o for o in outcome if o != "saved"]
    assert losers == [("23505", "prototype set 'race' already exists")] * (workers - 1)
    winner = outcome.index("saved")
    rows = set_rows(conn)
    assert [(r[0], r[4], r[-1]) for r in rows] == [("race", 1.0 + winner, 2)]
    assert export(conn, "race") == conn.execute(
        "SELECT regime_prototypes_json('US', %s)", (json.dumps(WINDOWS),)).fetchone()[0]


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_save_waiting_on_a_concurrent_one(db: str, conn: Connection,
                                            first_commits: bool) -> None:
    """The second save of a name waits for the first: 23505 if it commits, saved if not."""
    load_two_regimes(conn)
    outcome: dict[str, object] = {}

    def second() -> None:
        with psycopg.connect(db, autocommit=True) as own:
            own.execute("SET application_name = 'regime-pg-second-saver'")
            own.execute("SET statement_timeout = '60s'")
            try:
                own.execute("SELECT save_regime_prototype_set('race', 'US', %s, 2.0)",
                            (json.dumps(WINDOWS),))
                outcome["second"] = "saved"
            except psycopg.Error as exc:
                outcome["second"] = (exc.sqlstate, exc.diag.message_primary)

    with psycopg.connect(db) as first:
        first.execute("SELECT save_regime_prototype_set('race', 'US', %s, 1.0)",
                      (json.dumps(WINDOWS),))
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'regime-pg-second-saver' AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting == (1,):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the second save never waited for the first")
        if first_commits:
            first.commit()
        else:
            first.rollback()
        thread.join(timeout=60)
    if first_commits:
        assert outcome == {"second": ("23505", "prototype set 'race' already exists")}
        expected_temperature = 1.0
    else:
        assert outcome == {"second": "saved"}
        expected_temperature = 2.0
    assert [(r[0], r[4], r[-1]) for r in set_rows(conn)] == [("race", expected_temperature, 2)]


# ------------------------------------------------------------------ import and export


def small_document(rng: np.random.Generator) -> dict[str, Any]:
    special = np.array([0.1, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.1754942e-38,
                        65504.0], dtype=np.float32)
    centers = rng.standard_normal((3, DIM)).astype(np.float32) * 7
    centers[0, : special.size] = special
    # l2_norm must be the norm of the centre (prototype_sets--3.sql): one beyond float32
    # (4.8e38), one of 17 significant digits, the centre scaled to have it.
    centers[1] *= np.float32(12.345678901234567 / norm64(centers[1]))
    return {
        "embedding_dim": DIM,
        "prototypes": {
            "CRISIS": {"center": [f32(v) for v in centers[0]], "l2_norm": norm64(centers[0]),
                       "window": {"start_date": "2008-09-15", "end_date": "2009-03-09"},
                       "n_dates": 121, "n_skipped": 0, "dispersion": 3.25,
                       "first_date": "2008-09-15", "last_date": "2009-03-09"},
            "NEUTRAL": {"center": [f32(v) for v in centers[1]], "l2_norm": 12.345678901234567,
                        "window": {"start_date": "2017-01-01", "end_date": "2017-12-31"}},
            "RISK_OFF": {"center": [f32(v) for v in centers[2]]},
        },
        "region": "US",
    }


def test_import_then_export_gives_the_same_document(conn: Connection) -> None:
    document = small_document(np.random.default_rng(2))
    row = conn.execute(
        f"SELECT {SET_COLUMNS} FROM save_regime_prototype_set_from_document('file-v1', %s, 0.5)",
        (json.dumps(document),)).fetchone()
    assert row == ("file-v1", "US", "num-regime-core-v1", DIM, 0.5,
                   {"CRISIS": document["prototypes"]["CRISIS"]["window"],
                    "NEUTRAL": document["prototypes"]["NEUTRAL"]["window"]},
                   "document", None, None, None, None)
    assert same_json_value(export(conn, "file-v1"), document)
    same = conn.execute("SELECT regime_prototype_set_json('file-v1') = %s::jsonb",
                        (json.dumps(document),)).fetchone()
    assert same == (True,)
    stored = conn.execute(
        "SELECT center FROM regime_prototype_set_members WHERE label = 'CRISIS'").fetchone()
    assert stored is not None
    expected = np.array(document["prototypes"]["CRISIS"]["center"], dtype=np.float32)
    assert np.array_equal(vector_to_numpy(stored[0]).view(np.uint32), expected.view(np.uint32))


def test_computed_document_round_trips_through_import(conn: Connection) -> None:
    load_two_regimes(conn)
    document = conn.execute("SELECT regime_prototypes_json('US', %s)",
                            (json.dumps(WINDOWS),)).fetchone()[0]
    conn.execute("SELECT save_regime_prototype_set_from_document('copy', %s)",
                 (json.dumps(document),))
    assert export(conn, "copy") == document
    save(conn, "computed")
    assert export(conn, "computed") == export(conn, "copy")


def test_export_does_not_depend_on_the_session_float_format(conn: Connection) -> None:
    document = small_document(np.random.default_rng(3))
    conn.execute("SELECT save_regime_prototype_set_from_document('file-v1', %s)",
                 (json.dumps(document),))
    conn.execute("SET extra_float_digits = -3")
    assert same_json_value(export(conn, "file-v1"), document)


def _mutate(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = small_document(np.random.default_rng(4))
    node: Any = document
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


LONG_CENTER = [0.0] * (DIM + 1)


@pytest.mark.parametrize(
    ("document", "sqlstate", "message"),
    [
        (None, "22004", "must not be NULL"),
        ([], "22032", "a prototype document is a JSON object"),
        (_mutate(("extra",), 1), "22032", "unknown keys: extra"),
        (_mutate(("region",), KeyError), "22032", "lacks region"),
        (_mutate(("embedding_dim",), 512), "22000", "embedding_dim is 512"),
        (_mutate(("embedding_dim",), "384"), "22032", "embedding_dim must be a positive integer"),
        (_mutate(("region",), "U" * 33), "22001", "at most 32"),
        (_mutate(("region",), ""), "22032", "region must be a non-empty string"),
        (_mutate(("prototypes",), {}), "22032", "prototypes must be a non-empty JSON object"),
        (_mutate(("prototypes", "calm"), {"center": [0.0] * DIM}), "22P02", "label rule"),
        (_mutate(("prototypes", "CRISIS"), [1, 2]), "22032", "must be a JSON object"),
        (_mutate(("prototypes", "CRISIS", "colour"), "red"), "22032", "unknown keys: colour"),
        (_mutate(("prototypes", "CRISIS", "center"), KeyError), "22032", "must have a center"),
        (_mutate(("prototypes", "CRISIS", "center"), LONG_CENTER), "22000", "has 385 values"),
        (_mutate(("prototypes", "CRISIS", "center"), ["0.5"] * DIM), "22032", "numbers only"),
        (_mutate(("prototypes", "CRISIS", "center"), [1e39] * DIM), "22003", "not a float32"),
        (_mutate(("prototypes", "CRISIS", "l2_norm"), "big"), "22032", "l2_norm of prototype"),
        (_mutate(("prototypes", "CRISIS", "l2_norm"), 1e38), "22000",
         "prototype CRISIS: l2_norm 1e+38 is not the norm of its center, 4.8"),
        (_mutate(("prototypes", "CRISIS", "dispersion"), -1), "22032", "non-negative number"),
        (_mutate(("prototypes", "CRISIS", "n_dates"), 1.5), "22032", "non-negative integer"),
        (_mutate(("prototypes", "CRISIS", "n_skipped"), None), "22032", "non-negative integer"),
        (_mutate(("prototypes", "CRISIS", "window", "end_date"), KeyError), "22032",
         "must be {"),
        (_mutate(("prototypes", "CRISIS", "window", "end_date"), "2009-02-30"), "22007",
         "not a calendar date"),
        (_mutate(("prototypes", "CRISIS", "window", "end_date"), "2007-01-01"), "22023",
         "is reversed"),
        (_mutate(("prototypes", "CRISIS", "first_date"), "15.9.2008"), "22007", "YYYY-MM-DD"),
        (_mutate(("prototypes", "CRISIS", "first_date"), "2010-01-01"), "22023",
         "after last_date"),
    ],
)
def test_import_errors(conn: Connection, document: Any, sqlstate: str, message: str) -> None:
    expect_error(conn, "SELECT save_regime_prototype_set_from_document('bad', %s)",
                 (None if document is None else json.dumps(document),), sqlstate, message)
    assert set_rows(conn) == []


def test_import_with_a_fitted_temperature(conn: Connection) -> None:
    load_two_regimes(conn)
    document = conn.execute("SELECT regime_prototypes_json('US', %s)",
                            (json.dumps(WINDOWS),)).fetchone()[0]
    row = conn.execute(
        "SELECT temperature, fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable"
        "  FROM save_regime_prototype_set_from_document('fitted', %s, NULL)",
        (json.dumps(document),)).fetchone()
    fit = conn.execute("SELECT * FROM fit_regime_temperature('US', %s)",
                       (json.dumps(WINDOWS),)).fetchone()
    assert row == fit
    assert save(conn, "computed-fitted", temperature=None)[4] == fit[0]

    windowless = copy.deepcopy(document)
    del windowless["prototypes"]["CALM"]["window"]
    error = expect_error(conn, "SELECT save_regime_prototype_set_from_document('w', %s, NULL)",
                         (json.dumps(windowless),), "22023", "prototypes CALM have no window")
    assert error.diag.column_name == "temperature"


# ------------------------------------------------------------------ migrations


def _my_objects(dsn: str) -> list[tuple[str, ...]]:
    with psycopg.connect(dsn) as c:
        return [tuple(map(str, r)) for r in c.execute(
            """
            SELECT 'relation', relname FROM pg_class
             WHERE relnamespace = 'public'::regnamespace
               AND relname LIKE 'regime\\_prototype\\_set%'
            UNION ALL
            SELECT 'function', oid::regprocedure::text FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace
               AND proname ~ ('(prototype_set|temperature|document|classif|centroid_series'
                              '|softmax|date_count)')
            UNION ALL
            SELECT 'trigger', tgname FROM pg_trigger WHERE tgname LIKE 'regime\\_pg\\_prototype%'
            UNION ALL
            SELECT 'type', typname FROM pg_type
             WHERE typnamespace = 'public'::regnamespace AND typname LIKE '%prototype\\_set%'
            ORDER BY 1, 2
            """).fetchall()]


def test_downgrade_to_0006_removes_exactly_what_0007_and_0008_add(db: str) -> None:
    at_head = _my_objects(db)
    assert ("relation", "regime_prototype_sets") in at_head
    assert ("function", "classify_regime(vector,text)") in at_head
    migrate.downgrade(db, "0006")
    assert migrate.current_revision(db) == "0006"
    assert _my_objects(db) == []
    migrate.upgrade(db)
    assert _my_objects(db) == at_head


def test_import_does_not_depend_on_session_settings(conn: Connection) -> None:
    """Document parsing runs in parallel workers (no exception blocks) and reads its
    patterns the same with standard_conforming_strings off."""
    document = small_document(np.random.default_rng(5))
    bad_date = _mutate(("prototypes", "CRISIS", "window", "end_date"), "2009-02-30")
    bad_value = _mutate(("prototypes", "CRISIS", "center"), [1e-46] * DIM)
    conn.execute("SET debug_parallel_query = on")
    conn.execute("SET standard_conforming_strings = off")
    parsed = conn.execute("SELECT doc_region, doc_windows, cardinality(doc_members)"
                          "  FROM regime_prototype_document_parse(%s)",
                          (json.dumps(document),)).fetchone()
    assert parsed == ("US", {"CRISIS": document["prototypes"]["CRISIS"]["window"],
                             "NEUTRAL": document["prototypes"]["NEUTRAL"]["window"]}, 3)
    expect_error(conn, "SELECT * FROM regime_prototype_document_parse(%s)",
                 (json.dumps(bad_date),), "22007", "not a calendar date")
    expect_error(conn, "SELECT * FROM regime_prototype_document_parse(%s)",
                 (json.dumps(bad_value),), "22003", "not a float32 number")
    conn.execute("SELECT save_regime_prototype_set_from_document('file-v1', %s)",
                 (json.dumps(document),))
    assert same_json_value(export(conn, "file-v1"), document)
