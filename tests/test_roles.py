"""Reader and writer roles, with real LOGIN roles on real servers (16 and 18).

The database is one the Regime Engine already uses (its own ``alembic_version``
and a table of its own, ``engine_runs``), migrated by regime-pg.  Roles are
created here, granted with ``regime_pg.roles`` (or ``regime-pg roles``), used
through their own connections (the embedded server trusts local sockets, so
``user=<role>`` is enough), and dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from regime_pg import bucket_sums, migrate, roles
from regime_pg.cli import roles as roles_cli
from regime_pg.client import compute_prototypes
from regime_pg.connection import connect
from regime_pg.errors import RegimePgError, SchemaNotReadyError
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, create_engine_schema, insert_rows

DIM = 384
DOCS = Path(__file__).resolve().parents[1] / "docs" / "hardening.md"
WINDOWS = {
    "CRISIS": {"start_date": "2018-09-01", "end_date": "2018-12-31"},
    "NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-06-30"},
}
ENGINE_ONLY_TABLES = ("alembic_version", "engine_runs")
REGIME_PG_BOOKKEEPING = ("regime_pg_alembic_version", "regime_pg_installation")
NOT_GRANTED_COLUMNS = (
    "regime_label",
    "regime_embedding",
    "embedding_ref",
    "confidence",
    "metadata",
)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Database:
    """The engine's database, migrated, with data, and the roles made on it."""

    dsn: str
    has_sets: bool
    made: list[str]

    def as_role(self, role: str) -> str:
        return psycopg.conninfo.make_conninfo(self.dsn, user=role)

    def role(self, prefix: str = "regime_pg_role", name: str | None = None) -> str:
        """A new LOGIN role (dropped at the end of the module)."""
        name = name or f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        self.made.append(name)
        return name


@pytest.fixture(scope="module")
def database(pg_server: Server) -> Iterator[Database]:
    name = create_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    made: list[str] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_engine_schema(conn)
            conn.execute(
                "CREATE TABLE engine_runs (run_id serial PRIMARY KEY, note text);"
                "INSERT INTO engine_runs (note) VALUES ('the engine''s own table')"
            )
        migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rng = np.random.default_rng(2018)
            dates = business_days(dt.date(2018, 1, 1), 260)
            x = rng.standard_normal((len(dates), DIM)).astype("<f4")
            x[[d >= dt.date(2018, 8, 1) for d in dates]] += np.float32(2.5)
            insert_rows(conn, "US", dates, x)
            has_sets = conn.execute(
                "SELECT to_regproc('save_regime_prototype_set') IS NOT NULL"
            ).fetchone() == (True,)
            if has_sets:
                conn.execute(
                    "SELECT save_regime_prototype_set('base', 'US', %s, NULL)", (Jsonb(WINDOWS),)
                )
        yield Database(dsn, has_sets, made)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in made:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        drop_database(pg_server, name)
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            for role in made:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def needs_sets(database: Database) -> None:
    if not database.has_sets:
        pytest.skip("prototype sets are not installed at this head")


@pytest.fixture(scope="module")
def reader(database: Database) -> str:
    role = database.role("regime_pg_reader")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        roles.grant_reader(conn, role)
    return role


@pytest.fixture(scope="module")
def writer(database: Database) -> str:
    needs_sets(database)
    role = database.role("regime_pg_writer")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        roles.grant_writer(conn, role)
    return role


def snapshot(database: Database) -> dict[str, Any]:
    """Every table, with its rows' physical identity (ctid, xmin): any write changes it."""
    with psycopg.connect(database.dsn) as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class AS c"
                " WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace ORDER BY 1"
            ).fetchall()
        ]
        return {
            table: conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t.ctid::text || ':' ||"
                    " t.xmin::text, ',' ORDER BY t.ctid), '')) FROM {} AS t"
                ).format(sql.Identifier(table))
            ).fetchone()
            for table in tables
        }


