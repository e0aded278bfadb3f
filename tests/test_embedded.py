"""Tests of regime_pg.embedded against real embedded servers in temporary directories.

Every server lives under pytest's ``tmp_path`` and is stopped at the end of its test;
the user's default data directory is never touched (``REGIME_PG_DATA_DIR`` points into
``tmp_path`` for every test, in case a call forgets its ``data_dir``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from regime_pg import embedded
from regime_pg.errors import ConnectionFailedError, EmbeddedServerError, InvalidInputError

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 60.0  # generous upper bound for waits; never asserted as a duration


@pytest.fixture(autouse=True)
def _guard_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(tmp_path / "default-dir-guard"))
    monkeypatch.delenv("REGIME_PG_EMBEDDED_MAJOR", raising=False)


def _shut_down(path: Path) -> None:
    """Stop the server of ``path`` whatever state it is in (test teardown)."""
    try:
        embedded.stop(path)
    except EmbeddedServerError:
        pid = embedded.status(path).pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    # nested on purpose: start() must create the missing parent directories; the space
    # is macOS's "Application Support", which pg_ctl only survives with quoting
    path = tmp_path / "Application Support" / "pgdata"
    try:
        yield path
    finally:
        _shut_down(path)


@pytest.fixture(scope="module")
def shared_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the tests that only need some server (major 18)."""
    path = tmp_path_factory.mktemp("shared") / "pgdata"
    try:
        yield embedded.start(path, 18)
    finally:
        _shut_down(path)


