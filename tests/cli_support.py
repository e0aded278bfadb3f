"""Running the ``regime-pg`` CLI in-process from tests, shared by the CLI test modules."""

from __future__ import annotations

import logging
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
