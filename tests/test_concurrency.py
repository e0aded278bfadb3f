"""Many clients at once against one database: no error, no deadlock, the single-client answers.

* ``CLIENTS`` clients x ``CALLS`` mixed calls (compute one and several
  prototypes, the prototype document, classify one embedding and a date
  range, fit a temperature, save sets of distinct names with a given or a
  fitted temperature): every result equals, bit for bit, the answer one
  client computed alone beforehand.
* ``CLIENTS`` saves of one name at once through ``regime_pg.sets.save_set``
  (in some rounds half of them ``import_set`` of a document): exactly one
  wins, every other client gets ``PrototypeSetExistsError`` (SQLSTATE
  23505), the stored set is the winner's.
* The engine keeps inserting (float32 BYTEA only, its own connection, one
  row per statement) while calibrations and saves run: afterwards no row is
  lost, every row has its vector, equal to its BYTEA bit for bit, and the
  clients' answers are still the single-client ones.

No timing is asserted anywhere: interleaving is forced by waiting on
counters (a client waits until the engine has written more rows), and waits
have generous deadlines that only turn a hang into a failure.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import psycopg
import pytest
from pgvector import Vector

from regime_pg.client import compute_prototype, compute_prototypes, prototypes_document
from regime_pg.connection import Connection, connect, use_vector_types, vector_to_numpy
from regime_pg.document import PrototypeDocument
from regime_pg.errors import PrototypeSetExistsError
from regime_pg.prototypes import RegimePrototype
from regime_pg.sets import PrototypeSet, fit_set_temperature, import_set, save_set
from regime_pg.timeline import TimelineRow, classify_history
from tests.engine import business_days, insert_rows

DIM = 384
#: Concurrent clients, and mixed calls per client (most calls take 0.1 to 8 ms).
CLIENTS = 8
CALLS = 1000
WAIT_S = 120.0  # deadline for a join or a wait: turns a hang into a failure, never asserted
WINDOWS = {"CALM": ("2018-01-01", "2018-06-29"), "STORM": ("2018-07-02", "2018-12-31")}
YEAR = (dt.date(2018, 1, 1), dt.date(2018, 12, 31))
BASE_SET = "base-us"


def load_history(conn: Connection) -> np.ndarray:
    """2018 for region US, calm then stormy, with engine re-runs and unusable rows;
    a little of region EU.  Returns the US embeddings in date order."""
    rng = np.random.default_rng(2018)
    dates = business_days(YEAR[0], 260)
    x = rng.standard_normal((len(dates), DIM)).astype("<f4") * 2
    x[:130, 0] += 4
    x[130:, 0] -= 4
    insert_rows(conn, "US", dates, x, created_at=dt.datetime(2019, 1, 1, tzinfo=dt.UTC))
    # A re-run of some dates (the latest created_at wins) and rows that cannot be used.
    rerun = [3, 40, 131, 200]
    insert_rows(
        conn,
        "US",
        [dates[i] for i in rerun],
        [x[i] * 0.5 for i in rerun],
        created_at=dt.datetime(2019, 6, 1, tzinfo=dt.UTC),
    )
    insert_rows(conn, "US", [dates[10], dates[150]], [None, b"\x00" * 12])
    insert_rows(conn, "EU", dates[:60], rng.standard_normal((60, DIM)).astype("<f4"))
    return x


def canon_prototype(p: RegimePrototype) -> tuple[object, ...]:
    """Everything of a prototype, its centre as bytes (bit-exact, -0.0 != 0.0)."""
    return (
        str(p.label),
        p.center.astype("<f4").tobytes(),
        p.window,
        p.n_dates,
        p.n_skipped,
        p.l2_norm,
        p.dispersion,
        p.first_date,
        p.last_date,
    )


def canon_set(s: PrototypeSet) -> tuple[object, ...]:
    """A stored set without its name and creation time."""
    return (
        s.info.region,
        s.info.temperature,
        s.info.windows,
        s.info.source,
        s.info.fit,
        s.document.dumps(),
        tuple(canon_prototype(p) for p in s.document.prototypes),
    )


def classify_one(conn: Connection, embedding: np.ndarray) -> tuple[object, ...]:
    row = conn.execute(
        "SELECT label, confidence, distances FROM classify_regime(%s, %s)",
        (Vector(embedding), BASE_SET),
    ).fetchone()
    assert row is not None
    return tuple(row)


def canon_timeline(rows: list[TimelineRow]) -> list[tuple[object, ...]]:
    return [(r.as_of_date, r.label, r.raw_label, r.confidence, dict(r.distances)) for r in rows]


@dataclass
class Expected:
    """The single-client answers."""

    one: tuple[object, ...]
    many: list[tuple[object, ...]]
    document: str
    classified: list[tuple[object, ...]]
    timeline: list[tuple[object, ...]]
    fit: object
    saved_given: tuple[object, ...]
    saved_fitted: tuple[object, ...]
    probes: np.ndarray


def single_client_answers(conn: Connection, x: np.ndarray) -> Expected:
    save_set(conn, BASE_SET, "US", WINDOWS, temperature=None)
    probes = np.concatenate([x[::13], -x[:3], np.zeros((1, DIM), dtype="<f4")])
    given = save_set(conn, "expected-given", "US", WINDOWS, temperature=1.5)
    fitted = save_set(conn, "expected-fitted", "US", WINDOWS, temperature=None)
    expected = Expected(
        one=canon_prototype(compute_prototype(conn, "US", WINDOWS["CALM"], "CALM")),
        many=[canon_prototype(p) for p in compute_prototypes(conn, "US", WINDOWS)],
        document=prototypes_document(conn, "US", WINDOWS).dumps(),
        classified=[classify_one(conn, p) for p in probes],
        timeline=canon_timeline(classify_history(conn, BASE_SET, *YEAR)),
        fit=fit_set_temperature(conn, "US", WINDOWS),
        saved_given=canon_set(given),
        saved_fitted=canon_set(fitted),
        probes=probes,
    )
    assert fitted.info.fit == expected.fit
    assert given.document.dumps() == fitted.document.dumps() == expected.document
    return expected


@dataclass
class Outcome:
    """What the client threads saw: calls made per kind, mismatches and errors."""

    calls: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] = self.calls.get(kind, 0) + 1


Call = Callable[[Connection, random.Random, str], tuple[object, object]]


def calls(expected: Expected) -> dict[str, tuple[int, Call]]:
    """kind -> (weight, call returning (got, expected))."""

    def saved(conn: Connection, rng: random.Random, name: str) -> tuple[object, object]:
        fitted = rng.random() < 0.5
        result = save_set(conn, name, "US", WINDOWS, temperature=None if fitted else 1.5)
        return canon_set(result), expected.saved_fitted if fitted else expected.saved_given

    def classified(conn: Connection, rng: random.Random, name: str) -> tuple[object, object]:
        k = rng.randrange(len(expected.probes))
        return classify_one(conn, expected.probes[k]), expected.classified[k]

    return {
        "compute_regime_prototype": (
            4,
            lambda c, r, n: (
                canon_prototype(compute_prototype(c, "US", WINDOWS["CALM"], "CALM")),
                expected.one,
            ),
        ),
        "compute_regime_prototypes": (
            3,
            lambda c, r, n: (
                [canon_prototype(p) for p in compute_prototypes(c, "US", WINDOWS)],
                expected.many,
            ),
        ),
        "regime_prototypes_json": (
            3,
            lambda c, r, n: (prototypes_document(c, "US", WINDOWS).dumps(), expected.document),
        ),
        "classify_regime": (6, classified),
        "classify_regimes": (
            1,
            lambda c, r, n: (
                canon_timeline(classify_history(c, BASE_SET, *YEAR)),
                expected.timeline,
            ),
        ),
        "fit_regime_temperature": (
            1,
            lambda c, r, n: (fit_set_temperature(c, "US", WINDOWS), expected.fit),
        ),
        "save_regime_prototype_set": (2, saved),
    }


def run_clients(
    dsn: str,
    expected: Expected,
    n_clients: int,
    n_calls: int,
    seed: int,
    between_calls: Callable[[int, int], None] | None = None,
    only: tuple[str, ...] | None = None,
) -> Outcome:
    """``n_clients`` threads, each with its own connection, making ``n_calls`` random calls."""
    table = calls(expected)
    if only is not None:
        table = {k: v for k, v in table.items() if k in only}
    kinds = list(table)
    weights = [table[k][0] for k in kinds]
    outcome = Outcome()
    start = threading.Barrier(n_clients)

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        try:
            with connect(dsn) as conn:
                conn.execute("SET statement_timeout = '60s'")
                start.wait(WAIT_S)
                for j in range(n_calls):
                    if between_calls is not None:
                        between_calls(i, j)
                    kind = rng.choices(kinds, weights)[0]
                    name = f"c{seed}-{i}-{j}"
                    got, want = table[kind][1](conn, rng, name)
                    outcome.count(kind)
                    if kind == "save_regime_prototype_set":
                        with outcome.lock:
                            outcome.saved.append(name)
                    if got != want:
                        with outcome.lock:
                            outcome.mismatches.append(f"client {i} call {j} {kind}")
        except BaseException:
            with outcome.lock:
                outcome.errors.append(f"client {i}: {traceback.format_exc()}")
            start.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 3)
    assert not [t.name for t in threads if t.is_alive()], "a client hung (deadlock?)"
    return outcome


def stored_sets(conn: Connection, prefix: str) -> tuple[int, int, int]:
    """(sets, members, distinct documents) of the sets whose name starts with ``prefix``."""
    row = conn.execute(
        "SELECT count(*), (SELECT count(*) FROM regime_prototype_set_members"
        "                   WHERE starts_with(set_name, %(p)s)),"
        "       count(DISTINCT regime_prototype_set_json(name))"
        "  FROM regime_prototype_sets WHERE starts_with(name, %(p)s)",
        {"p": prefix},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def deadlocks(conn: Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def history(conn: Connection) -> Expected:
    return single_client_answers(conn, load_history(conn))


# ------------------------------------------------------------------- many clients


def test_clients_at_once_get_the_single_client_answers(
    db: str, conn: Connection, history: Expected
) -> None:
    deadlocks_before = deadlocks(conn)

    outcome = run_clients(db, history, CLIENTS, CALLS, seed=1)

    assert outcome.errors == []
    assert outcome.mismatches == []
    assert sum(outcome.calls.values()) == CLIENTS * CALLS
    assert set(outcome.calls) == set(calls(history)), outcome.calls
    saves = outcome.calls["save_regime_prototype_set"]
    assert len(outcome.saved) == saves
    # Every set saved, whole (two members each), all with the one expected document.
    assert stored_sets(conn, "c1-") == (saves, 2 * saves, 1)
    row = conn.execute(
        "SELECT DISTINCT regime_prototype_set_json(name) FROM regime_prototype_sets"
        " WHERE starts_with(name, 'c1-')"
    ).fetchone()
    assert row is not None
    assert row[0] == prototypes_document(conn, "US", WINDOWS).to_json()
    assert deadlocks(conn) == deadlocks_before


# --------------------------------------------------------------- one name at once


def race_for_one_name(
    dsn: str, name: str, document: PrototypeDocument | None, fitted: bool
) -> list[object]:
    """``CLIENTS`` saves of ``name`` released at once, all computing and saving
    (``save_set``), or with a ``document`` the odd clients importing it (``import_set``);
    each gets its PrototypeSet, its error, or a traceback."""
    barrier = threading.Barrier(CLIENTS)
    results: list[object] = [None] * CLIENTS

    def client(i: int) -> None:
        temperature = None if fitted else 1.0 + i
        try:
            with connect(dsn) as own:
                own.execute("SET statement_timeout = '60s'")
                barrier.wait(WAIT_S)
                if document is not None and i % 2:
                    results[i] = import_set(own, name, document, temperature=temperature)
                else:
                    results[i] = save_set(own, name, "US", WINDOWS, temperature=temperature)
        except PrototypeSetExistsError as exc:
            results[i] = exc
        except BaseException:
            results[i] = traceback.format_exc()
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not [t for t in threads if t.is_alive()], "a saving client hung"
    return results


@pytest.mark.parametrize("fitted", [False, True], ids=["given-temperature", "fitted"])
def test_saves_of_one_name_at_once_exactly_one_wins(
    db: str, conn: Connection, history: Expected, fitted: bool
) -> None:
    document = prototypes_document(conn, "US", WINDOWS)
    for round_ in range(5):
        name = f"race-{int(fitted)}-{round_}"

        # Rounds 0-2: every client through save_set; rounds 3-4: half import a document.
        results = race_for_one_name(db, name, document if round_ >= 3 else None, fitted)

        winners = [r for r in results if isinstance(r, PrototypeSet)]
        losers = [r for r in results if isinstance(r, PrototypeSetExistsError)]
        assert len(winners) == 1, results
        assert len(losers) == CLIENTS - 1, results
        for loser in losers:
            assert loser.sqlstate == "23505"
            assert str(loser).startswith(f"prototype set '{name}' already exists")
        (winner,) = winners
        assert winner.document.dumps() == history.document
        if fitted:
            assert winner.info.fit == history.fit
        # The stored set is the winner's, whole.
        assert stored_sets(conn, name) == (1, 2, 1)
        row = conn.execute(
            "SELECT temperature, source FROM regime_prototype_sets WHERE name = %s", (name,)
        ).fetchone()
        assert row == (winner.info.temperature, winner.info.source)


# ---------------------------------------------------- the engine writes meanwhile


class EngineWriter(threading.Thread):
    """The Regime Engine: inserts one row per statement, BYTEA only, on its own connection.

    Regions US (dates of 2019 and later, outside every window the clients use)
    and EU; one row in 23 has a NULL embedding, one in 41 bytes of a wrong length.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(name="engine-writer", daemon=True)
        self.dsn = dsn
        self.rows: dict[str, bytes | None] = {}
        self.error: str | None = None
        self.done = threading.Event()
        self.progress = threading.Condition()

    @property
    def written(self) -> int:
        return len(self.rows)

    def run(self) -> None:
        rng = np.random.default_rng(77)
        days = business_days(dt.date(2019, 1, 1), 3000)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.add_notice_handler(lambda diag: None)  # the wrong-length rows' WARNINGs
                n = 0
                while not self.done.is_set():
                    n += 1
                    payload: bytes | None = rng.standard_normal(DIM).astype("<f4").tobytes()
                    if n % 23 == 0:
                        payload = None
                    elif n % 41 == 0:
                        payload = payload[:-4] if payload else payload
                    region = "EU" if n % 3 == 0 else "US"
                    (rid,) = insert_rows(conn, region, [days[n % len(days)]], [payload])
                    with self.progress:
                        self.rows[rid] = payload
                        self.progress.notify_all()
        except BaseException:
            self.error = traceback.format_exc()
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        """Block until the engine has written ``count`` rows."""
        with self.progress:
            ok = self.progress.wait_for(
                lambda: self.written >= count or self.error is not None, WAIT_S
            )
        assert ok and self.error is None, self.error or "the engine writer stalled"