def _wait_until_stopped(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while embedded.status(path).running:
        if time.monotonic() > deadline:
            pytest.fail(f"server in {path} still running after SIGKILL")
        time.sleep(0.01)


def _postmasters(path: Path) -> list[int]:
    """Pids of postgres postmasters started with ``-D <path>``."""
    target = str(path.resolve())
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmdline:
            index = cmdline.index("-D")
            if index + 1 < len(cmdline) and cmdline[index + 1] == target:
                found.append(proc.pid)
    return found


@pytest.mark.parametrize("major", [16, 18])
def test_lifecycle(data_dir: Path, major: int) -> None:
    before = embedded.status(data_dir)
    assert not before.running
    assert (before.major, before.pid, before.url) == (None, None, None)

    uri = embedded.start(data_dir, major)
    st = embedded.status(data_dir)
    assert st.running
    assert st.data_dir == data_dir.resolve()
    assert st.major == major
    assert isinstance(st.pid, int)
    assert st.url == uri == embedded.url(data_dir)

    with psycopg.connect(uri, autocommit=True) as conn:
        server_major = conn.execute("SHOW server_version_num").fetchone()
        assert server_major is not None and int(server_major[0]) // 10000 == major
        conn.execute("CREATE EXTENSION vector")
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
        assert row == ("0.8.5",)
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    # idempotent: same server, same URL
    assert embedded.start(data_dir, major) == uri
    assert embedded.start(data_dir) == uri
    assert embedded.status(data_dir).pid == st.pid

    assert embedded.stop(data_dir) is True
    stopped = embedded.status(data_dir)
    assert not stopped.running
    assert (stopped.major, stopped.pid, stopped.url) == (major, None, None)
    with pytest.raises(EmbeddedServerError, match="not running; start it with"):
        embedded.url(data_dir)
    assert embedded.stop(data_dir) is False

    # data survives a restart
    uri2 = embedded.start(data_dir, major)
    with psycopg.connect(uri2) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
        vec = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone()
        assert vec == (1.0,)


def test_killed_server_restarts_cleanly(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = embedded.start(data_dir, 18)
    with psycopg.connect(uri) as conn:
        conn.execute("CREATE TABLE survivor (x int)")
        conn.execute("INSERT INTO survivor VALUES (7)")
    old_pid = embedded.status(data_dir).pid
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)
    _wait_until_stopped(data_dir)
    assert (data_dir / "postmaster.pid").exists()  # stale, left by the killed server

    with caplog.at_level(logging.WARNING, logger="regime_pg.embedded"):
        uri2 = embedded.start(data_dir, 18)
    assert "stale" in caplog.text
    st = embedded.status(data_dir)
    assert st.running and st.pid != old_pid
    with psycopg.connect(uri2) as conn:
        assert conn.execute("SELECT x FROM survivor").fetchall() == [(7,)]


_CONCURRENT_START = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from regime_pg import embedded
    data_dir, ready, go = (Path(arg) for arg in sys.argv[1:4])
    ready.touch()
    while not go.exists():
        time.sleep(0.002)
    print(embedded.start(data_dir, 18))
    """
)


def test_concurrent_start_from_two_processes(data_dir: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_START, str(data_dir), str(ready), str(go)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    try:
        deadline = time.monotonic() + WAIT_S
        while not all(ready.exists() for ready in readies):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("worker processes did not get ready")
            time.sleep(0.01)
        go.touch()  # release both at the same moment
        outputs = [p.communicate(timeout=WAIT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    urls = {out.strip() for out, _err in outputs}
    assert len(urls) == 1
    st = embedded.status(data_dir)
    assert st.running and st.url in urls
    assert _postmasters(data_dir) == [st.pid]
    with psycopg.connect(urls.pop()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_major_mismatch_raises(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = embedded.start(data_dir, 16)
    with pytest.raises(EmbeddedServerError, match="initialised by PostgreSQL 16, not 18"):
        embedded.start(data_dir, 18)
    monkeypatch.setenv("REGIME_PG_EMBEDDED_MAJOR", "18")
    with pytest.raises(EmbeddedServerError, match="initialised by PostgreSQL 16, not 18"):
        embedded.start(data_dir)
    monkeypatch.delenv("REGIME_PG_EMBEDDED_MAJOR")
    # no major requested: the initialised one is used
    assert embedded.start(data_dir) == uri
    assert embedded.status(data_dir).major == 16


def test_start_failure_reports_log_tail(data_dir: Path) -> None:
    embedded.start(data_dir, 18)
    assert embedded.stop(data_dir)
    conf = data_dir / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nshared_buffers = 'bogus'\n")
    with pytest.raises(EmbeddedServerError) as info:
        embedded.start(data_dir, 18)
    message = str(info.value)
    assert "\n" not in message
    assert "failed to start" in message
    assert "shared_buffers" in message  # from the server log
    assert str(data_dir.resolve() / "log") in message
    assert not embedded.status(data_dir).running


def test_non_cluster_directory_is_refused(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("not a cluster")
    with pytest.raises(EmbeddedServerError, match="holds no PostgreSQL cluster"):
        embedded.start(busy)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(EmbeddedServerError, match="not a directory"):
        embedded.start(a_file)
    with pytest.raises(EmbeddedServerError, match="cannot pass through /bin/sh"):
        embedded.start(tmp_path / "cost$" / "pgdata")
    assert not (tmp_path / "cost$").exists()


def test_not_running_and_missing_dirs(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    st = embedded.status(missing)
    assert st == embedded.EmbeddedStatus(
        running=False, data_dir=missing.resolve(), major=None, pid=None, url=None
    )
    assert embedded.stop(missing) is False
    with pytest.raises(EmbeddedServerError, match="regime-pg db start"):
        embedded.url(missing)
    assert not missing.exists()


def test_unsupported_majors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EmbeddedServerError, match="not shipped"):
        embedded.start(tmp_path / "pg", 17)
    with pytest.raises(EmbeddedServerError, match="not shipped"):
        embedded.psql_path(15)
    monkeypatch.setenv("REGIME_PG_EMBEDDED_MAJOR", "seventeen")
    with pytest.raises(EmbeddedServerError, match="REGIME_PG_EMBEDDED_MAJOR"):
        embedded.start(tmp_path / "pg")
    assert not (tmp_path / "pg").exists()


def test_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIME_PG_DATA_DIR", str(tmp_path / "custom"))
    assert embedded.default_data_dir() == tmp_path / "custom"
    assert embedded.default_data_dir(16) == tmp_path / "custom"
    monkeypatch.delenv("REGIME_PG_DATA_DIR")
    assert embedded.default_data_dir().parts[-2:] == ("regime-pg", f"pg{embedded.DEFAULT_MAJOR}")
    assert embedded.default_data_dir(16).parts[-2:] == ("regime-pg", "pg16")
    monkeypatch.setenv("REGIME_PG_EMBEDDED_MAJOR", "16")
    assert embedded.default_data_dir().name == "pg16"


@pytest.mark.parametrize("major", embedded.SUPPORTED_MAJORS)
def test_psql_path(major: int) -> None:
    path = embedded.psql_path(major)
    assert path.name == "psql" and path.is_file()
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True)
    assert f"(PostgreSQL) {major}." in version.stdout


def test_psql_connects_to_embedded_url(shared_url: str) -> None:
    result = subprocess.run(
        [str(embedded.psql_path(18)), shared_url, "-XAtc", "SELECT 40 + 2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "42"


def test_ensure_database(shared_url: str) -> None:
    name = 'regime "odd" db'
    db_url = embedded.ensure_database(shared_url, name)
    assert db_url.startswith("postgresql://")
    assert embedded.ensure_database(shared_url, name) == db_url  # idempotent
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (name,)
    # key=value conninfo in, key=value conninfo out
    kv = psycopg.conninfo.make_conninfo("", **psycopg.conninfo.conninfo_to_dict(shared_url))
    assert not kv.startswith("postgresql:")
    kv_db = embedded.ensure_database(kv, "regime_kv")
    assert psycopg.conninfo.conninfo_to_dict(kv_db)["dbname"] == "regime_kv"
    with psycopg.connect(kv_db) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("regime_kv",)


def test_ensure_database_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        embedded.ensure_database("postgresql://postgres@/postgres", "")
    with pytest.raises(InvalidInputError):
        embedded.ensure_database("postgresql://postgres@/postgres", "x" * 64)
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}&connect_timeout=2"
    with pytest.raises(ConnectionFailedError, match="cannot connect"):
        embedded.ensure_database(nowhere, "regime")