def denied(conn: psycopg.Connection[Any], statement: str, params: tuple[object, ...] = ()) -> str:
    """Run ``statement``; it must fail with insufficient_privilege.  Returns the message."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        conn.execute(statement, params)
    return str(caught.value.diag.message_primary)


# --------------------------------------------------------------------------- reader


def test_reader_computes_and_classifies_like_the_owner(database: Database, reader: str) -> None:
    queries: list[tuple[str, tuple[object, ...]]] = [
        ("SELECT * FROM compute_regime_prototype('US', '2018-01-01', '2018-06-30')", ()),
        ("SELECT * FROM compute_regime_prototypes('US', %s)", (Jsonb(WINDOWS),)),
        ("SELECT regime_prototypes_json('US', %s)", (Jsonb(WINDOWS),)),
        ("SELECT * FROM regime_windows_from_json(%s)", (Jsonb(WINDOWS),)),
        ("SELECT regime_embedding_dim(), regime_label_is_valid('NEUTRAL')", ()),
        ("SELECT count(*) FROM regime_embeddings_latest", ()),
    ]
    if database.has_sets:
        queries += [
            ("SELECT regime_prototype_set_json('base')", ()),
            ("SELECT * FROM classify_regimes('US', '2018-01-01', '2018-12-31', 'base')", ()),
            (
                "SELECT * FROM classify_regime((SELECT embedding_vector"
                " FROM regime_embeddings_latest"
                " WHERE region = 'US' ORDER BY as_of_date LIMIT 1), 'base')",
                (),
            ),
            (
                "SELECT * FROM regime_centroid_series('US', '2018-06-01', '2018-06-30', 5, 'base')",
                (),
            ),
            ("SELECT * FROM fit_regime_temperature('US', %s)", (Jsonb(WINDOWS),)),
            ("SELECT name, region, temperature FROM regime_prototype_sets", ()),
        ]
    with psycopg.connect(database.dsn) as owner, psycopg.connect(database.as_role(reader)) as mine:
        assert mine.execute("SELECT current_user").fetchone() == (reader,)
        for query, params in queries:
            assert mine.execute(query, params).fetchall() == owner.execute(query, params).fetchall()
    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}
    with connect(database.as_role(reader)) as conn:
        assert [p.label for p in compute_prototypes(conn, "US", windows)] == ["CRISIS", "NEUTRAL"]


def test_reader_writes_nothing(database: Database, reader: str) -> None:
    before = snapshot(database)
    with psycopg.connect(database.as_role(reader), autocommit=True) as conn:
        messages = [
            denied(
                conn,
                "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
                " confidence) VALUES ('r', '2018-01-01', 'US', 'NEUTRAL', 1)",
            ),
            denied(conn, "UPDATE regimes SET region = 'XX'"),
            denied(conn, "DELETE FROM regimes"),
            denied(conn, "TRUNCATE regimes"),
            denied(conn, "UPDATE regimes SET embedding_vector = NULL"),
            denied(conn, "CREATE TABLE public.planted (x int)"),
            denied(conn, "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql RETURN 1"),
        ]
        if database.has_sets:
            messages += [
                denied(conn, "SELECT save_regime_prototype_set('r1', 'US', %s)", (Jsonb(WINDOWS),)),
                denied(
                    conn,
                    "SELECT save_regime_prototype_set('r2', 'US', %s, NULL)",
                    (Jsonb(WINDOWS),),
                ),
                denied(
                    conn,
                    "SELECT save_regime_prototype_set_from_document('r3',"
                    " regime_prototype_set_json('base'))",
                ),
                denied(conn, "SELECT delete_regime_prototype_set('base')"),
                denied(conn, "DELETE FROM regime_prototype_sets"),
                denied(
                    conn,
                    "INSERT INTO regime_prototype_set_members (set_name, label, center)"
                    " SELECT 'base', 'EXTRA', center FROM regime_prototype_set_members"
                    " LIMIT 1",
                ),
            ]
    assert all(m.startswith("permission denied for ") for m in messages), messages
    assert snapshot(database) == before


@pytest.mark.parametrize(
    "statement",
    [
        *(f"SELECT * FROM {t}" for t in ENGINE_ONLY_TABLES + REGIME_PG_BOOKKEEPING),
        "SELECT * FROM regimes",
        *(f"SELECT {c} FROM regimes" for c in NOT_GRANTED_COLUMNS),
        "SELECT regime_embedding FROM regimes WHERE region = 'US'",
        "COPY regimes TO STDOUT",
        "SELECT nextval('engine_runs_run_id_seq')",
    ],
)
def test_reader_cannot_read_what_it_was_not_granted(
    database: Database, reader: str, statement: str
) -> None:
    with psycopg.connect(database.as_role(reader), autocommit=True) as conn:
        denied(conn, statement)


def test_reader_reads_exactly_the_granted_columns(database: Database, reader: str) -> None:
    with psycopg.connect(database.as_role(reader)) as conn:
        rows = conn.execute(
            "SELECT regime_record_id, as_of_date, region, created_at, embedding_vector"
            " FROM regimes LIMIT 1"
        ).fetchall()
        readable = {
            str(name)
            for (name,) in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'regimes'::regclass"
                " AND attnum > 0 AND NOT attisdropped"
                " AND has_column_privilege(current_user, attrelid, attnum, 'SELECT')"
            ).fetchall()
        }
    assert len(rows) == 1
    assert readable == set(roles.REGIMES_READ_COLUMNS)


# --------------------------------------------------------------------------- writer


def test_writer_saves_and_deletes_sets(database: Database, writer: str) -> None:
    with psycopg.connect(database.as_role(writer), autocommit=True) as conn:
        saved = conn.execute(
            "SELECT name, created_by, source FROM save_regime_prototype_set('w-1', 'US', %s, NULL)",
            (Jsonb(WINDOWS),),
        ).fetchall()
        imported = conn.execute(
            "SELECT name, source FROM save_regime_prototype_set_from_document('w-2',"
            " regime_prototype_set_json('w-1'), 2.0)"
        ).fetchall()
        same = conn.execute(
            "SELECT regime_prototype_set_json('w-1') = regime_prototype_set_json('w-2')"
        ).fetchone()
        deleted = conn.execute(
            "SELECT delete_regime_prototype_set('w-1'), delete_regime_prototype_set('w-2')"
        ).fetchone()
        left = conn.execute(
            "SELECT count(*) FROM regime_prototype_set_members WHERE set_name IN ('w-1', 'w-2')"
        ).fetchone()
    assert saved == [("w-1", writer, "computed")]
    assert imported == [("w-2", "document")]
    assert same == (True,)
    assert deleted == (True, True)
    assert left == (0,)


def test_python_sets_client_as_reader_and_writer(
    database: Database, reader: str, writer: str
) -> None:
    from regime_pg import sets

    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}
    before = snapshot(database)
    with connect(database.as_role(reader)) as conn:
        base = sets.get_set(conn, "base")
        assert [i.name for i in sets.list_sets(conn)] == ["base"]
        with pytest.raises(RegimePgError, match="permission denied"):
            sets.save_set(conn, "r-py", "US", windows)
        with pytest.raises(RegimePgError, match="permission denied"):
            sets.import_set(conn, "r-py", base.document)
        with pytest.raises(RegimePgError, match="permission denied"):
            sets.delete_set(conn, "base")
    assert snapshot(database) == before
    with connect(database.as_role(writer)) as conn:
        saved = sets.save_set(conn, "w-py", "US", windows, temperature=None)
        assert saved.info.created_by == writer and saved.info.fit is not None
        imported = sets.import_set(conn, "w-py-doc", saved.document, temperature=2.0)
        assert imported.document == saved.document
        sets.delete_set(conn, "w-py")
        sets.delete_set(conn, "w-py-doc")
    assert snapshot(database) == before


def test_writer_cannot_modify_regimes_or_saved_sets(database: Database, writer: str) -> None:
    before = snapshot(database)
    with psycopg.connect(database.as_role(writer), autocommit=True) as conn:
        for statement in (
            "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label, confidence)"
            " VALUES ('w', '2018-01-01', 'US', 'NEUTRAL', 1)",
            "UPDATE regimes SET region = 'XX'",
            "DELETE FROM regimes",
            "TRUNCATE regimes",
            "UPDATE regime_prototype_sets SET temperature = 2",
            "UPDATE regime_prototype_set_members SET l2_norm = 0",
            "DELETE FROM regime_prototype_set_members",
            "TRUNCATE regime_prototype_sets CASCADE",
            "SELECT regime_embedding FROM regimes",
            *(f"SELECT * FROM {t}" for t in ENGINE_ONLY_TABLES + REGIME_PG_BOOKKEEPING),
            "CREATE TABLE public.planted (x int)",
        ):
            denied(conn, statement)
    assert snapshot(database) == before


# --------------------------------------------------------------------------- grant and revoke


def test_grants_are_idempotent_and_revoke_takes_them_back(database: Database) -> None:
    role = database.role()
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        first = (roles.grant_writer if database.has_sets else roles.grant_reader)(conn, role)
        again = (roles.grant_writer if database.has_sets else roles.grant_reader)(conn, role)
        assert first == again
    query = "SELECT n_dates FROM compute_regime_prototype('US', '2018-01-01', '2018-06-30')"
    with psycopg.connect(database.as_role(role), autocommit=True) as conn:
        assert conn.execute(query).fetchall() != []
    if database.has_sets:
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            taken = roles.revoke_writer(conn, role)
        assert taken and all(s.startswith("REVOKE ") for s in taken)
        with psycopg.connect(database.as_role(role), autocommit=True) as conn:
            assert conn.execute(query).fetchall() != []  # still a reader
            denied(conn, "SELECT delete_regime_prototype_set('base')")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        roles.revoke_all(conn, role)
        acl = conn.execute(
            """
            SELECT count(*) FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE a.grantee = %s::regrole AND c.relnamespace = 'public'::regnamespace
            """,
            (sql.Identifier(role).as_string(),),
        ).fetchone()
        column_acl = conn.execute(
            "SELECT count(*) FROM pg_attribute AS t, aclexplode(t.attacl) AS a"
            " WHERE a.grantee = %s::regrole",
            (sql.Identifier(role).as_string(),),
        ).fetchone()
        routine_acl = conn.execute(
            "SELECT count(*) FROM pg_proc AS p, aclexplode(p.proacl) AS a"
            " WHERE a.grantee = %s::regrole",
            (sql.Identifier(role).as_string(),),
        ).fetchone()
    assert (acl, column_acl, routine_acl) == ((0,), (0,), (0,))
    with psycopg.connect(database.as_role(role), autocommit=True) as conn:
        denied(conn, query)


def test_grant_writer_without_sets_is_a_clear_error(pg_server: Server) -> None:
    name = create_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    try:
        migrate.upgrade(dsn, "0006")
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(SchemaNotReadyError, match="prototype sets are not installed"):
                roles.grant_writer(conn, "postgres")
            # a reader needs only what 0006 installed
            assert any(
                "compute_regime_prototype" in s
                for s in roles.plan(conn, "grant-reader", "postgres")
            )
    finally:
        drop_database(pg_server, name)


HOSTILE_ROLE_NAMES = {
    "injection": "nobody'; DROP TABLE regimes; --",
    "identifier injection": 'nobody" TO PUBLIC; DROP TABLE regimes; --',
    "public": "public",
    "PUBLIC": "PUBLIC",
    "empty": "",
    "NUL": "rea\x00der",
    "too long": "r" * 64,
    "too long in bytes": "é" * 32,
    "predefined role": "pg_read_all_data",
    "current_user keyword": "current_user",
}


@pytest.mark.parametrize("name", list(HOSTILE_ROLE_NAMES), ids=list(HOSTILE_ROLE_NAMES))
def test_hostile_role_names_are_refused_and_change_nothing(database: Database, name: str) -> None:
    role = HOSTILE_ROLE_NAMES[name]
    before = snapshot(database)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        public_acl = conn.execute(
            "SELECT relacl FROM pg_class WHERE oid = 'regimes'::regclass"
        ).fetchone()
        for action in (roles.grant_reader, roles.grant_writer, roles.revoke_all):
            with pytest.raises(roles.UnknownRoleError):
                action(conn, role)
        with pytest.raises(roles.UnknownRoleError):
            roles.plan(conn, "grant-reader", role)
        assert (
            conn.execute("SELECT relacl FROM pg_class WHERE oid = 'regimes'::regclass").fetchone()
            == public_acl
        )
    assert snapshot(database) == before


def test_role_names_that_need_quoting_work(database: Database) -> None:
    role = database.role(name=f'Reader "O\'Brien"; -- {uuid.uuid4().hex[:6]} ü')
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        done = roles.grant_reader(conn, role)
    quoted = sql.Identifier(role).as_string()
    assert all(statement.endswith(f" TO {quoted};") for statement in done)
    with psycopg.connect(database.as_role(role)) as conn:
        assert conn.execute(
            "SELECT n_dates > 0 FROM compute_regime_prototype('US', '2018-01-01', '2018-06-30')"
        ).fetchone() == (True,)


def test_a_role_that_may_not_grant_gets_an_error_and_grants_nothing(
    database: Database, reader: str
) -> None:
    target = database.role()
    with psycopg.connect(database.as_role(reader), autocommit=True) as conn:
        with pytest.raises((roles.GrantNotEffectiveError, psycopg.errors.InsufficientPrivilege)):
            roles.grant_reader(conn, target)
        has = conn.execute(
            "SELECT has_table_privilege(%s, 'regime_embeddings_latest', 'SELECT')", (target,)
        ).fetchone()
    assert has == (False,)


def test_grants_resolve_no_name_through_the_callers_search_path(database: Database) -> None:
    """A hostile search_path of the granting session changes neither the SQL nor the grants."""
    role = database.role()
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        clean = roles.plan(conn, "grant-reader", role)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS grant_trap")
        conn.execute("CREATE TABLE IF NOT EXISTS grant_trap.regime_embeddings_latest (x int)")
        conn.execute("CREATE DOMAIN grant_trap.text AS pg_catalog.varchar")
        conn.execute("SET search_path = grant_trap, pg_catalog, public")
        with conn.transaction():
            hostile = roles.plan(conn, "grant-reader", role, schema="public")
            shown = conn.execute("SHOW search_path").fetchone()
        assert shown == ("grant_trap, pg_catalog, public",)  # restored afterwards
        conn.execute("DROP SCHEMA grant_trap CASCADE")
    assert hostile == clean


def test_permission_denied_is_not_reported_as_a_schema_problem(database: Database) -> None:
    role = database.role()
    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}
    with connect(database.as_role(role)) as conn, pytest.raises(RegimePgError) as caught:
        compute_prototypes(conn, "US", windows)
    assert not isinstance(caught.value, SchemaNotReadyError), type(caught.value)


# --------------------------------------------------------------------------- EXECUTE and PUBLIC


def _revoke_public_execute(conn: psycopg.Connection[Any], names: tuple[str, ...]) -> list[str]:
    installation = roles.inspect_installation(conn)
    done = []
    for routine in installation.routines_named(names):
        statement = sql.SQL("REVOKE EXECUTE ON ROUTINE {} FROM PUBLIC").format(
            routine.reference(installation.schema)
        )
        conn.execute(statement)
        done.append(statement.as_string(conn))
    return done


def test_engine_inserts_need_public_execute_on_the_insert_path(
    pg_server: Server, migrated_template: str
) -> None:
    """Why the proposed REVOKE ... FROM PUBLIC keeps the trigger's functions out."""
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    engine_role = f"regime_pg_engine_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(engine_role)))
            conn.execute(
                sql.SQL("GRANT INSERT ON regimes TO {}").format(sql.Identifier(engine_role))
            )
            _revoke_public_execute(conn, roles.ENGINE_INSERT_PATH_FUNCTIONS)
        engine_dsn = psycopg.conninfo.make_conninfo(dsn, user=engine_role)
        with (
            psycopg.connect(engine_dsn, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="function regime_"),
        ):
            insert_rows(conn, "US", [dt.date(2018, 1, 2)], [np.ones(DIM, dtype="<f4")])
    finally:
        drop_database(pg_server, name)
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(engine_role)))


