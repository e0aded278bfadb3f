"""B1..B6: each measured against its baseline in the same run."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import partial
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from psycopg.abc import Buffer
from psycopg.errors import Diagnostic
from psycopg.types.json import Jsonb

from regime_pg.connection import Connection, vector_to_numpy

from . import data
from .server import BenchServer, workers_launched
from .statements import bucket_bounds, explain, function_statements, plan_summary
from .timing import interleaved, paired, per_row, progress, ratio, summary, timed

ONE_CORE = "SET max_parallel_workers_per_gather = 0"
CLIENT_SQL = (
    "SELECT regime_embedding FROM regimes WHERE region = %s AND as_of_date BETWEEN %s AND %s"
)
SERVER_SQL = "SELECT * FROM compute_regime_prototype(%s, %s, %s)"
#: What compute_regime_prototype runs for a long window while the stored sums are off
#: (regime_prototype_for_window's dispatch, after its probe of the window's first 50,000
#: rows, which finds them): the window grid, planned for the window.
WINDOW_GRID_SQL = "SELECT * FROM regime_prototype_compute_custom_plans(%s, NULL, %s, %s)"
SUM_FLOOR_SQL = (
    "SELECT sum(embedding_vector) FROM regimes WHERE region = %s AND as_of_date BETWEEN %s AND %s"
)


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run."""

    mode: str
    b1_regions: int = 20
    b1_years: int = 30
    b1_rounds: int = 300
    length_rounds: int = 20
    big_rows: int = 1_000_000
    heavy_rounds: int = 3
    b5_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    b5_rounds: int = 40
    write_rounds: int = 30
    copy_rows: int = 100_000
    copy_rounds: int = 3
    seed: int = 20261125

    @staticmethod
    def for_mode(mode: str) -> Config:
        if mode == "quick":
            # 13 years: the window lengths reach past 4096 days (12 years)
            return Config("quick", b1_regions=4, b1_years=13, b1_rounds=40, length_rounds=6,
                          big_rows=40_000,
                          heavy_rounds=3, b5_sizes=(6_000, 20_000, 60_000), b5_rounds=15,
                          write_rounds=10, copy_rows=20_000, copy_rounds=2)
        if mode == "full":
            return Config("full", b5_sizes=(10_000, 100_000, 1_000_000, 10_000_000))
        return Config("default")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def bound_ratio(center: npt.NDArray[Any], exact: npt.NDArray[np.float64],
                mean_abs: npt.NDArray[np.float64]) -> float:
    """max_j |c_j - c*_j| / (1e-6 * mean_i |x_ij|): at most 1 meets the goal."""
    err = np.abs(np.asarray(center, dtype=np.float64) - exact)
    return float(np.max(err / (1e-6 * mean_abs)))


def bytea_rows(rows: list[tuple[object, ...]]) -> list[tuple[Buffer]]:
    """Rows of ``CLIENT_SQL`` (one BYTEA column), as psycopg's BYTEA loaders return them."""
    return cast("list[tuple[Buffer]]", rows)


def client_mean(conn: Connection, window: tuple[str, dt.date, dt.date]) -> npt.NDArray[Any]:
    """The calibration script's client path: fetch the BYTEA rows, frombuffer each, mean."""
    rows = bytea_rows(conn.execute(CLIENT_SQL, window).fetchall())
    center: npt.NDArray[Any] = np.mean([np.frombuffer(r[0], dtype="<f4") for r in rows], axis=0)
    return center


def client_mean_streamed(conn: Connection, window: tuple[str, dt.date, dt.date]
                         ) -> npt.NDArray[np.float64]:
    """The same for a million rows: a server-side cursor, 10,000 rows at a time, float64 sums."""
    total = np.zeros(data.DIM, dtype=np.float64)
    n = 0
    with conn.transaction(), conn.cursor(name="bench_client") as cur:
        cur.itersize = 10_000
        cur.execute(CLIENT_SQL, window)
        while batch := bytea_rows(cur.fetchmany(10_000)):
            x = np.stack([np.frombuffer(r[0], dtype="<f4") for r in batch])
            total += x.sum(axis=0, dtype=np.float64)
            n += len(batch)
    return total / n


def server_center(conn: Connection, window: tuple[str, dt.date, dt.date]) -> npt.NDArray[Any]:
    row = conn.execute(SERVER_SQL, window, binary=True).fetchone()
    assert row is not None
    return vector_to_numpy(row[5])


def window_grid_center(conn: Connection, window: tuple[str, dt.date, dt.date]
                       ) -> npt.NDArray[Any]:
    """The default path's centre of a long window, whether the stored sums are on or off."""
    row = conn.execute(WINDOW_GRID_SQL, window, binary=True).fetchone()
    assert row is not None
    return vector_to_numpy(row[5])


# --------------------------------------------------------------------------- stored sums


SUMS_SIZES_SQL = """
    SELECT (SELECT count(*) FROM regime_bucket_sums),
           (SELECT count(*) FROM regime_bucket_group_sums),
           pg_total_relation_size('regime_bucket_sums') / 1048576.0,
           pg_total_relation_size('regime_bucket_group_sums') / 1048576.0,
           pg_total_relation_size('regimes') / 1048576.0,
           regime_bucket_sums_enabled()
"""


def stored_sums_database(database: str) -> str:
    """The name of the copy of ``database`` that has stored bucket sums enabled."""
    return f"{database}_sums"


