"""Running the ``regime-pg`` CLI in-process from tests, shared by the CLI test modules."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regime_pg.cli import main


@dataclass(frozen=True)
class Result:
    """What one command did: exit status, stdout, stderr."""

    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    """Run ``regime-pg argv`` in-process; argparse's SystemExit becomes the exit code."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        code = exc.code
    out, err = capsys.readouterr()
    return Result(code, out, err)


def assert_one_error(result: Result, code: int, fragment: str) -> None:
    """Exit ``code``, nothing on stdout, one ``regime-pg: error:`` line holding ``fragment``."""
    assert result.code == code, result
    assert result.out == ""
    assert result.err.startswith("regime-pg: error: "), repr(result.err)
    assert result.err.endswith("\n") and result.err.count("\n") == 1, repr(result.err)
    assert fragment in result.err, repr(result.err)


def run_with_closed_stdout(
    *argv: str | Path, buffered: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``python -m regime_pg argv`` writing into a pipe nobody reads (``... | head -1``).

    The pipe's read end is closed before the command starts, so every write to
    stdout fails (EPIPE): deterministic, unlike a real ``head``.  ``buffered``
    False runs it as PYTHONUNBUFFERED=1 does.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "regime_pg", *(str(a) for a in argv)],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
            timeout=300,  # a hang guard only
        )
    finally:
        os.close(write_end)


@pytest.fixture(autouse=True)
def isolated_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No stray default server or DSN; the CLI's logging setup undone after each test."""
    guard = tmp_path / "default-embedded-dir-must-not-be-created"
    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(guard))
    monkeypatch.delenv("REGIME_PG_DSN", raising=False)
    logger = logging.getLogger("regime_pg")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield guard
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    assert not guard.exists(), "a command fell back to the default embedded server"
