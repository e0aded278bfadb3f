"""Files written whole or not at all, through symbolic links; the error that names them.

Every file regime-pg writes (documents, the demo's documents, CSVs, plots)
goes through :func:`write_files_atomically`: each file is written to a
temporary file next to the file its path resolves to and fsynced, and only
when every one is written are they renamed into place.  A symbolic link is
written through and kept.

>>> write_atomically(Path("current.json"), doc.dumps())  # doctest: +SKIP
>>> cannot_write(Path("out.json"), IsADirectoryError(errno.EISDIR, "Is a directory"))
RegimePgError('cannot write out.json: Is a directory')
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from regime_pg.errors import RegimePgError


def write_atomically(path: Path, text: str | bytes) -> None:
    """Replace the file at ``path`` with ``text`` (UTF-8) or bytes, via a temporary file.

    A symbolic link (or chain of links) is written through: the file it
    resolves to is replaced, by a temporary file in that file's directory, and
    the link is kept.  A dangling link gets its target created, as
    ``open(path, "w")`` would; a symlink loop raises ``OSError`` (ELOOP).

    >>> write_atomically(Path("current.json"), doc.dumps())  # doctest: +SKIP
    """
    write_files_atomically([(path, text)])


def write_files_atomically(files: Sequence[tuple[Path, str | bytes]]) -> None:
    """Write every ``(path, text or bytes)``, each as ``write_atomically`` does, all or none.

    Every file is written whole to its temporary file first; only then are
    they renamed into place, in order, so a full disk, a missing permission
    or a directory in a file's place replaces no file.  (Only the renames
    remain, which fail only when the filesystem itself does.)  An ``OSError``
    carries the caller's path as ``filename``, never a temporary file's.

    >>> write_files_atomically([(Path("a.json"), "{}\\n"), (Path("b.png"), b"...")])
    ... # doctest: +SKIP
    """
    staged: list[tuple[Path, str, Path]] = []  # (path, temporary file, target) to rename
    current: Path | None = None
    try:
        for current, text in files:
            target = _target(current)
            staged.append((current, _stage(target, text), target))
        while staged:
            current, temporary, target = staged[0]
            os.replace(temporary, target)
            del staged[0]
    except OSError as exc:
        # name the caller's path, not the temporary file or the link's target
        exc.filename, exc.filename2 = str(current), None
        raise
    finally:
        for _, temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)


def cannot_write(path: Path | str, exc: OSError) -> RegimePgError:
    """The error for a file that could not be written: the user's path and the reason."""
    return RegimePgError(f"cannot write {path}: {exc.strerror or exc}")


def _target(path: Path) -> Path:
    """The file ``path`` resolves to; refused early when it is a directory or a loop."""
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops where links loop
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    return target


def _stage(target: Path, text: str | bytes) -> str:
    """Write ``text`` to a new temporary file beside ``target``, fsynced; its name."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _file_mode(target))  # mkstemp's 0600 would hide the file from others
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return name


def _file_mode(path: Path) -> int:
    """The mode to write ``path`` with: the old file's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