def enable_stored_sums(server: BenchServer, database: str, copy: bool = True
                       ) -> dict[str, Any]:
    """``regime_bucket_sums_enable()``, timed, in a file copy of ``database`` (or in
    ``database`` itself when ``copy`` is false).

    The copy keeps ``database`` itself on the default path, so both paths
    can be measured in the same interleaved rounds against the same rows.
    A database too large for two copies to share the buffer cache is
    enabled in place instead, and its default path called directly.  The
    sums tables are then vacuumed and analysed, as autovacuum would leave
    them.
    """
    name = stored_sums_database(database) if copy else database
    copy_s = timed(lambda: server.copy_database(name, database))[0] if copy else 0.0
    with server.connect(name) as conn:
        enable_s, stored = timed(
            lambda: conn.execute("SELECT regime_bucket_sums_enable()").fetchone())
        conn.execute("VACUUM ANALYZE regime_bucket_sums, regime_bucket_group_sums")
        row = cast("tuple[int, int, Decimal, Decimal, Decimal, bool] | None",
                   conn.execute(SUMS_SIZES_SQL).fetchone())
    assert row is not None and stored is not None
    if not row[5]:
        raise RuntimeError(f"regime_bucket_sums_enabled() is false in {name} after enabling")
    progress(f"stored sums: {name} {f'copied in {copy_s:.1f} s, ' if copy else ''}"
             f"enabled in {enable_s:.1f} s "
             f"({row[0]:,} buckets, {row[1]:,} groups)")
    return {
        "database": name,
        "copy_s": copy_s,
        "enable_s": enable_s,
        "buckets": int(row[0]),
        "groups": int(row[1]),
        "bucket_sums_mb": float(row[2]),
        "group_sums_mb": float(row[3]),
        "regimes_mb": float(row[4]),
    }