@contextmanager
def engine_writing(dsn: str) -> Iterator[EngineWriter]:
    writer = EngineWriter(dsn)
    writer.start()
    try:
        yield writer
    finally:
        writer.done.set()
        writer.join(WAIT_S)
    assert not writer.is_alive()
    assert writer.error is None, writer.error


def convertible(raw: bytes | None) -> bool:
    if raw is None or len(raw) != 4 * DIM:
        return False
    return bool(np.all(np.isfinite(np.frombuffer(raw, dtype="<f4"))))


def assert_every_row_converted(dsn: str, written: dict[str, bytes | None]) -> None:
    """Every row written is there with its bytes; each convertible row has a vector equal to
    its BYTEA bit for bit (read in binary, compared in numpy), the others none."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        use_vector_types(conn)
        with conn.cursor(binary=True) as cur:
            rows = {
                str(rid): (None if raw is None else bytes(raw), vec)
                for rid, raw, vec in cur.execute(
                    "SELECT regime_record_id, regime_embedding, embedding_vector FROM regimes"
                ).fetchall()
            }
    missing = [rid for rid in written if rid not in rows]
    assert missing == [], f"{len(missing)} rows of the engine lost"
    for rid, payload in written.items():
        assert rows[rid][0] == payload, rid
    for rid, (raw, vec) in rows.items():
        if convertible(raw):
            assert raw is not None
            assert vec is not None, f"row {rid} has no vector"
            got = vector_to_numpy(vec).astype("<f4").view("<u4")
            assert np.array_equal(got, np.frombuffer(raw, dtype="<u4")), rid
        else:
            assert vec is None, rid


def test_engine_inserts_while_calibrations_and_saves_run(
    db: str, conn: Connection, history: Expected
) -> None:
    n_clients, n_calls = CLIENTS, 100
    with engine_writing(db) as engine:
        engine.wait_for(1)
        started_with = engine.written

        def interleave(client: int, call: int) -> None:
            # Each client, every 10 calls, waits for the engine to have written more rows:
            # calls and inserts are interleaved whatever the scheduling.
            if call % 10 == 0:
                engine.wait_for(started_with + 2 * call + client)

        outcome = run_clients(
            db,
            history,
            n_clients,
            n_calls,
            seed=2,
            between_calls=interleave,
            only=(
                "save_regime_prototype_set",
                "fit_regime_temperature",
                "compute_regime_prototypes",
                "classify_regimes",
            ),
        )
        during = engine.written - started_with
        engine.wait_for(engine.written + 5)  # and a few more after the last call

    assert outcome.errors == []
    assert outcome.mismatches == []
    assert sum(outcome.calls.values()) == n_clients * n_calls
    assert during >= 2 * (n_calls - 10)
    saves = outcome.calls["save_regime_prototype_set"]
    assert stored_sets(conn, "c2-") == (saves, 2 * saves, 1)
    assert_every_row_converted(db, engine.rows)
