"""The README's examples, run for real and compared with the output it shows.

A block is marked with ``<!-- readme-test: KIND -->``: for ``psql``,
``python`` and ``shell`` the next fenced block is run (psql through the real
``psql`` binary) and the fenced block after it is the expected output; for
``demo`` the marked block is the demo's table. ``.ci/run`` must run the two
quick-start commands exactly as the README writes them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from regime_pg import embedded, migrate
from regime_pg.connection import connect
from regime_pg.demo.pipeline import format_table, run_demo
from tests.conftest import Server, create_database, database_dsn, drop_database

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)


def marked_blocks(kind: str | None = None) -> list[tuple[str, str, str | None]]:
    """(kind, code, expected output) of the marked blocks, in README order."""
    found = []
    for marker in re.finditer(r"<!-- readme-test: (\w+) -->\n", README):
        if kind is not None and marker.group(1) != kind:
            continue
        first = FENCE.search(README, marker.end())
        assert first is not None and first.start() == marker.end(), "no block after a marker"
        second = FENCE.search(README, first.end())
        found.append((marker.group(1), first.group(1), None if second is None else second.group(1)))
    assert found, f"README has no {kind} example"
    return found


@pytest.fixture(scope="session")
def demo_dsn(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database holding the full demo data, as `regime-pg demo` leaves it."""
    name = create_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    migrate.upgrade(dsn)
    with connect(dsn) as conn:
        table = format_table(run_demo(conn, tmp_path_factory.mktemp("demo")))
    os.environ["REGIME_PG_README_DEMO_TABLE"] = table
    yield dsn
    drop_database(pg_server, name)


def test_demo_table(demo_dsn: str) -> None:
    ((_, expected, _),) = marked_blocks("demo")
    assert os.environ["REGIME_PG_README_DEMO_TABLE"] == expected


def test_walkthrough_in_readme_order(
    demo_dsn: str, pg_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every psql, Python and shell example, in order, prints what the README shows."""
    psql = str(pg_server.psql) if pg_server.psql else shutil.which("psql")
    if psql is None:
        pytest.fail("no psql binary: install the PostgreSQL client for the README's psql examples")
    monkeypatch.setenv("REGIME_PG_DSN", demo_dsn)
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for kind, code, expected in marked_blocks():
        if kind == "demo":
            continue
        if kind == "psql":
            output = _run([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", demo_dsn], code, env)
        elif kind == "shell":
            output = _run(["bash", "-euo", "pipefail", "-c", code], None, env)
        else:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
            output = out.getvalue()
        assert output == expected, f"README {kind} example:\n{code}"


def _run(argv: list[str], stdin: str | None, env: dict[str, str]) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ci_runs_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in FENCE.findall(quick_start) if "python3 -m venv" in block]
    assert len(commands) == 2
    for command in commands:
        assert command in ci.splitlines()


def test_embedded_psql_binary_exists() -> None:
    assert embedded.psql_path().is_file()
