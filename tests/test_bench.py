"""The benchmark suite runs end to end (``regime-pg bench --quick``), on its own server.

A smoke test, not a measurement: it checks that every case ran and wrote
its files, and the figures that do not depend on the machine (accuracy
against numpy, the same bits with parallel workers, labels agreeing with
numpy, no TOAST read). Speed is never asserted: ``python -m bench`` is
where it is measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regime_pg.migrate import head_revision
from tests.cli_support import cli, isolated_cli  # noqa: F401  (the CLI's logging undone after)
from tests.conftest import _majors


def test_quick_benchmark_writes_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    output = tmp_path / "results.json"
    # the bench always runs on its own embedded server: the newest major tested
    major = str(max([m for m in _majors() if m in (16, 18)] or [18]))
    # a small shared_buffers: the restart that sets it runs, without taking
    # a quarter of the CI machine's memory
    result = cli(capsys, "bench", "--quick", "--output", output, "--major", major,
                 "--shared-buffers", "160MB")
    assert result.code == 0, result.err[-2000:]
    results = json.loads(output.read_text(encoding="utf-8"))
    assert {"b1", "b2", "b3", "b4", "b5", "b6"} <= results.keys()
    assert results["meta"]["mode"] == "quick"
    assert results["meta"]["environment"]["postgresql"]["shared_buffers"] == "160MB"
    assert results["meta"]["environment"]["regime_pg_revision"] == head_revision()
    # every path ran and was timed
    for key in ("speedup", "client_over_sum_floor"):
        assert results["b1"][key]["median"] > 0
    assert results["b1"]["hot"]["speedup"]["median"] > 0
    assert results["b2"]["speedup"]["median"] > 0
    # stored bucket sums: enabled in a copy of each database, measured in the same rounds
    for case in ("b1", "b2"):
        sums = results[case]["stored_sums"]
        assert sums["speedup"]["median"] > 0 and sums["enable_s"] > 0
        assert sums["buckets"] > 0 and sums["groups"] > 0
        assert sums["center_error_vs_bound"] <= 1.0
        assert sums["warnings"] == 0
    # window lengths up to 12 years (past 4096 days): daily rows, under 50,000, no worker
    lengths = results["lengths"]["lengths"]
    assert [w["years"] for w in lengths] == [1, 2, 5, 11, 12]
    assert all(w["speedup"]["median"] > 0 and w["speedup_sums"]["median"] > 0 for w in lengths)
    assert all(w["workers_per_call"] in (None, 0) for w in lengths)
    assert results["lengths"]["warnings"] == 0
    assert [b["rows"] for b in results["break_even"]["sizes"]] == [5_000, 10_000]
    assert all(b["serial_over_parallel"]["median"] > 0 for b in results["break_even"]["sizes"])
    for write in ("insert", "copy"):
        assert results["writes"][write]["enabled_over_disabled"]["median"] > 0
    assert all(v["median"] > 0 for v in results["b4"]["us_per_row"].values())
    assert len(results["b5"]["sizes"]) == 3
    # what does not depend on the machine
    assert results["b1"]["center_error_vs_bound"] <= 1.0
    assert results["b3"]["error_vs_bound"]["two_level"] <= 1.0
    assert results["b3"]["error_vs_bound"]["sum"] > results["b3"]["error_vs_bound"]["two_level"]
    assert results["b3"]["same_bits_serial_and_parallel"] is True
    assert results["b4"]["labels_agree_with_numpy"] >= 0.999
    assert results["b6"]["toast_blocks_per_server_call"] == 0
    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert markdown.startswith("# regime-pg benchmark (quick run")
    assert "| B4, the same rows without the distances |" in markdown
    assert "| B2, server with stored sums" in markdown
    assert "## Window length (the B1 table)" in markdown
    assert "| Writes with stored sums: one trading day x 20 regions" in markdown
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| benchmark | regime-pg | baseline |" in result.out
