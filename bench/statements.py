"""The statements the prototype functions run, read from the installed functions.

PL/pgSQL statements do not show in EXPLAIN of the call; to show their plans,
the benchmark takes each statement from the function's own source (pg_proc),
drops its INTO clause, turns its variables into parameters, and EXPLAINs it
through PREPARE/EXECUTE with the same values the function would bind.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

import psycopg

from regime_pg.connection import Connection

_WINDOW = {"p_region": "$1", "p_start": "$2::date", "p_end": "$3::date"}


def _statement(source: str, pattern: str, into: str | None, names: dict[str, str]) -> str:
    found = re.search(pattern, source, re.S)
    if found is None:
        raise RuntimeError(f"statement {pattern[:40]!r} not found: the function changed shape")
    text = found.group(0) if into is None else re.sub(into, "", found.group(0), flags=re.S)
    for name, value in names.items():
        text = re.sub(rf"\b{re.escape(name)}\b", value, text)
    return text.rstrip().rstrip(";")


def function_statements(conn: Connection) -> dict[str, str]:
    """PREPARE texts: ``buckets`` (one part: $4, $5 first and last bucket), ``parts``
    (the 8-part UNION ALL of long windows: $4 the bounds), ``dispersion`` ($4 centre)."""
    sources = dict(
        cast("list[tuple[str, str]]", conn.execute(
            "SELECT proname, prosrc FROM pg_proc"
            " WHERE proname IN ('regime_window_parts', 'regime_window_distances',"
            "                   'regime_window_bucket_states')"
        ).fetchall())
    )
    if len(sources) != 3:
        raise RuntimeError("prototypes--3.sql is not installed: run regime-pg migrate")
    width = re.search(r"bucket_days\s+constant\s+integer\s*:=\s*(\d+);",
                      sources["regime_window_bucket_states"])
    assert width is not None
    return {
        "buckets": _statement(
            sources["regime_window_bucket_states"],
            r"SELECT coalesce\(sum\(b\.n_usable\).*?AS b;",
            r"\bINTO\b.*?\bdirty\b",
            {**_WINDOW, "p_first": "$4::integer", "p_last": "$5::integer",
             "bucket_days": width.group(1)},
        ),
        "parts": _statement(
            sources["regime_window_parts"],
            r"SELECT sum\(s\.n_usable\)::bigint, sum\(s\.n_skipped\).*?\) AS s;",
            None,
            {**_WINDOW, "p_bounds": "($4::integer[])"},
        ),
        "dispersion": _statement(
            sources["regime_window_distances"],
            # version 8's one-evaluation sum of units (version 5's statement inside it,
            # run only past the cap), or version 3's / version 5's statement
            r"SELECT (?:CASE\s+WHEN s\.units\b|coalesce\(\(?sum\().*?"
            r"\br\.embedding_vector <-> p_center\b.*?;",
            None,
            {**_WINDOW, "p_center": "$4::vector"},
        ),
    }


def bucket_bounds(start: Any, end: Any, parts: int = 8, width: int = 15) -> list[int]:
    """The part bounds regime_prototype_compute uses for a long window."""
    n_buckets = (end - start).days // width + 1
    return [i * n_buckets // parts for i in range(parts + 1)]


def explain(conn: Connection, text: str, params: tuple[object, ...],
            analyze: bool = True) -> tuple[list[dict[str, Any]], str]:
    """(plan nodes as JSON dicts, plan as text) of ``text`` run with ``params``."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn.execute(f"PREPARE {name} AS {text}")
    try:
        args = ", ".join(["%s"] * len(params))
        options = "ANALYZE, BUFFERS" if analyze else "COSTS"
        cur = psycopg.ClientCursor(conn)  # EXECUTE's arguments as typed literals
        row = cur.execute(f"EXPLAIN ({options}, FORMAT JSON) EXECUTE {name}({args})",
                          params).fetchone()
        lines = cur.execute(f"EXPLAIN ({options}) EXECUTE {name}({args})", params).fetchall()
    finally:
        conn.execute(f"DEALLOCATE {name}")
    assert row is not None
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(cast("list[dict[str, Any]]", row[0])[0]["Plan"])
    return nodes, "\n".join(str(line[0]) for line in lines)


def plan_summary(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """What the issue asks the plans to show: workers, partial aggregation, buffers."""
    # a Gather that never ran (in the dispersion's subquery for sums past the cap) is left out
    gathers = [n for n in nodes if n["Node Type"] in ("Gather", "Gather Merge")
               and n.get("Actual Loops", 1) > 0]
    top = nodes[0]
    return {
        "nodes": [n["Node Type"] + (f" ({n['Partial Mode']})" if n.get("Partial Mode")
                                    not in (None, "Simple") else "") for n in nodes],
        "workers_planned": sum(g.get("Workers Planned", 0) for g in gathers),
        "workers_launched": sum(g.get("Workers Launched", 0) for g in gathers),
        "parallel_append": any(n["Node Type"] == "Append" and n.get("Parallel Aware")
                               for n in nodes),
        "partial_aggregate": any(n.get("Partial Mode") == "Partial" for n in nodes),
        "shared_hit": top.get("Shared Hit Blocks", 0),
        "shared_read": top.get("Shared Read Blocks", 0),
        "execution_ms": top.get("Actual Total Time"),
    }
