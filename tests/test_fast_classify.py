"""The set-based classify_regimes of classify--2.sql (revision 0011) and
classify--3.sql (0012, sets of more than 50 prototypes), against version 1.

* Same rows as classify--1.sql's definition, installed next to it under
  another name (``classify_regimes_v1``, the released text): dates, labels,
  raw labels, confidences and distances equal, bit for bit and in the same
  order, on data with re-runs (newer rows, newer NULLs, older rows, equal
  created_at), NULL and unconvertible embeddings, exact ties between
  prototypes whose byte order differs from the database collation's, sets
  of 1, 2, 4 and 7 prototypes, temperatures where every exp() counts and
  where most underflow, and several min_duration values; on windows with and
  without duplicate dates (regimes read directly, or through the view).
* min_duration on random label sequences (hypothesis): the same labels as
  version 1 and as the documented rule written in Python.
* Errors: the same SQLSTATE, message and diagnostics, in the same order.
* A set without members (only visible inside the transaction saving it):
  one row of NULLs per usable date, as version 1, after the same checks.
* Parallel workers give the same rows; the statement gets them when parallel
  query is cheap.
* More than 50 prototypes (51, 100, 101 and 120; 50 for the edge): the same
  rows as version 1, every column as text too, with min_duration 1 and more,
  on windows with and without duplicate dates; classify_regime_labels too,
  and ``regime-pg timeline --set``.  The statement for up to 50 prototypes is
  version 2's, character for character (that of classify_regime_labels for
  any number) but for classify--4.sql's guard of the confidence (finding
  F18, tests/test_classify_overflow.py); version 2's, for 51, is the error
  the fix removes.
* Downgrade to 0010 puts back the definition of a fresh install at 0010, and
  downgrade to 0011 that of 0011, keeping the privileges granted at head.

No timing assertions: speed is measured by ``python -m bench`` (B4).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from regime_pg import migrate
from regime_pg.connection import Connection, use_vector_types
from regime_pg.migration_ops import released_function
from regime_pg.timeline import classify_history
from tests.cli_support import cli, isolated_cli  # noqa: F401
from tests.conftest import FORCE_PARALLEL, Server, database_dsn, drop_database
from tests.engine import insert_rows
from tests.test_classify_sql import absorb, classify_sequence, load_sequence_set

DIM = 384
REGION = "MIX"
DAY0 = dt.date(2020, 1, 1)
N_DAYS = 240
#: Dates with more than one row are all in [DAY0 + 100, DAY0 + 199].
CLEAN = (DAY0, DAY0 + dt.timedelta(days=99))
DIRTY = (DAY0 + dt.timedelta(days=90), DAY0 + dt.timedelta(days=210))
WHOLE = (DAY0 - dt.timedelta(days=30), DAY0 + dt.timedelta(days=N_DAYS + 30))

#: Labels whose byte order (COLLATE "C") is not that of most collations.
SETS: dict[str, list[str]] = {
    "one": ["ONLY"],
    "two": ["A_", "A1"],
    "four": ["B_", "B1", "BA", "A"],
    "seven": ["Z_", "Z9", "ZA", "A_B", "A1", "AB", "M"],
}


def centres(n: int) -> np.ndarray:
    """Prototype i at +-6 on axis i // 2: pairs symmetric about 0, so ties are exact."""
    c = np.zeros((n, DIM), dtype=np.float32)
    for i in range(n):
        c[i, i // 2] = 6.0 if i % 2 == 0 else -6.0
    c[:, 10] = 0.25  # no centre is the origin
    return c


def embeddings(rng: np.random.Generator, k: int) -> np.ndarray:
    """k embeddings: most near a centre, every fifth exactly on a tie (zeros on axes 0..3)."""
    x = rng.standard_normal((k, DIM)).astype(np.float32)
    axis = rng.integers(0, 4, k)
    x[np.arange(k), axis] += np.where(rng.random(k) < 0.5, 5.0, -5.0).astype(np.float32)
    x[::5, :4] = 0.0
    return x.astype("<f4")


def load(conn: Connection) -> None:
    """Region MIX: one row a day, re-runs and unusable rows only in [DAY0 + 100, + 199]."""
    conn.add_notice_handler(lambda diag: None)  # the trigger's WARNING on bad bytes
    rng = np.random.default_rng(20261126)
    dates = [DAY0 + dt.timedelta(days=i) for i in range(N_DAYS)]
    x = embeddings(rng, N_DAYS)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    insert_rows(conn, REGION, dates, list(x), created_at=t0)
    for i in range(100, 200):
        day = [dates[i]]
        if i % 7 == 0:  # a newer row replaces the date
            insert_rows(conn, REGION, day, list(embeddings(rng, 1)), t0 + dt.timedelta(hours=1))
        if i % 11 == 0:  # a newer NULL hides it
            insert_rows(conn, REGION, day, [None], t0 + dt.timedelta(hours=2))
        if i % 13 == 0:  # an older row changes nothing
            insert_rows(conn, REGION, day, list(embeddings(rng, 1)), t0 - dt.timedelta(hours=1))
        if i % 17 == 0:  # same created_at: the greatest record id wins
            insert_rows(conn, REGION, day, list(embeddings(rng, 1)), t0)
        if i % 19 == 0:  # newer bytes that do not convert: no usable embedding
            insert_rows(conn, REGION, day, [b"\x00\x01"], t0 + dt.timedelta(hours=3))
    # dates without a usable embedding outside the re-runs: a NULL, a gap
    conn.execute("UPDATE regimes SET regime_embedding = NULL"
                 " WHERE region = %s AND as_of_date IN (%s, %s)",
                 (REGION, DAY0 + dt.timedelta(days=3), DAY0 + dt.timedelta(days=230)))
    conn.execute("DELETE FROM regimes WHERE region = %s AND as_of_date = %s",
                 (REGION, DAY0 + dt.timedelta(days=50)))
    for name, labels in SETS.items():
        for suffix, temperature in (("", 0.7), ("-cold", 1e-3)):
            document = {
                "embedding_dim": DIM,
                "region": REGION,
                "prototypes": {label: {"center": [float(v) for v in c]}
                               for label, c in zip(labels, centres(len(labels)), strict=True)},
            }
            conn.execute("SELECT save_regime_prototype_set_from_document(%s, %s, %s)",
                         (name + suffix, json.dumps(document), temperature))
    conn.execute("VACUUM ANALYZE regimes")


def install_v1(conn: Connection) -> None:
    """classify--1.sql's classify_regimes, as released, under the name classify_regimes_v1."""
    text = released_function("classify--1.sql", "classify_regimes")
    conn.execute("SET search_path = public")
    conn.execute(text.replace("FUNCTION classify_regimes(", "FUNCTION classify_regimes_v1(", 1)
                 .encode())
    conn.execute("RESET search_path")


@pytest.fixture
def mixed(db: str) -> Iterator[Connection]:
    with psycopg.connect(db, autocommit=True) as connection:
        use_vector_types(connection)
        load(connection)
        install_v1(connection)
        yield connection


def rows(conn: Connection, function: str, window: tuple[dt.date, dt.date], set_name: str,
         min_duration: int) -> list[tuple[Any, ...]]:
    """Every column, the floats as the server writes them (exact) and as Python reads them."""
    return conn.execute(
        "SELECT as_of_date, label, confidence, confidence::text, distances, distances::text,"
        "       raw_label"
        f"  FROM {function}(%s, %s, %s, %s, %s)",
        (REGION, *window, set_name, min_duration)).fetchall()


def label_rows(conn: Connection, window: tuple[dt.date, dt.date], set_name: str,
               min_duration: int) -> list[tuple[Any, ...]]:
    """classify_regime_labels' columns: those of ``rows`` without the distances."""
    return conn.execute(
        "SELECT as_of_date, label, confidence, confidence::text, raw_label"
        "  FROM classify_regime_labels(%s, %s, %s, %s, %s)",
        (REGION, *window, set_name, min_duration)).fetchall()


def has_duplicates(conn: Connection, window: tuple[dt.date, dt.date]) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT FROM regimes WHERE region = %s"
                       " AND as_of_date BETWEEN %s AND %s GROUP BY as_of_date"
                       " HAVING count(*) > 1)", (REGION, *window)).fetchone()
    assert row is not None
    return bool(row[0])


