"""Measure regime-pg's migration on a live engine table: time, locks, engine waits, downgrade.

A measurement tool, not a test: ``python -m bench.migration_safety [--rows N]``.

1. Starts its own embedded PostgreSQL in a throwaway directory (never the
   user's) and builds an engine database: the Regime Engine's ``regimes``
   (BYTEA embeddings) with ``--rows`` rows (default 1,000,000), with
   re-run duplicates, NULL embeddings and a few unconvertible BYTEAs, plus
   the engine's own ``alembic_version``.
2. Checksums the engine's columns (md5 over every row, ordered by
   ``regime_record_id``) and the column list.
3. Runs ``regime_pg.migrate.upgrade`` to head while an engine writer inserts
   rows (BYTEA only, one autocommit INSERT at a time, ``--writer-rate`` per
   second) and a monitor samples ``pg_locks`` on ``regimes``.  The writer
   runs with ``log_lock_waits`` and a 5 ms ``deadlock_timeout``, so the
   server log gives every lock wait of its inserts over 5 ms, exactly.
   ``--blocker S`` also holds a read transaction on ``regimes`` for S
   seconds from just before the upgrade (a report, a pg_dump, a long
   calibration), to show what queueing behind the DDL costs the engine.
4. Checks that no row is lost and every row is converted, bit for bit.
5. Downgrades to base, the writer still inserting, and checks the engine's
   table is identical to before: same columns, same checksum.
6. Prints a report; ``--update-docs`` writes it into docs/migration-safety.md
   between the ``bench:migration-safety`` markers.

Imports from the rest of ``bench`` only the engine's schema (``bench.engine_schema``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from bench.engine_schema import COLUMN_NAMES, ENGINE_REVISION, create_engine_schema
from regime_pg import embedded, migrate, migration_ops

DIM = 384
DOCS = Path(__file__).resolve().parents[1] / "docs" / "migration-safety.md"
DOCS_MARK = "<!-- bench:{block}:{end} -->"
MIGRATE_APP = "regime-pg-bench-migrate"
WRITER_APP = "regime-pg-bench-engine"
MONITOR_APP = "regime-pg-bench-monitor"
BLOCKER_APP = "regime-pg-bench-blocker"

ENGINE_COLUMNS = ", ".join(COLUMN_NAMES)

# md5 of each row's text, then md5 of those in regime_record_id order: string_agg of
# the rows themselves would pass PostgreSQL's 1 GB limit on a 1M-row table.
CHECKSUM_SQL = f"""
    SELECT count(*),
           md5(coalesce(string_agg(md5(ROW({ENGINE_COLUMNS})::text), ''
                                   ORDER BY regime_record_id), ''))
      FROM regimes
     WHERE NOT coalesce(embedding_ref, '') = ANY(%(exclude)s::text[])
"""

COLUMNS_SQL = """
    SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid), a.attstorage
      FROM pg_attribute AS a
      LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = 'regimes'::regclass AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum
