"""Least-privilege grants for regime-pg: a reader and a writer role.

regime-pg's functions are ``SECURITY INVOKER``: they can do exactly what the
role calling them may do, and nothing more.  So the privileges that matter are
those on the tables and the view the functions read and write:

* a **reader** may compute prototypes and classify: ``USAGE`` on the schema of
  ``regimes`` (and on pgvector's schema), ``SELECT`` on the five columns of
  ``regimes`` the functions read (``regime_record_id``, ``as_of_date``,
  ``region``, ``created_at``, ``embedding_vector``: not the engine's BYTEA,
  label, confidence or metadata), ``SELECT`` on the view
  ``regime_embeddings_latest`` and on the prototype-set tables (when they are
  installed), and ``EXECUTE`` on the read-only functions.  It writes nothing.
* a **writer** is a reader that may also save and delete prototype sets:
  ``INSERT`` and ``DELETE`` on ``regime_prototype_sets``, ``INSERT`` on
  ``regime_prototype_set_members`` (``USAGE`` on their sequences, if any) and
  ``EXECUTE`` on the functions that write them.  No ``UPDATE`` (a saved set
  never changes) and no ``TRUNCATE``.  Neither role may change ``regimes``.
  Both may ``SELECT`` the stored bucket sums (``regime_bucket_sums``,
  ``regime_bucket_group_sums``), which the centroid reads once they are
  enabled (``regime-pg sums enable``).

The one exception to invoker rights: the two trigger functions that keep the
stored bucket sums are ``SECURITY DEFINER`` (:data:`DEFINER_FUNCTIONS`), so
that whoever writes ``regimes`` keeps the sums without any privilege on them,
and nobody but the owner writes them.

Nothing global is created: these functions grant to, and revoke from, a role
that already exists (``CREATE ROLE`` stays the database administrator's step,
see ``docs/hardening.md``) and raise :class:`UnknownRoleError` otherwise.  All
statements of one call run in one transaction, and every grant is checked to
be in effect afterwards (``GRANT`` by a role that may not grant only warns in
PostgreSQL; here it raises :class:`GrantNotEffectiveError` and nothing stays).
Role and schema names are bound as identifiers (``psycopg.sql.Identifier``),
never spliced into SQL text.

>>> from regime_pg.roles import grant_reader, grant_writer, revoke_all
>>> with connect(dsn) as conn:                                 # doctest: +SKIP
...     grant_reader(conn, "regime_reader")
...     grant_writer(conn, "regime_writer")
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from regime_pg.errors import InvalidInputError, RegimePgError, SchemaNotReadyError

#: Functions the engine's insert path runs, through trigger ``regime_pg_embedding_sync``.
#: The trigger runs as whichever role inserts into ``regimes``, and PostgreSQL checks
#: EXECUTE on the functions it calls: they must stay executable by that role, so
#: regime-pg keeps PostgreSQL's default EXECUTE for PUBLIC on them.
ENGINE_INSERT_PATH_FUNCTIONS: tuple[str, ...] = (
    "regime_embedding_dim",
    "regime_float32le_decode",
    "regime_embedding_convert",
)

#: Trigger functions.  Nobody calls them directly (PostgreSQL does not check EXECUTE
#: on a trigger function when the trigger fires), so no role is granted anything on them.
TRIGGER_FUNCTIONS: tuple[str, ...] = (
    "regime_embedding_sync",
    "regime_prototype_set_saving",
    "regime_prototype_set_frozen",
    "regime_prototype_set_member_added",
    "regime_prototype_set_member_removed",
    "regime_prototype_set_members_truncated",
    "regime_prototype_set_complete",
    "regime_bucket_sums_changed",
    "regime_bucket_sums_truncated",
)

#: Trigger functions that run as their owner (``SECURITY DEFINER``), with a pinned
#: search_path: they keep the stored bucket sums for every writer of ``regimes``.
#: ``audit`` accepts these two and no other.
DEFINER_FUNCTIONS: tuple[str, ...] = (
    "regime_bucket_sums_changed",
    "regime_bucket_sums_truncated",
)

#: Read-only functions a reader may execute (those not installed are skipped).
READER_FUNCTIONS: tuple[str, ...] = (
    # embedding_vector--1.sql
    "regime_embedding_dim",
    "regime_float32le_decode",
    "regime_embedding_convert",
    "regime_embedding_to_vector",
    # prototypes--1.sql
    "regime_label_is_valid",
    "regime_check_region",
    "regime_window_name",
    "regime_check_window",
    "regime_prototype_for_window",
    "compute_regime_prototype",
    "regime_windows_from_json",
    "compute_regime_prototypes",
    "regime_prototypes_json",
    # prototypes--2.sql
    "regime_prototype_compute",
    "regime_prototype_compute_custom_plans",
    "regime_window_bucket_sums",
    # prototypes--3.sql (the aggregates run pgvector's C functions only)
    "regime_window_bucket_states",
    "regime_window_parts",
    "regime_window_distances",
    "regime_vector_sum_state",
    "regime_vector_state_sum",
    # prototype_sets--1.sql: checks, the fit, export, document parsing (all read-only)
    "regime_prototype_set_name_is_valid",
    "regime_check_prototype_set_name",
    "regime_check_temperature",
    "regime_prototype_set_exists_error",
    "regime_prototype_set",
    "regime_softmax_nll",
    "regime_temperature_fit",
    "regime_prototype_set_members_of",
    "fit_regime_temperature",
    "regime_document_number",
    "regime_document_count",
    "regime_document_date",
    "regime_prototype_document_parse",
    "regime_prototype_set_json",
    # classify--1.sql
    "regime_check_prototype_set_region",
    "regime_check_date_count",
    "regime_classification",
    "classify_regime",
    "classify_regimes",
    "regime_centroid_series",
    # classify--2.sql (classify--3.sql and classify--4.sql replace regime_classify_query)
    "regime_classify_query",
    "regime_classify_prepare",
    "classify_regime_labels",
    # classify--4.sql: the error of a distance that overflows float32
    "regime_distance_overflow",
    # bucket_sums--1.sql
    "regime_bucket_first_day",
    "regime_bucket_sums_of_rows",
    "regime_stored_bucket_sums",
    "regime_stored_group_sums",
    "regime_calendar_grid_state",
    "regime_window_distances_counted",
    "regime_bucket_sums_enabled",
    "regime_prototype_from_bucket_sums",
    "regime_prototype_from_bucket_sums_custom_plans",
    # prototypes--7.sql: long windows with few rows run without parallel workers
    "regime_window_repays_workers",
    "regime_prototype_compute_serial",
)

#: Functions that write prototype sets: writers only.
WRITER_FUNCTIONS: tuple[str, ...] = (
    "regime_store_prototype_set",
    "save_regime_prototype_set",
    "save_regime_prototype_set_from_document",
    "delete_regime_prototype_set",
)

#: Functions that turn stored bucket sums on or off (they create or drop triggers on
#: ``regimes``, so only its owner may run them) or that the sums' triggers run as their
#: owner: nobody is granted anything on them.
ADMIN_FUNCTIONS: tuple[str, ...] = (
    "regime_bucket_sums_enable",
    "regime_bucket_sums_disable",
    "regime_bucket_sums_refresh",
)

#: Every function regime-pg's migrations create, by name.
KNOWN_FUNCTIONS: frozenset[str] = frozenset(
    ENGINE_INSERT_PATH_FUNCTIONS
    + TRIGGER_FUNCTIONS
    + READER_FUNCTIONS
    + WRITER_FUNCTIONS
    + ADMIN_FUNCTIONS
)

#: The columns of ``regimes`` the functions read (directly or through the view).
REGIMES_READ_COLUMNS: tuple[str, ...] = (
    "regime_record_id",
    "as_of_date",
    "region",
    "created_at",
    "embedding_vector",
)

#: Views a reader may select from.
READER_VIEWS: tuple[str, ...] = ("regime_embeddings_latest",)

#: The prototype-set tables: readers may SELECT from them.
SET_TABLES: tuple[str, ...] = ("regime_prototype_sets", "regime_prototype_set_members")

#: The stored bucket sums (bucket_sums--1.sql): readers may SELECT from them.
SUMS_TABLES: tuple[str, ...] = ("regime_bucket_sums", "regime_bucket_group_sums")

#: What a writer may do on each set table beyond SELECT.  A saved set never changes
#: (triggers reject UPDATE), so no UPDATE; members go with their set through the
#: foreign key's ON DELETE CASCADE, which PostgreSQL runs as the table's owner, so
#: no DELETE on the members either; no TRUNCATE anywhere.
WRITER_TABLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "regime_prototype_sets": ("INSERT", "DELETE"),
    "regime_prototype_set_members": ("INSERT",),
}

#: PostgreSQL truncates longer names; such a name can never be a role.
MAX_IDENTIFIER_BYTES = 63


class UnknownRoleError(InvalidInputError):
    """The role does not exist, or may not receive regime-pg's grants."""

    sqlstate = "42704"


