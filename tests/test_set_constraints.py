"""Saving a set inside SET CONSTRAINTS ALL IMMEDIATE (prototype_sets--2.sql, 0016; finding F17).

The constraint trigger ``regime_pg_prototype_set_complete`` (a saved set has
prototypes) is deferrable, initially deferred.  Version 1 of
``regime_store_prototype_set`` wrote the set row and its members in two
statements, so a transaction that had made the check immediate failed every
save with "has no prototypes".  Version 2 writes both in one statement: the
check runs after both, at commit or, when immediate, at the end of that
statement, and the caller's constraint mode is left as it was.

The data are those of tests/test_prototype_sets_sql.py: 260 business days of
2018 from Monday 2018-01-01 (the last is Friday 2018-12-28), so each window
of ``WINDOWS`` holds 130 dates.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg
import pytest

from regime_pg import migrate
from regime_pg.connection import Connection
from tests.test_prototype_sets_sql import WINDOWS, load_two_regimes, small_document

#: (label, n_dates, n_skipped, start_date, end_date, first_date, last_date) of each member.
MEMBERS = [
    ("CALM", 130, 0, "2018-01-01", "2018-06-29", "2018-01-01", "2018-06-29"),
    ("STORM", 130, 0, "2018-07-02", "2018-12-31", "2018-07-02", "2018-12-28"),
]
SAVE = "SELECT name, temperature, source FROM save_regime_prototype_set(%s, 'US', %s, %s)"
IMPORT = "SELECT name, temperature, source FROM save_regime_prototype_set_from_document(%s, %s, %s)"


def set_row(name: str) -> str:
    """SQL for a set row named ``name`` (a valid name: no quoting needed) to store."""
    fields = {"name": name, "region": "US", "temperature": 1, "windows": {}, "source": "document"}
    return f"jsonb_populate_record(NULL::regime_prototype_sets, '{json.dumps(fields)}')"


EMPTY_SET = set_row("empty")


@pytest.fixture
def loaded(conn: Connection) -> Connection:
    load_two_regimes(conn)
    return conn


def members(conn: Connection, name: str) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT label, n_dates, n_skipped, start_date::text, end_date::text,"
        "       first_date::text, last_date::text"
        "  FROM regime_prototype_set_members WHERE set_name = %s ORDER BY label",
        (name,),
    ).fetchall()
    return [tuple(r) for r in rows]


def export(conn: Connection, name: str) -> Any:
    row = conn.execute("SELECT regime_prototype_set_json(%s)", (name,)).fetchone()
    assert row is not None
    return row[0]


def names(conn: Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(
        "SELECT name FROM regime_prototype_sets ORDER BY name").fetchall()]


@pytest.mark.parametrize("mode", ["ALL", "regime_pg_prototype_set_complete"])
def test_saves_work_when_the_check_is_immediate(loaded: Connection, mode: str) -> None:
    document = small_document(np.random.default_rng(3))
    with loaded.transaction():
        loaded.execute(f"SET CONSTRAINTS {mode} IMMEDIATE")
        assert loaded.execute(SAVE, ("computed", json.dumps(WINDOWS), 1.0)).fetchone() == (
            "computed", 1.0, "computed")
        fitted = loaded.execute(SAVE, ("fitted", json.dumps(WINDOWS), None)).fetchone()
        assert fitted is not None and fitted[0] == "fitted" and fitted[1] > 0
        assert loaded.execute(IMPORT, ("imported", json.dumps(document), 2.5)).fetchone() == (
            "imported", 2.5, "document")
    assert names(loaded) == ["computed", "fitted", "imported"]
    assert members(loaded, "computed") == MEMBERS
    assert members(loaded, "fitted") == MEMBERS
    assert len(members(loaded, "imported")) == len(document["prototypes"])
    # the same sets as saves in the default (deferred) mode
    loaded.execute(SAVE, ("deferred", json.dumps(WINDOWS), 1.0))
    loaded.execute(IMPORT, ("deferred-import", json.dumps(document), 2.5))
    assert export(loaded, "computed") == export(loaded, "deferred")
    assert export(loaded, "imported") == export(loaded, "deferred-import")


def test_a_save_leaves_the_callers_immediate_mode_alone(loaded: Connection) -> None:
    """After a save, a set row the caller inserts without members still fails at once."""
    immediate = pytest.raises(psycopg.errors.CheckViolation,
                              match="prototype set 'bare' has no")
    with immediate, loaded.transaction():
        loaded.execute("SET CONSTRAINTS ALL IMMEDIATE")
        loaded.execute(SAVE, ("first", json.dumps(WINDOWS), 1.0))
        loaded.execute(
            "INSERT INTO regime_prototype_sets (name, region, embedding_dim, temperature,"
            " windows, source) VALUES ('bare', 'US', 384, 1, '{}', 'document')"
        )
        pytest.fail("the INSERT should have been checked at once")
    assert names(loaded) == []


def test_a_save_leaves_the_default_deferred_mode_alone(loaded: Connection) -> None:
    """After a save, the caller's own row and members, in two statements, still commit."""
    with loaded.transaction():
        loaded.execute(SAVE, ("first", json.dumps(WINDOWS), 1.0))
        loaded.execute(
            "INSERT INTO regime_prototype_sets (name, region, embedding_dim, temperature,"
            " windows, source) VALUES ('by-hand', 'US', 384, 1, '{}', 'document')"
        )
        loaded.execute(
            "INSERT INTO regime_prototype_set_members (set_name, label, center)"
            " SELECT 'by-hand', label, center FROM regime_prototype_set_members"
            "  WHERE set_name = 'first'"
        )
    assert names(loaded) == ["by-hand", "first"]
    assert [m[0] for m in members(loaded, "by-hand")] == ["CALM", "STORM"]