# --------------------------------------------------------------------------- same as v1


@pytest.mark.parametrize("set_name", [*SETS, *(name + "-cold" for name in SETS)])
def test_same_rows_as_v1(mixed: Connection, set_name: str) -> None:
    assert not has_duplicates(mixed, CLEAN)
    assert has_duplicates(mixed, DIRTY) and has_duplicates(mixed, WHOLE)
    seen_ties = False
    for window in (CLEAN, DIRTY, WHOLE):
        for min_duration in (1, 2, 3, 5, 40, 10_000):
            v2 = rows(mixed, "classify_regimes", window, set_name, min_duration)
            v1 = rows(mixed, "classify_regimes_v1", window, set_name, min_duration)
            assert v2 == v1, (window, min_duration)
            lean = label_rows(mixed, window, set_name, min_duration)
            assert lean == [(r[0], r[1], r[2], r[3], r[6]) for r in v1], (window, min_duration)
            assert v2, (window, min_duration)
            seen_ties |= any(len(set(r[4].values())) < len(r[4]) for r in v2)
    assert seen_ties or set_name.startswith("one")


def test_same_rows_whatever_the_session_float_format(mixed: Connection) -> None:
    expected = rows(mixed, "classify_regimes_v1", WHOLE, "four", 3)
    mixed.execute("SET extra_float_digits = 0")
    assert rows(mixed, "classify_regimes", WHOLE, "four", 3)[0][5] == expected[0][5]
    mixed.execute("RESET extra_float_digits")
    assert rows(mixed, "classify_regimes", WHOLE, "four", 3) == expected


