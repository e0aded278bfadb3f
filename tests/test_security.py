"""regime-pg's security model on real PostgreSQL servers (16 and 18), with real objects.

* Every function the migrations created is ``SECURITY INVOKER`` and pins its
  search_path to ``<schema of regimes>[, <pgvector's schema>], pg_temp``
  (pg_catalog implicitly first, pg_temp last); the list is compared with the
  ``CREATE FUNCTION`` statements of the released SQL files and with
  ``regime_pg.roles``' registry.
* Planting: a caller whose session search_path lists first a schema holding a
  ``regimes`` table, a ``regime_embeddings_latest`` view and set tables with
  fake rows, ``avg(vector)``/``sum(vector)`` aggregates, a ``<->`` operator,
  functions and operators named like what the functions call (exact-type
  matches included, which would beat pg_catalog's polymorphic or coercing
  candidates), or temporary tables of those names: every result is unchanged,
  value for value, against a clean session, and no planted object ever ran
  (each one logs its calls).  The sync trigger converts the rows the engine
  inserts from such a session bit for bit.  The Python client names every
  object with the schema ``regime_pg.installation`` finds (F13), so it gets
  what a clean session gets; a planted version table is an error, not a guess.
* Session settings a caller controls (``extra_float_digits``,
  ``standard_conforming_strings``, DateStyle, TimeZone, planner switches,
  parallel query, ...) do not change results either (the two that did,
  F1 and F2 in docs/hardening.md, are fixed and guarded here).
* The trust boundary: a role that may CREATE in the schema of ``regimes``
  could plant into the pinned search_path itself; ``regime_pg.roles.audit``
  reports it, and the tests show what such a role can and cannot reach.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from regime_pg import migrate, roles
from regime_pg.client import compute_prototypes, prototypes_document
from regime_pg.connection import use_vector_types
from tests.conftest import Server
from tests.engine import business_days, insert_rows

DIM = 384
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"

WINDOWS = {
    "CRISIS": {"start_date": "2018-09-01", "end_date": "2018-12-31"},
    "NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-06-30"},
}
CLEAN_SET = "clean-set"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Engine:
    """A migrated database with engine rows, and where regime-pg lives in it."""

    dsn: str
    schema: str
    has_sets: bool
    vectors: dict[dt.date, np.ndarray]


def fill(conn: psycopg.Connection[Any]) -> dict[dt.date, np.ndarray]:
    """US rows over 2018 (two regimes), a NULL and an unconvertible row, some EU rows."""
    rng = np.random.default_rng(1058)
    dates = business_days(dt.date(2018, 1, 1), 260)
    x = rng.standard_normal((len(dates), DIM)).astype("<f4")
    x[[d >= dt.date(2018, 8, 1) for d in dates]] += np.float32(2.5)
    insert_rows(conn, "US", dates, x)
    insert_rows(conn, "US", [dt.date(2018, 3, 3)], [None])  # a Saturday: skipped date
    insert_rows(conn, "US", [dt.date(2018, 3, 4)], [b"\x00" * 12])  # unconvertible
    insert_rows(conn, "EU", dates[:20], np.full((20, DIM), 9.0, dtype="<f4"))
    return dict(zip(dates, x, strict=True))


@pytest.fixture
def engine(db: str) -> Engine:
    with psycopg.connect(db, autocommit=True) as conn:
        vectors = fill(conn)
        # Statistics now, not whenever autovacuum gets to it: every session then plans
        # the same way, and sums in the same order (prototypes--2 sums in float32).
        conn.execute("ANALYZE")
        schema = roles.schema_of_regimes(conn)
        has_sets = conn.execute(
            "SELECT to_regprocedure(%s) IS NOT NULL",
            (f"{schema}.save_regime_prototype_set(text, text, jsonb, double precision)",),
        ).fetchone() == (True,)
        if has_sets:
            conn.execute(
                "SELECT save_regime_prototype_set(%s, 'US', %s, NULL)", (CLEAN_SET, Jsonb(WINDOWS))
            )
    return Engine(db, schema, has_sets, vectors)


def any_embedding(engine: Engine) -> str:
    """One stored embedding, as pgvector's text."""
    date = sorted(engine.vectors)[40]
    return "[" + ",".join(repr(float(v)) for v in engine.vectors[date]) + "]"


# --------------------------------------------------------------------------- results


#: Entry points that the hostile schema also plants (they are internals too): the
#: caller names them with their schema, since its own unqualified call would
#: rightly reach its own planted function.
PLANTED_ENTRY_POINTS = (
    "regime_windows_from_json",
    "regime_label_is_valid",
    "regime_embedding_convert",
)


