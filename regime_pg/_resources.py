"""Where the SQL sources and Alembic migrations live, in a checkout or a wheel.

In a source checkout they are ``sql/`` and ``migrations/`` at the top of the
repository; a wheel carries them inside the package as ``_sql`` and
``_migrations``.

SQL files are released once and never edited: ``sql/SHA256SUMS`` pins each
one, and :func:`read_sql` refuses a file whose bytes changed, so replaying an
old migration always creates the same objects.  A change to a family of
objects is a new file (``prototypes--2.sql``) loaded by a new migration.

>>> read_sql("regimes--1.sql").startswith("-- The Regime Engine")
True
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = _PACKAGE_DIR.parent


class ResourceError(RuntimeError):
    """A packaged SQL file is missing or differs from the one released."""


def _locate(checkout_name: str, packaged_name: str) -> Path:
    for candidate in (_PACKAGE_DIR / packaged_name, _CHECKOUT_DIR / checkout_name):
        if candidate.is_dir():
            return candidate
    raise ResourceError(f"regime-pg is installed without its {checkout_name}/ directory")


def sql_dir() -> Path:
    """The directory holding the released SQL files."""
    return _locate("sql", "_sql")


def migrations_dir() -> Path:
    """The Alembic script directory (``env.py`` and ``versions/``)."""
    return _locate("migrations", "_migrations")


@cache
def _released_checksums() -> dict[str, str]:
    manifest = sql_dir() / "SHA256SUMS"
    sums: dict[str, str] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def read_sql(name: str) -> str:
    """The text of released SQL file ``name``, checked against SHA256SUMS."""
    path = sql_dir() / name
    data = path.read_bytes()
    expected = _released_checksums().get(name)
    actual = hashlib.sha256(data).hexdigest()
    if expected is None:
        raise ResourceError(f"{name} is not listed in sql/SHA256SUMS")
    if actual != expected:
        raise ResourceError(
            f"{name} differs from the released file (sha256 {actual[:12]}, expected "
            f"{expected[:12]}); released SQL is never edited: add a new version instead"
        )
    return data.decode("utf-8")