def test_ties_go_to_the_first_label_in_byte_order(mixed: Connection) -> None:
    got = rows(mixed, "classify_regimes", CLEAN, "four", 1)
    ties = [r for r in got if len(set(r[4].values())) < len(r[4])]
    assert ties
    for r in ties:
        nearest = min(r[4].values())
        assert r[6] == min(k for k, v in r[4].items() if v == nearest)  # Python: byte order


def test_one_prototype_is_always_nearest_with_confidence_1(mixed: Connection) -> None:
    got = rows(mixed, "classify_regimes", WHOLE, "one", 1)
    assert {(r[1], r[2], r[6]) for r in got} == {("ONLY", 1.0, "ONLY")}


def test_empty_window_and_window_without_usable_rows(mixed: Connection) -> None:
    day = DAY0 + dt.timedelta(days=3)  # its only row has no embedding
    for window in ((day, day), (dt.date(2030, 1, 1), dt.date(2030, 12, 31))):
        for min_duration in (1, 4):
            assert rows(mixed, "classify_regimes", window, "four", min_duration) == []


@pytest.mark.parametrize(
    "args",
    [
        ("nope", "XX", "2020-12-31", "2020-01-01", 0),  # unknown set first
        ("four", "XX", "2020-12-31", "2020-01-01", 0),  # then the region
        ("four", None, "2020-01-01", "2020-12-31", 1),
        ("four", "x" * 40, "2020-01-01", "2020-12-31", 1),
        ("four", REGION, "2020-12-31", "2020-01-01", 0),  # then the window
        ("four", REGION, None, "2020-12-31", 1),
        ("four", REGION, "-infinity", "2020-12-31", 1),
        ("four", "US", "2020-01-01", "2020-12-31", 0),  # then the set's region
        ("four", REGION, "2020-01-01", "2020-12-31", 0),  # then min_duration
        ("four", REGION, "2020-01-01", "2020-12-31", None),
        (None, REGION, "2020-01-01", "2020-12-31", 1),
    ],
)
def test_same_errors_in_the_same_order(mixed: Connection, args: tuple[Any, ...]) -> None:
    insert_rows(mixed, "US", [DAY0], [np.ones(DIM, "<f4")])
    set_name, region, start, end, min_duration = args
    caught = []
    for function in ("classify_regimes", "classify_regimes_v1", "classify_regime_labels"):
        with pytest.raises(psycopg.Error) as error:
            mixed.execute(f"SELECT * FROM {function}(%s, %s, %s, %s, %s)",
                          (region, start, end, set_name, min_duration))
        diag = error.value.diag
        caught.append((error.value.sqlstate, diag.message_primary, diag.message_detail,
                       diag.message_hint, diag.table_name, diag.column_name))
    assert caught[0] == caught[1] == caught[2]


# --------------------------------------------------------------------------- min_duration


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(st.sampled_from("ABC"), min_size=1, max_size=40),
       min_duration=st.integers(2, 8))
def test_min_duration_on_random_sequences_as_v1(mixed: Connection, raw: list[str],
                                                min_duration: int) -> None:
    load_sequence_set(mixed)
    got = classify_sequence(mixed, raw, min_duration)
    assert [r[2] for r in got] == raw
    assert [r[1] for r in got] == absorb(raw, min_duration)
    v1 = mixed.execute(
        "SELECT as_of_date, label, raw_label, confidence, distances"
        "  FROM classify_regimes_v1('SEQ', '2018-01-01', '2019-12-31', 'seq', %s)",
        (min_duration,)).fetchall()
    assert got == v1


# --------------------------------------------------------------------------- set without members


def usable_days(window: tuple[dt.date, dt.date]) -> list[dt.date]:
    """The dates ``load`` leaves a usable latest embedding in window, in order."""
    unusable = {3, 50, 230} | {i for i in range(100, 200) if i % 11 == 0 or i % 19 == 0}
    return [day for day in (DAY0 + dt.timedelta(days=i) for i in range(N_DAYS)
                            if i not in unusable)
            if window[0] <= day <= window[1]]


