"""results.json, results.md and scaling.png from one run's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cases import finite
from .server import EMBEDDED_SHARED_BUFFERS, quarter_of_memory


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(results), indent=2, sort_keys=False) + "\n",
                    encoding="utf-8")


def _x(r: dict[str, Any]) -> str:
    """A ratio as 'median x (round range min..max)'."""
    return f"{r['median']:.1f}x ({r['round_min']:.1f}..{r['round_max']:.1f})"


def _us(d: dict[str, float]) -> str:
    return f"{d['median']:.2f} ({d['min']:.2f}..{d['max']:.2f})"


def _ms(d: dict[str, float]) -> str:
    return f"{d['median']:.3f} ({d['min']:.3f}..{d['max']:.3f})"


def _x2(r: dict[str, Any]) -> str:
    """A ratio near 1 as 'median x (round range min..max)', two decimals."""
    return f"{r['median']:.2f}x ({r['round_min']:.2f}..{r['round_max']:.2f})"


def _s(d: dict[str, float]) -> str:
    return f"{d['median']:.2f} ({d['min']:.2f}..{d['max']:.2f})"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _shared_buffers_note(meta: dict[str, Any]) -> str:
    """Where shared_buffers came from, for the header line."""
    option = meta.get("shared_buffers_option")
    if option in (None, EMBEDDED_SHARED_BUFFERS):
        return " (the embedded server's default)"
    if option == quarter_of_memory():
        return " (25% of the machine's memory, the benchmark's default)"
    return " (--shared-buffers)"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    pg = meta["environment"]["postgresql"]
    b1, b2, b3, b4, b5, b6 = (results[k] for k in ("b1", "b2", "b3", "b4", "b5", "b6"))
    s1, s2, writes = b1["stored_sums"], b2["stored_sums"], results["writes"]
    two = b3["us_per_row_one_core"]["two_level"]
    lines = [
        f"# regime-pg benchmark ({meta['mode']} run, {meta['started']})",
        "",
        f"PostgreSQL {pg['server_version']} (embedded, its own data directory), pgvector "
        f"{meta['environment']['pgvector']}, regime-pg revision "
        f"{meta['environment']['regime_pg_revision']}; {meta['environment']['cpus']} CPUs, "
        f"load average {meta['load_before'][0]:.1f} before and "
        f"{meta['load_after'][0]:.1f} after the run (a shared machine); shared_buffers "
        f"{pg['shared_buffers']}{_shared_buffers_note(meta)}, work_mem {pg['work_mem']}, "
        f"max_parallel_workers_per_gather {pg['max_parallel_workers_per_gather']}.",
        "",
        "Every ratio is measured in the same run as its baseline, in interleaved rounds; "
        "figures are medians, with (min..max) over the rounds.",
        "",
        "| benchmark | regime-pg | baseline | result | goal | |",
        "| --- | --- | --- | --- | --- | --- |",
        "| B1 latency, one-year window | "
        f"`compute_regime_prototype` {_ms(b1['server_ms'])} ms | client path "
        f"{_ms(b1['client_ms'])} ms | {_x(b1['speedup'])} | >= 5x | "
        f"{_met(b1['speedup']['median'] >= 5)} (a new window each round) |",
        "| B1 floor: one float32 `sum(vector)` over the window, nothing else | "
        f"{_ms(b1['sum_floor_ms'])} ms | client path | {_x(b1['client_over_sum_floor'])} | | |",
        "| B1, the same window every round (hot) | "
        f"{_ms(b1['hot']['server_ms'])} ms | client path {_ms(b1['hot']['client_ms'])} ms | "
        f"{_x(b1['hot']['speedup'])} | >= 5x | {_met(b1['hot']['speedup']['median'] >= 5)} |",
        "| B1 with stored sums (`regime_bucket_sums_enable()` in a copy of the B1 database) | "
        f"{_ms(s1['server_ms'])} ms; hot {_ms(s1['hot_server_ms'])} ms | client path | "
        f"{_x(s1['speedup'])}; hot {_x(s1['hot_speedup'])}; default server / stored sums "
        f"{_x2(s1['default_over_stored_sums'])} | >= 5x | {_met(s1['speedup']['median'] >= 5)}"
        f" (a new window each round), {_met(s1['hot_speedup']['median'] >= 5)} (hot) |",
        f"| B2 throughput, {b2['rows']:,}-row window | server "
        f"{_us(b2['us_per_row']['server'])} us/row | client "
        f"{_us(b2['us_per_row']['client'])} us/row | {_x(b2['speedup'])} | >= 15x | "
        f"{_met(b2['speedup']['median'] >= 15)} |",
        "| B2, server with stored sums (enabled in the database, "
        f"in {s2['enable_s']:.1f} s) | {_us(b2['us_per_row']['server_sums'])} us/row | "
        f"client {_us(b2['us_per_row']['client'])} us/row | {_x(s2['speedup'])}; default "
        f"server / stored sums {_x2(s2['default_over_stored_sums'])} | >= 15x | "
        f"{_met(s2['speedup']['median'] >= 15)} |",
        f"| B2 on one core | server {_us(b2['us_per_row']['server_one_core'])} us/row | "
        f"scan floor: count(*) {_us(b2['us_per_row']['count_star'])}, heap scan "
        f"{_us(b2['us_per_row']['count_vector'])} us/row | "
        f"{b2['server_one_core_vs_heap_scan']['median']:.1f}x the heap scan | | |",
        f"| B3 centroid, one core | two-level {_us(two)} us/row, error "
        f"{b3['error_vs_bound']['two_level']:.3f} of the bound | avg(vector) "
        f"{_us(b3['us_per_row_one_core']['avg'])} us/row (error "
        f"{b3['error_vs_bound']['avg']:.3f}); sum(vector) "
        f"{_us(b3['us_per_row_one_core']['sum'])} us/row (error "
        f"{b3['error_vs_bound']['sum']:.1f}) | {_x(b3['avg_vs_two_level'])} faster than avg | "
        f"<= 1 us/row, error <= 1 | {_met(two['median'] <= 1.0)} (time), "
        f"{_met(b3['error_vs_bound']['two_level'] <= 1.0)} (error) |",
        f"| B4 classification, {b4['rows']:,} rows x 4 prototypes | `classify_regimes` "
        f"{b4['rows_per_s']['classify_regimes']:,.0f} rows/s in the server, "
        f"{b4['rows_per_s']['classify_regimes_fetched']:,.0f} rows/s fetched as (date, label, "
        f"confidence) | numpy client {b4['rows_per_s']['numpy']:,.0f} rows/s | "
        f"{_x(b4['speedup_classify_regimes'])} (server), "
        f"{_x(b4['speedup_classify_regimes_fetched'])} (fetched) | >= 10x | "
        f"{_met(b4['speedup_classify_regimes']['median'] >= 10)} (server), "
        f"{_met(b4['speedup_classify_regimes_fetched']['median'] >= 10)} (fetched) |",
        "| B4, the same rows without the distances | `classify_regime_labels` "
        f"{b4['rows_per_s']['classify_regime_labels']:,.0f} rows/s in the server, "
        f"{b4['rows_per_s']['classify_regime_labels_fetched']:,.0f} rows/s fetched; plain "
        f"`<->` SQL {b4['rows_per_s']['plain_sql']:,.0f} rows/s fetched | numpy client | "
        f"{_x(b4['speedup_classify_regime_labels'])} (server), "
        f"{_x(b4['speedup_classify_regime_labels_fetched'])} (fetched), "
        f"{_x(b4['speedup_plain_sql'])} (plain SQL) | >= 10x | "
        f"{_met(b4['speedup_classify_regime_labels']['median'] >= 10)} (server), "
        f"{_met(b4['speedup_classify_regime_labels_fetched']['median'] >= 10)} (fetched) |",
        f"| B5 scaling, one-year window | median latency {b5['largest_over_smallest_median']:.2f}x"
        f" from {b5['sizes'][0]['table_rows']:,} to {b5['sizes'][-1]['table_rows']:,} rows "
        f"(slowest/fastest size {b5['max_over_min_median']:.2f}x) | | see below | flat | "
        f"{_met(b5['max_over_min_median'] < 1.5)} |",
        f"| B6 storage, one-year window | {b6['centroid_buffers_per_row']:.2f} buffers/row "
        f"(centroid), {b6['dispersion_buffers_per_row']:.2f} (dispersion), TOAST blocks per "
        f"call {b6['toast_blocks_per_server_call']:.1f} | client path: "
        f"{b6['toast_blocks_per_client_call']:.0f} TOAST blocks per call | | no TOAST | "
        f"{_met(b6['toast_blocks_per_server_call'] == 0)} |",
        "| Writes with stored sums: one trading day x 20 regions, one INSERT (sync trigger on) | "
        f"enabled {_ms(writes['insert']['enabled_ms'])} ms | disabled "
        f"{_ms(writes['insert']['disabled_ms'])} ms | "
        f"{_x2(writes['insert']['enabled_over_disabled'])} the disabled time | | |",
        f"| Writes with stored sums: COPY of {writes['copy']['rows']:,} rows (batch-converted) | "
        f"enabled {_s(writes['copy']['enabled_s'])} s | disabled "
        f"{_s(writes['copy']['disabled_s'])} s | "
        f"{_x2(writes['copy']['enabled_over_disabled'])} the disabled time | | |",
        "",
        "## Stored bucket sums",
        "",
        "`regime_bucket_sums_enable()` runs in a file copy of the B1 database "
        "(`CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`), the original staying on "
        "the default path, and in the B2 database itself (two copies of its 3.6 GB would "
        "not share the buffer cache): there the default path is measured by calling the "
        "function `compute_regime_prototype` runs for that window while the sums are off "
        "(`regime_prototype_compute_custom_plans`). The sums tables are vacuumed and "
        "analysed; both paths are measured in the same interleaved rounds against the same "
        "client baseline. \"default server / stored sums\" above 1 means the stored sums "
        "are faster.",
        "",
        "| database | regimes MB | enable s | buckets | groups | sums MB (buckets + groups) | "
        "centre error / bound | stale-sums WARNINGs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, st in (("B1", s1), ("B2", s2)):
        lines.append(
            f"| {label} ({st['database']}) | {st['regimes_mb']:,.0f} | {st['enable_s']:.2f} | "
            f"{st['buckets']:,} | {st['groups']:,} | {st['bucket_sums_mb']:.2f} + "
            f"{st['group_sums_mb']:.2f} | {st['center_error_vs_bound']:.3f} | "
            f"{st['warnings']} |")
    lines += [
        "",
        f"The triggers' cost on the engine's writes, in bench_b1 and its copy with stored sums "
        f"(the same rows written to both, interleaved): {writes['insert']['statement']}, "
        f"{writes['insert']['disabled_ms']['n']} rounds; {writes['copy']['statement']}, "
        f"{writes['copy']['disabled_s']['n']} rounds. Stale-sums WARNINGs: "
        f"{writes['warnings']}.",
        "",
        "## Window length (the B1 table)",
        "",
        "Calendar windows of 1 to 29 years, a region and start year each round "
        f"({results['lengths']['rounds']} rounds a length). From 4096 days (about 11.2 years) "
        "on, the default path cuts a window in 8 parts, with parallel workers when it has "
        "`regime_pg.parallel_min_rows` rows (default 50,000): daily windows of 12 to 29 "
        "years have 3,000 to 7,600, and run in the calling backend.",
        "",
        "| years | rows | default ms | workers per call | stored sums ms | client ms | "
        "speedup | speedup, stored sums |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {w['years']} | {w['rows']:,} | {_ms(w['server_ms'])} | "
          f"{'n/a' if w['workers_per_call'] is None else format(w['workers_per_call'], '.1f')}"
          f" | {_ms(w['server_sums_ms'])} | {_ms(w['client_ms'])} | {_x(w['speedup'])} | "
          f"{_x(w['speedup_sums'])} |" for w in results["lengths"]["lengths"]),
        "",
        "## Parallel workers: where they pay (the big table)",
        "",
        "Windows of one row a calendar day (so all of 4096 days or more), with workers "
        "(`regime_pg.parallel_min_rows = 0`) and without "
        "(`max_parallel_workers_per_gather = 0`), in the same rounds "
        f"({results['break_even']['rounds']} a size). Above 1, the workers make the call "
        "faster; the setting's default is 50,000 rows.",
        "",
        "| window rows | with workers ms | without ms | without / with |",
        "| --- | --- | --- | --- |",
        *(f"| {b['rows']:,} | {_ms(b['parallel_ms'])} | {_ms(b['serial_ms'])} | "
          f"{_x2(b['serial_over_parallel'])} |" for b in results["break_even"]["sizes"]),
        "",
        "## B5: latency against table size",
        "",
        "| table rows | table MB | window rows | server ms | client ms | speedup | "
        "centroid buffers |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in b5["sizes"]:
        lines.append(
            f"| {s['table_rows']:,} | {s['table_mb']:,.0f} | {s['window_rows']} | "
            f"{_ms(s['server_ms'])} | {_ms(s['client_ms'])} | {_x(s['speedup'])} | "
            f"{s['centroid_buffers']} |")
    plans = b3["plans"]
    lines += [
        "",
        "![B5 scaling](scaling.png)",
        "",
        "## B3: plans of the long window",
        "",
        f"Centre bits equal serially and with parallel workers: "
        f"{b3['same_bits_serial_and_parallel']}.",
        "",
    ]
    for key in ("parts_parallel", "dispersion_parallel", "parts_one_core", "buckets_one_part"):
        p = plans[key]
        lines += [
            f"`{key}`: workers planned {p['workers_planned']}, launched "
            f"{p['workers_launched']}, parallel append {p['parallel_append']}, partial "
            f"aggregate {p['partial_aggregate']}, {p['execution_ms']:.0f} ms",
            "",
            "```text",
            p["text"],
            "```",
            "",
        ]
    lines += [
        "## Data",
        "",
        f"- B1: {results['data']['b1']['rows']:,} rows ({b1['window']}), "
        f"{results['data']['b1']['path']} "
        f"({results['data']['b1']['trigger_ms_per_row']:.2f} ms/row).",
        f"- B2-B4: {results['data']['big']['rows']:,} rows in one region, one per calendar "
        f"day, {results['data']['big']['path']}; a sample of "
        f"{results['data']['big']['verified_sample']['checked']} rows equals the trigger's "
        "conversion bit for bit.",
        f"- B5: {b5['window']}; {b5['vectors']}.",
        f"- B2 client path: {b2['client_path']}.",
        "",
        f"Reproduce: `python -m bench` (this run: {meta['elapsed_s'] / 60:.1f} minutes in "
        f"{meta['mode']} mode; `--quick` takes under a minute here), `python -m bench --full` "
        "(adds a 10M-row table to B5: about 40 GB of disk, 10 minutes on 2 cores).",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """B5: one-year-window latency against table size, server and client paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["b5"]["sizes"]
    x = [s["table_rows"] for s in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, label, marker in (("server_ms", "compute_regime_prototype (server)", "o"),
                               ("client_ms", "client path (BYTEA + numpy)", "s")):
        med = [s[key]["median"] for s in sizes]
        low = [m - s[key]["min"] for m, s in zip(med, sizes, strict=True)]
        high = [s[key]["max"] - m for m, s in zip(med, sizes, strict=True)]
        ax.errorbar(x, med, yerr=[low, high], marker=marker, capsize=4, label=label)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("rows in regimes (20 regions)")
    ax.set_ylabel("one-year window latency, ms (median, min..max)")
    ax.set_title("B5: latency follows the window, not the table")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