class GrantNotEffectiveError(RegimePgError):
    """A GRANT did not take effect: the connected role may not grant that privilege."""

    sqlstate = "42501"


@dataclass(frozen=True)
class Routine:
    """One installed regime-pg function."""

    oid: int
    name: str
    identity_arguments: str

    def reference(self, schema: str) -> sql.Composable:
        """``"schema"."name"(args)`` for GRANT/REVOKE ... ON ROUTINE.

        The argument list is PostgreSQL's own rendering of the signature
        (``pg_get_function_identity_arguments``, identifiers quoted by the
        server), not text a user gave.
        """
        return sql.SQL("{}.{}({})").format(
            sql.Identifier(schema), sql.Identifier(self.name), sql.SQL(self.identity_arguments)
        )


@dataclass(frozen=True)
class Installation:
    """Where regime-pg is installed and which of its objects exist."""

    schema: str
    schema_oid: int
    vector_schema: str | None
    routines: tuple[Routine, ...]
    relations: dict[str, int]  # regimes, the view, the set tables: name -> oid
    sequences: tuple[str, ...]  # owned by the prototype-set tables

    def routines_named(self, names: Iterable[str]) -> list[Routine]:
        """The installed routines among ``names``, in catalogue order."""
        wanted = set(names)
        return [r for r in self.routines if r.name in wanted]

    @property
    def has_sets(self) -> bool:
        """Whether the prototype-set tables are installed."""
        return all(table in self.relations for table in SET_TABLES)

    def schemas(self) -> list[str]:
        """The schema of ``regimes``, then pgvector's when it differs."""
        found = [self.schema]
        if self.vector_schema and self.vector_schema not in found:
            found.append(self.vector_schema)
        return found


