"""Faults: a save killed mid-way, a server stopped mid-backfill, the engine writing meanwhile.

* A connection killed (``pg_terminate_backend``) in the middle of a save, or
  after it but before COMMIT: no set row, no member row; the name stays free.
* The server stopped (``pg_ctl stop -m immediate``, i.e. SIGQUIT to the
  postmaster, and ``embedded.stop``'s fast shutdown) while the backfill
  waits inside its third batch: the two committed batches stay, the third
  leaves nothing half-converted, the revision stays 0004, and the next
  ``regime_pg.migrate.upgrade`` converts what is left and reaches head.
* The engine inserting while an upgrade and its backfill run: no row lost,
  every row converted, bit for bit.
* A long transaction reading ``regimes`` while the upgrade needs it to
  itself: the engine's inserts are not held behind the waiting ALTER TABLE
  (lock_timeout and retry, ``regime_pg.migration_ops.lock_regimes_for_ddl``);
  when the table stays busy, the migration gives up and changes nothing.
* Refusal: a pgvector older than needed (simulated: only one pgvector ships
  with the embedded server, so the minimum is raised instead).

A killed embedded server restarting cleanly, and two starts at once, are in
``tests/test_embedded.py``.  Nothing here asserts a duration: every wait is for
a state (a lock wait, a progress message) with a deadline that only turns a
hang into a failure.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from regime_pg import embedded, migrate, migration_ops
from regime_pg.client import prototypes_document
from regime_pg.connection import Connection, connect
from regime_pg.errors import EmbeddedServerError, MigrationError, RegimePgError
from regime_pg.sets import import_set, save_set
from tests.conftest import Server
from tests.engine import business_days, create_engine_schema, insert_rows
from tests.test_concurrency import (
    assert_every_row_converted,
    convertible,
    engine_writing,
)

DIM = 384
WAIT_S = 60.0  # deadline for a wait: turns a hang into a failure, never asserted
HEAD = migrate.head_revision()
BATCH = 5000  # backfill_embedding_vectors' default batch size, which the migration uses
WINDOWS = {"CALM": ("2018-01-01", "2018-06-29"), "STORM": ("2018-07-02", "2018-12-31")}
ENGINE_ROW_MD5 = """
    SELECT count(*),
           md5(coalesce(string_agg(md5(ROW(regime_record_id, as_of_date, region, regime_label,
                                           regime_embedding, embedding_ref, confidence,
                                           metadata, created_at)::text),
                                   '' ORDER BY regime_record_id), ''))
      FROM regimes
"""


def wait_until(predicate: Callable[[], bool], what: str, job: Background | None = None) -> None:
    """Wait for ``predicate``; fail at the deadline, or at once if ``job`` ended meanwhile."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if job is not None and not job.thread.is_alive():
            raise AssertionError(f"{what}: the background call ended first") from job.error
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