def test_a_set_without_prototypes_is_still_refused(loaded: Connection) -> None:
    store = f"SELECT name FROM regime_store_prototype_set({EMPTY_SET}, '{{}}')"
    # immediate: at the end of the storing statement
    with pytest.raises(psycopg.errors.CheckViolation) as caught, loaded.transaction():
        loaded.execute("SET CONSTRAINTS ALL IMMEDIATE")
        loaded.execute(store)
    assert caught.value.diag.message_primary == "prototype set 'empty' has no prototypes"
    assert caught.value.diag.constraint_name == "regime_pg_prototype_set_complete"
    # deferred (the default): at commit
    with pytest.raises(psycopg.errors.CheckViolation) as caught, loaded.transaction():
        assert loaded.execute(store).fetchone() == ("empty",)
    assert caught.value.diag.message_primary == "prototype set 'empty' has no prototypes"
    assert names(loaded) == []
    assert loaded.execute("SELECT count(*) FROM regime_prototype_set_members").fetchone() == (0,)


def test_storing_errors_stay_what_they_were(loaded: Connection) -> None:
    """A taken name is the set's 23505 with its message; a duplicate label (only a direct
    caller of regime_store_prototype_set can pass one) is the members' own 23505."""
    loaded.execute(SAVE, ("taken", json.dumps(WINDOWS), 1.0))
    taken = set_row("taken")
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        loaded.execute(
            f"SELECT regime_store_prototype_set({taken},"
            "  ARRAY(SELECT m FROM regime_prototype_set_members AS m WHERE set_name = 'taken'))"
        )
    assert caught.value.diag.message_primary == "prototype set 'taken' already exists"
    assert caught.value.diag.constraint_name == "regime_prototype_sets_pkey"
    with pytest.raises(psycopg.errors.UniqueViolation) as caught, loaded.transaction():
        loaded.execute(
            f"SELECT regime_store_prototype_set({EMPTY_SET},"
            "  ARRAY(SELECT m FROM regime_prototype_set_members AS m, generate_series(1, 2)"
            "         WHERE set_name = 'taken'))"
        )
    assert caught.value.diag.constraint_name == "regime_prototype_set_members_pkey"
    assert names(loaded) == ["taken"]


def test_downgrade_brings_back_the_failure_and_upgrade_the_fix(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        load_two_regimes(conn)
    migrate.downgrade(db, "0015")
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as caught, conn.transaction():
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            conn.execute(SAVE, ("v1", json.dumps(WINDOWS), 1.0))
        assert caught.value.diag.message_primary == "prototype set 'v1' has no prototypes"
        assert names(conn) == []
    migrate.upgrade(db)
    with psycopg.connect(db, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            conn.execute(SAVE, ("v2", json.dumps(WINDOWS), 1.0))
        assert names(conn) == ["v2"]
        assert members(conn, "v2") == MEMBERS