def results(
    conn: psycopg.Connection[Any], engine: Engine, *, messages: bool = True
) -> dict[str, Any]:
    """Every read-only entry point, fetched in binary (no client-side text formatting).

    The statements name only entry points and bind every value as a
    parameter: nothing in them resolves an operator or a type by name, so a
    hostile search_path can only act inside the functions.  Errors count by
    SQLSTATE and, with ``messages``, by message too.
    """
    cur = conn.cursor(binary=True)
    windows = Jsonb(WINDOWS)
    out: dict[str, Any] = {}
    qualified = sql.Identifier(engine.schema).as_string() + "."
    queries: dict[str, tuple[str, tuple[object, ...]]] = {
        "compute_regime_prototype": (
            "SELECT * FROM compute_regime_prototype(%s, %s, %s)",
            ("US", dt.date(2018, 1, 1), dt.date(2018, 6, 30)),
        ),
        "compute_regime_prototype (composite)": (
            "SELECT (p).* FROM (SELECT compute_regime_prototype(%s, %s, %s) AS p OFFSET 0) AS s",
            ("US", dt.date(2018, 2, 1), dt.date(2018, 12, 31)),
        ),
        "compute_regime_prototypes": (
            "SELECT * FROM compute_regime_prototypes(%s, %s)",
            ("US", windows),
        ),
        "regime_prototypes_json": ("SELECT regime_prototypes_json(%s, %s)", ("US", windows)),
        "regime_windows_from_json": ("SELECT * FROM regime_windows_from_json(%s)", (windows,)),
        "regime_embedding_to_vector": (
            "SELECT regime_embedding_to_vector(%s)",
            (engine.vectors[dt.date(2018, 1, 2)].tobytes(),),
        ),
        "regime_embedding_convert (bad bytes)": (
            "SELECT * FROM regime_embedding_convert(%s)",
            (b"\x00\x00\xc0\x7f" * DIM,),
        ),
        "regime_label_is_valid": (
            "SELECT regime_label_is_valid(%s), regime_label_is_valid(%s)",
            ("RISK_OFF", "x;"),
        ),
    }
    if engine.has_sets:
        embedding = any_embedding(engine)
        queries |= {
            "regime_prototype_set_json": ("SELECT regime_prototype_set_json(%s)", (CLEAN_SET,)),
            "classify_regime": ("SELECT * FROM classify_regime(%s, %s)", (embedding, CLEAN_SET)),
            "classify_regimes": (
                "SELECT * FROM classify_regimes(%s, %s, %s, %s, %s)",
                ("US", dt.date(2018, 1, 1), dt.date(2018, 12, 31), CLEAN_SET, 3),
            ),
            "regime_centroid_series": (
                "SELECT * FROM regime_centroid_series(%s, %s, %s, %s, %s)",
                ("US", dt.date(2018, 6, 1), dt.date(2018, 7, 31), 10, CLEAN_SET),
            ),
            "fit_regime_temperature": (
                "SELECT * FROM fit_regime_temperature(%s, %s)",
                ("US", windows),
            ),
        }
    for name, (query, params) in queries.items():
        for entry_point in PLANTED_ENTRY_POINTS:
            query = query.replace(f" {entry_point}(", f" {qualified}{entry_point}(")
        out[name] = cur.execute(query, params).fetchall()
    # Errors must stay the same errors, although the planted tables hold rows
    # for the unknown region and the unknown set.
    errors: dict[str, tuple[str, tuple[object, ...]]] = {
        "unknown region": (
            "SELECT * FROM compute_regime_prototype(%s, %s, %s)",
            ("NOWHERE", dt.date(2018, 1, 1), dt.date(2018, 6, 30)),
        ),
        "empty window": (
            "SELECT * FROM compute_regime_prototype(%s, %s, %s)",
            ("US", dt.date(2017, 1, 1), dt.date(2017, 6, 30)),
        ),
        "bad label": (
            "SELECT * FROM compute_regime_prototypes(%s, %s)",
            ("US", Jsonb({"neutral": WINDOWS["NEUTRAL"]})),
        ),
    }
    if engine.has_sets:
        errors["unknown set"] = ("SELECT regime_prototype_set_json(%s)", ("no-such-set",))
    for name, (query, params) in errors.items():
        try:
            cur.execute(query, params)
        except psycopg.Error as exc:
            out[f"error: {name}"] = (exc.sqlstate, exc.diag.message_primary if messages else "")
        else:
            out[f"error: {name}"] = ("no error", cur.fetchall())
    return out


def writes(conn: psycopg.Connection[Any], engine: Engine, tag: str) -> dict[str, Any]:
    """Save, import and delete sets; what was stored, minus names and timestamps."""
    if not engine.has_sets:
        return {}
    cur = conn.cursor(binary=True)
    computed, imported = f"{tag}-computed", f"{tag}-imported"
    out: dict[str, Any] = {}
    cur.execute(
        "SELECT region, temperature, windows, source, fit_log_loss, fit_log_loss_at_1, fit_n,"
        " fit_separable FROM save_regime_prototype_set(%s, %s, %s, NULL)",
        (computed, "US", Jsonb(WINDOWS)),
    )
    out["saved"] = cur.fetchall()
    out["saved json"] = cur.execute("SELECT regime_prototype_set_json(%s)", (computed,)).fetchall()
    document = cur.execute("SELECT regime_prototypes_json(%s, %s)", ("US", Jsonb(WINDOWS)))
    doc = document.fetchone()
    assert doc is not None
    out["imported"] = cur.execute(
        "SELECT region, temperature, windows, source FROM"
        " save_regime_prototype_set_from_document(%s, %s, %s)",
        (imported, Jsonb(doc[0]), 2.5),
    ).fetchall()
    out["imported json"] = cur.execute(
        "SELECT regime_prototype_set_json(%s)", (imported,)
    ).fetchall()
    out["deleted"] = cur.execute(
        "SELECT delete_regime_prototype_set(%s), delete_regime_prototype_set(%s)",
        (computed, imported),
    ).fetchall()
    return out


# --------------------------------------------------------------------------- planting


