"""The wheel built from this checkout carries the SQL files and the migrations.

pyproject.toml force-includes ``sql`` as ``regime_pg/_sql`` and ``migrations``
as ``regime_pg/_migrations``; ``regime_pg._resources`` looks for them there
when the package is installed from a wheel.  The wheel is built offline by
the build backend pyproject.toml names (hatchling, in the ``test`` extra), no
server and no network needed.

* The wheel holds every file of ``sql/`` and ``migrations/`` (and nothing
  else under ``_sql`` and ``_migrations``), byte-identical, plus ``py.typed``
  and the package's modules.
* Unpacked and imported, the package finds them there and not in a checkout:
  every released file passes its checksum, Alembic sees the same revisions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def source_files(directory: str) -> list[Path]:
    """The files of a directory of the checkout, without Python's byte-code caches."""
    return sorted(path for path in (ROOT / directory).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts
                  and path.suffix != ".pyc")


def in_wheel(path: Path) -> str:
    """Where a file of the checkout lands in the wheel."""
    relative = path.relative_to(ROOT)
    top = {"sql": "regime_pg/_sql", "migrations": "regime_pg/_migrations",
           "regime_pg": "regime_pg"}[relative.parts[0]]
    return "/".join((top, *relative.parts[1:]))


BUILD_WHEEL = (
    "import importlib, sys; print(importlib.import_module(sys.argv[1]).build_wheel(sys.argv[2]))"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the working tree by the backend pyproject.toml names."""
    backend = PYPROJECT["build-system"]["build-backend"]
    if importlib.util.find_spec(backend.split(".")[0]) is None:
        pytest.fail(f"build backend {backend} missing: pip install -e '.[test]' installs it")
    out = tmp_path_factory.mktemp("wheel")
    # The PEP 517 hook, as pip calls it: from the project's root, into out.
    built = subprocess.run(
        [sys.executable, "-c", BUILD_WHEEL, backend, str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    path = out / built.stdout.strip().splitlines()[-1]
    assert path.is_file() and path.suffix == ".whl"
    return path


def test_test_extra_holds_the_build_requirements() -> None:
    """pip install -e '.[test]' is enough to build the wheel without a network."""
    extra = {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    needed = {Requirement(r).name for r in PYPROJECT["build-system"]["requires"]}
    assert needed <= extra


def test_wheel_carries_sql_and_migrations_byte_identical(wheel: Path) -> None:
    """Every file of sql/ and migrations/ is in the wheel as it is in the checkout."""
    sql = source_files("sql")
    migrations = source_files("migrations")
    sums = (ROOT / "sql" / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    released = {line.split()[1].lstrip("*") for line in sums if line.strip()}
    assert {p.name for p in sql} == released | {"SHA256SUMS"}
    versions = sorted((ROOT / "migrations" / "versions").glob("*.py"))
    assert versions and set(versions) <= set(migrations)
    assert ROOT / "migrations" / "env.py" in migrations
    assert ROOT / "migrations" / "script.py.mako" in migrations
    package = [p for p in source_files("regime_pg") if p.suffix == ".py"]
    package.append(ROOT / "regime_pg" / "py.typed")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        resources = {name for name in names
                     if name.startswith(("regime_pg/_sql/", "regime_pg/_migrations/"))}
        assert resources == {in_wheel(p) for p in sql + migrations}
        for path in sql + migrations + package:
            assert archive.read(in_wheel(path)) == path.read_bytes(), path
    assert "regime_pg/_sql/SHA256SUMS" in names
    assert "regime_pg/_migrations/env.py" in names
    assert "regime_pg/py.typed" in names
    assert "regime_pg/_migrations/versions/0001_installation_table.py" in names


FIND_RESOURCES = """
import hashlib
import json
from alembic.script import ScriptDirectory
from regime_pg import _resources
print(json.dumps({
    "package": _resources.__file__,
    "sql": str(_resources.sql_dir()),
    "migrations": str(_resources.migrations_dir()),
    "read": {name: hashlib.sha256(_resources.read_sql(name).encode()).hexdigest()
             for name in _resources._released_checksums()},
    "revisions": sorted(s.revision for s in
                        ScriptDirectory(str(_resources.migrations_dir())).walk_revisions()),
}))
"""


def test_installed_wheel_finds_its_sql_and_migrations(wheel: Path, tmp_path: Path) -> None:
    """Unpacked, the package reads _sql and _migrations inside itself, checksums passing."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    found = subprocess.run([sys.executable, "-c", FIND_RESOURCES], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    installed = tmp_path.resolve() / "regime_pg"
    assert Path(result["package"]).resolve() == installed / "_resources.py"
    assert result["sql"] == str(installed / "_sql")
    assert result["migrations"] == str(installed / "_migrations")
    assert result["read"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                              for p in source_files("sql") if p.name != "SHA256SUMS"}
    source = ScriptDirectory(str(ROOT / "migrations"))
    assert result["revisions"] == sorted(s.revision for s in source.walk_revisions())
