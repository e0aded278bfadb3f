"""The Python client against a real server: values, documents, typed errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import psycopg
import pytest

import regime_pg
from regime_pg import (
    ConnectionFailedError,
    DateWindow,
    EmptyWindowError,
    InvalidLabelError,
    InvalidWindowError,
    PrototypeDocument,
    RegimeLabel,
    RegimePrototype,
    SchemaNotReadyError,
    UnknownRegionError,
    compute_prototype,
    compute_prototypes,
    connect,
    load_document,
    prototypes_document,
    save_document,
)
from regime_pg.connection import Connection
from regime_pg.errors import InvalidInputError
from tests.engine import business_days, insert_rows

DIM = 384
WINDOWS = {
    "NEUTRAL": ("2018-01-01", "2018-12-31"),
    "CRISIS": (dt.date(2019, 3, 1), dt.date(2019, 4, 30)),
    "RECOVERY": DateWindow(dt.date(2019, 5, 1), dt.date(2019, 6, 30)),
}


@pytest.fixture
def history(conn: Connection) -> tuple[list[dt.date], np.ndarray]:
    rng = np.random.default_rng(11)
    dates = business_days(dt.date(2018, 1, 1), 400)
    x = (rng.standard_normal((len(dates), DIM)) * 4 + 2).astype("<f4")
    insert_rows(conn, "US", dates, x)
    return dates, x


def _expected_mean(dates: list[dt.date], x: np.ndarray, window: DateWindow) -> np.ndarray:
    picked = np.array([window.start_date <= d <= window.end_date for d in dates])
    return x[picked].astype(np.float64).mean(axis=0), x[picked]


def test_prototypes_equal_numpy_float64_mean(
    conn: Connection, history: tuple[list[dt.date], np.ndarray]
) -> None:
    dates, x = history
    prototypes = compute_prototypes(conn, "US", WINDOWS)
    assert [p.label for p in prototypes] == [RegimeLabel.CRISIS, RegimeLabel.NEUTRAL, "RECOVERY"]
    for prototype in prototypes:
        assert prototype.center.dtype == np.float32 and prototype.center.shape == (DIM,)
        assert prototype.window is not None
        expected, rows = _expected_mean(dates, x, prototype.window)
        scale = np.abs(rows.astype(np.float64)).mean(axis=0)
        assert np.all(np.abs(prototype.center - expected) <= 1e-6 * scale)
        assert prototype.n_dates == len(rows) and prototype.n_skipped == 0
        assert prototype.l2_norm == pytest.approx(np.linalg.norm(expected), rel=1e-6)
        assert prototype.first_date == min(d for d in dates if d >= prototype.window.start_date)


def test_label_outside_the_four_is_a_plain_string(conn: Connection, history: object) -> None:
    recovery = compute_prototype(conn, "US", WINDOWS["RECOVERY"], label="RECOVERY")
    assert recovery.label == "RECOVERY" and not isinstance(recovery.label, RegimeLabel)
    assert isinstance(recovery.label, str)


def test_engine_constructor_still_works() -> None:
    p = RegimePrototype(RegimeLabel.CRISIS, np.zeros(DIM))
    assert (p.label, p.window, p.n_dates) == (RegimeLabel.CRISIS, None, None)
    with pytest.raises(AttributeError):
        p.label = RegimeLabel.NEUTRAL  # type: ignore[misc]
    with pytest.raises(ValueError):
        p.center[0] = 1.0


def test_three_documents_are_identical(conn: Connection, history: object, tmp_path: Path) -> None:
    from_sql = prototypes_document(conn, "US", WINDOWS)
    from_objects = PrototypeDocument("US", tuple(compute_prototypes(conn, "US", WINDOWS)))
    assert from_sql.dumps() == from_objects.dumps()
    path = tmp_path / "regime_prototypes_US.json"
    save_document(from_objects, path)
    assert path.read_text(encoding="utf-8") == from_sql.dumps()
    assert path.read_bytes().endswith(b"}\n") and not path.read_bytes().endswith(b"\n\n")


def test_loaded_file_gives_the_same_prototypes(
    conn: Connection, history: object, tmp_path: Path
) -> None:
    computed = compute_prototypes(conn, "US", WINDOWS)
    path = tmp_path / "doc.json"
    save_document(PrototypeDocument("US", tuple(computed)), path)
    loaded = load_document(path)
    assert list(loaded.prototypes) == computed


@pytest.mark.parametrize(
    ("windows", "region", "error", "message"),
    [
        (
            {"NEUTRAL": ("2030-01-01", "2030-12-31")},
            "US",
            EmptyWindowError,
            "no usable embedding for region 'US', label NEUTRAL",
        ),
        ({"NEUTRAL": ("2018-12-31", "2018-01-01")}, "US", InvalidWindowError, "reversed"),
        ({"neutral": ("2018-01-01", "2018-12-31")}, "US", InvalidLabelError, "label rule"),
        (
            {"NEUTRAL": ("2018-01-01", "2018-12-31")},
            "XX",
            UnknownRegionError,
            "unknown region 'XX'",
        ),
        ({"NEUTRAL": ("2018-1-1", "2018-12-31")}, "US", InvalidWindowError, "YYYY-MM-DD"),
        ({}, "US", InvalidInputError, "at least one"),
        ({"NEUTRAL": ("2018-01-01", "2018-12-31")}, "U\x00S", InvalidInputError, "without NUL"),
    ],
)
def test_errors_are_typed(
    conn: Connection,
    history: object,
    windows: dict[str, tuple[str, str]],
    region: str,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        compute_prototypes(conn, region, windows)


def test_server_side_reversed_window_is_typed(conn: Connection, history: object) -> None:
    with (
        pytest.raises(InvalidWindowError, match="reversed"),
        regime_pg.connection.translated_errors(),
    ):
        conn.execute("SELECT compute_regime_prototype('US', '2018-12-31', '2018-01-01')")


def test_error_classes_form_one_hierarchy() -> None:
    for name in (
        "EmptyWindowError",
        "InvalidWindowError",
        "InvalidLabelError",
        "UnknownRegionError",
        "SchemaNotReadyError",
        "ExtensionMissingError",
        "InstallationNotFoundError",
        "AmbiguousInstallationError",
        "ConnectionFailedError",
    ):
        assert issubclass(getattr(regime_pg, name), regime_pg.RegimePgError)


def test_database_without_pgvector(empty_db: str) -> None:
    with pytest.raises(SchemaNotReadyError, match="regime-pg migrate"):
        connect(empty_db)


def test_database_not_migrated(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    with (
        connect(empty_db) as conn,
        pytest.raises(regime_pg.InstallationNotFoundError, match=r"run: regime-pg migrate$"),
    ):
        compute_prototypes(conn, "US", {"NEUTRAL": ("2018-01-01", "2018-12-31")})


def test_cannot_connect(tmp_path: Path) -> None:
    with pytest.raises(ConnectionFailedError):
        connect(f"host={tmp_path} port=1 dbname=nowhere connect_timeout=2")