class WarningCounter:
    """Counts the WARNINGs a connection receives (stale stored sums raise one)."""

    def __init__(self) -> None:
        self.count = 0
        self.messages: list[str] = []

    def __call__(self, diag: Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING":
            self.count += 1
            if len(self.messages) < 5:
                self.messages.append(str(diag.message_primary))


def sums_connection(server: BenchServer, database: str) -> tuple[Connection, WarningCounter]:
    """A connection to ``database`` (with stored sums enabled), its WARNINGs counted."""
    conn = server.connect(database)
    counter = WarningCounter()
    conn.add_notice_handler(counter)
    enabled = cast("tuple[bool] | None",
                   conn.execute("SELECT regime_bucket_sums_enabled()").fetchone())
    assert enabled is not None and enabled[0], "stored sums are not enabled"
    return conn, counter


def ms(stats: dict[str, Any]) -> dict[str, float]:
    """A ``summary`` in milliseconds (its count as it is), without its samples."""
    return {k: v if k == "n" else v * 1e3 for k, v in stats.items() if k != "samples"}


# --------------------------------------------------------------------------- B1


def load_b1(server: BenchServer, cfg: Config) -> dict[str, Any]:
    """20 regions x 30 years of business days, through the engine's path (trigger)."""
    server.migrated_database("bench_b1")
    rng = np.random.default_rng(cfg.seed)
    first = dt.date(2024 - cfg.b1_years + 1, 1, 1)
    per_region = len(data.business_days(first.toordinal(), cfg.b1_years * 262))
    last = dt.date(2024, 12, 31).toordinal()
    days = data.business_days(first.toordinal(), per_region)
    days = days[days <= last]
    seconds = 0.0
    with server.connect("bench_b1") as conn:
        for r in range(cfg.b1_regions):
            x = data.embeddings(rng, len(days), rng.standard_normal(data.DIM).astype("<f4"))
            took, _ = timed(partial(data.copy_through_trigger, conn, f"R{r:02d}", days, x))
            seconds += took
            progress(f"B1 data: region R{r:02d}: {len(days)} rows through the trigger "
                     f"({took / len(days) * 1e3:.2f} ms/row)")
        conn.execute("VACUUM ANALYZE regimes")
        rows = cast(
            "tuple[int, int] | None",
            conn.execute("SELECT count(*), count(embedding_vector) FROM regimes").fetchone(),
        )
    assert rows is not None
    return {"rows": rows[0], "converted": rows[1], "regions": cfg.b1_regions,
            "years": cfg.b1_years, "path": "binary COPY of BYTEA only, trigger converts",
            "trigger_ms_per_row": seconds / rows[0] * 1e3}


def one_year_windows(cfg: Config, year: int) -> Iterator[tuple[str, dt.date, dt.date]]:
    r = 0
    while True:
        yield f"R{r % cfg.b1_regions:02d}", dt.date(year, 1, 1), dt.date(year, 12, 31)
        r += 7


def run_b1(server: BenchServer, cfg: Config, sums_setup: dict[str, Any]) -> dict[str, Any]:
    progress("B1: one-year window, server function (default and stored sums) vs client path")
    year = 2024 - cfg.b1_years // 2
    sums, warnings = sums_connection(server, stored_sums_database("bench_b1"))
    with (server.connect("bench_b1") as srv, server.connect("bench_b1") as cli,
          server.connect("bench_b1") as cli_bin, sums):
        windows = one_year_windows(cfg, year)
        samples: dict[str, list[float]] = {"server": [], "server_sums": [], "client": [],
                                           "client_binary": [], "sum_floor": []}
        worst = worst_sums = 0.0
        n_dates = []
        binary = cli_bin.cursor(binary=True)

        def client_binary(w: tuple[str, dt.date, dt.date]) -> Any:
            rows = bytea_rows(binary.execute(CLIENT_SQL, w).fetchall())
            return np.mean([np.frombuffer(r[0], dtype="<f4") for r in rows], axis=0)

        paths: dict[str, Callable[[tuple[str, dt.date, dt.date]], Any]] = {
            "server": lambda w: server_center(srv, w),
            # the same rows in the copy of bench_b1 with stored sums enabled
            "server_sums": lambda w: server_center(sums, w),
            "client": lambda w: client_mean(cli, w),
            "client_binary": client_binary,
            # the least any server path can do: one float32 sum(vector), nothing else
            "sum_floor": lambda w: srv.execute(SUM_FLOOR_SQL, w, binary=True).fetchone(),
        }
        for _ in range(10):
            w = next(windows)
            for fn in paths.values():
                fn(w)
        for round_ in range(cfg.b1_rounds):
            w = next(windows)
            names = list(paths)
            names = names[round_ % len(names):] + names[:round_ % len(names)]
            results = {}
            for name in names:
                took, results[name] = timed(partial(paths[name], w))
                samples[name].append(took)
            x = np.stack([np.frombuffer(r[0], dtype="<f4")
                          for r in bytea_rows(cli.execute(CLIENT_SQL, w).fetchall())]
                         ).astype(np.float64)
            n_dates.append(len(x))
            worst = max(worst, bound_ratio(results["server"], x.mean(axis=0),
                                           np.abs(x).mean(axis=0)))
            worst_sums = max(worst_sums, bound_ratio(results["server_sums"], x.mean(axis=0),
                                                     np.abs(x).mean(axis=0)))
        # the same window again and again: its rows stay in shared buffers and
        # in the CPU's caches, for both paths (a new window each round reads
        # about 400 KB of vectors, or of BYTEA, from memory first)
        hot_window = next(windows)
        hot = paired({"server": lambda: server_center(srv, hot_window),
                      "server_sums": lambda: server_center(sums, hot_window),
                      "client": lambda: client_mean(cli, hot_window)},
                     repeats=max(cfg.b1_rounds // 3, 10), warmup=10)
    stats = {name: summary(values) for name, values in samples.items()}
    return {
        "window": f"one calendar year ({year}), {min(n_dates)}..{max(n_dates)} business days,"
                  f" {cfg.b1_regions} regions in turn",
        "server_ms": {k: v * 1e3 for k, v in stats["server"].items() if k != "samples"},
        "client_ms": {k: v * 1e3 for k, v in stats["client"].items() if k != "samples"},
        "client_binary_ms": {k: v * 1e3 for k, v in stats["client_binary"].items()
                             if k != "samples"},
        "speedup": ratio(stats["client"], stats["server"]),
        "speedup_vs_binary_client": ratio(stats["client_binary"], stats["server"]),
        "sum_floor_ms": {k: v * 1e3 for k, v in stats["sum_floor"].items() if k != "samples"},
        "client_over_sum_floor": ratio(stats["client"], stats["sum_floor"]),
        "goal": 5.0,
        "stored_sums": {
            **sums_setup,
            "server_ms": ms(stats["server_sums"]),
            "speedup": ratio(stats["client"], stats["server_sums"]),
            # above 1: the stored sums are faster than the default server path
            "default_over_stored_sums": ratio(stats["server"], stats["server_sums"]),
            "hot_server_ms": ms(hot["server_sums"]),
            "hot_speedup": ratio(hot["client"], hot["server_sums"]),
            "hot_default_over_stored_sums": ratio(hot["server"], hot["server_sums"]),
            "center_error_vs_bound": worst_sums,
            "warnings": warnings.count,
            "warning_messages": warnings.messages,
        },
        "hot": {
            "window": f"{hot_window[0]} {year}, the same window every round",
            "server_ms": {k: v * 1e3 for k, v in hot["server"].items() if k != "samples"},
            "client_ms": {k: v * 1e3 for k, v in hot["client"].items() if k != "samples"},
            "speedup": ratio(hot["client"], hot["server"]),
        },
        "center_error_vs_bound": worst,
        "samples_s": {k: v["samples"] for k, v in stats.items()},
    }


# --------------------------------------------------------------------------- window lengths


#: Window lengths in years on the B1 table (those shorter than its history are run).
LENGTH_YEARS = (1, 2, 5, 11, 12, 20, 29)


def run_lengths(server: BenchServer, cfg: Config) -> dict[str, Any]:
    """Calendar windows of 1 to 29 years on the B1 table: the default path, the stored
    sums (the copy of bench_b1) and the client path, in the same rounds, and the
    parallel workers the default path launched per call (PostgreSQL 18 counts them).
    From 4096 days (about 11.2 years) on, the default path cuts a window in 8 parts,
    with parallel workers when it has ``regime_pg.parallel_min_rows`` rows (50,000)."""
    years = [y for y in LENGTH_YEARS if y < cfg.b1_years]
    progress(f"window lengths: {years} years, {cfg.length_rounds} rounds each")
    first_year = 2024 - cfg.b1_years + 1
    sums, warnings = sums_connection(server, stored_sums_database("bench_b1"))
    lengths = []
    with (server.connect("bench_b1") as srv, server.connect("bench_b1") as cli,
          server.connect("bench_b1") as counter, sums):
        counter.execute(ONE_CORE)  # counting rows starts no worker of its own
        paths: dict[str, Callable[[tuple[str, dt.date, dt.date]], Any]] = {
            "server": lambda w: server_center(srv, w),
            "server_sums": lambda w: server_center(sums, w),
            "client": lambda w: client_mean(cli, w),
        }
        for length in years:
            def window(k: int, length: int = length) -> tuple[str, dt.date, dt.date]:
                start = first_year + k % (cfg.b1_years - length + 1)
                return (f"R{k % cfg.b1_regions:02d}", dt.date(start, 1, 1),
                        dt.date(start + length - 1, 12, 31))

            for fn in paths.values():
                fn(window(0))
            windows = [window(k) for k in range(cfg.length_rounds)]
            before = workers_launched(srv)
            stats = interleaved(paths, windows)
            after = workers_launched(srv)
            n_rows = []
            for w in windows:
                row = counter.execute("SELECT count(*) FROM regimes WHERE region = %s"
                                      " AND as_of_date BETWEEN %s AND %s", w).fetchone()
                n_rows.append(int(str(row[0])) if row else 0)
            lengths.append({
                "years": length,
                "rows": int(np.median(n_rows)),
                "server_ms": ms(stats["server"]),
                "server_sums_ms": ms(stats["server_sums"]),
                "client_ms": ms(stats["client"]),
                "speedup": ratio(stats["client"], stats["server"]),
                "speedup_sums": ratio(stats["client"], stats["server_sums"]),
                # counted over the timed rounds (the first, untimed, call excluded)
                "workers_per_call": (None if before is None or after is None
                                     else (after - before) / cfg.length_rounds),
            })
    return {"lengths": lengths, "rounds": cfg.length_rounds, "warnings": warnings.count}


# --------------------------------------------------------------------------- writes


WRITE_REGIONS = 20
INSERT_COLUMNS = "regime_record_id, as_of_date, region, regime_label, regime_embedding, confidence"


def insert_day_sql(regions: int) -> str:
    """One multi-row INSERT of ``regions`` engine rows (BYTEA only: the sync trigger converts)."""
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * regions)
    return f"INSERT INTO regimes ({INSERT_COLUMNS}) VALUES {values}"


def trading_day_rows(day: dt.date, x: npt.NDArray[np.float32]
                     ) -> list[str | dt.date | bytes | float]:
    """The parameters of ``insert_day_sql(len(x))``: one row per region, R00, R01, ..."""
    params: list[str | dt.date | bytes | float] = []
    for r, vector in enumerate(x):
        region = f"R{r:02d}"
        params += [f"W-{region}-{day.isoformat()}", day, region, "NEUTRAL",
                   vector.astype("<f4").tobytes(), 0.5]
    return params


def run_writes(server: BenchServer, cfg: Config) -> dict[str, Any]:
    """The stored sums' triggers' cost on the engine's writes: bench_b1 against its copy.

    Both databases get the same rows, in interleaved rounds: a trading day
    of 20 regions after the B1 data (one INSERT, autocommit, the sync trigger
    converting the BYTEA), and a bulk COPY of new regions.
    """
    progress(f"writes: one trading day x {WRITE_REGIONS} regions ({cfg.write_rounds} rounds), "
             f"COPY of {cfg.copy_rows:,} rows ({cfg.copy_rounds} rounds), sums off vs on")
    rng = np.random.default_rng(cfg.seed + 7)
    days = [dt.date.fromordinal(int(d))
            for d in data.business_days(dt.date(2025, 1, 1).toordinal(), cfg.write_rounds + 1)]
    day_x = [data.embeddings(rng, WRITE_REGIONS, np.zeros(data.DIM, dtype="<f4"))
             for _ in days]
    insert_sql = insert_day_sql(WRITE_REGIONS)
    # COPY: 20 new regions a round, business days from 1900 on (before any B1 row)
    per_region = max(cfg.copy_rows // WRITE_REGIONS, 1)
    copy_days = data.business_days(dt.date(1900, 1, 1).toordinal(), per_region)
    copy_x = data.embeddings(rng, per_region, np.zeros(data.DIM, dtype="<f4"))
    sums, warnings = sums_connection(server, stored_sums_database("bench_b1"))
    with server.connect("bench_b1") as off, sums as on:

        def writer(conn: Connection) -> tuple[Callable[[], Any], Callable[[], Any]]:
            day_index = iter(range(len(days)))
            copy_round = iter(range(cfg.copy_rounds + 1))

            def insert() -> None:
                i = next(day_index)
                conn.execute(insert_sql, trading_day_rows(days[i], day_x[i]))

            def copy() -> None:
                # the batch-converted binary COPY (BYTEA and vector from the
                # client), the sync trigger disabled outside the timing
                c = next(copy_round)
                data.copy_regions_converted(
                    conn, [f"C{c:02d}{r:02d}" for r in range(WRITE_REGIONS)], copy_days, copy_x)

            return insert, copy

        insert_off, copy_off = writer(off)
        insert_on, copy_on = writer(on)
        inserts = paired({"off": insert_off, "on": insert_on},
                         repeats=cfg.write_rounds, warmup=1)
        for conn in (off, on):
            conn.execute("ALTER TABLE regimes DISABLE TRIGGER regime_pg_embedding_sync")
        try:
            copies = paired({"off": copy_off, "on": copy_on},
                            repeats=cfg.copy_rounds, warmup=1)
        finally:
            for conn in (off, on):
                conn.execute("ALTER TABLE regimes ENABLE TRIGGER regime_pg_embedding_sync")
        counts = [cast("tuple[int] | None", conn.execute(
            "SELECT count(*) FROM regimes WHERE regime_record_id LIKE 'W-%'"
            " OR region LIKE 'C%'").fetchone()) for conn in (off, on)]
    assert all(c is not None for c in counts)
    written = [c[0] for c in counts if c is not None]
    if written[0] != written[1]:
        raise RuntimeError(f"the two databases got different writes: {written}")
    return {
        "insert": {
            "statement": f"one INSERT of {WRITE_REGIONS} rows (one trading day, one row a "
                         "region), BYTEA only, the sync trigger converting; autocommit",
            "disabled_ms": ms(inserts["off"]),
            "enabled_ms": ms(inserts["on"]),
            "enabled_over_disabled": ratio(inserts["on"], inserts["off"]),
        },
        "copy": {
            "rows": per_region * WRITE_REGIONS,
            "statement": f"binary COPY of {per_region * WRITE_REGIONS:,} rows ({WRITE_REGIONS} "
                         "new regions), BYTEA and vector from the client, the sync trigger "
                         "disabled (one COPY statement, autocommit)",
            "disabled_s": {k: v for k, v in copies["off"].items() if k != "samples"},
            "enabled_s": {k: v for k, v in copies["on"].items() if k != "samples"},
            "enabled_over_disabled": ratio(copies["on"], copies["off"]),
        },
        "rows_written_each": written[0],
        "warnings": warnings.count,
        "samples_s": {"insert_off": inserts["off"]["samples"],
                      "insert_on": inserts["on"]["samples"],
                      "copy_off": copies["off"]["samples"], "copy_on": copies["on"]["samples"]},
    }


# --------------------------------------------------------------------------- big window


@dataclass
class BigWindow:
    window: tuple[str, dt.date, dt.date]
    rows: int
    exact: npt.NDArray[np.float64]
    mean_abs: npt.NDArray[np.float64]


def load_big(server: BenchServer, cfg: Config) -> tuple[BigWindow, dict[str, Any]]:
    """One region, BIG, with one row per calendar day: a window of cfg.big_rows rows."""
    server.migrated_database("bench_big")
    rng = np.random.default_rng(cfg.seed + 1)
    offset = (rng.standard_normal(data.DIM) * 2).astype("<f4")
    # four regimes, one per quarter of the window, for B4 to tell apart
    shifts = (rng.standard_normal((4, data.DIM)) * 2).astype("<f4")
    first = dt.date(500, 1, 1).toordinal()
    total = np.zeros(data.DIM)
    total_abs = np.zeros(data.DIM)
    step = 100_000

    def batches() -> Iterator[tuple[str, npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        nonlocal total, total_abs
        for start in range(0, cfg.big_rows, step):
            n = min(step, cfg.big_rows - start)
            x = data.embeddings(rng, n, offset)
            x += shifts[(np.arange(start, start + n) * 4) // cfg.big_rows]
            total += x.sum(axis=0, dtype=np.float64)
            total_abs += np.abs(x).sum(axis=0, dtype=np.float64)
            progress(f"big window data: rows {start:,}..{start + n:,}")
            yield "BIG", data.calendar_days(first + start, n), x

    with server.connect("bench_big") as conn:
        took, _ = timed(lambda: data.copy_batch_converted(conn, batches()))
        check = data.verify_conversion(conn)
        conn.execute("VACUUM ANALYZE regimes")
    window = ("BIG", dt.date.fromordinal(first), dt.date.fromordinal(first + cfg.big_rows - 1))
    progress(f"big window data: {cfg.big_rows:,} rows in {took:.0f} s; "
             f"{check['checked']} sampled rows equal the trigger's conversion")
    return (BigWindow(window, cfg.big_rows, total / cfg.big_rows, total_abs / cfg.big_rows),
            {"rows": cfg.big_rows, "path": "batch-converted binary COPY (BYTEA + vector), "
             "trigger disabled during the COPY", "verified_sample": check,
             "load_s": took})


def run_b2(server: BenchServer, cfg: Config, big: BigWindow,
           sums_setup: dict[str, Any]) -> dict[str, Any]:
    progress(f"B2: window of {big.rows:,} rows, server (default and stored sums) vs client "
             f"({cfg.heavy_rounds} rounds)")
    # The stored sums are enabled in bench_big itself (two copies of its 3.6 GB would
    # not share 6 GB of shared buffers): the default path is the window-grid function
    # that compute_regime_prototype runs for this window while the sums are off.
    sums, warnings = sums_connection(server, "bench_big")
    with (server.connect("bench_big") as srv, server.connect("bench_big") as one,
          server.connect("bench_big") as cli, sums):
        one.execute(ONE_CORE)
        stats = paired({
            "server": lambda: window_grid_center(srv, big.window),
            "server_one_core": lambda: window_grid_center(one, big.window),
            # the same rows and call, the centre from the stored sums
            "server_sums": lambda: server_center(sums, big.window),
            "client": lambda: client_mean_streamed(cli, big.window),
        }, repeats=cfg.heavy_rounds, warmup=1)
        sums_error = bound_ratio(server_center(sums, big.window), big.exact, big.mean_abs)
        floors = paired({
            "count_star": lambda: one.execute(
                "SELECT count(*) FROM regimes WHERE region = %s AND as_of_date BETWEEN %s AND %s",
                big.window).fetchone(),
            "count_vector": lambda: one.execute(
                "SELECT count(embedding_vector) FROM regimes"
                " WHERE region = %s AND as_of_date BETWEEN %s AND %s", big.window).fetchone(),
        }, repeats=cfg.heavy_rounds, warmup=1)
        plan_count, _ = explain(one, "SELECT count(*) FROM regimes WHERE region = $1"
                                " AND as_of_date BETWEEN $2 AND $3", big.window)
    per = {name: per_row(s, big.rows) for name, s in {**stats, **floors}.items()}
    return {
        "rows": big.rows,
        "us_per_row": per,
        "speedup": ratio(stats["client"], stats["server"]),
        "speedup_one_core": ratio(stats["client"], stats["server_one_core"]),
        "stored_sums": {
            **sums_setup,
            "speedup": ratio(stats["client"], stats["server_sums"]),
            # above 1: the stored sums are faster than the default server path
            "default_over_stored_sums": ratio(stats["server"], stats["server_sums"]),
            "center_error_vs_bound": sums_error,
            "warnings": warnings.count,
            "warning_messages": warnings.messages,
        },
        "server_one_core_vs_count_star": ratio(stats["server_one_core"], floors["count_star"]),
        "server_one_core_vs_heap_scan": ratio(stats["server_one_core"], floors["count_vector"]),
        "count_star_plan": plan_summary(plan_count)["nodes"],
        "goal": 15.0,
        "client_path": "server-side cursor, 10,000 BYTEA rows a fetch, numpy.frombuffer "
                       "each, float64 sums (fetchall of 1M rows would need ~6 GB)",
        "samples_s": {k: v["samples"] for k, v in {**stats, **floors}.items()},
    }


#: Window sizes (rows, one a calendar day) for the parallel workers' break-even.
BREAK_EVEN_ROWS = (5_000, 10_000, 25_000, 50_000, 100_000, 200_000)


def run_break_even(server: BenchServer, cfg: Config, big: BigWindow) -> dict[str, Any]:
    """Long windows of the big table (one row a calendar day, so 4096 days or more) of
    5,000 to 200,000 rows, with parallel workers (``regime_pg.parallel_min_rows = 0``)
    and without (``max_parallel_workers_per_gather = 0`` as well), neither probing
    the window's rows, in the same rounds: where workers start to pay, the evidence
    for the setting's default (50,000)."""
    sizes = [n for n in BREAK_EVEN_ROWS if n <= big.rows // 2]
    progress(f"parallel break-even: windows of {sizes} rows, {cfg.length_rounds} rounds each")
    region, first, _ = big.window
    out = []
    with server.connect("bench_big") as par, server.connect("bench_big") as one:
        for conn in (par, one):
            conn.execute("SET regime_pg.parallel_min_rows = 0")
        one.execute(ONE_CORE)
        for n in sizes:
            def window(k: int, n: int = n) -> tuple[str, dt.date, dt.date]:
                start = first + dt.timedelta(days=k * 7919 % (big.rows - n))
                return region, start, start + dt.timedelta(days=n - 1)

            stats = interleaved({"parallel": partial(server_center, par),
                                 "serial": partial(server_center, one)},
                                [window(k) for k in range(cfg.length_rounds)])
            out.append({"rows": n, "parallel_ms": ms(stats["parallel"]),
                        "serial_ms": ms(stats["serial"]),
                        # above 1: the workers make the call faster
                        "serial_over_parallel": ratio(stats["serial"], stats["parallel"])})
    return {"sizes": out, "rounds": cfg.length_rounds}


def run_b3(server: BenchServer, cfg: Config, big: BigWindow) -> dict[str, Any]:
    progress("B3: accuracy and us/row of avg(vector), sum(vector), the two-level centroid")
    _, start, end = big.window
    n_buckets = (end - start).days // 15 + 1
    bounds = bucket_bounds(start, end)
    with server.connect("bench_big") as one, server.connect("bench_big") as par:
        one.execute(ONE_CORE)
        where = "FROM regimes WHERE region = %s AND as_of_date BETWEEN %s AND %s"
        stats = paired({
            "avg": lambda: one.execute(f"SELECT avg(embedding_vector) {where}",
                                       big.window).fetchone(),
            "sum": lambda: one.execute(f"SELECT sum(embedding_vector) {where}",
                                       big.window).fetchone(),
            "two_level": lambda: one.execute(
                "SELECT * FROM regime_window_bucket_states(%s, %s, %s, 0, %s)",
                (*big.window, n_buckets - 1)).fetchone(),
            "heap_scan": lambda: one.execute(f"SELECT count(embedding_vector) {where}",
                                             big.window).fetchone(),
        }, repeats=cfg.heavy_rounds, warmup=1)
        avg_row = one.execute(f"SELECT avg(embedding_vector) {where}", big.window).fetchone()
        sum_row = one.execute(f"SELECT sum(embedding_vector) {where}", big.window).fetchone()
        serial = server_center(one, big.window)
        parallel = server_center(par, big.window)
        statements = function_statements(one)
        plans: dict[str, Any] = {}
        for name, conn in (("one_core", one), ("parallel", par)):
            conn.execute("SET plan_cache_mode = force_custom_plan")
            nodes, text = explain(conn, statements["parts"], (*big.window, bounds))
            plans[f"parts_{name}"] = {**plan_summary(nodes), "text": text}
            nodes, text = explain(conn, statements["dispersion"], (*big.window, serial))
            plans[f"dispersion_{name}"] = {**plan_summary(nodes), "text": text}
        nodes, text = explain(one, statements["buckets"],
                              (*big.window, 0, min(n_buckets - 1, 24)))
        plans["buckets_one_part"] = {**plan_summary(nodes), "text": text}
    assert avg_row is not None and sum_row is not None
    errors = {
        "avg": bound_ratio(vector_to_numpy(avg_row[0]), big.exact, big.mean_abs),
        "sum": bound_ratio(vector_to_numpy(sum_row[0]).astype(np.float64) / big.rows,
                           big.exact, big.mean_abs),
        "two_level": bound_ratio(serial, big.exact, big.mean_abs),
    }
    return {
        "rows": big.rows,
        "us_per_row_one_core": {k: per_row(v, big.rows) for k, v in stats.items()},
        "two_level_vs_sum": ratio(stats["two_level"], stats["sum"]),
        "avg_vs_two_level": ratio(stats["avg"], stats["two_level"]),
        "error_vs_bound": errors,
        "same_bits_serial_and_parallel": bool(np.array_equal(serial, parallel)),
        "goal_us_per_row": 1.0,
        "plans": plans,
        "samples_s": {k: v["samples"] for k, v in stats.items()},
    }


# --------------------------------------------------------------------------- B4


B4_LABELS = ("CALM", "CARRY", "CRISIS", "RISK_OFF")


def b4_windows(big: BigWindow) -> dict[str, dict[str, str]]:
    """One calibration window in the middle of each quarter of the big window (its regime)."""
    first = big.window[1].toordinal()
    span = min(3650, big.rows // 10)
    out = {}
    for q, label in enumerate(B4_LABELS):
        start = first + (2 * q + 1) * big.rows // 8 - span // 2
        out[label] = {"start_date": str(dt.date.fromordinal(start)),
                      "end_date": str(dt.date.fromordinal(start + span - 1))}
    return out


def plain_classify_sql(labels: list[str]) -> str:
    """Nearest of the set's prototypes and its softmax confidence, with pgvector's <->."""
    cols = ", ".join(f"r.embedding_vector <-> c.c{i} AS d{i}" for i in range(len(labels)))
    centers = ", ".join(
        f"(SELECT m.center FROM regime_prototype_set_members AS m"
        f" WHERE m.set_name = %(set)s AND m.label = '{label}') AS c{i}"
        for i, label in enumerate(labels))
    least = ", ".join(f"d.d{i}" for i in range(len(labels)))
    label = " ".join(f"WHEN q.d{i} THEN '{lab}'" for i, lab in enumerate(labels))
    terms = " + ".join(
        f"CASE WHEN (q.d{i} - q.m) / %(t)s > 700 THEN 0 ELSE exp(-(q.d{i} - q.m) / %(t)s) END"
        for i in range(len(labels)))
    return f"""
        SELECT q.as_of_date, CASE q.m {label} END AS label, 1 / ({terms}) AS confidence
          FROM (SELECT d.*, least({least}) AS m
                  FROM (SELECT r.as_of_date, {cols}
                          FROM regimes AS r, (SELECT {centers}) AS c
                         WHERE r.region = %(region)s
                           AND r.as_of_date BETWEEN %(start)s AND %(end)s
                           AND r.embedding_vector IS NOT NULL) AS d) AS q
    """


def run_b4(server: BenchServer, cfg: Config, big: BigWindow) -> dict[str, Any]:
    progress(f"B4: classify {big.rows:,} stored embeddings against 4 prototypes")
    region, start, end = big.window
    windows = b4_windows(big)
    with server.connect("bench_big") as conn:
        took, _ = timed(lambda: conn.execute(
            "SELECT name FROM save_regime_prototype_set('bench-4', %s, %s, 1.0)",
            (region, Jsonb(windows))).fetchone())
        members = conn.execute(
            "SELECT label, center FROM regime_prototype_set_members"
            " WHERE set_name = 'bench-4' ORDER BY label").fetchall()
    labels = [str(m[0]) for m in members]
    centers = np.stack([vector_to_numpy(m[1]) for m in members]).astype(np.float64)
    plain = plain_classify_sql(labels)
    params = {"set": "bench-4", "t": 1.0, "region": region, "start": start, "end": end}

    def numpy_classify(conn: Connection) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        out_labels, out_conf = [], []
        with conn.transaction(), conn.cursor(name="bench_classify") as cur:
            cur.execute(CLIENT_SQL, big.window)
            while batch := bytea_rows(cur.fetchmany(10_000)):
                x = np.stack([np.frombuffer(r[0], dtype="<f4") for r in batch]).astype(np.float64)
                d = np.sqrt(((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
                z = d - d.min(axis=1, keepdims=True)
                out_labels.append(d.argmin(axis=1))
                out_conf.append(1.0 / np.exp(-z).sum(axis=1))
        return np.concatenate(out_labels), np.concatenate(out_conf)

    server_side = ("SELECT count(*), sum(confidence)"
                   " FROM classify_regimes(%s, %s, %s, 'bench-4')")
    fetched = ("SELECT as_of_date, label, confidence"
               " FROM classify_regimes(%s, %s, %s, 'bench-4')")
    labels_side = ("SELECT count(*), sum(confidence)"
                   " FROM classify_regime_labels(%s, %s, %s, 'bench-4')")
    labels_fetched = ("SELECT as_of_date, label, confidence"
                      " FROM classify_regime_labels(%s, %s, %s, 'bench-4')")
    with (server.connect("bench_big") as sql_conn, server.connect("bench_big") as plain_conn,
          server.connect("bench_big") as cli):
        # numpy produces labels and confidences in the client; the SQL functions
        # are measured consumed in the server (every row produced, then counted)
        # and fetched to Python as the same (date, label, confidence).
        # classify_regimes builds a jsonb of distances for every row as well;
        # classify_regime_labels gives the same rows without it.
        stats = paired({
            "classify_regimes": lambda: sql_conn.execute(server_side, big.window).fetchall(),
            "classify_regimes_fetched": lambda: sql_conn.execute(fetched, big.window).fetchall(),
            "classify_regime_labels": lambda: sql_conn.execute(
                labels_side, big.window).fetchall(),
            "classify_regime_labels_fetched": lambda: sql_conn.execute(
                labels_fetched, big.window).fetchall(),
            "plain_sql": lambda: plain_conn.execute(plain, params).fetchall(),
            "numpy": lambda: numpy_classify(cli),
        }, repeats=cfg.heavy_rounds, warmup=0)
        sql_rows = sql_conn.execute(
            "SELECT raw_label FROM classify_regimes(%s, %s, %s, 'bench-4')"
            " ORDER BY as_of_date", big.window).fetchall()
        np_labels, _ = numpy_classify(cli)
    agree = float(np.mean([labels[i] == r[0] for i, r in zip(np_labels, sql_rows,
                                                               strict=True)]))
    rows_per_s = {k: big.rows / v["median"] for k, v in stats.items()}
    return {
        "rows": big.rows,
        "prototypes": labels,
        "save_set_s": took,
        "measured": {
            "classify_regimes": server_side,
            "classify_regimes_fetched": fetched,
            "classify_regime_labels": labels_side,
            "classify_regime_labels_fetched": labels_fetched,
            "plain_sql": "nearest label and confidence with <->, fetched",
            "numpy": "BYTEA fetched with a server-side cursor, labels and confidences in numpy",
        },
        "rows_per_s": rows_per_s,
        "us_per_row": {k: per_row(v, big.rows) for k, v in stats.items()},
        "speedup_classify_regimes": ratio(stats["numpy"], stats["classify_regimes"]),
        "speedup_classify_regimes_fetched": ratio(stats["numpy"],
                                                  stats["classify_regimes_fetched"]),
        "speedup_classify_regime_labels": ratio(stats["numpy"], stats["classify_regime_labels"]),
        "speedup_classify_regime_labels_fetched": ratio(
            stats["numpy"], stats["classify_regime_labels_fetched"]),
        "speedup_plain_sql": ratio(stats["numpy"], stats["plain_sql"]),
        "labels_agree_with_numpy": agree,
        "goal": 10.0,
        "samples_s": {k: v["samples"] for k, v in stats.items()},
    }


# --------------------------------------------------------------------------- B5


def run_b5(server: BenchServer, cfg: Config) -> dict[str, Any]:
    """All sizes loaded first, then measured in the same interleaved rounds."""
    progress(f"B5: one-year window latency at table sizes {list(cfg.b5_sizes)}")
    server.migrated_database("bench_template")
    rng = np.random.default_rng(cfg.seed + 5)
    pool = data.embeddings(rng, 20_000, np.zeros(data.DIM, dtype="<f4"))
    first = dt.date(1995, 1, 2).toordinal()
    window = ("R07", dt.date(1995, 1, 1), dt.date(1995, 12, 31))
    tables: dict[int, dict[str, Any]] = {}
    for size in cfg.b5_sizes:
        name = f"bench_b5_{size}"
        server.create_database(name, template="bench_template")
        per_region = size // 20

        def batches(per_region: int = per_region
                    ) -> Iterator[tuple[str, npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
            days = data.business_days(first, per_region)
            for r in range(20):
                for start in range(0, per_region, 100_000):
                    part = days[start:start + 100_000]
                    idx = (np.arange(len(part)) * 7 + r * 1_001 + start) % len(pool)
                    yield f"R{r:02d}", part, pool[idx]

        with server.connect(name) as conn:
            took, loaded = timed(partial(data.copy_batch_converted, conn, batches()))
            check = data.verify_conversion(conn)
            conn.execute("VACUUM ANALYZE regimes")
            size_mb = cast("tuple[Decimal] | None", conn.execute(
                "SELECT pg_total_relation_size('regimes') / 1048576.0").fetchone())
        assert size_mb is not None
        tables[size] = {"name": name, "rows": loaded, "mb": float(size_mb[0]), "check": check}
        progress(f"B5: {loaded:,} rows loaded in {took:.0f} s")
    progress(f"B5: measuring all sizes in {cfg.b5_rounds} interleaved rounds")
    conns: list[Connection] = []
    try:
        fns: dict[str, Callable[[], Any]] = {}
        for size, table in tables.items():
            srv, cli = server.connect(table["name"]), server.connect(table["name"])
            conns += [srv, cli]
            fns[f"server_{size}"] = partial(server_center, srv, window)
            fns[f"client_{size}"] = partial(client_mean, cli, window)
        stats = paired(fns, repeats=cfg.b5_rounds, warmup=5)
        results = []
        for size, table in tables.items():
            srv = conns[2 * list(tables).index(size)]
            nodes, _ = explain(srv, function_statements(srv)["buckets"],
                               (*window, 0, (window[2] - window[1]).days // 15))
            n_dates = cast("tuple[int] | None", srv.execute(
                "SELECT n_dates FROM compute_regime_prototype(%s, %s, %s)", window).fetchone())
            assert n_dates is not None
            plan = plan_summary(nodes)
            server_s, client_s = stats[f"server_{size}"], stats[f"client_{size}"]
            results.append({
                "table_rows": table["rows"],
                "table_mb": table["mb"],
                "window_rows": int(n_dates[0]),
                "server_ms": {k: v * 1e3 for k, v in server_s.items() if k != "samples"},
                "client_ms": {k: v * 1e3 for k, v in client_s.items() if k != "samples"},
                "speedup": ratio(client_s, server_s),
                "centroid_buffers": plan["shared_hit"] + plan["shared_read"],
                "verified_sample": table["check"],
                "samples_s": {"server": server_s["samples"], "client": client_s["samples"]},
            })
    finally:
        for conn in conns:
            conn.close()
    for table in tables.values():
        server.create_database(table["name"])  # empty it again: the disk is shared
    medians = [r["server_ms"]["median"] for r in results]
    return {
        "window": "region R07, 1995 (260 business days); 20 regions per table",
        "sizes": results,
        "largest_over_smallest_median": medians[-1] / medians[0],
        "max_over_min_median": max(medians) / min(medians),
        "vectors": "a pool of 20,000 random vectors, cycled (values do not change the cost)",
    }


# --------------------------------------------------------------------------- B6


def toast_blocks(conn: Connection) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = cast("tuple[int] | None", conn.execute(
        "SELECT coalesce(toast_blks_read, 0) + coalesce(toast_blks_hit, 0)"
        "  FROM pg_statio_user_tables WHERE relname = 'regimes'").fetchone())
    assert row is not None
    return int(row[0])


def run_b6(server: BenchServer, cfg: Config) -> dict[str, Any]:
    progress("B6: buffers per window row on the centroid path, TOAST reads")
    year = 2024 - cfg.b1_years // 2
    window = (f"R{7 % cfg.b1_regions:02d}", dt.date(year, 1, 1), dt.date(year, 12, 31))
    calls = 20
    with server.connect("bench_b1") as conn:
        statements = function_statements(conn)
        center = server_center(conn, window)
        n_buckets = (window[2] - window[1]).days // 15 + 1
        bucket_nodes, bucket_text = explain(conn, statements["buckets"],
                                            (*window, 0, n_buckets - 1))
        disp_nodes, disp_text = explain(conn, statements["dispersion"], (*window, center))
        pages = cast("tuple[int, int] | None", conn.execute(
            "SELECT count(*), count(DISTINCT (ctid::text::point)[0])"
            "  FROM regimes WHERE region = %s AND as_of_date BETWEEN %s AND %s",
            window).fetchone())
        before = toast_blocks(conn)
        for _ in range(calls):
            server_center(conn, window)
        after_server = toast_blocks(conn)
        for _ in range(calls):
            client_mean(conn, window)
        after_client = toast_blocks(conn)
    assert pages is not None
    rows, heap_pages = int(pages[0]), int(pages[1])
    bucket = plan_summary(bucket_nodes)
    disp = plan_summary(disp_nodes)
    return {
        "window": f"{window[0]} {year}",
        "window_rows": rows,
        "heap_pages_of_window": heap_pages,
        "centroid_buffers": bucket["shared_hit"] + bucket["shared_read"],
        "centroid_buffers_per_row": (bucket["shared_hit"] + bucket["shared_read"]) / rows,
        "dispersion_buffers": disp["shared_hit"] + disp["shared_read"],
        "dispersion_buffers_per_row": (disp["shared_hit"] + disp["shared_read"]) / rows,
        "toast_blocks_per_server_call": (after_server - before) / calls,
        "toast_blocks_per_client_call": (after_client - after_server) / calls,
        "plans": {"centroid": bucket_text, "dispersion": disp_text},
    }


def finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities as None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        return finite(value.item())
    return value