def test_proposed_revoke_from_public_keeps_engine_reader_and_writer_working(
    pg_server: Server, migrated_template: str
) -> None:
    """The migration proposed in docs/hardening.md, tried on a copy of head."""
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    made = [
        f"regime_pg_{kind}_{uuid.uuid4().hex[:8]}"
        for kind in ("engine", "reader", "writer", "nobody")
    ]
    engine_role, reader_role, writer_role, nobody = made
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in made:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT SELECT, INSERT ON regimes TO {}").format(sql.Identifier(engine_role))
            )
            has_sets = conn.execute(
                "SELECT to_regproc('save_regime_prototype_set') IS NOT NULL"
            ).fetchone() == (True,)
            api = tuple(
                n
                for n in roles.READER_FUNCTIONS + roles.WRITER_FUNCTIONS
                if n not in roles.ENGINE_INSERT_PATH_FUNCTIONS
            )
            revoked = _revoke_public_execute(conn, api)
            assert revoked
            roles.grant_reader(conn, reader_role)
            if has_sets:
                roles.grant_writer(conn, writer_role)
            conn.execute(
                sql.SQL("GRANT SELECT ON regime_embeddings_latest TO {}").format(
                    sql.Identifier(nobody)
                )
            )

        def as_role(role: str) -> str:
            return psycopg.conninfo.make_conninfo(dsn, user=role)

        with psycopg.connect(as_role(engine_role), autocommit=True) as conn:
            insert_rows(
                conn,
                "US",
                business_days(dt.date(2018, 1, 1), 130),
                np.ones((130, DIM), dtype="<f4"),
            )
        query = "SELECT n_dates FROM compute_regime_prototype('US', '2018-01-01', '2018-06-30')"
        with psycopg.connect(as_role(reader_role), autocommit=True) as conn:
            assert conn.execute(query).fetchall() == [(130,)]
        if has_sets:
            with psycopg.connect(as_role(writer_role), autocommit=True) as conn:
                conn.execute(
                    "SELECT save_regime_prototype_set('p', 'US', %s)",
                    (Jsonb({"NEUTRAL": WINDOWS["NEUTRAL"]}),),
                )
                assert conn.execute("SELECT delete_regime_prototype_set('p')").fetchone() == (True,)
        with psycopg.connect(as_role(nobody), autocommit=True) as conn:
            message = denied(conn, query)
        assert message == "permission denied for function compute_regime_prototype"
    finally:
        drop_database(pg_server, name)
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            for role in made:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --------------------------------------------------------------------------- docs and CLI