def plant_sql(engine: Engine) -> str:
    """The hostile schema ``evil``: look-alikes of everything the functions name.

    Every planted function logs its call in ``evil.calls``.  Aggregates and
    operators are built on logging functions too.
    """
    s = sql.Identifier(engine.schema).as_string()
    statements = f"""
    CREATE SCHEMA evil;
    CREATE TABLE evil.calls (name text NOT NULL);
    GRANT INSERT, SELECT ON evil.calls TO PUBLIC;
    CREATE FUNCTION evil.log(what text) RETURNS void LANGUAGE sql VOLATILE
        AS $$ INSERT INTO evil.calls VALUES (what) $$;

    -- (a) tables and views of the names the functions read, with fake rows
    CREATE TABLE evil.regimes (LIKE {s}.regimes INCLUDING DEFAULTS);
    INSERT INTO evil.regimes (regime_record_id, as_of_date, region, regime_label,
                              regime_embedding, confidence, embedding_vector)
    SELECT 'fake-' || g || '-' || r, DATE '2017-01-01' + g, r, 'CRISIS', NULL, 1,
           array_fill(1000::real, ARRAY[{DIM}])::{s}.vector
      FROM generate_series(0, 800) AS g, unnest(ARRAY['US', 'NOWHERE']) AS r;
    CREATE VIEW evil.regime_embeddings_latest AS
        SELECT region, as_of_date, regime_record_id, created_at, embedding_vector
          FROM evil.regimes;
    CREATE TYPE evil.regime_prototype AS (region text);

    -- (b) aggregates
    CREATE FUNCTION evil.pick(a {s}.vector, b {s}.vector) RETURNS {s}.vector
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('avg/sum(vector)');
        RETURN array_fill(7::real, ARRAY[{DIM}])::{s}.vector; END $$;
    CREATE AGGREGATE evil.avg({s}.vector) (SFUNC = evil.pick, STYPE = {s}.vector);
    CREATE AGGREGATE evil.sum({s}.vector) (SFUNC = evil.pick, STYPE = {s}.vector);
    CREATE FUNCTION evil.pick_date(a date, b date) RETURNS date
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('min/max(date)');
        RETURN DATE '1999-01-01'; END $$;
    CREATE AGGREGATE evil.min(date) (SFUNC = evil.pick_date, STYPE = date);
    CREATE AGGREGATE evil.max(date) (SFUNC = evil.pick_date, STYPE = date);
    CREATE FUNCTION evil.pick_json(a jsonb, k text, v jsonb) RETURNS jsonb
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('jsonb_object_agg');
        RETURN '{{}}'; END $$;
    CREATE AGGREGATE evil.jsonb_object_agg(text, jsonb) (SFUNC = evil.pick_json, STYPE = jsonb);

    -- (c) operators; (vector, vector) and exact-type matches that would beat
    -- pg_catalog's coercing or polymorphic candidates
    CREATE FUNCTION evil.zero_distance(a {s}.vector, b {s}.vector) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('<->'); RETURN 0; END $$;
    CREATE OPERATOR evil.<-> (LEFTARG = {s}.vector, RIGHTARG = {s}.vector,
                              FUNCTION = evil.zero_distance);
    CREATE FUNCTION evil.vt_eq(a varchar, b text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('=(varchar,text)');
        RETURN true; END $$;
    CREATE OPERATOR evil.= (LEFTARG = varchar, RIGHTARG = text, FUNCTION = evil.vt_eq);
    CREATE FUNCTION evil.tt_eq(a text, b text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('=(text,text)'); RETURN true; END $$;
    CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.tt_eq);
    CREATE FUNCTION evil.re(a text, b text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('~'); RETURN true; END $$;
    CREATE OPERATOR evil.~ (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.re);
    CREATE FUNCTION evil.overlap(a real[], b real[]) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('&&'); RETURN false; END $$;
    CREATE OPERATOR evil.&& (LEFTARG = real[], RIGHTARG = real[], FUNCTION = evil.overlap);
    CREATE FUNCTION evil.pow(a float8, b integer) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('^'); RETURN 0; END $$;
    CREATE OPERATOR evil.^ (LEFTARG = float8, RIGHTARG = integer, FUNCTION = evil.pow);
    CREATE FUNCTION evil.mul(a float8, b integer) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('*'); RETURN 0; END $$;
    CREATE OPERATOR evil.* (LEFTARG = float8, RIGHTARG = integer, FUNCTION = evil.mul);
    CREATE FUNCTION evil.date_ge(a date, b date) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('>='); RETURN true; END $$;
    CREATE OPERATOR evil.>= (LEFTARG = date, RIGHTARG = date, FUNCTION = evil.date_ge);
    CREATE FUNCTION evil.cat(a text, b text) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('||'); RETURN 'x'; END $$;
    CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.cat);

    -- (d) functions named like regime-pg's internals and what they call
    CREATE FUNCTION evil.regime_embedding_dim() RETURNS integer
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_embedding_dim');
        RETURN 3; END $$;
    CREATE FUNCTION evil.regime_float32le_decode(b bytea) RETURNS real[]
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_float32le_decode');
        RETURN array_fill(0::real, ARRAY[{DIM}]); END $$;
    CREATE FUNCTION evil.regime_embedding_convert(b bytea, OUT embedding_vector {s}.vector,
                                                  OUT problem text)
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_embedding_convert');
        embedding_vector := array_fill(0::real, ARRAY[{DIM}])::{s}.vector; END $$;
    CREATE FUNCTION evil.regime_check_region(p text) RETURNS void
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_check_region'); END $$;
    CREATE FUNCTION evil.regime_check_window(a text, b text, c date, d date) RETURNS void
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_check_window'); END $$;
    CREATE FUNCTION evil.regime_label_is_valid(p text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_label_is_valid');
        RETURN true; END $$;
    CREATE FUNCTION evil.regime_windows_from_json(w jsonb)
        RETURNS TABLE (label text, start_date date, end_date date)
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_windows_from_json');
        label := 'NEUTRAL'; start_date := '2017-01-01'; end_date := '2019-01-01';
        RETURN NEXT; END $$;
    CREATE FUNCTION evil.regime_prototype_for_window(a text, b text, c date, d date)
        RETURNS {s}.regime_prototype
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_prototype_for_window');
        RETURN NULL; END $$;
    CREATE FUNCTION evil.vector_norm(v {s}.vector) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('vector_norm'); RETURN -1; END $$;
    CREATE FUNCTION evil.vector_dims(v {s}.vector) RETURNS integer
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('vector_dims'); RETURN 1; END $$;
    CREATE FUNCTION evil.jsonb_build_object(a text, b integer, c text, d jsonb, e text, f text)
        RETURNS jsonb
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('jsonb_build_object');
        RETURN '{{"planted": true}}'; END $$;
    CREATE FUNCTION evil.to_jsonb(a real[]) RETURNS jsonb
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('to_jsonb'); RETURN '[]'; END $$;
    CREATE FUNCTION evil.quote_literal(a text) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('quote_literal'); RETURN 'x'; END $$;
    CREATE FUNCTION evil.length(a bytea) RETURNS integer
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('length'); RETURN {4 * DIM}; END $$;
    CREATE FUNCTION evil.get_byte(a bytea, i integer) RETURNS integer
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('get_byte'); RETURN 0; END $$;
    CREATE FUNCTION evil.to_date(a text, b text) RETURNS date
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('to_date');
        RETURN DATE '2000-01-01'; END $$;
    CREATE FUNCTION evil.exp(a float8) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('exp'); RETURN 1; END $$;
    CREATE FUNCTION evil.ln(a float8) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('ln'); RETURN 1; END $$;
    CREATE FUNCTION evil.sqrt(a float8) RETURNS float8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('sqrt'); RETURN 1; END $$;
    CREATE FUNCTION evil.format(a text, b integer, c integer, d integer) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('format'); RETURN 'x'; END $$;
    CREATE FUNCTION evil.pg_current_xact_id() RETURNS xid8
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('pg_current_xact_id');
        RETURN '1'::xid8; END $$;
    """
    if engine.has_sets:
        statements += f"""
    CREATE TABLE evil.regime_prototype_sets (LIKE {s}.regime_prototype_sets INCLUDING DEFAULTS);
    CREATE TABLE evil.regime_prototype_set_members (LIKE {s}.regime_prototype_set_members);
    INSERT INTO evil.regime_prototype_sets (name, region, embedding_dim, temperature, windows,
                                            source, saving_xact)
    SELECT n, 'US', 3, 1e-3, '{{}}', 'computed', '1'::xid8
      FROM unnest(ARRAY['{CLEAN_SET}', 'no-such-set']) AS n;
    INSERT INTO evil.regime_prototype_set_members (set_name, label, center)
    SELECT n, 'FAKE', array_fill(5::real, ARRAY[{DIM}])::{s}.vector
      FROM unnest(ARRAY['{CLEAN_SET}', 'no-such-set']) AS n;
    CREATE FUNCTION evil.regime_prototype_set(n text) RETURNS {s}.regime_prototype_sets
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_prototype_set');
        RETURN NULL; END $$;
    CREATE FUNCTION evil.regime_prototype_set_name_is_valid(n text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN
        PERFORM evil.log('regime_prototype_set_name_is_valid'); RETURN true; END $$;
    CREATE FUNCTION evil.regime_classification(a text[], b float8[], c float8,
                                               OUT label text, OUT confidence float8,
                                               OUT distances jsonb)
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_classification');
        label := 'FAKE'; confidence := 1; END $$;
    CREATE FUNCTION evil.regime_store_prototype_set(a {s}.regime_prototype_sets,
                                                    b {s}.regime_prototype_set_members[])
        RETURNS {s}.regime_prototype_sets
        LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM evil.log('regime_store_prototype_set');
        RETURN a; END $$;
    """
    return statements