Connection = psycopg.Connection[tuple[object, ...]]


def inspect_installation(conn: Connection, schema: str | None = None) -> Installation:
    """Find regime-pg's objects: in ``schema``, else in the schema of ``regimes``.

    Without ``schema``, ``regimes`` is looked up on the connection's search_path
    (as ``regime-pg migrate`` does).  Raises ``SchemaNotReadyError`` when
    regime-pg's functions are not there.
    """
    if schema is None:
        schema = schema_of_regimes(conn)
    _check_name(schema, "schema")
    row = conn.execute(
        "SELECT oid, nspname FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    if row is None:
        raise SchemaNotReadyError(f"schema {schema[:63]!r} does not exist")
    nsp_oid, schema_name = int(str(row[0])), str(row[1])

    routines = tuple(
        Routine(int(str(oid)), str(name), str(args))
        for oid, name, args in conn.execute(
            """
            SELECT p.oid, p.proname, pg_get_function_identity_arguments(p.oid)
              FROM pg_proc AS p
             WHERE p.pronamespace = %s::oid
               AND p.proname = ANY(%s)
               AND NOT EXISTS (SELECT FROM pg_depend AS d
                                WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                  AND d.deptype = 'e')
             ORDER BY p.proname, p.oid
            """,
            (nsp_oid, sorted(KNOWN_FUNCTIONS)),
        ).fetchall()
    )
    relations = {
        str(name): int(str(oid))
        for name, oid in conn.execute(
            "SELECT relname, oid FROM pg_class WHERE relnamespace = %s::oid"
            " AND relname = ANY(%s) AND relkind IN ('r', 'v', 'p')",
            (nsp_oid, ["regimes", *READER_VIEWS, *SET_TABLES, *SUMS_TABLES]),
        ).fetchall()
    }
    if "regimes" not in relations or not any(
        r.name == "compute_regime_prototype" for r in routines
    ):
        raise SchemaNotReadyError(
            f"regime-pg is not installed in schema {schema_name!r}: run: regime-pg migrate"
        )
    sequences = tuple(
        str(name)
        for (name,) in conn.execute(
            """
            SELECT DISTINCT s.relname
              FROM pg_class AS s
              JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                                 AND d.refclassid = 'pg_class'::regclass
             WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i')
               AND s.relnamespace = %s::oid AND d.refobjid = ANY(%s::oid[])
             ORDER BY s.relname
            """,
            (nsp_oid, [relations[t] for t in SET_TABLES if t in relations]),
        ).fetchall()
    )
    vector_row = conn.execute(
        "SELECT n.nspname FROM pg_extension AS e"
        " JOIN pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    vector_schema = None if vector_row is None else str(vector_row[0])
    return Installation(schema_name, nsp_oid, vector_schema, routines, relations, sequences)


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Privilege:
    """One privilege on one object, as GRANT or REVOKE it."""

    what: sql.Composable  # SELECT, SELECT (col, ...), EXECUTE, INSERT, UPDATE, DELETE ...
    on: sql.Composable  # TABLE "s"."t", ROUTINE "s"."f"(args), SCHEMA "s", SEQUENCE ...

    def grant(self, role: str) -> sql.Composed:
        """``GRANT what ON object TO role``."""
        return sql.SQL("GRANT {} ON {} TO {}").format(self.what, self.on, sql.Identifier(role))

    def revoke(self, role: str) -> sql.Composed:
        """``REVOKE what ON object FROM role``."""
        return sql.SQL("REVOKE {} ON {} FROM {}").format(self.what, self.on, sql.Identifier(role))

    @property
    def is_schema_usage(self) -> bool:
        """Whether this is USAGE on a schema (left alone by revoke)."""
        return isinstance(self.on, sql.Composed) and self.on.as_string().startswith("SCHEMA ")


def _table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("TABLE {}").format(sql.Identifier(schema, name))


def _routine(schema: str, routine: Routine) -> sql.Composed:
    return sql.SQL("ROUTINE {}").format(routine.reference(schema))


def reader_privileges(installation: Installation) -> list[Privilege]:
    """What a reader gets."""
    schema = installation.schema
    out = [
        Privilege(sql.SQL("USAGE"), sql.SQL("SCHEMA {}").format(sql.Identifier(s)))
        for s in installation.schemas()
    ]
    out.append(
        Privilege(
            sql.SQL("SELECT ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, REGIMES_READ_COLUMNS))
            ),
            _table(schema, "regimes"),
        )
    )
    out.extend(
        Privilege(sql.SQL("SELECT"), _table(schema, relation))
        for relation in (*READER_VIEWS, *SET_TABLES, *SUMS_TABLES)
        if relation in installation.relations
    )
    out.extend(
        Privilege(sql.SQL("EXECUTE"), _routine(schema, routine))
        for routine in installation.routines_named(READER_FUNCTIONS)
    )
    return out


def writer_only_privileges(installation: Installation) -> list[Privilege]:
    """What a writer gets on top of a reader's."""
    schema = installation.schema
    out = [
        Privilege(sql.SQL(", ").join(map(sql.SQL, privileges)), _table(schema, table))
        for table, privileges in WRITER_TABLE_PRIVILEGES.items()
        if table in installation.relations
    ]
    out.extend(
        Privilege(sql.SQL("USAGE"), sql.SQL("SEQUENCE {}").format(sql.Identifier(schema, seq)))
        for seq in installation.sequences
    )
    out.extend(
        Privilege(sql.SQL("EXECUTE"), _routine(schema, routine))
        for routine in installation.routines_named(WRITER_FUNCTIONS)
    )
    return out


def statements(installation: Installation, action: str, role: str) -> list[sql.Composed]:
    """The statements of ``action``: grant-reader, grant-writer, revoke-writer or revoke.

    ``revoke`` undoes both grants except ``USAGE`` on the schemas: the role may
    have had it before regime-pg, and it only lets a role look names up.
    """
    if action == "grant-reader":
        return [p.grant(role) for p in reader_privileges(installation)]
    if action == "grant-writer":
        granted = reader_privileges(installation) + writer_only_privileges(installation)
        return [p.grant(role) for p in granted]
    if action == "revoke-writer":
        return [p.revoke(role) for p in writer_only_privileges(installation)]
    if action == "revoke":
        taken = writer_only_privileges(installation) + reader_privileges(installation)
        return [p.revoke(role) for p in taken if not p.is_schema_usage]
    raise InvalidInputError(
        f"unknown action {action!r}: grant-reader, grant-writer, revoke-writer or revoke"
    )


# --------------------------------------------------------------------------- actions


def grant_reader(conn: Connection, role: str, *, schema: str | None = None) -> list[str]:
    """Make the existing role ``role`` a reader; returns the SQL that ran.

    Idempotent.  Raises ``UnknownRoleError`` (no such role), ``SchemaNotReadyError``
    (not migrated), ``GrantNotEffectiveError`` (the connected role may not grant).
    """
    return _apply(conn, "grant-reader", role, schema)


def grant_writer(conn: Connection, role: str, *, schema: str | None = None) -> list[str]:
    """Make the existing role ``role`` a writer: a reader that also saves and deletes sets."""
    return _apply(conn, "grant-writer", role, schema)


def revoke_writer(conn: Connection, role: str, *, schema: str | None = None) -> list[str]:
    """Take ``role``'s writer privileges away; its reader privileges stay."""
    return _apply(conn, "revoke-writer", role, schema)


def revoke_all(conn: Connection, role: str, *, schema: str | None = None) -> list[str]:
    """Take away what grant_reader and grant_writer give (schema USAGE excepted)."""
    return _apply(conn, "revoke", role, schema)


#: ``revoke`` is ``revoke_all``.
revoke = revoke_all

ACTIONS: tuple[str, ...] = ("grant-reader", "grant-writer", "revoke-writer", "revoke")


def plan(conn: Connection, action: str, role: str, *, schema: str | None = None) -> list[str]:
    """The SQL ``action`` would run, one statement per item; runs nothing.

    The role must exist all the same.
    """
    with conn.transaction(), _catalog_search_path(conn, schema) as found:
        installation = _prepare(conn, action, role, found)
        return [s.as_string(conn) + ";" for s in statements(installation, action, role)]


def _prepare(conn: Connection, action: str, role: str, schema: str) -> Installation:
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown action {action!r}: {', '.join(ACTIONS)}")
    _check_name(role, "role")
    installation = inspect_installation(conn, schema)
    _check_role(conn, role)
    if action == "grant-writer" and not installation.has_sets:
        raise SchemaNotReadyError(
            f"prototype sets are not installed in schema {installation.schema!r}; "
            "run: regime-pg migrate"
        )
    return installation


def _apply(conn: Connection, action: str, role: str, schema: str | None) -> list[str]:
    try:
        with conn.transaction(), _catalog_search_path(conn, schema) as found:
            installation = _prepare(conn, action, role, found)
            done = []
            for statement in statements(installation, action, role):
                conn.execute(statement)
                done.append(statement.as_string(conn) + ";")
            if action.startswith("grant-"):
                _verify(conn, installation, role, writer=action == "grant-writer")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise GrantNotEffectiveError(
            f"{exc.diag.message_primary or 'permission denied'}: run regime-pg roles as the "
            "owner of regime-pg's objects (the role that ran regime-pg migrate) or a superuser"
        ) from exc
    return done


@contextmanager
def _catalog_search_path(conn: Connection, schema: str | None) -> Iterator[str]:
    """Inside a transaction: find the schema, then search pg_catalog only.

    The statements name every object with its schema; with pg_catalog alone on
    the search_path, the argument types PostgreSQL writes into a routine's
    signature are schema-qualified too (``public.vector``), so nothing a caller's
    own search_path holds can change what is granted.  The caller's setting
    comes back afterwards, even inside a transaction of the caller's.
    """
    found = schema if schema is not None else schema_of_regimes(conn)
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    assert row is not None
    conn.execute("SELECT set_config('search_path', 'pg_catalog, pg_temp', true)")
    try:
        yield found
    finally:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.INTRANS:
            conn.execute("SELECT set_config('search_path', %s, true)", (row[0],))


def schema_of_regimes(conn: Connection) -> str:
    """The schema of the ``regimes`` this connection's search_path finds."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass('regimes')"
    ).fetchone()
    if row is None:
        raise SchemaNotReadyError(
            "no table regimes on this connection's search_path: is the database "
            "migrated? run: regime-pg migrate (or name the schema)"
        )
    return str(row[0])


# --------------------------------------------------------------------------- audit


def audit(conn: Connection, schema: str | None = None) -> list[str]:
    """What weakens regime-pg's security model on this database (empty: nothing found).

    * a role other than the schema's owner (or PUBLIC) with ``CREATE`` on the
      schema of ``regimes`` or pgvector's schema: it could plant an operator or
      function that the pinned search_path resolves (PostgreSQL's CVE-2018-1058
      pattern), and so run code as whoever inserts into ``regimes`` or computes;
    * a regime-pg function that is ``SECURITY DEFINER`` (but the two trigger
      functions of :data:`DEFINER_FUNCTIONS`) or does not pin its search_path;
    * privileges granted to PUBLIC on ``regimes``, the view or the set tables.
    """
    installation = inspect_installation(conn, schema)
    findings: list[str] = []
    for who, nspname in conn.execute(
        """
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
               n.nspname
          FROM pg_namespace AS n,
               aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS a
         WHERE n.nspname = ANY(%s)
           AND a.privilege_type = 'CREATE'
           AND a.grantee <> n.nspowner
           AND NOT coalesce((SELECT rolsuper FROM pg_roles WHERE oid = a.grantee), false)
         ORDER BY 2, 1
        """,
        (installation.schemas(),),
    ).fetchall():
        findings.append(
            f"{who} may CREATE in schema {nspname}, which regime-pg's functions search: "
            f"it could plant operators or functions they resolve; run: REVOKE CREATE ON "
            f"SCHEMA {_quote(str(nspname))} FROM {who}"
        )
    for name, secdef, config, is_aggregate in conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.prosecdef AND NOT p.proname = ANY(%s),
               coalesce(array_to_string(p.proconfig, ','), ''), p.prokind = 'a'
          FROM pg_proc AS p
         WHERE p.oid = ANY(%s::oid[])
         ORDER BY 1
        """,
        (list(DEFINER_FUNCTIONS), [r.oid for r in installation.routines]),
    ).fetchall():
        if secdef:
            findings.append(f"function {name} is SECURITY DEFINER")
        # an aggregate has no body and no settings: its functions are pgvector's (C)
        if "search_path=" not in str(config) and not is_aggregate:
            findings.append(f"function {name} does not pin its search_path")
    for relname, privilege in conn.execute(
        """
        SELECT c.relname, a.privilege_type
          FROM pg_class AS c, aclexplode(c.relacl) AS a
         WHERE c.oid = ANY(%s::oid[]) AND a.grantee = 0
         ORDER BY 1, 2
        """,
        (list(installation.relations.values()),),
    ).fetchall():
        findings.append(f"PUBLIC has {privilege} on {installation.schema}.{relname}")
    return findings


# --------------------------------------------------------------------------- helpers


def _quote(name: str) -> str:
    """A name as a double-quoted identifier (for messages)."""
    return '"' + name.replace('"', '""') + '"'


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise UnknownRoleError(f"{what} name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise UnknownRoleError(f"{what} name must not contain NUL")
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise UnknownRoleError(
            f"{what} name {name[:40]!r}... is longer than {MAX_IDENTIFIER_BYTES} bytes: "
            "PostgreSQL would truncate it"
        )


def _check_role(conn: Connection, role: str) -> None:
    """Raise unless ``role`` names an existing role that may receive the grants."""
    _check_name(role, "role")
    row = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        raise UnknownRoleError(
            f"role {role[:63]!r} does not exist; create it first "
            "(CREATE ROLE ... LOGIN, see docs/hardening.md): regime-pg creates no roles"
        )
    if role.startswith("pg_"):
        raise UnknownRoleError(
            f"role {role!r} is a predefined PostgreSQL role; grant to a role of your own"
        )


def _verify(conn: Connection, installation: Installation, role: str, *, writer: bool) -> None:
    """Raise ``GrantNotEffectiveError`` unless ``role`` now holds every granted privilege."""
    checks: list[tuple[str, str, tuple[object, ...]]] = [
        (f"USAGE on schema {s}", "SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, s))
        for s in installation.schemas()
    ]
    regimes = installation.relations["regimes"]
    checks += [
        (
            f"SELECT on regimes.{column}",
            "SELECT has_column_privilege(%s, %s::oid, %s, 'SELECT')",
            (role, regimes, column),
        )
        for column in REGIMES_READ_COLUMNS
    ]
    checks += [
        (
            f"SELECT on {relation}",
            "SELECT has_table_privilege(%s, %s::oid, 'SELECT')",
            (role, installation.relations[relation]),
        )
        for relation in (*READER_VIEWS, *SET_TABLES, *SUMS_TABLES)
        if relation in installation.relations
    ]
    functions = list(READER_FUNCTIONS)
    if writer:
        functions += WRITER_FUNCTIONS
        checks += [
            (
                f"{privilege} on {table}",
                "SELECT has_table_privilege(%s, %s::oid, %s)",
                (role, installation.relations[table], privilege),
            )
            for table, privileges in WRITER_TABLE_PRIVILEGES.items()
            for privilege in privileges
        ]
    checks += [
        (
            f"EXECUTE on {r.name}",
            "SELECT has_function_privilege(%s, %s::oid, 'EXECUTE')",
            (role, r.oid),
        )
        for r in installation.routines_named(functions)
    ]
    missing = []
    for label, query, params in checks:
        row = conn.execute(query, params).fetchone()
        if row is None or row[0] is not True:
            missing.append(label)
    if missing:
        who = conn.execute("SELECT current_user").fetchone()
        raise GrantNotEffectiveError(
            f"role {who[0] if who else '?'} could not grant {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} to {role}: connect as the owner of "
            "regime-pg's objects (the role that ran regime-pg migrate) or a superuser"
        )