def insert_memberless_set(conn: Connection, name: str, region: str = REGION) -> None:
    """The set row as regime_store_prototype_set writes it, before any member."""
    conn.execute(
        "INSERT INTO regime_prototype_sets (name, region, embedding_dim, temperature, windows,"
        " source) VALUES (%s, %s, regime_embedding_dim(), 0.7, '{}', 'document')",
        (name, region))
    # Visible only to the transaction saving it, which may still add members.
    assert conn.execute(
        "SELECT s.saving_xact = pg_current_xact_id(),"
        "       (SELECT count(*) FROM regime_prototype_set_members AS m"
        "         WHERE m.set_name = s.name)"
        "  FROM regime_prototype_sets AS s WHERE s.name = %s", (name,)).fetchone() == (True, 0)


def test_set_without_members_gives_every_usable_date_without_label(mixed: Connection) -> None:
    """Inside its saving transaction a set has no members: one all-NULL row per usable date."""
    sets_before = mixed.execute("SELECT array_agg(name ORDER BY name)"
                                "  FROM regime_prototype_sets").fetchone()
    assert [len(usable_days(w)) for w in (CLEAN, DIRTY, WHOLE)] == [98, 107, 223]
    with mixed.transaction(force_rollback=True):
        insert_memberless_set(mixed, "unsaved")
        for window in (CLEAN, DIRTY, WHOLE):
            days = usable_days(window)
            for min_duration in (1, 3, 10_000):
                expected = [(day, None, None, None, None, None, None) for day in days]
                assert rows(mixed, "classify_regimes", window, "unsaved",
                            min_duration) == expected, (window, min_duration)
                assert rows(mixed, "classify_regimes_v1", window, "unsaved",
                            min_duration) == expected, (window, min_duration)
                assert label_rows(mixed, window, "unsaved", min_duration) == [
                    (day, None, None, None, None) for day in days], (window, min_duration)
        empty = (dt.date(2030, 1, 1), dt.date(2030, 12, 31))
        for function in ("classify_regimes", "classify_regimes_v1"):
            assert rows(mixed, function, empty, "unsaved", 1) == []
        assert label_rows(mixed, empty, "unsaved", 1) == []
    # Rolled back: the set never existed for anyone else.
    assert mixed.execute("SELECT array_agg(name ORDER BY name)"
                         "  FROM regime_prototype_sets").fetchone() == sets_before


def test_set_without_members_is_checked_first_as_v1(mixed: Connection) -> None:
    """The checks run before the no-member branch: the same errors as version 1."""
    insert_rows(mixed, "US", [DAY0], [np.ones(DIM, "<f4")])
    with mixed.transaction(force_rollback=True):
        insert_memberless_set(mixed, "unsaved")
        insert_memberless_set(mixed, "unsaved-us", region="US")
        for region, start, end, set_name, min_duration, sqlstate in (
                (REGION, "2020-12-31", "2020-01-01", "unsaved", 1, "22023"),  # window
                (REGION, "2020-01-01", "2020-12-31", "unsaved-us", 1, "22023"),  # set's region
                (REGION, "2020-01-01", "2020-12-31", "unsaved", 0, "22023"),  # min_duration
                (REGION, "2020-01-01", "2020-12-31", "unsaved", None, "22004")):
            caught = []
            for function in ("classify_regimes", "classify_regimes_v1",
                             "classify_regime_labels"):
                with pytest.raises(psycopg.Error) as error, mixed.transaction():
                    mixed.execute(f"SELECT * FROM {function}(%s, %s, %s, %s, %s)",
                                  (region, start, end, set_name, min_duration))
                diag = error.value.diag
                caught.append((error.value.sqlstate, diag.message_primary, diag.message_detail,
                               diag.message_hint, diag.table_name, diag.column_name))
            assert caught[0][0] == sqlstate, caught[0]
            assert caught[0] == caught[1] == caught[2]


# --------------------------------------------------------------------------- plans


def test_parallel_workers_give_the_same_rows(mixed: Connection) -> None:
    expected = {m: rows(mixed, "classify_regimes_v1", WHOLE, "seven", m) for m in (1, 4)}
    for setting in FORCE_PARALLEL:
        mixed.execute(setting)
    for m in (1, 4):
        assert rows(mixed, "classify_regimes", WHOLE, "seven", m) == expected[m]