TEMP_SQL = """
CREATE TEMP TABLE regimes (LIKE {s}.regimes INCLUDING DEFAULTS);
INSERT INTO pg_temp.regimes (regime_record_id, as_of_date, region, regime_label,
                             regime_embedding, confidence, embedding_vector)
SELECT 'temp-' || g, DATE '2017-06-01' + g, r, 'CRISIS', NULL, 1,
       array_fill(-3::real, ARRAY[{dim}])::{s}.vector
  FROM generate_series(0, 600) AS g, unnest(ARRAY['US', 'NOWHERE']) AS r;
CREATE TEMP VIEW regime_embeddings_latest AS
    SELECT region, as_of_date, regime_record_id, created_at, embedding_vector
      FROM pg_temp.regimes;
"""

TEMP_SETS_SQL = """
CREATE TEMP TABLE regime_prototype_sets (LIKE {s}.regime_prototype_sets INCLUDING DEFAULTS);
CREATE TEMP TABLE regime_prototype_set_members (LIKE {s}.regime_prototype_set_members);
INSERT INTO pg_temp.regime_prototype_sets (name, region, embedding_dim, temperature, windows,
                                           source, saving_xact)
VALUES ('{clean}', 'US', 384, 1e-3, '{{}}', 'computed', '1'::xid8);
"""

#: The hostile sessions: what each lists first on its search_path.
SEARCH_PATHS = {
    "schema first": "evil, {s}",
    "schema before pg_catalog": "evil, pg_catalog, {s}",
    "pg_temp first": "pg_temp, evil, pg_catalog, {s}",
}


@pytest.fixture
def planted(engine: Engine) -> Iterator[Engine]:
    with psycopg.connect(engine.dsn, autocommit=True) as conn:
        conn.execute(plant_sql(engine).encode())
    yield engine


def hostile_session(engine: Engine, path: str) -> psycopg.Connection[Any]:
    """A new session with its search_path set by the connection's options, as a role may."""
    conn = psycopg.connect(engine.dsn, autocommit=True)
    s = sql.Identifier(engine.schema).as_string()
    if path.startswith("pg_temp"):
        conn.execute(TEMP_SQL.format(s=s, dim=DIM).encode())
        if engine.has_sets:
            conn.execute(TEMP_SETS_SQL.format(s=s, clean=CLEAN_SET).encode())
    conn.execute(
        sql.SQL("SELECT set_config('search_path', {}, false)").format(sql.Literal(path.format(s=s)))
    )
    return conn


def planted_calls(engine: Engine) -> list[str]:
    with psycopg.connect(engine.dsn) as conn:
        return [str(r[0]) for r in conn.execute("SELECT name FROM evil.calls").fetchall()]


def assert_same(clean: dict[str, Any], hostile: dict[str, Any]) -> None:
    assert clean.keys() == hostile.keys()
    for key in clean:
        assert hostile[key] == clean[key], key