def test_documented_script_is_what_the_functions_run(database: Database) -> None:
    """docs/hardening.md shows the SQL for roles regime_reader / regime_writer in public."""
    text = DOCS.read_text(encoding="utf-8")
    reader, writer = database.role(), database.role()
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        planned = [
            s.replace(f'"{reader}"', '"regime_reader"')
            for s in roles.plan(conn, "grant-reader", reader)
        ]
        if database.has_sets:
            planned += [
                s.replace(f'"{writer}"', '"regime_writer"')
                for s in roles.plan(conn, "grant-writer", writer)
            ]
    missing = [s for s in planned if s not in text]
    assert missing == [], "regenerate the script in docs/hardening.md"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Result]:
    """``regime-pg roles ...`` in-process (through regime_pg.cli.roles.main)."""
    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(tmp_path / "no-default-server"))
    monkeypatch.delenv("REGIME_PG_DSN", raising=False)
    logger = logging.getLogger("regime_pg")
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(logger, "propagate", logger.propagate)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            code = roles_cli.main(list(argv))
        except SystemExit as exc:
            assert isinstance(exc.code, int)
            code = exc.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def one_error_line(result: Result, code: int) -> str:
    assert result.code == code, result
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("regime-pg: error: "), result
    return result.err


def test_cli_grant_revoke_and_dry_run(database: Database, cli: Callable[..., Result]) -> None:
    role = database.role()
    action = "grant-writer" if database.has_sets else "grant-reader"
    dry = cli(action, role, "--dry-run", "--dsn", database.dsn)
    assert dry.code == 0 and dry.err == ""
    lines = dry.out.splitlines()
    assert lines and all(re.fullmatch(r"GRANT .+ TO \"" + role + '";', line) for line in lines)
    with psycopg.connect(database.dsn) as conn:
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'regime_embeddings_latest', 'SELECT')", (role,)
        ).fetchone() == (False,)  # a dry run changes nothing
    done = cli(action, role, "--dsn", database.dsn)
    assert done.code == 0 and done.out == ""
    assert done.err == f"regime-pg: {action} '{role}': {len(lines)} statements\n"
    quiet = cli(action, role, "--dsn", database.dsn, "-q")
    assert quiet == Result(0, "", "")
    if database.has_sets:
        assert cli("revoke", role, "--writer-only", "--dsn", database.dsn, "-q").code == 0
    assert cli("revoke", role, "--dsn", database.dsn, "-q").code == 0
    with psycopg.connect(database.as_role(role), autocommit=True) as conn:
        denied(conn, "SELECT * FROM regime_embeddings_latest")


