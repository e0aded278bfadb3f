"""``python -m bench [--quick | --full] [--output bench/results.json]``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

from . import cases, report
from .server import EMBEDDED_SHARED_BUFFERS, bench_server, quarter_of_memory
from .timing import progress

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="regime-pg benchmark: server-side prototypes against the client path, "
                    "on its own embedded PostgreSQL in a temporary directory.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="small sizes (about 2 minutes): a smoke test")
    size.add_argument("--full", action="store_true",
                      help="adds a 10M-row table to B5 (about 40 GB of disk; 10 minutes here)")
    parser.add_argument("--output", type=Path, default=HERE / "results.json",
                        help="results file (default bench/results.json); results.md and "
                             "scaling.png are written next to it")
    parser.add_argument("--major", type=int, default=18, choices=(16, 18),
                        help="embedded PostgreSQL major (default 18)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory for the benchmark's server (default: a new "
                             "temporary directory, removed at the end)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the benchmark's server running at the end")
    parser.add_argument("--shared-buffers", default=quarter_of_memory(), metavar="SIZE",
                        help="shared_buffers for the benchmark's server (default: 25%% of "
                             "this machine's memory, %(default)s, the PostgreSQL "
                             "documentation's starting value for a dedicated server); "
                             f"'{EMBEDDED_SHARED_BUFFERS}' keeps the embedded server's "
                             "own 128MB")
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "full" if args.full else "default"
    cfg = cases.Config.for_mode(mode)
    output: Path = args.output
    started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    t0 = time.monotonic()
    progress(f"{mode} run; results to {output}")
    load_before = os.getloadavg()
    with bench_server(args.major, args.data_dir, args.keep, args.shared_buffers) as server:
        data_b1 = cases.load_b1(server, cfg)
        # stored bucket sums: enabled in a copy of bench_b1, and in bench_big itself,
        # so that the default path and the stored sums are measured in the same rounds
        sums_b1 = cases.enable_stored_sums(server, "bench_b1")
        b1 = cases.run_b1(server, cfg, sums_b1)
        lengths = cases.run_lengths(server, cfg)
        b6 = cases.run_b6(server, cfg)
        writes = cases.run_writes(server, cfg)
        server.drop_database(cases.stored_sums_database("bench_b1"))
        big, data_big = cases.load_big(server, cfg)
        sums_big = cases.enable_stored_sums(server, "bench_big", copy=False)
        b2 = cases.run_b2(server, cfg, big, sums_big)
        with server.connect("bench_big") as conn:
            conn.execute("SELECT regime_bucket_sums_disable()")
        b3 = cases.run_b3(server, cfg, big)
        break_even = cases.run_break_even(server, cfg, big)
        b4 = cases.run_b4(server, cfg, big)
        environment = server.environment("bench_big")
        server.create_database("bench_big")  # free the disk before B5's tables
        server.create_database("bench_b1")
        b5 = cases.run_b5(server, cfg)
    results = {
        "meta": {
            "mode": mode,
            "started": started,
            "finished": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "elapsed_s": time.monotonic() - t0,
            "environment": environment,
            "config": cfg.to_json(),
            "shared_buffers_option": args.shared_buffers,
        },
        "data": {"b1": data_b1, "big": data_big},
        "b1": b1, "lengths": lengths, "b2": b2, "b3": b3, "break_even": break_even,
        "b4": b4, "b5": b5, "b6": b6, "writes": writes,
    }
    report.write_json(results, output)
    (output.parent / "results.md").write_text(report.markdown(results), encoding="utf-8")
    report.plot(results, output.parent / "scaling.png")
    progress(f"wrote {output}, {output.parent / 'results.md'}, {output.parent / 'scaling.png'}")
    print((output.parent / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