# --------------------------------------------------------------------------- catalogue


def released_function_names() -> set[str]:
    """Names of the functions the released SQL files create (``CREATE [OR REPLACE] FUNCTION``)."""
    listed = [
        line.split()[1].lstrip("*")
        for line in (SQL_DIR / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    ]
    names: set[str] = set()
    dropped: set[str] = set()
    created = re.compile(
        r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|AGGREGATE)\s+(\w+)\s*\(", re.M | re.I
    )
    drop = re.compile(r"^DROP\s+(?:FUNCTION|AGGREGATE)\s+(\w+)\s*\(", re.M | re.I)
    for name in listed:
        text = (SQL_DIR / name).read_text(encoding="utf-8")
        names.update(created.findall(text))
        dropped.update(drop.findall(text))
    return names - dropped


def installed_functions(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    """(signature, name, prosecdef, proconfig, prokind) of every non-extension routine."""
    return conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.proname, p.prosecdef, p.proconfig, p.prokind
          FROM pg_proc AS p
         WHERE p.pronamespace = %s::regnamespace
           AND NOT EXISTS (SELECT FROM pg_depend AS d
                            WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                              AND d.deptype = 'e')
         ORDER BY 1
        """,
        (sql.Identifier(schema).as_string(),),
    ).fetchall()


def test_every_function_is_invoker_and_pins_search_path(db: str) -> None:
    with psycopg.connect(db) as conn:
        schema = roles.schema_of_regimes(conn)
        quoted = conn.execute(
            "SELECT quote_ident(%s), quote_ident(extnamespace::regnamespace::text)"
            "  FROM pg_extension WHERE extname = 'vector'",
            (schema,),
        ).fetchone()
        rows = installed_functions(conn, schema)
    assert quoted is not None
    # <schema of regimes>, <pgvector's schema> (once), pg_temp last
    expected_path = ", ".join([*dict.fromkeys(str(q) for q in quoted), "pg_temp"])
    names = {str(r[1]) for r in rows}
    # the migrations created exactly the functions of the released SQL files
    assert names == released_function_names()
    # and regime_pg.roles knows each of them (reader, writer, trigger or insert path)
    assert names <= roles.KNOWN_FUNCTIONS, sorted(names - roles.KNOWN_FUNCTIONS)
    assert {"compute_regime_prototype", "regime_prototypes_json", "regime_embedding_sync"} <= names
    for signature, name, secdef, config, kind in rows:
        # the two trigger functions of the stored bucket sums run as their owner
        assert secdef is (name in roles.DEFINER_FUNCTIONS), signature
        if kind == "a":
            continue  # an aggregate runs its support functions: pgvector's, checked below
        paths = [c for c in (config or []) if c.startswith("search_path=")]
        assert paths == [f"search_path={expected_path}"], (signature, config)
    with psycopg.connect(db) as conn:
        support = conn.execute(
            """
            SELECT DISTINCT f.proname, l.lanname = 'c',
                   EXISTS (SELECT FROM pg_depend AS d
                            WHERE d.classid = 'pg_proc'::regclass AND d.objid = f.oid
                              AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
              FROM pg_aggregate AS a
              JOIN pg_proc AS p ON p.oid = a.aggfnoid
              JOIN pg_proc AS f ON f.oid IN (a.aggtransfn, a.aggcombinefn, a.aggfinalfn)
              JOIN pg_language AS l ON l.oid = f.prolang
             WHERE p.oid::regprocedure::text = ANY(%s)
             ORDER BY 1
            """,
            ([signature for signature, *_, kind in rows if kind == "a"],),
        ).fetchall()
    # regime-pg's aggregates only put pgvector's C functions together
    assert support == [("vector_accum", True, True), ("vector_combine", True, True)]


def test_pinned_path_lists_the_schema_of_regimes_before_pgvectors(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE EXTENSION vector SCHEMA extensions")
    migrate.upgrade(empty_db)
    with psycopg.connect(empty_db) as conn:
        where = conn.execute(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = 'regimes'"
        ).fetchall()
        config = conn.execute(
            "SELECT proconfig FROM pg_proc WHERE proname = 'compute_regime_prototype'"
        ).fetchall()
    assert where == [("public",)]
    assert config == [(["search_path=public, extensions, pg_temp"],)]


#: Settings a function must not raise for its callers: they are the administrator's
#: limits on what one statement of any role may use.
RESOURCE_LIMITS = (
    "work_mem",
    "hash_mem_multiplier",
    "maintenance_work_mem",
    "temp_file_limit",
    "statement_timeout",
    "lock_timeout",
    "max_parallel_workers_per_gather",
)


#: Settings that can only take resources away from the caller: allowed.
LOWERED_LIMITS = ("max_parallel_workers_per_gather=0",)  # regime_prototype_compute_serial


def test_no_function_raises_a_resource_limit(db: str) -> None:
    """SET work_mem = '256MB' on a function would lift the limit for every caller."""
    with psycopg.connect(db) as conn:
        schema = roles.schema_of_regimes(conn)
        rows = installed_functions(conn, schema)
    raised = [
        (signature, setting)
        for signature, _name, _secdef, config, _kind in rows
        for setting in (config or [])
        if setting.split("=", 1)[0] in RESOURCE_LIMITS and setting not in LOWERED_LIMITS
    ]
    assert raised == []


def test_nothing_in_the_database_is_security_definer(db: str) -> None:
    """But the two trigger functions of the stored bucket sums (bucket_sums--1.sql),
    which return trigger: PostgreSQL lets nobody call them but a trigger."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            """
            SELECT p.oid::regprocedure::text, p.prorettype = 'trigger'::regtype
              FROM pg_proc AS p
             WHERE p.prosecdef
               AND p.pronamespace NOT IN ('pg_catalog'::regnamespace,
                                          'information_schema'::regnamespace)
             ORDER BY 1
            """
        ).fetchall()
    assert rows == [("regime_bucket_sums_changed()", True),
                    ("regime_bucket_sums_truncated()", True)]


def test_view_runs_with_the_callers_rights(db: str) -> None:
    """Without security_invoker the view would read regimes with its owner's rights."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT c.reloptions FROM pg_class AS c"
            " WHERE c.oid = to_regclass('regime_embeddings_latest')"
        ).fetchone()
    assert row is not None and "security_invoker=true" in (row[0] or [])


def test_installed_objects_are_owned_by_the_migrating_role_only(db: str) -> None:
    """Nothing of regime-pg is owned by (or grants CREATE to) another role."""
    with psycopg.connect(db) as conn:
        schema = roles.schema_of_regimes(conn)
        owners = conn.execute(
            "SELECT DISTINCT proowner::regrole::text FROM pg_proc WHERE proname = ANY(%s)"
            " AND pronamespace = %s::regnamespace",
            (sorted(roles.KNOWN_FUNCTIONS), sql.Identifier(schema).as_string()),
        ).fetchall()
        current = conn.execute("SELECT current_user").fetchone()
        findings = roles.audit(conn)
    assert owners == [current]
    assert findings == []


# --------------------------------------------------------------------------- planting


@pytest.mark.parametrize("path", list(SEARCH_PATHS), ids=list(SEARCH_PATHS))
def test_planted_objects_change_no_result(planted: Engine, path: str) -> None:
    with psycopg.connect(planted.dsn, autocommit=True) as clean_conn:
        clean = results(clean_conn, planted)
        clean_writes = writes(clean_conn, planted, "clean")
    with hostile_session(planted, SEARCH_PATHS[path]) as conn:
        # the hostile session itself does see its planted regimes
        seen = conn.execute(
            "SELECT relnamespace::regnamespace::text FROM pg_class"
            " WHERE oid = to_regclass('regimes')"
        ).fetchone()
        assert seen is not None and seen[0] != planted.schema
        hostile = results(conn, planted)
        hostile_writes = writes(conn, planted, "hostile")
    assert_same(clean, hostile)
    assert_same(clean_writes, hostile_writes)
    assert planted_calls(planted) == []


def test_planted_objects_do_not_reach_the_python_client(planted: Engine) -> None:
    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}

    def through_client(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        use_vector_types(conn)
        computed = compute_prototypes(conn, "US", windows)
        document = prototypes_document(conn, "US", windows).dumps()
        return computed, document

    with psycopg.connect(planted.dsn, autocommit=True) as conn:
        clean = through_client(conn)
    options = "-c search_path=evil,pg_catalog," + planted.schema
    with psycopg.connect(planted.dsn, autocommit=True, options=options) as conn:
        shown = conn.execute("SHOW search_path").fetchone()
        assert shown is not None and str(shown[0]).startswith("evil,")
        hostile = through_client(conn)
    assert hostile == clean
    assert planted_calls(planted) == []


def test_planted_objects_do_not_reach_the_python_sets_client(planted: Engine) -> None:
    if not planted.has_sets:
        pytest.skip("prototype sets are not installed")
    from regime_pg.sets import get_set, list_sets

    with psycopg.connect(planted.dsn, autocommit=True) as conn:
        clean = (get_set(conn, CLEAN_SET).document, [i.name for i in list_sets(conn)])
    options = "-c search_path=evil,pg_catalog," + planted.schema
    with psycopg.connect(planted.dsn, autocommit=True, options=options) as conn:
        hostile = (get_set(conn, CLEAN_SET).document, [i.name for i in list_sets(conn)])
    assert hostile == clean
    assert planted_calls(planted) == []


def test_planted_objects_do_not_reach_the_encoder_timeline_or_set_writes(planted: Engine) -> None:
    """F13: stored embeddings, the timeline, the fit, save and delete, from a hostile session."""
    if not planted.has_sets:
        pytest.skip("prototype sets are not installed")
    from regime_pg.model import StoredEmbeddingEncoder
    from regime_pg.sets import delete_set, fit_set_temperature, save_set
    from regime_pg.timeline import classify_history

    windows = {k: (v["start_date"], v["end_date"]) for k, v in WINDOWS.items()}
    day = sorted(planted.vectors)[40]

    def through_client(conn: psycopg.Connection[Any], name: str) -> tuple[Any, ...]:
        use_vector_types(conn)
        embedding = StoredEmbeddingEncoder(conn).encode("US", day, 63)
        timeline = classify_history(conn, CLEAN_SET, dt.date(2018, 1, 1), dt.date(2018, 12, 31))
        fit = fit_set_temperature(conn, "US", windows)
        saved = save_set(conn, name, "US", windows, temperature=None)
        delete_set(conn, name)
        return embedding.tobytes(), timeline, fit, saved.temperature, saved.document

    with psycopg.connect(planted.dsn, autocommit=True) as conn:
        clean = through_client(conn, "clean-copy")
    options = "-c search_path=evil,pg_catalog," + planted.schema
    with psycopg.connect(planted.dsn, autocommit=True, options=options) as conn:
        hostile = through_client(conn, "hostile-copy")
        names = conn.execute(
            sql.SQL("SELECT name FROM {} ORDER BY name").format(
                sql.Identifier(planted.schema, "regime_prototype_sets")
            )
        ).fetchall()
    assert clean[0] == planted.vectors[day].tobytes()
    assert len(clean[1]) == 260
    assert hostile == clean
    assert names == [(CLEAN_SET,)]  # both copies deleted from the real table
    assert planted_calls(planted) == []


def test_a_planted_installation_is_an_error_never_a_forged_set(planted: Engine) -> None:
    """A look-alike version table makes the installation ambiguous: the client refuses."""
    if not planted.has_sets:
        pytest.skip("prototype sets are not installed")
    from regime_pg.errors import AmbiguousInstallationError
    from regime_pg.sets import get_set

    with psycopg.connect(planted.dsn, autocommit=True) as conn:
        clean = get_set(conn, CLEAN_SET).document
        conn.execute(
            sql.SQL("CREATE TABLE evil.regime_pg_alembic_version (LIKE {})").format(
                sql.Identifier(planted.schema, "regime_pg_alembic_version")
            )
        )
    options = "-c search_path=evil,pg_catalog," + planted.schema
    for session_options in (options, ""):  # the hostile session, and a clean one too
        with (
            psycopg.connect(planted.dsn, autocommit=True, options=session_options) as conn,
            pytest.raises(AmbiguousInstallationError) as caught,
        ):
            get_set(conn, CLEAN_SET)
        assert str(caught.value).startswith(
            f"regime-pg is installed in several schemas of this database: 'evil', "
            f"'{planted.schema}'; set regime_pg.schema to the one to use"
        )
    options += " -c regime_pg.schema=" + planted.schema
    with psycopg.connect(planted.dsn, autocommit=True, options=options) as conn:
        assert get_set(conn, CLEAN_SET).document == clean
    assert planted_calls(planted) == []


@pytest.mark.parametrize("path", ["schema first", "schema before pg_catalog"])
def test_trigger_converts_engine_rows_from_a_hostile_session(planted: Engine, path: str) -> None:
    rng = np.random.default_rng(7)
    good = rng.standard_normal(DIM).astype("<f4")
    good[:4] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max, -np.finfo(np.float32).tiny]
    nan = np.full(DIM, np.nan, dtype="<f4")
    rows = {"good": good.tobytes(), "nan": nan.tobytes(), "short": b"\x01\x02\x03", "null": None}
    warnings: list[str] = []
    with hostile_session(planted, SEARCH_PATHS[path]) as conn:
        conn.add_notice_handler(lambda d: warnings.append(str(d.message_primary)))
        insert = sql.SQL(
            "INSERT INTO {} (regime_record_id, as_of_date, region, regime_label,"
            " regime_embedding, confidence) VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(planted.schema, "regimes"))
        for key, payload in rows.items():
            conn.execute(
                insert, (f"hostile-{key}", dt.date(2019, 6, 3), "HOSTILE", "NEUTRAL", payload, 0.5)
            )
        # and an UPDATE of the BYTEA, as a re-run of the engine might do
        # (the session's own statement names pg_catalog's = explicitly: its unqualified
        # = would be the planted one, which matches every row)
        conn.execute(
            sql.SQL(
                "UPDATE {} SET regime_embedding = %s"
                " WHERE regime_record_id OPERATOR(pg_catalog.=) %s::pg_catalog.text"
            ).format(sql.Identifier(planted.schema, "regimes")),
            (good.tobytes(), "hostile-short"),
        )
    with psycopg.connect(planted.dsn) as conn:
        use_vector_types(conn)
        stored: dict[Any, Any] = dict(
            conn.execute(
                "SELECT regime_record_id, embedding_vector FROM regimes WHERE region = 'HOSTILE'"
            ).fetchall()
        )
        fake = conn.execute("SELECT count(*) FROM evil.regimes WHERE region = 'HOSTILE'").fetchone()
    assert fake == (0,)
    back = np.asarray(stored["hostile-good"].to_numpy(), dtype="<f4")
    assert back.tobytes() == good.tobytes()  # bit for bit, -0.0 and subnormals included
    assert np.asarray(stored["hostile-short"].to_numpy(), dtype="<f4").tobytes() == good.tobytes()
    assert stored["hostile-nan"] is None and stored["hostile-null"] is None
    assert sum("embedding_vector left NULL" in w for w in warnings) == 2, warnings
    assert planted_calls(planted) == []


# --------------------------------------------------------------------------- session settings


#: Settings any role may SET in its own session, that must not change a result.
HARMLESS_SETTINGS = {
    "DateStyle": [("DateStyle", "SQL, DMY")],
    "IntervalStyle": [("IntervalStyle", "sql_standard")],
    "TimeZone": [("TimeZone", "Pacific/Kiritimati")],
    "bytea_output": [("bytea_output", "escape")],
    "no seqscan, no indexscan": [("enable_seqscan", "off"), ("enable_indexscan", "off")],
    "work_mem": [("work_mem", "64kB")],
    "plpgsql.extra_errors": [("plpgsql.extra_errors", "all")],
    "array_nulls": [("array_nulls", "off")],
    "transform_null_equals": [("transform_null_equals", "on")],
    "quote_all_identifiers": [("quote_all_identifiers", "on")],
    "extra_float_digits 3": [("extra_float_digits", "3")],
    # regime_prototypes_json pins extra_float_digits = 1 (was finding F1)
    "extra_float_digits 0": [("extra_float_digits", "0")],
    "extra_float_digits -15": [("extra_float_digits", "-15")],
    "default_transaction_read_only": [("default_transaction_read_only", "on")],
    # PL/pgSQL bodies are compiled with the session's setting: no backslash escapes in
    # them ('[0-9]', not '\\d', since commit c07521a)
    "standard_conforming_strings off": [("standard_conforming_strings", "off")],
}

#: Messages may print dates in the session's DateStyle: settings compare SQLSTATEs.
def _settings_results(engine: Engine, settings: list[tuple[str, str]]) -> dict[str, Any]:
    with psycopg.connect(engine.dsn, autocommit=True) as conn:
        for name, value in settings:
            conn.execute(
                sql.SQL("SELECT set_config({}, {}, false)").format(
                    sql.Literal(name), sql.Literal(value)
                )
            )
        try:
            return results(conn, engine, messages=False)
        except psycopg.Error as exc:
            return {"error": (exc.sqlstate, exc.diag.message_primary)}


def assert_close(clean: Any, other: Any, where: str = "") -> None:
    """Equal, floats and vectors within the documented 1e-6 (a plan may sum in another order)."""
    if isinstance(clean, dict):
        assert isinstance(other, dict) and clean.keys() == other.keys(), where
        for key in clean:
            assert_close(clean[key], other[key], f"{where}/{key}")
    elif isinstance(clean, list) and len(clean) == DIM and isinstance(other, list):
        a, b = np.array(clean, dtype=np.float64), np.array(other, dtype=np.float64)
        assert np.allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(a).max()), where
    elif isinstance(clean, list | tuple):
        assert isinstance(other, list | tuple) and len(clean) == len(other), where
        for i, (a, b) in enumerate(zip(clean, other, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(clean, bytes) and len(clean) == 4 + 4 * DIM and isinstance(other, bytes):
        a, b = (np.frombuffer(x[4:], ">f4").astype(np.float64) for x in (clean, other))
        assert clean[:4] == other[:4], where
        assert np.allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(a).max()), where
    elif isinstance(clean, float) and isinstance(other, float):
        assert other == pytest.approx(clean, rel=1e-6, abs=1e-12), where
    else:
        assert other == clean, where


@pytest.mark.parametrize("case", list(HARMLESS_SETTINGS), ids=list(HARMLESS_SETTINGS))
def test_session_settings_change_no_result(engine: Engine, case: str) -> None:
    """Planner settings may change the order of a sum: values compare within 1e-6."""
    clean = _settings_results(engine, [])
    assert_close(clean, _settings_results(engine, HARMLESS_SETTINGS[case]))


def test_parallel_query_changes_no_result(engine: Engine) -> None:
    """debug_parallel_query runs every parallel-safe query in a worker.

    A PARALLEL SAFE PL/pgSQL function with an EXCEPTION block fails there on
    PostgreSQL 16 (25000, "cannot start subtransactions during a parallel
    operation"): regime_windows_from_json had one until commit c07521a.
    """
    clean = _settings_results(engine, [])
    assert_close(clean, _settings_results(engine, [("debug_parallel_query", "on")]))


def _centre_bits(conn: psycopg.Connection[Any], settings: list[str]) -> bytes:
    for setting in settings:
        conn.execute(setting)
    row = (
        conn.cursor(binary=True)
        .execute("SELECT center FROM compute_regime_prototype('US', '2018-01-01', '2018-12-31')")
        .fetchone()
    )
    conn.execute("RESET ALL")
    assert row is not None
    return bytes(row[0])


def test_centre_bits_do_not_depend_on_the_plan(db: str) -> None:
    """A sequential scan (rows in physical order) and an index scan (in date order).

    A float32 sum in scan order would make the centre's last bits, and so the
    document's bytes, depend on the plan (an early prototypes--2.sql did).
    """
    with psycopg.connect(db, autocommit=True) as conn:
        rng = np.random.default_rng(16)
        dates = business_days(dt.date(2018, 1, 1), 260)
        order = rng.permutation(len(dates))  # physical order != date order
        x = rng.standard_normal((len(dates), DIM)).astype("<f4") * 3
        insert_rows(conn, "US", [dates[i] for i in order], x[order])
        conn.execute("ANALYZE")
        by_heap = _centre_bits(conn, ["SET enable_indexscan = off", "SET enable_bitmapscan = off"])
        by_index = _centre_bits(conn, ["SET enable_seqscan = off", "SET enable_bitmapscan = off"])
    assert by_heap == by_index


# --------------------------------------------------------------------------- trust boundary


@pytest.fixture
def mallory(pg_server: Server, engine: Engine) -> Iterator[str]:
    """A login role that was given CREATE on the schema of regimes.

    PostgreSQL 14 and older grant that to PUBLIC on schema public by default.
    """
    name = f"regime_pg_mallory_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(engine.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(engine.schema), sql.Identifier(name)
            )
        )
    yield name
    with psycopg.connect(engine.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_audit_reports_a_role_that_may_create_in_the_pinned_schema(
    engine: Engine, mallory: str
) -> None:
    with psycopg.connect(engine.dsn) as conn:
        findings = roles.audit(conn)
        conn.execute(
            sql.SQL("GRANT CREATE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(engine.schema))
        )
        with_public = roles.audit(conn)
        conn.rollback()
    assert len(findings) == 1 and findings[0].startswith(f"{mallory} may CREATE in schema ")
    assert f'REVOKE CREATE ON SCHEMA "{engine.schema}" FROM {mallory}' in findings[0]
    assert any(f.startswith("PUBLIC may CREATE in schema ") for f in with_public)


def test_role_with_create_on_the_schema_cannot_hijack_the_trigger(
    pg_server: Server, engine: Engine, mallory: str
) -> None:
    s = sql.Identifier(engine.schema)
    mallory_dsn = psycopg.conninfo.make_conninfo(engine.dsn, user=mallory)
    with psycopg.connect(mallory_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.stolen (who text, superuser boolean)").format(s))
        conn.execute(sql.SQL("GRANT INSERT ON {}.stolen TO PUBLIC").format(s))
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}.trojan(a real[], b real[]) RETURNS boolean LANGUAGE sql"
                " AS $$ INSERT INTO {}.stolen SELECT current_user, rolsuper FROM pg_roles"
                " WHERE rolname = current_user RETURNING false $$"
            ).format(s, s)
        )
        conn.execute(
            sql.SQL(
                "CREATE OPERATOR {}.&& (LEFTARG = real[], RIGHTARG = real[], FUNCTION = {}.trojan)"
            ).format(s, s)
        )
    # the engine (here a superuser) inserts a row as it always does
    with psycopg.connect(engine.dsn, autocommit=True) as conn:
        insert_rows(conn, "US", [dt.date(2019, 1, 2)], [np.ones(DIM, dtype="<f4")])
        stolen = conn.execute(sql.SQL("SELECT * FROM {}.stolen").format(s)).fetchall()
    assert stolen == []