"""

LABELS = ("CRISIS", "RISK_OFF", "CARRY", "NEUTRAL")

log = logging.getLogger("bench.migration_safety")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Planted:
    """What the generated table holds besides good embeddings."""

    rows: int
    regions: int
    duplicates: int
    nulls: int
    bad_length: int
    non_finite: int


def build_engine_table(dsn: str, rows: int, seed: int = 7) -> Planted:
    """The engine's schema and ``rows`` rows, loaded with COPY (binary)."""
    rng = np.random.default_rng(seed)
    days = business_days(dt.date(1986, 1, 1), 10_000)
    duplicate_rate, null_rate = 0.03, 0.01
    unique_rows = max(1, round(rows / (1 + duplicate_rate)))
    n_regions = max(1, -(-unique_rows // len(days)))
    # Unique (region, date) pairs, then re-runs of some of them (later created_at).
    pair = rng.permutation(n_regions * len(days))[:unique_rows]
    pair = np.concatenate([pair, rng.choice(pair, rows - unique_rows)])
    region_of = pair // len(days)
    day_of = pair % len(days)
    is_rerun = np.zeros(rows, dtype=bool)
    is_rerun[unique_rows:] = True
    kind = np.zeros(rows, dtype=np.int8)  # 0 good, 1 NULL, 2 bad length, 3 NaN/Inf
    kind[rng.random(rows) < null_rate] = 1
    bad = rng.choice(rows, size=min(rows, 40), replace=False)
    kind[bad[:20]] = 2
    kind[bad[20:]] = 3
    base_time = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    chunk = 20_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_engine_schema(conn)
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY regimes ({ENGINE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(
                [
                    "varchar",
                    "date",
                    "varchar",
                    "varchar",
                    "bytea",
                    "varchar",
                    "float8",
                    "jsonb",
                    "timestamptz",
                ]
            )
            for start in range(0, rows, chunk):
                stop = min(rows, start + chunk)
                x = rng.standard_normal((stop - start, DIM), dtype=np.float32)
                confidence = rng.random(stop - start)
                for i in range(start, stop):
                    embedding: bytes | None
                    embedding = x[i - start].astype("<f4").tobytes()
                    if kind[i] == 1:
                        embedding = None
                    elif kind[i] == 2:
                        embedding = embedding[: 4 * (DIM - 1)] if i % 2 else b"\x00" * 12
                    elif kind[i] == 3:
                        values = x[i - start].astype("<f4")
                        values[i % DIM] = np.nan if i % 2 else np.inf
                        embedding = values.tobytes()
                    day = days[int(day_of[i])]
                    created = base_time + dt.timedelta(
                        days=int(day_of[i]) // 7, seconds=int(is_rerun[i]) * 3600 + i % 3600
                    )
                    copy.write_row(
                        (
                            uuid.UUID(bytes=rng.bytes(16), version=4).hex,
                            day,
                            f"R{int(region_of[i]):03d}",
                            LABELS[i % len(LABELS)],
                            embedding,
                            None if i % 5 else f"s3://engine/embeddings/{i}.npy",
                            float(confidence[i - start]),
                            None if i % 3 else Jsonb({"run": int(is_rerun[i]), "seq": i}),
                            created,
                        )
                    )
        conn.execute("VACUUM (ANALYZE) regimes")
        conn.execute("CHECKPOINT")
    return Planted(
        rows=rows,
        regions=n_regions,
        duplicates=int(is_rerun.sum()),
        nulls=int((kind == 1).sum()),
        bad_length=int((kind == 2).sum()),
        non_finite=int((kind == 3).sum()),
    )


def business_days(start: dt.date, count: int) -> list[dt.date]:
    days: list[dt.date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


# ------------------------------------------------------------------ engine writer


@dataclass
class Insert:
    started: float  # time.monotonic()
    latency_s: float


class EngineWriter(threading.Thread):
    """Inserts one engine row per autocommit INSERT, BYTEA only, at ``rate`` per second."""

    def __init__(self, dsn: str, tag: str, rate: float, seed: int) -> None:
        super().__init__(name=f"engine-writer-{tag}", daemon=True)
        self.dsn = dsn
        self.tag = tag
        self.period = 1.0 / rate
        self.rng = np.random.default_rng(seed)
        self.inserts: list[Insert] = []
        self.rows: dict[str, bytes | None] = {}
        self.pid: int | None = None
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._ready = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(
                self.dsn,
                autocommit=True,
                application_name=WRITER_APP,
                # Every lock wait of its inserts over 5 ms is logged by the server, exactly.
                options="-c log_lock_waits=on -c deadlock_timeout=5ms",
            ) as conn:
                conn.add_notice_handler(lambda diag: None)  # the bad rows' WARNINGs
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                self.pid = int(row[0])
                self._ready.set()
                n = 0
                next_at = time.monotonic()
                while not self._halt.is_set():
                    n += 1
                    rid = uuid.UUID(bytes=self.rng.bytes(16), version=4).hex
                    embedding: bytes | None = (
                        self.rng.standard_normal(DIM, dtype=np.float32).astype("<f4").tobytes()
                    )
                    if n % 97 == 0:
                        embedding = None
                    elif n % 389 == 0:
                        embedding = b"\x01" * 8
                    started = time.monotonic()
                    conn.execute(
                        "INSERT INTO regimes (regime_record_id, as_of_date, region, regime_label,"
                        " regime_embedding, embedding_ref, confidence)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (rid, dt.date(2026, 1, 2), "R000", "NEUTRAL", embedding, self.tag, 0.5),
                    )
                    self.inserts.append(Insert(started, time.monotonic() - started))
                    self.rows[rid] = embedding
                    next_at = max(next_at + self.period, time.monotonic())
                    self._halt.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self._ready.set()

    def wait_ready(self) -> None:
        self._ready.wait(60)
        if self.error is not None:
            raise RuntimeError(f"engine writer failed to start: {self.error}")

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
        if self.error is not None:
            raise RuntimeError(f"engine writer failed: {self.error!r}")


# ------------------------------------------------------------------- lock monitor


@dataclass
class LockSample:
    at: float  # time.monotonic()
    app: str
    mode: str
    granted: bool


class LockMonitor(threading.Thread):
    """Samples the relation locks on ``regimes`` (and who holds or waits) every ``period``."""

    def __init__(self, dsn: str, period: float) -> None:
        super().__init__(name="lock-monitor", daemon=True)
        self.dsn = dsn
        self.period = period
        self.samples: list[LockSample] = []
        self.n_queries = 0
        self.apps: dict[int, str] = {}
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        apps = self.apps
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name=MONITOR_APP) as conn:
                row = conn.execute(
                    "SELECT 'regimes'::regclass::oid,"
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()
                assert row is not None
                relation, database = row
                query = (
                    "SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'relation'"
                    " AND database = %s AND relation = %s AND pid <> pg_backend_pid()"
                )
                with conn.cursor() as cur:
                    while not self._halt.is_set():
                        at = time.monotonic()
                        rows = cur.execute(query, (database, relation), prepare=True).fetchall()
                        self.n_queries += 1
                        for pid, mode, granted in rows:
                            if pid not in apps:
                                found = conn.execute(
                                    "SELECT coalesce(nullif(application_name, ''), backend_type)"
                                    "  FROM pg_stat_activity WHERE pid = %s",
                                    (pid,),
                                ).fetchone()
                                apps[pid] = str(found[0]) if found else f"pid {pid}"
                            self.samples.append(LockSample(at, apps[pid], mode, bool(granted)))
                        self._halt.wait(self.period)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
        if self.error is not None:
            raise RuntimeError(f"lock monitor failed: {self.error!r}")


@dataclass
class HeldLock:
    app: str
    mode: str
    granted: bool
    first: float
    last: float
    samples: int


def lock_spans(samples: list[LockSample], period: float) -> list[HeldLock]:
    """Contiguous runs of one (application, mode, granted) in the samples."""
    spans: list[HeldLock] = []
    open_: dict[tuple[str, str, bool], HeldLock] = {}
    gap = max(0.05, 5 * period)
    for s in samples:
        key = (s.app, s.mode, s.granted)
        span = open_.get(key)
        if span is not None and s.at - span.last <= gap:
            span.last = s.at
            span.samples += 1
            continue
        span = HeldLock(s.app, s.mode, s.granted, s.at, s.at, 1)
        spans.append(span)
        open_[key] = span
    return spans


# ------------------------------------------------------------- phases and server log


class PhaseClock(logging.Handler):
    """Timestamps of Alembic's 'Running upgrade/downgrade' and the backfill's messages."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[tuple[float, str]] = []
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.warnings += 1
        if message.startswith(("Running upgrade", "Running downgrade", "backfill:")):
            self.events.append((time.monotonic(), message))


@contextmanager
def phase_clock() -> Iterator[PhaseClock]:
    clock = PhaseClock()
    loggers = [
        logging.getLogger("alembic.runtime.migration"),
        logging.getLogger("regime_pg.migrate"),
    ]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(clock)
        lg.setLevel(logging.INFO)
        lg.propagate = False  # counted here, not printed
    try:
        yield clock
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(clock)
            lg.setLevel(level)
            lg.propagate = propagate


LOG_LINE_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \S+ \[(?P<pid>\d+)\] "
    r"(?P<level>[A-Z]+):  (?P<text>.*)$"
)
LOCK_WAIT_RE = re.compile(
    r"process \d+ acquired (?P<mode>\w+) on (?P<what>.+?) after (?P<ms>[\d.]+) ms"
)
DURATION_RE = re.compile(r"^duration: (?P<ms>[\d.]+) ms  (?:statement|execute [^:]*): ")


@dataclass
class LogEntry:
    at: dt.datetime  # when the server wrote it (a statement's end)
    pid: int
    level: str
    text: str  # continuation lines included


def server_log(log_file: Path, offset: int) -> list[LogEntry]:
    """The server log's entries past byte ``offset`` (default log_line_prefix '%m [%p] ')."""
    if not log_file.exists():
        return []
    with log_file.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    entries: list[LogEntry] = []
    for line in text.splitlines():
        m = LOG_LINE_RE.match(line)
        if m:
            at = dt.datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S.%f")
            entries.append(LogEntry(at, int(m["pid"]), m["level"], m["text"]))
        elif entries:
            entries[-1].text += "\n" + line
    return entries


def lock_waits(entries: list[LogEntry], pid: int | None) -> list[tuple[str, float]]:
    """(mode on what, ms) of each lock wait that log_lock_waits logged for ``pid``."""
    waits = []
    for e in entries:
        m = LOCK_WAIT_RE.search(e.text)
        if m and e.pid == pid:
            waits.append((f"{m['mode']} on {m['what']}", float(m["ms"])))
    return waits


@dataclass(frozen=True)
class StatementSpan:
    """A statement of the migration's session, from the log (log_min_duration_statement=0)."""

    start: dt.datetime
    end: dt.datetime
    text: str


def statements(entries: list[LogEntry], pid: int | None) -> list[StatementSpan]:
    spans = []
    for e in entries:
        m = DURATION_RE.match(e.text)
        if m and e.pid == pid:
            took = dt.timedelta(milliseconds=float(m["ms"]))
            spans.append(StatementSpan(e.at - took, e.at, e.text[m.end() :]))
    return spans


def exclusive_hold(spans: list[StatementSpan], marker: str) -> tuple[float, float] | None:
    """(least, most) ms a lock was held: granted when the first completed statement holding
    ``marker`` (a LOCK TABLE) ended, released by the COMMIT (or ROLLBACK) after it."""
    for i, span in enumerate(spans):
        if marker in span.text:
            for later in spans[i + 1 :]:
                if later.text.strip().upper() in ("COMMIT", "ROLLBACK"):
                    most = (later.end - span.end).total_seconds() * 1000
                    least = (later.start - span.end).total_seconds() * 1000
                    return max(0.0, least), most
    return None


# ------------------------------------------------------------------------ checks


def checksum(dsn: str, exclude: tuple[str, ...] = ()) -> tuple[int, str]:
    """(rows, md5) of the engine's columns of every row whose embedding_ref is not in exclude."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        row = conn.execute(CHECKSUM_SQL, {"exclude": list(exclude)}).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def columns(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(COLUMNS_SQL).fetchall()]


def table_size(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_total_relation_size('regimes')").fetchone()
    assert row is not None
    return int(row[0])


def convertible(raw: bytes | None) -> bool:
    if raw is None or len(raw) != 4 * DIM:
        return False
    return bool(np.all(np.isfinite(np.frombuffer(raw, dtype="<f4"))))


@dataclass
class Verification:
    rows: int = 0
    convertible: int = 0
    converted_bit_exact: int = 0
    wrong: list[str] = field(default_factory=list)
    writer_missing: int = 0
    writer_wrong_bytes: int = 0


def verify_all_rows(dsn: str, writer_rows: dict[str, bytes | None]) -> Verification:
    """Every row: a vector iff its BYTEA converts, equal to it bit for bit; no writer row lost.

    Read in binary with a server-side cursor and compared in numpy: the check does
    not use regime-pg's own conversion.
    """
    result = Verification()
    seen_writer = 0
    with psycopg.connect(dsn) as conn, conn.cursor(name="verify", binary=True) as cur:
        cur.itersize = 5000
        cur.execute(
            "SELECT regime_record_id, regime_embedding, embedding_vector::real[] FROM regimes"
        )
        for rid, raw, vec in cur:
            result.rows += 1
            raw_bytes = None if raw is None else bytes(raw)
            if rid in writer_rows:
                seen_writer += 1
                if writer_rows[rid] != raw_bytes:
                    result.writer_wrong_bytes += 1
            if convertible(raw_bytes):
                result.convertible += 1
                assert raw_bytes is not None
                expected = np.frombuffer(raw_bytes, dtype="<u4")
                got = None if vec is None else np.asarray(vec, dtype="<f4").view("<u4")
                if got is not None and np.array_equal(got, expected):
                    result.converted_bit_exact += 1
                elif len(result.wrong) < 10:
                    result.wrong.append(str(rid))
            elif vec is not None and len(result.wrong) < 10:
                result.wrong.append(str(rid))
    result.writer_missing = len(writer_rows) - seen_writer
    return result


# ----------------------------------------------------------------------- blocker


class Blocker(threading.Thread):
    """Holds ACCESS SHARE on regimes (an open read transaction) for ``seconds``."""

    def __init__(self, dsn: str, seconds: float) -> None:
        super().__init__(name="blocker", daemon=True)
        self.dsn = dsn
        self.seconds = seconds
        self.holding = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, application_name=BLOCKER_APP) as conn:
                conn.execute("SELECT count(*) FROM (SELECT 1 FROM regimes LIMIT 1000) AS s")
                self.holding.set()
                time.sleep(self.seconds)
                conn.rollback()
        except BaseException as exc:
            self.error = exc
            self.holding.set()


# ------------------------------------------------------------------------ running


@dataclass
class Stage:
    """One migration run (upgrade or downgrade) with the engine writing meanwhile."""

    name: str
    started: float
    ended: float
    phases: list[tuple[float, str]]
    spans: list[HeldLock]
    inserts: list[Insert]
    lock_waits: list[tuple[str, float]]
    migration_lock_waits: list[tuple[str, float]]
    statements: list[StatementSpan]
    monitor_queries: int
    warnings: int
    load: tuple[float, float]  # 1-minute load average at the start and at the end
    error: str | None = None


def run_stage(
    name: str,
    dsn: str,
    action: Callable[[], None],
    *,
    writer_tag: str,
    rate: float,
    period: float,
    log_file: Path,
    blocker_s: float = 0.0,
    seed: int = 1,
) -> tuple[Stage, EngineWriter]:
    writer = EngineWriter(dsn, writer_tag, rate, seed)
    monitor = LockMonitor(dsn, period)
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    writer.start()
    writer.wait_ready()
    monitor.start()
    time.sleep(1.0)  # a baseline of inserts before the migration
    blocker = None
    if blocker_s > 0:
        blocker = Blocker(dsn, blocker_s)
        blocker.start()
        blocker.holding.wait(30)
    error = None
    # The migration's own session (it opens it with libpq's defaults): named, and every
    # statement and lock wait over 5 ms logged with its duration.
    saved_env = {k: os.environ.get(k) for k in ("PGAPPNAME", "PGOPTIONS")}
    os.environ["PGAPPNAME"] = MIGRATE_APP
    os.environ["PGOPTIONS"] = (
        "-c log_min_duration_statement=0 -c log_lock_waits=on -c deadlock_timeout=5ms"
    )
    try:
        with phase_clock() as clock:
            load_start = os.getloadavg()[0]
            started = time.monotonic()
            try:
                action()
            except Exception as exc:  # reported, and the run goes on to clean up
                error = f"{type(exc).__name__}: {exc}"
            ended = time.monotonic()
            load_end = os.getloadavg()[0]
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    time.sleep(1.0)  # and after it
    monitor.stop()
    writer.stop()
    if blocker is not None:
        blocker.join(blocker_s + 30)
    time.sleep(0.2)  # the server log is written asynchronously to us
    entries = server_log(log_file, log_offset)
    migrator = next((pid for pid, app in monitor.apps.items() if app == MIGRATE_APP), None)
    stage = Stage(
        name=name,
        started=started,
        ended=ended,
        phases=clock.events,
        spans=lock_spans(monitor.samples, period),
        inserts=writer.inserts,
        lock_waits=lock_waits(entries, writer.pid),
        migration_lock_waits=lock_waits(entries, migrator),
        statements=statements(entries, migrator),
        monitor_queries=monitor.n_queries,
        warnings=clock.warnings,
        load=(load_start, load_end),
        error=error,
    )
    return stage, writer


# ------------------------------------------------------------------------ report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def latency_line(label: str, inserts: list[Insert]) -> str:
    lat = [i.latency_s for i in inserts]
    if not lat:
        return f"| {label} | 0 | | | | |"
    return (
        f"| {label} | {len(lat)} | {ms(statistics.median(lat))} | {ms(pct(lat, 99))} | "
        f"{ms(max(lat))} | {ms(sum(lat) / len(lat))} |"
    )


def stage_report(stage: Stage) -> list[str]:
    out = [f"### {stage.name}", ""]
    total = stage.ended - stage.started
    out.append(
        f"Total: **{total:.2f} s**"
        + (f" (FAILED: {stage.error})" if stage.error else "")
        + f"; load average (1 min) {stage.load[0]:.2f} at the start, {stage.load[1]:.2f} at "
        "the end."
    )
    out.append("")
    # Phases: from Alembic's 'Running ...' lines and the backfill's progress lines.
    marks = [(t, m) for t, m in stage.phases if m.startswith("Running")]
    backfill = [(t, m) for t, m in stage.phases if m.startswith("backfill:")]
    if marks:
        out += ["| revision step | started at | took |", "| --- | --- | --- |"]
        for i, (t, m) in enumerate(marks):
            end = marks[i + 1][0] if i + 1 < len(marks) else stage.ended
            out.append(f"| {m.split(',')[0]} | {t - stage.started:.3f} s | {ms(end - t)} |")
        out.append("")
    windows: list[tuple[str, float, float]] = []
    if backfill:
        b0, b1 = backfill[0][0], backfill[-1][0]
        first_message = backfill[0][1]
        out.append(
            f"Backfill: {first_message.removeprefix('backfill: ')}, "
            f"{len(backfill) - 1} committed batches in {b1 - b0:.2f} s"
            + (f" ({(len(backfill) - 1) / (b1 - b0):.2f} batches/s)" if b1 > b0 else "")
        )
        batch_s = [b - a for (a, _), (b, _) in itertools.pairwise(backfill)]
        if batch_s:
            tenth = max(1, len(batch_s) // 10)
            out.append(
                f"Backfill batches: median {statistics.median(batch_s):.2f} s, max "
                f"{max(batch_s):.2f} s; first tenth {statistics.mean(batch_s[:tenth]):.2f} s "
                f"on average, last tenth {statistics.mean(batch_s[-tenth:]):.2f} s."
            )
        out.append("")
        windows = [
            ("before the backfill (0001-0004, one transaction)", stage.started, b0),
            ("backfill (0005, batches committed one by one)", b0, b1),
            ("after the backfill (0006-head)", b1, stage.ended),
        ]
    else:
        windows = [("during the migration", stage.started, stage.ended)]
    # Locks on regimes seen by the monitor, the migration's and others'.
    out += [
        "Relation locks on `regimes` seen by the pg_locks monitor "
        f"({stage.monitor_queries} samples over the run; a span runs from the first to the "
        "last sample that saw the lock, so a lock held for less than one sampling interval "
        "may be missed):",
        "",
    ]
    out += [
        "| session | mode | granted | from | to | seen for | samples |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in stage.spans:
        if s.app == WRITER_APP and s.granted and s.mode == "RowExclusiveLock":
            continue  # the engine's own inserts: thousands of tiny spans
        out.append(
            f"| {s.app} | {s.mode} | {s.granted} | {s.first - stage.started:+.3f} s | "
            f"{s.last - stage.started:+.3f} s | {ms(s.last - s.first)} | {s.samples} |"
        )
    writer_held = [s for s in stage.spans if s.app == WRITER_APP and s.granted]
    out.append(
        f"| {WRITER_APP} | RowExclusiveLock | True | (its inserts: {len(writer_held)} "
        "short spans, not listed) | | | |"
    )
    out.append("")
    # Engine inserts.
    out += [
        "Engine inserts (one autocommit INSERT each; latency as the engine sees it):",
        "",
        "| when | inserts | median | p99 | max | mean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    before = [i for i in stage.inserts if i.started < stage.started]
    out.append(latency_line("baseline, before the migration", before))
    for label, a, b in windows:
        out.append(latency_line(label, [i for i in stage.inserts if a <= i.started < b]))
    out.append(
        latency_line(
            "whole migration",
            [i for i in stage.inserts if stage.started <= i.started < stage.ended],
        )
    )
    out.append("")
    if stage.lock_waits:
        worst = max(stage.lock_waits, key=lambda w: w[1])
        out.append(
            f"Lock waits of the engine's inserts over 5 ms (server log, log_lock_waits): "
            f"{len(stage.lock_waits)}, the longest {worst[1]:.1f} ms ({worst[0]})."
        )
    else:
        out.append("Lock waits of the engine's inserts over 5 ms (server log): none.")
    out.append("")
    if stage.migration_lock_waits:
        out.append(
            "Lock waits of the migration over 5 ms (server log): "
            + "; ".join(f"{w:.1f} ms for {what}" for what, w in stage.migration_lock_waits)
            + "."
        )
    else:
        out.append("Lock waits of the migration over 5 ms (server log): none.")
    hold = exclusive_hold(stage.statements, "IN ACCESS EXCLUSIVE MODE")
    if hold is not None:
        out.append(
            "ACCESS EXCLUSIVE on `regimes`, from the migration's statement log: held between "
            f"{hold[0]:.1f} ms and {hold[1]:.1f} ms (from the LOCK TABLE that took it to the "
            "COMMIT of the migration transaction)."
        )
    if stage.warnings:
        out.append(f"Warnings logged by the migration: {stage.warnings} (unconvertible rows).")
    out.append("")
    return out


def write_docs(text: str, path: Path, block: str) -> None:
    """Put ``text`` between the markers of ``block`` in ``path``."""
    begin_mark = DOCS_MARK.format(block=block, end="begin")
    end_mark = DOCS_MARK.format(block=block, end="end")
    doc = path.read_text(encoding="utf-8")
    start, end = doc.find(begin_mark), doc.find(end_mark)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no {begin_mark} ... {end_mark} block to update")
    new = doc[: start + len(begin_mark)] + "\n" + text.rstrip() + "\n" + doc[end:]
    path.write_text(new, encoding="utf-8")


# -------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.migration_safety", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="engine rows (default 1,000,000)")
    p.add_argument("--major", type=int, default=18, choices=embedded.SUPPORTED_MAJORS)
    p.add_argument(
        "--writer-rate",
        type=float,
        default=100.0,
        help="engine inserts per second during the migrations (default 100)",
    )
    p.add_argument(
        "--sample-ms", type=float, default=2.0, help="pg_locks sampling interval (default 2 ms)"
    )
    p.add_argument(
        "--blocker",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold a read transaction on regimes for SECONDS from just before the "
        "upgrade (default: none)",
    )
    p.add_argument(
        "--lock-timeout-ms",
        type=int,
        default=None,
        help="how long each attempt of the migration to lock regimes may wait "
        f"(default: regime-pg's, {migration_ops.DDL_LOCK_TIMEOUT_MS} ms); a huge value "
        "shows what waiting without a lock_timeout costs the engine",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the throwaway server lives (default: a new temporary directory)",
    )
    p.add_argument("--keep", action="store_true", help="keep the server's directory")
    p.add_argument("--skip-downgrade", action="store_true")
    p.add_argument(
        "--update-docs",
        action="store_true",
        help=f"write the report into {DOCS.relative_to(DOCS.parents[1])}",
    )
    p.add_argument(
        "--docs-block",
        default="migration-safety",
        help="the block of the docs to write: between <!-- bench:BLOCK:begin --> and "
        "<!-- bench:BLOCK:end --> (default: migration-safety)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write raw numbers as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.lock_timeout_ms is not None:
        migration_ops.DDL_LOCK_TIMEOUT_MS = args.lock_timeout_ms
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="regime-pg-bench-"))
    data_dir = work / "pgdata"
    say = print
    say(f"server: embedded PostgreSQL {args.major} in {data_dir}")
    uri = embedded.start(data_dir, args.major)
    ok = True
    try:
        dsn = embedded.ensure_database(uri, "engine_bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            settings: dict[str, str] = dict(
                conn.execute(
                    "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN"
                    " ('shared_buffers', 'max_wal_size', 'synchronous_commit', 'fsync',"
                    "  'work_mem', 'lock_timeout')"
                ).fetchall()
            )
        log_file = data_dir / "log"
        say(f"building {args.rows:,} engine rows ...")
        t0 = time.monotonic()
        planted = build_engine_table(dsn, args.rows)
        build_s = time.monotonic() - t0
        size_before = table_size(dsn)
        columns_before = columns(dsn)
        say(f"  built in {build_s:.1f} s, regimes is {size_before / 2**20:,.0f} MiB; checksumming")
        t0 = time.monotonic()
        sum_before = checksum(dsn)
        checksum_s = time.monotonic() - t0

        say("upgrading to head with the engine writing ...")
        up, up_writer = run_stage(
            "Upgrade (base to head)",
            dsn,
            lambda: migrate.upgrade(dsn),
            writer_tag="writer-up",
            rate=args.writer_rate,
            period=args.sample_ms / 1000,
            log_file=log_file,
            blocker_s=args.blocker,
            seed=11,
        )
        ok = ok and up.error is None
        size_after = table_size(dsn)
        say("verifying every row (binary read, numpy comparison) ...")
        t0 = time.monotonic()
        checked = verify_all_rows(dsn, up_writer.rows)
        verify_s = time.monotonic() - t0
        with psycopg.connect(dsn, autocommit=True) as conn:
            revision = conn.execute("SELECT version_num FROM regime_pg_alembic_version").fetchone()
        expected_convertible = (
            args.rows
            - planted.nulls
            - planted.bad_length
            - planted.non_finite
            + sum(convertible(v) for v in up_writer.rows.values())
        )
        rows_ok = (
            checked.rows == args.rows + len(up_writer.rows)
            and checked.writer_missing == 0
            and checked.writer_wrong_bytes == 0
            and checked.convertible == expected_convertible
            and checked.converted_bit_exact == checked.convertible
            and not checked.wrong
        )
        ok = ok and rows_ok

        down = None
        same = None
        if not args.skip_downgrade and up.error is None:
            say("downgrading to base with the engine writing ...")
            sum_mid = checksum(dsn)
            down, down_writer = run_stage(
                "Downgrade (head to base)",
                dsn,
                lambda: migrate.downgrade(dsn, "base"),
                writer_tag="writer-down",
                rate=args.writer_rate,
                period=args.sample_ms / 1000,
                log_file=log_file,
                seed=12,
            )
            sum_after_all = checksum(dsn, ("writer-down",))
            sum_original = checksum(dsn, ("writer-up", "writer-down"))
            rows_after = checksum(dsn)[0]
            columns_after = columns(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                leftovers = conn.execute(
                    "SELECT to_regclass('regime_pg_alembic_version')::text,"
                    " to_regclass('regime_pg_installation')::text,"
                    " (SELECT extname FROM pg_extension WHERE extname = 'vector'),"
                    " (SELECT version_num FROM alembic_version)"
                ).fetchone()
            same = {
                "column list": columns_after == columns_before,
                "every row as before the downgrade": sum_after_all == sum_mid,
                "the original rows as before the upgrade": sum_original == sum_before,
                "no row inserted during the downgrade lost": rows_after
                == sum_mid[0] + len(down_writer.rows),
                "nothing of regime-pg left": leftovers == (None, None, None, ENGINE_REVISION),
            }
            ok = ok and down.error is None and all(same.values())

        # ------------------------------------------------------------- report
        lines = [
            f"Run of `python -m bench.migration_safety --rows {args.rows}"
            + (f" --blocker {args.blocker:g}" if args.blocker else "")
            + (f" --lock-timeout-ms {args.lock_timeout_ms}" if args.lock_timeout_ms else "")
            + f"` on {dt.date.today().isoformat()}: embedded PostgreSQL "
            + f"{version[0] if version else '?'}, {os.cpu_count()} CPUs; server settings: "
            + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
            + f"; engine writer {args.writer_rate:g} inserts/s; pg_locks sampled every "
            f"{args.sample_ms:g} ms. Other work on the machine shows in the load averages "
            "below, and inflates latencies.",
            "",
            f"Table: {planted.rows:,} rows in {planted.regions} regions "
            f"({planted.duplicates:,} re-run duplicates of a (region, date), "
            f"{planted.nulls:,} NULL embeddings, {planted.bad_length} of a wrong length, "
            f"{planted.non_finite} with NaN/Inf); built in {build_s:.0f} s; "
            f"`regimes` {size_before / 2**20:,.0f} MiB before the upgrade, "
            f"{size_after / 2**20:,.0f} MiB after (heap, TOAST and indexes; dead row versions "
            "of the backfill included until vacuumed). One checksum of every row took "
            f"{checksum_s:.1f} s.",
            "",
        ]
        lines += stage_report(up)
        lines += [
            f"After the upgrade (revision {revision[0] if revision else None}): "
            f"{checked.rows:,} rows ({args.rows:,} + {len(up_writer.rows):,} inserted by the "
            f"engine during the upgrade), {checked.writer_missing} lost; "
            f"{checked.converted_bit_exact:,} of {checked.convertible:,} convertible rows have "
            "a vector equal to their BYTEA bit for bit (read in binary, compared in numpy, "
            f"{verify_s:.0f} s); rows wrong: {len(checked.wrong)} -> "
            + ("**OK**" if rows_ok else "**FAILED**"),
            "",
        ]
        if down is not None and same is not None:
            lines += stage_report(down)
            lines += [
                "After the downgrade: "
                + "; ".join(f"{k}: {'same' if v else 'DIFFERENT'}" for k, v in same.items())
                + f". Checksum of the original rows: `{sum_before[1]}` ({sum_before[0]:,} rows) "
                "before the upgrade and after the downgrade -> "
                + ("**identical**" if all(same.values()) else "**NOT identical**"),
                "",
            ]
        text = "\n".join(lines)
        say("")
        say(text)
        if args.update_docs:
            write_docs(text, DOCS, args.docs_block)
            say(f"(written into {DOCS})")
        if args.json is not None:
            args.json.write_text(
                json.dumps(
                    {
                        "rows": args.rows,
                        "upgrade_s": up.ended - up.started,
                        "upgrade_insert_latency_max_s": max(
                            (i.latency_s for i in up.inserts), default=None
                        ),
                        "upgrade_lock_waits_ms": [w for _, w in up.lock_waits],
                        "downgrade_s": None if down is None else down.ended - down.started,
                        "ok": ok,
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
    finally:
        embedded.stop(data_dir)
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