def one(conn: Connection, query: str, params: tuple[object, ...] = ()) -> object:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def engine_md5(dsn: str) -> tuple[object, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(ENGINE_ROW_MD5).fetchone()
    assert row is not None
    return tuple(row)


def engine_rows(dsn: str, count: int, seed: int, region: str = "US") -> dict[str, bytes | None]:
    """``count`` engine rows in an engine-only database; one in 50 NULL, one in 97 bad."""
    rng = np.random.default_rng(seed)
    payloads: list[bytes | None] = []
    for i in range(count):
        raw: bytes | None = rng.standard_normal(DIM).astype("<f4").tobytes()
        if i % 50 == 7:
            raw = None
        elif i % 97 == 5:
            raw = raw[:12] if raw else raw
        payloads.append(raw)
    days = business_days(dt.date(1990, 1, 1), count)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = insert_rows(conn, region, days, payloads)
    return dict(zip(ids, payloads, strict=True))


def ids_in_table_order(dsn: str) -> list[str]:
    """regime_record_id in the order of the column (the backfill's keyset order)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            str(r)
            for (r,) in conn.execute(
                "SELECT regime_record_id FROM regimes ORDER BY regime_record_id"
            ).fetchall()
        ]


def assert_vectors_equal_bytes(dsn: str) -> None:
    """Every vector there is equals its row's BYTEA, bit for bit (binary read, numpy)."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(binary=True) as cur:
        rows = cur.execute(
            "SELECT regime_record_id, regime_embedding, embedding_vector::real[] FROM regimes"
            " WHERE embedding_vector IS NOT NULL"
        ).fetchall()
    for rid, raw, vec in rows:
        got = np.asarray(vec, dtype="<f4").view("<u4")
        assert np.array_equal(got, np.frombuffer(bytes(raw), dtype="<u4")), rid


def vectors_present(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            str(r)
            for (r,) in conn.execute(
                "SELECT regime_record_id FROM regimes WHERE embedding_vector IS NOT NULL"
            ).fetchall()
        }


class MigrationLog(logging.Handler):
    """The messages of logger ``regime_pg.migrate``, with a hook called on each."""

    def __init__(self, hook: Callable[[str], None] | None = None) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.hook = hook

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.hook is not None:
            self.hook(message)

    def progress(self) -> list[str]:
        return [m for m in self.messages if m.startswith("backfill:") and "/" in m]


@contextmanager
def migration_log(hook: Callable[[str], None] | None = None) -> Iterator[MigrationLog]:
    logger = logging.getLogger("regime_pg.migrate")
    handler = MigrationLog(hook)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclass
class Background:
    """A call run in a thread; ``error`` is what it raised."""

    thread: threading.Thread
    error: BaseException | None = None
    finished: bool = False

    def join(self) -> None:
        self.thread.join(WAIT_S * 3)
        assert not self.thread.is_alive(), "the background call hung"


def in_background(call: Callable[[], object]) -> Background:
    job = Background(threading.Thread(daemon=True))

    def run() -> None:
        try:
            call()
            job.finished = True
        except BaseException as exc:
            job.error = exc

    job.thread = threading.Thread(target=run, daemon=True)
    job.thread.start()
    return job


# -------------------------------------------------------------- a save killed mid-way


def load_two_regimes(conn: Connection) -> None:
    rng = np.random.default_rng(11)
    dates = business_days(dt.date(2018, 1, 1), 260)
    x = rng.standard_normal((len(dates), DIM)).astype("<f4") * 2
    x[:130, 0] += 4
    x[130:, 0] -= 4
    insert_rows(conn, "US", dates, x)


def relation_locks(conn: Connection, pid: int) -> set[tuple[str, str, bool]]:
    rows = conn.execute(
        "SELECT relation::regclass::text, mode, granted FROM pg_locks"
        " WHERE pid = %s AND locktype = 'relation'",
        (pid,),
    ).fetchall()
    return {(str(r), str(m), bool(g)) for r, m, g in rows}


@pytest.mark.parametrize("how", ["save-mid-way", "import-mid-way", "save-before-commit"])
def test_a_save_killed_mid_way_leaves_nothing(db: str, conn: Connection, how: str) -> None:
    """mid-way: the set row is inserted and the save waits to insert the members (another
    session holds SHARE on the members table); before-commit: the save returned inside the
    client's transaction, which is killed before its COMMIT."""
    load_two_regimes(conn)
    document = prototypes_document(conn, "US", WINDOWS)
    app = f"regime-pg-test-killed-{how}"
    saved, killed = threading.Event(), threading.Event()
    holder = psycopg.connect(db)  # a transaction of its own, held open
    if how.endswith("mid-way"):
        holder.execute("LOCK TABLE regime_prototype_set_members IN SHARE MODE")
    saver = connect(
        psycopg.conninfo.make_conninfo(db, application_name=app),
        autocommit=how.endswith("mid-way"),
    )

    def save() -> None:
        if how == "import-mid-way":
            import_set(saver, "killed", document, temperature=None)
        elif how == "save-mid-way":
            save_set(saver, "killed", "US", WINDOWS, temperature=None)
        else:
            with saver.transaction():
                save_set(saver, "killed", "US", WINDOWS, temperature=None)
                saved.set()
                killed.wait(WAIT_S)  # then its COMMIT fails: the connection is gone

    try:
        pid = int(str(one(saver, "SELECT pg_backend_pid()")))
        job = in_background(save)
        if how.endswith("mid-way"):
            wait_until(
                lambda: (
                    ("regime_prototype_set_members", "RowExclusiveLock", False)
                    in relation_locks(conn, pid)
                ),
                "the save waiting to insert its members",
                job,
            )
            # The set row is written (in the save's transaction): it holds the table's lock.
            assert ("regime_prototype_sets", "RowExclusiveLock", True) in relation_locks(conn, pid)
        else:
            wait_until(saved.is_set, "the save returning inside its transaction", job)
            assert (
                one(conn, "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
                == "idle in transaction"
            )

        assert one(conn, "SELECT pg_terminate_backend(%s)", (pid,)) is True
        killed.set()
        job.join()
    finally:
        holder.close()
        saver.close()

    assert not job.finished
    assert isinstance(job.error, psycopg.Error | RegimePgError), job.error
    wait_until(
        lambda: one(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == 0,
        "the killed backend gone",
    )
    assert one(conn, "SELECT count(*) FROM regime_prototype_sets") == 0
    assert one(conn, "SELECT count(*) FROM regime_prototype_set_members") == 0
    # The name is free: saving it now works, whole.
    again = save_set(conn, "killed", "US", WINDOWS, temperature=None)
    assert again.document.dumps() == document.dumps()
    assert (
        one(conn, "SELECT count(*) FROM regime_prototype_set_members WHERE set_name = 'killed'")
        == 2
    )


# ------------------------------------------------------ the server stopped mid-backfill


@dataclass(frozen=True)
class OwnServer:
    data_dir: Path
    major: int


@pytest.fixture
def own_server(pg_server: Server, tmp_path: Path) -> Iterator[OwnServer]:
    """An embedded server of the session's major in tmp_path, for this test alone."""
    if pg_server.psql is None:
        pytest.skip("stopping the server mid-backfill needs the embedded server")
    server = OwnServer(tmp_path / "pgdata", pg_server.major)
    try:
        yield server
    finally:
        try:
            embedded.stop(server.data_dir)
        except EmbeddedServerError:
            pid = embedded.status(server.data_dir).pid
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


def stop_server(server: OwnServer, mode: str) -> None:
    if mode == "fast":
        assert embedded.stop(server.data_dir)
    else:
        pid = embedded.status(server.data_dir).pid
        assert pid is not None
        os.kill(pid, signal.SIGQUIT)  # what pg_ctl stop -m immediate sends
    wait_until(lambda: not embedded.status(server.data_dir).running, "the server stopped")


def backfill_backend(conn: Connection) -> tuple[object, ...] | None:
    """(pid, wait_event_type) of the backend running a backfill batch, if any."""
    row = conn.execute(
        "SELECT pid, wait_event_type FROM pg_stat_activity"
        " WHERE query LIKE '%%SET regime_embedding = r.regime_embedding%%'"
        "   AND pid <> pg_backend_pid() AND state = 'active'"
    ).fetchone()
    return None if row is None else tuple(row)


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_server_stopped_mid_backfill_keeps_its_batches_and_resumes(
    own_server: OwnServer, mode: str
) -> None:
    uri = embedded.start(own_server.data_dir, own_server.major)
    dsn = embedded.ensure_database(uri, "engine")
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_engine_schema(conn)
    payloads = engine_rows(dsn, 2 * BATCH + 2000, seed=3)
    order = ids_in_table_order(dsn)
    md5_before = engine_md5(dsn)

    # When the backfill starts (its first log line, after 0004 committed), another
    # session locks the last row: batches 1 and 2 commit, batch 3 waits for it.
    holder = psycopg.connect(dsn)

    def hold_last_row(message: str) -> None:
        if message.startswith("backfill:") and "rows to convert" in message:
            holder.execute(
                "SELECT 1 FROM regimes WHERE regime_record_id = %s FOR UPDATE", (order[-1],)
            )

    try:
        with migration_log(hold_last_row) as log, psycopg.connect(dsn, autocommit=True) as mon:
            job = in_background(lambda: migrate.upgrade(dsn))
            wait_until(
                lambda: (
                    len(log.progress()) == 2
                    and (backfill_backend(mon) or (None, None))[1] == "Lock"
                ),
                "two batches committed and the third waiting",
                job,
            )
            # The backfill counts and updates every row with bytes and no vector yet.
            todo = sum(p is not None for p in payloads.values())
            done = sum(payloads[r] is not None for r in order[: 2 * BATCH])
            assert log.progress() == [
                f"backfill: {sum(payloads[r] is not None for r in order[:BATCH])}/{todo} rows",
                f"backfill: {done}/{todo} rows",
            ]
            stop_server(own_server, mode)
            job.join()
    finally:
        holder.close()
    assert not job.finished and job.error is not None

    uri = embedded.start(own_server.data_dir, own_server.major)
    dsn = embedded.ensure_database(uri, "engine")

    # The committed batches stayed, the third left nothing: exactly the convertible rows
    # of the first two batches have their vector, equal to their bytes.
    assert migrate.current_revision(dsn) == "0004"
    first_two = [r for r in order[: 2 * BATCH] if convertible(payloads[r])]
    assert vectors_present(dsn) == set(first_two)
    assert_vectors_equal_bytes(dsn)
    assert engine_md5(dsn) == md5_before

    with migration_log() as log:
        migrate.upgrade(dsn)

    # Left to do: the third batch, and the unconvertible rows, which stay without a vector.
    unconvertible = sum(p is not None and not convertible(p) for p in payloads.values())
    remaining = sum(payloads[r] is not None for r in order[2 * BATCH :])
    remaining += sum(
        p is not None and not convertible(p) for p in (payloads[r] for r in order[: 2 * BATCH])
    )
    assert f"backfill: {remaining} rows to convert" in log.messages
    assert unconvertible > 0
    assert migrate.current_revision(dsn) == HEAD
    assert_every_row_converted(dsn, payloads)
    assert engine_md5(dsn) == md5_before


# ------------------------------------------------- the engine writing during a backfill


def test_engine_inserting_during_the_upgrade_loses_nothing(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn)
    payloads = engine_rows(empty_db, BATCH + 1500, seed=4)
    md5_before = engine_md5(empty_db)

    with engine_writing(empty_db) as engine:
        seen: list[int] = []

        def between_batches(message: str) -> None:
            # At the start of the backfill and after each batch, the engine writes 20 more
            # rows before the migration goes on: inserts and batches interleave for sure.
            if message.startswith("backfill:"):
                seen.append(engine.written)
                engine.wait_for(engine.written + 20)

        engine.wait_for(1)
        with migration_log(between_batches) as log:
            migrate.upgrade(empty_db)
        engine.wait_for(engine.written + 20)  # and after the upgrade, through the trigger

    assert len(log.progress()) >= 2
    assert len(seen) == len(log.progress()) + 1
    assert migrate.current_revision(empty_db) == HEAD
    assert_every_row_converted(empty_db, {**payloads, **engine.rows})
    with psycopg.connect(empty_db, autocommit=True) as conn:
        row = conn.execute(
            ENGINE_ROW_MD5 + " WHERE regime_record_id = ANY(%s)", (list(payloads),)
        ).fetchone()
    assert tuple(row or ()) == md5_before


# ----------------------------------------------- the upgrade waiting for its lock


@pytest.fixture
def short_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lock attempts of 200 ms (the default is 1 s) with 50 ms between them."""
    monkeypatch.setattr(migration_ops, "DDL_LOCK_TIMEOUT_MS", 200)
    monkeypatch.setattr(migration_ops, "DDL_LOCK_PAUSE_S", 0.05)


@contextmanager
def long_reader(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A session with a transaction open that read regimes (a report, a pg_dump)."""
    with psycopg.connect(dsn, application_name="regime-pg-test-long-report") as reader:
        reader.execute("SELECT count(*) FROM regimes")
        yield reader


def test_engine_is_not_held_behind_an_upgrade_waiting_for_its_lock(
    empty_db: str, short_lock_waits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration_ops, "DDL_LOCK_ATTEMPTS", 100_000)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn)
    payloads = engine_rows(empty_db, 5, seed=5)

    with migration_log() as log, long_reader(empty_db) as reader:
        job = in_background(lambda: migrate.upgrade(empty_db))
        wait_until(
            lambda: sum("lock attempt" in m for m in log.messages) >= 2,
            "the upgrade retrying its lock",
            job,
        )
        retried = [m for m in log.messages if "lock attempt" in m]
        assert "regime-pg-test-long-report" in retried[0]
        assert "idle in transaction" in retried[0]
        # The engine inserts while the upgrade still waits for the long transaction: the
        # insert is held at most one lock attempt, not until the transaction ends.
        with psycopg.connect(empty_db, autocommit=True) as engine:
            engine.execute("SET statement_timeout = '30s'")
            more = insert_rows(engine, "US", [dt.date(2030, 1, 2)], [np.ones(DIM, "<f4")])
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert not job.finished
        reader.rollback()
        job.join()

    assert job.error is None
    assert migrate.current_revision(empty_db) == HEAD
    assert_every_row_converted(empty_db, {**payloads, more[0]: np.ones(DIM, "<f4").tobytes()})


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_migration_gives_up_when_regimes_stays_busy_and_changes_nothing(
    empty_db: str, short_lock_waits: None, monkeypatch: pytest.MonkeyPatch, direction: str
) -> None:
    monkeypatch.setattr(migration_ops, "DDL_LOCK_ATTEMPTS", 3)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        create_engine_schema(conn)
    engine_rows(empty_db, 5, seed=6)
    if direction == "downgrade":
        migrate.upgrade(empty_db)
    md5_before = engine_md5(empty_db)
    revision_before = migrate.current_revision(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        columns_before = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'regimes'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()

    with long_reader(empty_db), pytest.raises(MigrationError) as info:
        if direction == "upgrade":
            migrate.upgrade(empty_db)
        else:
            migrate.downgrade(empty_db)

    message = str(info.value)
    assert "could not lock table regimes for the migration in 3 attempts of 200ms" in message
    assert "regime-pg-test-long-report" in message and "nothing was changed" in message
    assert migrate.current_revision(empty_db) == revision_before
    assert engine_md5(empty_db) == md5_before
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert (
            conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'regimes'::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ).fetchall()
            == columns_before
        )
        leftovers = conn.execute(
            "SELECT to_regclass('regime_pg_installation')::text,"
            " (SELECT count(*) FROM pg_extension WHERE extname = 'vector')"
        ).fetchone()
    if direction == "upgrade":
        assert leftovers == (None, 0)
    else:
        assert leftovers == ("regime_pg_installation", 1)


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("preinstalled", [False, True])
def test_pgvector_older_than_needed_is_refused_and_nothing_changes(
    empty_db: str, monkeypatch: pytest.MonkeyPatch, preinstalled: bool
) -> None:
    """Only pgvector 0.8.x ships with the embedded server: the minimum is raised above it."""
    monkeypatch.setattr(migration_ops, "MIN_PGVECTOR", (99, 0, 0))
    with psycopg.connect(empty_db, autocommit=True) as conn:
        if preinstalled:
            conn.execute("CREATE EXTENSION vector")
        create_engine_schema(conn)
        installed = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchall()
    engine_rows(empty_db, 3, seed=7)
    md5_before = engine_md5(empty_db)

    with pytest.raises(
        MigrationError, match=r"pgvector [\d.]+ is too old; regime-pg needs 99\.0\.0"
    ):
        migrate.upgrade(empty_db)

    assert migrate.current_revision(empty_db) is None
    assert engine_md5(empty_db) == md5_before
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert (
            conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchall()
            == installed
        )
        assert conn.execute(
            "SELECT to_regclass('regime_pg_installation'), to_regclass('regime_pg_alembic_version')"
        ).fetchone() == (None, None)