def plan(conn: Connection, deduplicate: bool, absorb_runs: bool) -> list[dict[str, Any]]:
    """The plan of the statement classify_regimes runs for set 'four' over WHOLE."""
    labels, centers, temperature = conn.execute(
        "SELECT array_agg(m.label ORDER BY m.label), array_agg(m.center ORDER BY m.label)::text,"
        "       min(s.temperature)"
        "  FROM regime_prototype_set_members AS m JOIN regime_prototype_sets AS s"
        "    ON s.name = m.set_name WHERE m.set_name = 'four'").fetchone()
    order = [i + 1 for i, _ in sorted(enumerate(labels), key=lambda p: p[1].encode())]
    query = conn.execute("SELECT regime_classify_query(4, %s, %s, %s, true)",
                         (order, deduplicate, absorb_runs)).fetchone()[0]
    with conn.transaction():
        conn.execute(f"PREPARE classify_plan(text, date, date, text[], vector[],"
                     f" double precision, integer) AS {query}".encode())
        try:
            result = psycopg.ClientCursor(conn).execute(
                "EXPLAIN (FORMAT JSON) EXECUTE classify_plan(%s, %s, %s, %s, %s::vector[], %s, 3)",
                (REGION, *WHOLE, labels, centers, temperature)).fetchone()
        finally:
            conn.execute("DEALLOCATE classify_plan")
    assert result is not None
    nodes: list[dict[str, Any]] = []
    todo = [result[0][0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


@pytest.mark.parametrize(("deduplicate", "absorb_runs"),
                         [(False, False), (False, True), (True, False), (True, True)])
def test_statement_gets_parallel_workers_and_sorts_no_label(
        mixed: Connection, deduplicate: bool, absorb_runs: bool) -> None:
    for setting in FORCE_PARALLEL:
        mixed.execute(setting)
    nodes = plan(mixed, deduplicate, absorb_runs)
    assert any(n["Node Type"] in ("Gather", "Gather Merge") and n["Workers Planned"] >= 1
               for n in nodes)
    # every sort is by date: runs are found in date order, never by label
    keys = [key for n in nodes if n["Node Type"] == "Sort" for key in n["Sort Key"]]
    assert all("as_of_date" in key or "created_at" in key or "regime_record_id" in key
               or key.startswith("r.region") for key in keys), keys


def test_parallel_safety_flags(conn: Connection) -> None:
    flags = dict(conn.execute(
        "SELECT p.oid::regprocedure::text, p.proparallel::text || p.provolatile::text"
        "  FROM pg_proc AS p"
        " WHERE p.proname IN ('classify_regimes', 'classify_regime_labels',"
        "                     'regime_classify_prepare', 'regime_classify_query')").fetchall())
    assert flags == {
        "classify_regimes(text,date,date,text,integer)": "ss",
        "classify_regime_labels(text,date,date,text,integer)": "ss",
        "regime_classify_prepare(text,date,date,text,integer,boolean)": "ss",
        "regime_classify_query(integer,integer[],boolean,boolean,boolean)": "si",
    }


def test_query_text_formats_only_integers(conn: Connection) -> None:
    query = conn.execute(
        "SELECT regime_classify_query(3, ARRAY[2, 3, 1], false, true, true)").fetchone()[0]
    assert "WHEN d.d2 THEN 2 WHEN d.d3 THEN 3 WHEN d.d1 THEN 1" in query
    # no literal but the constant Infinity of the overflow guard (classify--4.sql):
    # everything else is a parameter
    assert query.count("c.m < 'Infinity'") == 1
    assert "'" not in query.replace("c.m < 'Infinity'", "")
    assert "jsonb_build_object" in query
    lean = conn.execute(
        "SELECT regime_classify_query(3, ARRAY[2, 3, 1], false, true, false)").fetchone()[0]
    assert "jsonb" not in lean and lean.replace(" ", "") != query.replace(" ", "")
    for bad in ((0, [], False, False, True), (2, [1], False, False, True),
                (None, [1], False, False, True), (1, [1], False, False, None)):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT regime_classify_query(%s, %s::integer[], %s, %s, %s)", bad)


# --------------------------------------------------------------------------- many prototypes


#: Set sizes around the limit of version 2: jsonb_build_object takes at most 100
#: arguments, two per prototype, so 50 was the largest set version 2 classified.
MANY = (50, 51, 100, 101, 120)


def many_labels(n: int) -> list[str]:
    """n labels by the label rule, with digits and underscores (byte order is not
    that of most collations), of 2 to 4 characters (jsonb puts shorter keys first)."""
    return [f"{'ZAM'[i % 3]}{'_' if i % 4 == 0 else ''}{i}" for i in range(n)]


#: Positions in the statement's label order ($4) given to prototypes near the
#: data: the first and last of each group of 50 and two inside (and the last).
NEAR = (0, 49, 50, 99, 100, 24, 74)


def many_centres(by_collation: list[str]) -> dict[str, np.ndarray]:
    """Prototype j at +-6 on axis j // 2 (and 0.25 on the last axis).  The eight
    near the data (axes 0..3, j < 8) go to the labels at positions NEAR and the
    last of ``by_collation`` (the order of $4), the others at random."""
    n = len(by_collation)
    c = np.zeros((n, DIM), dtype=np.float32)
    for j in range(n):
        c[j, j // 2] = 6.0 if j % 2 == 0 else -6.0
    c[:, DIM - 1] = 0.25
    near = list(dict.fromkeys(min(p, n - 1) for p in (*NEAR, n - 1)))
    positions = near + [int(p) for p in np.random.default_rng(n).permutation(n)
                        if p not in near]
    return {by_collation[p]: c[j] for j, p in enumerate(positions)}


def install_v2_query(conn: Connection) -> None:
    """classify--2.sql's regime_classify_query, as released, as regime_classify_query_v2."""
    text = released_function("classify--2.sql", "regime_classify_query")
    conn.execute("SET search_path = public")
    conn.execute(text.replace("FUNCTION regime_classify_query(",
                              "FUNCTION regime_classify_query_v2(", 1).encode())
    conn.execute("RESET search_path")


@pytest.fixture
def many(mixed: Connection) -> Connection:
    """``mixed`` with sets many-N (temperature 0.7) and many-N-cold (1e-3) of N
    prototypes for N in MANY, and version 2's regime_classify_query."""
    for n in MANY:
        by_collation = mixed.execute("SELECT array_agg(l ORDER BY l) FROM unnest(%s::text[]) AS l",
                                     (many_labels(n),)).fetchone()[0]
        centres_of = many_centres(by_collation)
        document = {
            "embedding_dim": DIM,
            "region": REGION,
            "prototypes": {label: {"center": [float(v) for v in centres_of[label]]}
                           for label in many_labels(n)},
        }
        for suffix, temperature in (("", 0.7), ("-cold", 1e-3)):
            mixed.execute("SELECT save_regime_prototype_set_from_document(%s, %s, %s)",
                          (f"many-{n}{suffix}", json.dumps(document), temperature))
    install_v2_query(mixed)
    return mixed


def set_labels(conn: Connection, set_name: str) -> list[str]:
    """The set's labels in the statement's order ($4): by the database's collation."""
    row = conn.execute("SELECT array_agg(label ORDER BY label) FROM regime_prototype_set_members"
                       " WHERE set_name = %s", (set_name,)).fetchone()
    assert row is not None
    return list(row[0])


@pytest.mark.parametrize("n", MANY)
def test_many_prototypes_same_rows_as_v1(many: Connection, n: int) -> None:
    labels = set_labels(many, f"many-{n}")
    assert sorted(labels) == sorted(many_labels(n))
    absorbed = False
    nearest: set[int] = set()
    for set_name in (f"many-{n}", f"many-{n}-cold"):
        for window in (CLEAN, DIRTY, WHOLE):
            for min_duration in (1, 2, 3, 40):
                v3 = rows(many, "classify_regimes", window, set_name, min_duration)
                v1 = rows(many, "classify_regimes_v1", window, set_name, min_duration)
                assert v3 == v1, (set_name, window, min_duration)
                assert v3, (set_name, window, min_duration)
                assert all(len(r[4]) == n for r in v3)
                lean = label_rows(many, window, set_name, min_duration)
                assert lean == [(r[0], r[1], r[2], r[3], r[6]) for r in v1], (window, min_duration)
                absorbed |= any(r[1] != r[6] for r in v3)
                nearest |= {labels.index(r[6]) for r in v3}
    assert absorbed  # min_duration > 1 changed labels
    # The nearest prototype is found in every group of 50 ($4[c.nearest] up to n).
    assert {min(p, n - 1) for p in (*NEAR, n - 1)} <= nearest, sorted(nearest)


def test_many_prototypes_whatever_the_session_float_format(many: Connection) -> None:
    expected = rows(many, "classify_regimes_v1", WHOLE, "many-120", 3)
    many.execute("SET extra_float_digits = 0")
    assert rows(many, "classify_regimes", WHOLE, "many-120", 3)[0][5] == expected[0][5]
    many.execute("RESET extra_float_digits")
    assert rows(many, "classify_regimes", WHOLE, "many-120", 3) == expected


def test_many_prototypes_in_parallel_workers(many: Connection) -> None:
    expected = {m: rows(many, "classify_regimes_v1", WHOLE, "many-101", m) for m in (1, 4)}
    for setting in FORCE_PARALLEL:
        many.execute(setting)
    for m in (1, 4):
        assert rows(many, "classify_regimes", WHOLE, "many-101", m) == expected[m]


def queries(conn: Connection, function: str, n: int, order: list[int]) -> list[str]:
    """The statements ``function`` writes for n prototypes, every flag combination."""
    return [conn.execute(f"SELECT {function}(%s, %s, %s, %s, %s)",
                         (n, order, deduplicate, absorb_runs, with_distances)).fetchone()[0]
            for deduplicate, absorb_runs, with_distances
            in itertools.product((False, True), repeat=3)]


def guarded(statement: str, n: int) -> str:
    """Version 2's statement with classify--4.sql's guard around the confidence: the
    error of a nearest distance that overflows float32 (finding F18) instead of NaN."""
    terms = " + ".join(f"exp(greatest((c.m - c.d{i}) / $6, -700))" for i in range(1, n + 1))
    bare = f", 1 / ({terms}),"
    assert statement.count(bare) == 1
    return statement.replace(bare, f", CASE WHEN c.m < 'Infinity' THEN 1 / ({terms})"
                                   " ELSE regime_distance_overflow($1, c.as_of_date, NULL) END,")


def test_statement_is_version_2s_up_to_50_prototypes(many: Connection) -> None:
    """Up to 50, and without distances for any number, the text is version 2's (with
    the overflow guard of version 4 around the confidence); beyond, version 2's one
    call becomes calls of at most 50 pairs joined by ||."""
    rng = np.random.default_rng(50)
    for n in range(1, 131):
        order = [int(i) + 1 for i in rng.permutation(n)]
        v2 = [guarded(s, n) for s in queries(many, "regime_classify_query_v2", n, order)]
        v3 = queries(many, "regime_classify_query", n, order)
        pairs = [f"$4[{i}], c.d{i}" for i in range(1, n + 1)]
        one_call = f"jsonb_build_object({', '.join(pairs)})"
        calls = " || ".join(f"jsonb_build_object({', '.join(pairs[k:k + 50])})"
                            for k in range(0, n, 50))
        for flags, old, new in zip(itertools.product((False, True), repeat=3), v2, v3,
                                   strict=True):
            if n <= 50 or not flags[2]:
                assert new == old, (n, flags)
            else:
                assert old.count(one_call) == 1, (n, flags)
                assert new == old.replace(one_call, calls), (n, flags)
                assert new.count("jsonb_build_object(") == -(-n // 50)


def prepare(conn: Connection, statement: str) -> None:
    conn.execute(f"PREPARE many_plan(text, date, date, text[], vector[], double precision,"
                 f" integer) AS {statement}".encode())
    conn.execute("DEALLOCATE many_plan")


def test_version_2s_statement_fails_from_51_prototypes(many: Connection) -> None:
    """What the reviewer saw: 54023 from version 2's statement, none from version 3's."""
    for n in (50, 51, 120):
        for deduplicate, absorb_runs in itertools.product((False, True), repeat=2):
            args = (n, list(range(1, n + 1)), deduplicate, absorb_runs, True)
            old, new = (many.execute(f"SELECT {f}(%s, %s, %s, %s, %s)", args).fetchone()[0]
                        for f in ("regime_classify_query_v2", "regime_classify_query"))
            prepare(many, new)
            if n <= 50:
                prepare(many, old)
            else:
                with pytest.raises(psycopg.errors.TooManyArguments,
                                   match="cannot pass more than 100 arguments to a function"):
                    prepare(many, old)


def test_timeline_with_many_prototypes(many: Connection, db: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``regime-pg timeline --set`` with 51 prototypes: version 1's rows, as CSV."""
    expected = rows(many, "classify_regimes_v1", WHOLE, "many-51", 3)
    with psycopg.connect(db) as conn:
        history = classify_history(conn, "many-51", *WHOLE, 3)
    assert [(h.as_of_date, h.label, h.raw_label, h.confidence, dict(h.distances))
            for h in history] == [(r[0], r[1], r[6], r[2], r[4]) for r in expected]
    result = cli(capsys, "timeline", "-q", "--set", "many-51", "--start", WHOLE[0].isoformat(),
                 "--end", WHOLE[1].isoformat(), "--min-duration", "3", "--csv", "-",
                 "--dsn", db)
    assert result.code == 0, result
    labels = sorted(many_labels(51))
    records = list(csv.reader(io.StringIO(result.out)))
    assert records[0] == ["as_of_date", "label", "raw_label", "confidence",
                          *(f"distance_{k}" for k in labels)]
    assert records[1:] == [[r[0].isoformat(), r[1], r[6], repr(r[2]),
                            *(repr(r[4][k]) for k in labels)] for r in expected]


# --------------------------------------------------------------------------- migration


FUNCTIONS = """
    SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proparallel,
           p.provolatile, p.proconfig, p.proacl
      FROM pg_proc AS p
     WHERE p.pronamespace = 'public'::regnamespace AND p.prokind = 'f'
       AND NOT EXISTS (SELECT FROM pg_depend AS d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                          AND d.deptype = 'e')
     ORDER BY 1
"""


def test_downgrade_restores_the_v1_definition_exactly(empty_db: str) -> None:
    migrate.upgrade(empty_db, "0010")
    with psycopg.connect(empty_db) as conn:
        before = conn.execute(FUNCTIONS).fetchall()
    migrate.upgrade(empty_db, "0017")  # the classify revisions; not head, which adds others
    with psycopg.connect(empty_db) as conn:
        head = conn.execute(FUNCTIONS).fetchall()
    names = {r[0] for r in head}
    assert names - {r[0] for r in before} == {
        "regime_classify_query(integer,integer[],boolean,boolean,boolean)",
        "regime_classify_prepare(text,date,date,text,integer,boolean)",
        "classify_regime_labels(text,date,date,text,integer)",
        "regime_distance_overflow(text,date,text)"}  # classify--4.sql (0017)
    migrate.downgrade(empty_db, "0010")
    with psycopg.connect(empty_db) as conn:
        assert conn.execute(FUNCTIONS).fetchall() == before
    migrate.upgrade(empty_db, "0017")
    with psycopg.connect(empty_db) as conn:
        assert conn.execute(FUNCTIONS).fetchall() == head


def test_downgrade_to_0011_restores_the_v2_query_and_keeps_its_privileges(
        empty_db: str) -> None:
    migrate.upgrade(empty_db, "0011")
    with psycopg.connect(empty_db) as conn:
        before = conn.execute(FUNCTIONS).fetchall()
    migrate.upgrade(empty_db, "0012")  # not head: later revisions replace other functions
    query = "regime_classify_query(integer,integer[],boolean,boolean,boolean)"
    with psycopg.connect(empty_db, autocommit=True) as conn:
        head = conn.execute(FUNCTIONS).fetchall()
        # 0012 replaces one definition; flags, settings and privileges stay
        assert [r[0] for r in head] == [r[0] for r in before]
        assert [h[0] for h, b in zip(head, before, strict=True) if h != b] == [query]
        assert [r[2:] for r in head] == [r[2:] for r in before]
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {query} FROM PUBLIC")
        revoked = conn.execute(FUNCTIONS).fetchall()
    migrate.downgrade(empty_db, "0011")
    with psycopg.connect(empty_db) as conn:
        after = conn.execute(FUNCTIONS).fetchall()
    assert [r[:5] for r in after] == [r[:5] for r in before]
    assert [r[5] for r in after] == [r[5] for r in revoked]  # the REVOKE stays
    assert [r[5] for r in after] != [r[5] for r in before]


# --------------------------------------------------------------------------- collation


@pytest.fixture
def icu_db(pg_server: Server) -> Iterator[str]:
    """A database whose collation (ICU root) orders labels otherwise than bytes do."""
    name = f"regime_pg_test_icu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu"
                                  " ICU_LOCALE 'und' LOCALE 'C.UTF-8'")
                          .format(sql.Identifier(name)))
        except (psycopg.errors.FeatureNotSupported, psycopg.errors.InvalidParameterValue,
                psycopg.errors.WrongObjectType) as exc:
            pytest.skip(f"no ICU root collation on this server: {exc.diag.message_primary}")
    dsn = database_dsn(pg_server.admin_dsn, name)
    migrate.upgrade(dsn)
    yield dsn
    drop_database(pg_server, name)


def test_same_rows_as_v1_where_collation_and_byte_order_differ(icu_db: str) -> None:
    with psycopg.connect(icu_db, autocommit=True) as conn:
        use_vector_types(conn)
        load(conn)
        install_v1(conn)
        for set_name in ("two", "four", "seven", "seven-cold"):
            by_collation, by_bytes = conn.execute(
                "SELECT array_agg(label ORDER BY label), array_agg(label ORDER BY label"
                " COLLATE \"C\") FROM regime_prototype_set_members WHERE set_name = %s",
                (set_name,)).fetchone()
            assert by_collation != by_bytes  # v1's sum order is not its tie order
            for window in (CLEAN, WHOLE):
                for min_duration in (1, 3):
                    v2 = rows(conn, "classify_regimes", window, set_name, min_duration)
                    assert v2 == rows(conn, "classify_regimes_v1", window, set_name,
                                      min_duration)
            ties = [r for r in rows(conn, "classify_regimes", CLEAN, set_name, 1)
                    if len(set(r[4].values())) < len(r[4])]
            assert ties
            for r in ties:
                nearest = min(r[4].values())
                assert r[6] == min(k for k, v in r[4].items() if v == nearest)