def test_cli_audit(database: Database, cli: Callable[..., Result]) -> None:
    clean = cli("audit", "--dsn", database.dsn)
    assert clean.code == 0 and clean.out == ""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        try:
            found = cli("audit", "--dsn", database.dsn)
        finally:
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    assert found.code == 1
    assert found.out.splitlines() == [
        "PUBLIC may CREATE in schema public, which regime-pg's functions search: it could "
        'plant operators or functions they resolve; run: REVOKE CREATE ON SCHEMA "public" '
        "FROM PUBLIC"
    ]


@pytest.mark.parametrize("name", [*list(HOSTILE_ROLE_NAMES)[:4], "too long", "predefined role"])
def test_cli_hostile_role_names_one_line(
    database: Database, cli: Callable[..., Result], name: str
) -> None:
    before = snapshot(database)
    for action in ("grant-reader", "revoke"):
        one_error_line(cli(action, HOSTILE_ROLE_NAMES[name], "--dsn", database.dsn), 1)
    assert snapshot(database) == before


def test_cli_usage_errors_exit_2(database: Database, cli: Callable[..., Result]) -> None:
    assert "the following arguments are required: ACTION" in one_error_line(cli(), 2)
    assert "invalid choice: 'grant-admin'" in one_error_line(cli("grant-admin", "x"), 2)
    assert "the following arguments are required: ROLE" in one_error_line(
        cli("grant-reader", "--dsn", database.dsn), 2
    )
    assert "unrecognized arguments: --writer-only" in one_error_line(
        cli("grant-reader", "x", "--writer-only"), 2
    )


