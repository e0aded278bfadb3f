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
from regime_pg.client import windows_json
from regime_pg.connection import Connection
from regime_pg.errors import InvalidInputError, NoDataError
from regime_pg.model import NumericRegimeModel, StoredEmbeddingEncoder
from regime_pg.prototypes import as_date
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


class Stamp(dt.datetime):
    """A datetime subclass, as ``pandas.Timestamp`` is one."""


EST = dt.timezone(dt.timedelta(hours=-5))

#: The window 2018-01-01..2018-12-31 in each form (and mix) of date a caller may hold.
SAME_WINDOW: dict[str, tuple[object, object] | list[object]] = {
    "strings": ("2018-01-01", "2018-12-31"),
    "dates": (dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
    "midnight datetimes": (dt.datetime(2018, 1, 1), dt.datetime(2018, 12, 31)),
    "datetimes with a time": (dt.datetime(2018, 1, 1, 23, 59), dt.datetime(2018, 12, 31, 16)),
    "aware datetimes keep their date": (
        dt.datetime(2018, 1, 1, 23, 30, tzinfo=EST),  # 2018-01-02 in UTC
        dt.datetime(2018, 12, 31, 0, 30, tzinfo=dt.UTC),  # 2018-12-30 in EST
    ),
    "datetime subclass": (Stamp(2018, 1, 1), Stamp(2018, 12, 31, 9, 30)),
    "datetime64 in days": (np.datetime64("2018-01-01"), np.datetime64("2018-12-31")),
    "datetime64 in ns": (
        np.datetime64("2018-01-01T00:00:00.000000001"),
        np.datetime64("2018-12-31T23:59:59", "ns"),
    ),
    "string and date": ("2018-01-01", dt.date(2018, 12, 31)),
    "datetime and datetime64": (dt.datetime(2018, 1, 1, 12), np.datetime64("2018-12-31T12:00")),
    "a list": [np.datetime64("2018-01-01", "h"), "2018-12-31"],
}
YEAR_2018 = DateWindow(dt.date(2018, 1, 1), dt.date(2018, 12, 31))


@pytest.mark.parametrize("case", list(SAME_WINDOW))
def test_window_dates_in_any_form_are_their_calendar_dates(case: str) -> None:
    start, end = SAME_WINDOW[case]
    window = DateWindow(start, end)  # type: ignore[arg-type]
    assert window == YEAR_2018 == DateWindow.parse(start, end)  # type: ignore[arg-type]
    assert type(window.start_date) is dt.date and type(window.end_date) is dt.date
    assert windows_json({"NEUTRAL": (start, end)}) == {  # type: ignore[dict-item]
        "NEUTRAL": {"end_date": "2018-12-31", "start_date": "2018-01-01"}
    }


@pytest.mark.parametrize("case", list(SAME_WINDOW))
def test_server_gets_the_calendar_dates_of_any_form(
    conn: Connection, history: object, case: str
) -> None:
    windows = {"NEUTRAL": SAME_WINDOW[case]}
    (reference,) = compute_prototypes(conn, "US", {"NEUTRAL": ("2018-01-01", "2018-12-31")})
    assert compute_prototypes(conn, "US", windows) == [reference]  # type: ignore[arg-type]
    document = prototypes_document(conn, "US", windows)  # type: ignore[arg-type]
    assert document.dumps() == PrototypeDocument("US", (reference,)).dumps()


def test_pandas_timestamps_are_their_calendar_dates(conn: Connection, history: object) -> None:
    pd = pytest.importorskip("pandas")
    windows = {
        "NEUTRAL": (pd.Timestamp("2018-01-01"), pd.Timestamp("2018-12-31 16:00", tz="US/Eastern"))
    }
    (prototype,) = compute_prototypes(conn, "US", windows)
    assert prototype == compute_prototype(conn, "US", ("2018-01-01", "2018-12-31"))
    with pytest.raises(InvalidWindowError, match=r"^end_date must be a date.*, got NaT$"):
        compute_prototypes(conn, "US", {"NEUTRAL": (pd.Timestamp("2018-01-01"), pd.NaT)})


#: Values that are no calendar date: (value, how the message shows it).
NOT_DATES: dict[str, tuple[object, str]] = {
    "datetime64 in months": (np.datetime64("2018-01"), "np.datetime64('2018-01') (datetime64[M])"),
    "datetime64 in years": (np.datetime64("2018"), "np.datetime64('2018') (datetime64[Y])"),
    "datetime64 in weeks": (
        np.datetime64(2500, "W"),
        "np.datetime64('2017-11-30') (datetime64[W])",
    ),
    "datetime64 in 2-day units": (
        np.datetime64(8800, "2D"),
        "np.datetime64('2018-03-10','2D') (datetime64[2D])",
    ),
    "datetime64 NaT": (np.datetime64("NaT"), "np.datetime64('NaT','generic') (datetime64)"),
    "datetime64 NaT in days": (
        np.datetime64("NaT", "D"),
        "np.datetime64('NaT','D') (datetime64[D])",
    ),
    "datetime64 after 9999": (
        np.datetime64("10000-01-01"),
        "np.datetime64('10000-01-01') (datetime64[D])",
    ),
    "datetime64 before year 1": (
        np.datetime64("0000-12-31"),
        "np.datetime64('0000-12-31') (datetime64[D])",
    ),
    "int": (20180101, "20180101"),
    "float": (2018.5, "2018.5"),
    "None": (None, "None"),
    "bool": (True, "True"),
    "bytes": (b"2018-01-01", "b'2018-01-01'"),
    "long list": (list(range(100)), "[0, 1, 2, 3, 4, 5, ...]"),
    "time": (dt.time(16), "datetime.time(16, 0)"),
    "2-D array": (np.zeros((3, 3)), "array([[0., 0., 0.], ...., 0.], [0., 0., 0.]])"),
}


@pytest.mark.parametrize("case", list(NOT_DATES))
def test_what_is_no_date_is_refused_in_one_line(case: str) -> None:
    value, shown = NOT_DATES[case]
    message = (
        "start_date must be a date, a datetime, a numpy.datetime64 of day precision or finer, "
        f"or a YYYY-MM-DD string, got {shown}"
    )
    with pytest.raises(InvalidWindowError) as caught:
        as_date(value, "start_date")
    assert str(caught.value) == message
    with pytest.raises(InvalidWindowError) as caught:
        windows_json({"NEUTRAL": (value, "2018-12-31")})  # type: ignore[dict-item]
    assert str(caught.value) == message
    with pytest.raises(InvalidWindowError) as caught:
        DateWindow(value, dt.date(2018, 12, 31))  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_parse_reads_each_end_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """DateWindow.parse leaves the reading to the constructor: as_date once per end."""
    from regime_pg import prototypes

    calls: list[tuple[object, str]] = []

    def counting(value: object, what: str = "date") -> dt.date:
        calls.append((value, what))
        return as_date(value, what)

    monkeypatch.setattr(prototypes, "as_date", counting)
    end = np.datetime64("2018-12-31T16:00")
    window = DateWindow.parse("2018-01-01", end)
    assert (window.start_date, window.end_date) == (dt.date(2018, 1, 1), dt.date(2018, 12, 31))
    assert calls == [("2018-01-01", "start_date"), (end, "end_date")]
    with pytest.raises(InvalidWindowError, match=r"^end_date must be a date as YYYY-MM-DD"):
        DateWindow.parse("2018-01-01", "2018-12-31T00:00")


def test_malformed_strings_keep_their_message() -> None:
    with pytest.raises(InvalidWindowError, match=r"^end_date must be a date as YYYY-MM-DD, got "):
        windows_json({"NEUTRAL": (dt.date(2018, 1, 1), "2018-12-31T00:00:00")})
    with pytest.raises(InvalidWindowError, match=r"^start_date is not a calendar date: 2019-02-29"):
        DateWindow.parse("2019-02-29", np.datetime64("2019-12-31"))
    with pytest.raises(InvalidWindowError, match="reversed"):
        DateWindow(np.datetime64("2019-01-02T00:00"), dt.datetime(2019, 1, 1, 23, 59))  # type: ignore[arg-type]


def test_stored_embeddings_are_found_by_calendar_date(
    conn: Connection, history: tuple[list[dt.date], np.ndarray]
) -> None:
    dates, x = history
    day = dates[200]
    assert day == dt.date(2018, 10, 8)
    encoder = StoredEmbeddingEncoder(conn)
    for when in (
        day,
        dt.datetime(2018, 10, 8, 16, 0),
        dt.datetime(2018, 10, 8, 23, 30, tzinfo=EST),
        Stamp(2018, 10, 8, 9, 30),
        np.datetime64("2018-10-08T16:00"),
        "2018-10-08",
    ):
        assert np.array_equal(encoder.encode("US", when, 63), x[200])  # type: ignore[arg-type]
    model = NumericRegimeModel(
        encoder,
        {"US": "US"},
        63,
        [RegimePrototype("NEUTRAL", np.zeros(DIM)), RegimePrototype("CRISIS", np.full(DIM, 2.0))],
    )
    state = model.classify(dt.datetime(2018, 10, 8, 16, 0), "US")
    assert type(state.as_of_date) is dt.date and state.as_of_date == day
    assert np.array_equal(state.regime_embedding, x[200])
    with pytest.raises(
        NoDataError, match=r"^no usable stored embedding for region 'US' on 2030-01-02$"
    ):
        encoder.encode("US", dt.datetime(2030, 1, 2, 16, 0), 63)
    with pytest.raises(InvalidWindowError, match=r"^as_of_date must be a date, .* got 20181008$"):
        encoder.encode("US", 20181008, 63)  # type: ignore[arg-type]


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