def test_cli_not_migrated_and_unreachable_are_one_line(
    cli: Callable[..., Result], empty_db: str, tmp_path: Path
) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    line = one_error_line(cli("grant-reader", "postgres", "--dsn", empty_db), 1)
    assert "regime-pg migrate" in line
    one_error_line(cli("audit", "--dsn", f"host={tmp_path} port=1 dbname=x"), 1)


# --------------------------------------------------------------------------- engine role


def test_engine_role_keeps_the_sums_without_any_grant_on_them(pg_server: Server) -> None:
    """The sums' triggers run as the owner: a role that may only INSERT into regimes keeps
    them, and may not write them itself; a reader reads them (grant-reader)."""
    name = create_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    engine_role = f"regime_pg_engine_{uuid.uuid4().hex[:8]}"
    reader_role = f"regime_pg_reader_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_engine_schema(conn)
        migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in (engine_role, reader_role):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT INSERT ON regimes TO {}").format(sql.Identifier(engine_role))
            )
            roles.grant_reader(conn, reader_role)
            assert bucket_sums.enable(conn) == 0
            assert roles.audit(conn) == []
        dates = business_days(dt.date(2018, 1, 1), 40)
        engine_dsn = psycopg.conninfo.make_conninfo(dsn, user=engine_role)
        with psycopg.connect(engine_dsn, autocommit=True) as conn:
            insert_rows(conn, "US", dates, np.ones((40, DIM), dtype="<f4"))
            message = denied(conn, "DELETE FROM regime_bucket_sums")
            assert message == "permission denied for table regime_bucket_sums"
        # calendar bucket: Julian day // 15 (2000-01-01 is Julian day 2,451,545)
        buckets = {(d.toordinal() + 1_721_425) // 15 for d in dates}
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert bucket_sums.status(conn) == bucket_sums.BucketSumsStatus(
                True, 1, len(buckets), len({b // 16 for b in buckets})
            )
            stored = conn.execute(
                "SELECT sum(n_rows), sum(n_usable) FROM regime_bucket_sums"
            ).fetchone()
            assert stored == (40, 40)
        reader_dsn = psycopg.conninfo.make_conninfo(dsn, user=reader_role)
        with psycopg.connect(reader_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT n_dates, l2_norm FROM compute_regime_prototype("
                "'US', '2018-01-01', '2018-02-23')"
            ).fetchone()
        assert row == (40, math.sqrt(DIM))
    finally:
        drop_database(pg_server, name)
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            for role in (engine_role, reader_role):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
