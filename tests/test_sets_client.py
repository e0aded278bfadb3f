"""The Python sets client and the model factories, against real servers and numpy.

Every test gets its own database cloned from a template that holds synthetic
engine rows (float32 BYTEA, as the engine writes them) for region US:

* 2018: two weakly separated regimes (NEUTRAL first half, CRISIS second half),
  so that some calibration embeddings are nearer the other prototype and the
  temperature fit is a true maximum of the likelihood (``separable`` false);
* 2019: the same, strongly separated (``separable`` true, the Laplace rule).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psycopg
import pytest

from regime_pg.client import prototypes_document
from regime_pg.connection import Connection, connect, translated_errors
from regime_pg.document import PrototypeDocument, load_document, save_document
from regime_pg.errors import (
    DimensionMismatchError,
    InvalidDocumentError,
    InvalidInputError,
    InvalidSetNameError,
    NoDataError,
    PrototypeSetExistsError,
    RegionMismatchError,
    UnknownPrototypeSetError,
    UnknownRegionError,
)
from regime_pg.factory import DEFAULT_WINDOW_DAYS, model_from_document, model_from_set
from regime_pg.model import NumericRegimeModel, RegimeState, StoredEmbeddingEncoder
from regime_pg.prototypes import DateWindow, RegimeLabel, RegimePrototype
from regime_pg.sets import (
    PrototypeSet,
    PrototypeSetInfo,
    delete_set,
    fit_set_temperature,
    get_set,
    import_set,
    list_sets,
    save_set,
)
from regime_pg.softmax import fit_temperature
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384
WEAK = {  # 2018: overlapping regimes
    "CRISIS": DateWindow(dt.date(2018, 7, 1), dt.date(2018, 12, 31)),
    "NEUTRAL": DateWindow(dt.date(2018, 1, 1), dt.date(2018, 6, 30)),
}
STRONG = {  # 2019: far-apart regimes
    "CRISIS": DateWindow(dt.date(2019, 7, 1), dt.date(2019, 12, 31)),
    "NEUTRAL": DateWindow(dt.date(2019, 1, 1), dt.date(2019, 6, 30)),
}


@dataclass(frozen=True)
class Synthetic:
    """The engine rows of region US, as numpy sees them."""

    dates: list[dt.date]
    vectors: np.ndarray  # float32

    def rows(self, window: DateWindow) -> np.ndarray:
        keep = [i for i, d in enumerate(self.dates) if window.start_date <= d <= window.end_date]
        return self.vectors[keep]

    def on(self, day: dt.date) -> np.ndarray:
        return self.vectors[self.dates.index(day)]


def synthetic() -> Synthetic:
    rng = np.random.default_rng(20180704)
    dates = business_days(dt.date(2018, 1, 1), 2 * 261)
    x = rng.standard_normal((len(dates), DIM))
    for i, day in enumerate(dates):
        if day.month >= 7:
            x[i, :8] += 0.5 if day.year == 2018 else 3.0
    return Synthetic(dates, x.astype("<f4"))


DATA = synthetic()


@pytest.fixture(scope="module")
def data_template(pg_server: Server, migrated_template: str) -> Iterator[str]:
    """A migrated database holding DATA as region US (cloned per test, never used directly)."""
    name = create_database(pg_server, template=migrated_template)
    try:
        with psycopg.connect(database_dsn(pg_server.admin_dsn, name), autocommit=True) as conn:
            insert_rows(conn, "US", DATA.dates, DATA.vectors)
        yield name
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def dsn(pg_server: Server, data_template: str) -> Iterator[str]:
    name = create_database(pg_server, template=data_template)
    yield database_dsn(pg_server.admin_dsn, name)
    drop_database(pg_server, name)


@pytest.fixture
def client(dsn: str) -> Iterator[Connection]:
    with connect(dsn) as conn:
        yield conn


# --------------------------------------------------------------------------- numpy references


def numpy_centre(window: DateWindow) -> np.ndarray:
    return DATA.rows(window).astype(np.float64).mean(axis=0)


def assert_centre(center: np.ndarray, window: DateWindow) -> None:
    """float32 centre within 1e-6 of numpy's float64 mean, relative to the values' magnitude."""
    rows = DATA.rows(window).astype(np.float64)
    assert center.dtype == np.float32 and center.shape == (DIM,)
    scale = np.abs(rows).mean(axis=0)
    assert np.all(np.abs(center.astype(np.float64) - rows.mean(axis=0)) <= 1e-6 * scale)


def numpy_fit_inputs(
    document: PrototypeDocument, windows: dict[str, DateWindow]
) -> tuple[np.ndarray, np.ndarray]:
    """float64 distances of every calibration embedding to the stored centres, own indices."""
    labels = [str(p.label) for p in document.prototypes]
    centres = np.array([p.center for p in document.prototypes], dtype=np.float64)
    distances, own = [], []
    for k, label in enumerate(labels):
        x = DATA.rows(windows[label]).astype(np.float64)
        distances.append(np.linalg.norm(x[:, None, :] - centres[None], axis=2))
        own += [k] * len(x)
    return np.concatenate(distances), np.array(own)


def sql_fit_inputs(
    conn: Connection, set_name: str, windows: dict[str, DateWindow]
) -> tuple[np.ndarray, np.ndarray]:
    """The same distances as pgvector computes them (float32 accumulation), own indices."""
    labels = sorted(windows)
    distances, own = [], []
    for k, label in enumerate(labels):
        rows = conn.execute(
            "SELECT array_agg(e.embedding_vector <-> m.center ORDER BY m.label)"
            "  FROM regime_embeddings_latest AS e, regime_prototype_set_members AS m"
            " WHERE m.set_name = %s AND e.region = 'US' AND e.embedding_vector IS NOT NULL"
            "   AND e.as_of_date BETWEEN %s AND %s"
            " GROUP BY e.as_of_date ORDER BY e.as_of_date",
            (set_name, windows[label].start_date, windows[label].end_date),
        ).fetchall()
        distances.append(np.array([row[0] for row in rows], dtype=np.float64))
        own += [k] * len(rows)
    return np.concatenate(distances), np.array(own)


def numpy_classify(
    embedding: np.ndarray, document: PrototypeDocument, temperature: float
) -> tuple[str, float, dict[str, float]]:
    labels = [str(p.label) for p in document.prototypes]
    centres = np.array([p.center for p in document.prototypes], dtype=np.float64)
    d = np.linalg.norm(centres - embedding.astype(np.float64), axis=1)
    p = np.exp(-(d - d.min()) / temperature)
    winner = int(np.argmin(d))
    return labels[winner], float(p[winner] / p.sum()), dict(zip(labels, d.tolist(), strict=True))


# --------------------------------------------------------------------------- save, get, list


def test_save_set_centres_and_given_temperature(client: Connection) -> None:
    saved = save_set(client, "us-2018-v1", "US", WEAK, temperature=2.5)
    assert isinstance(saved, PrototypeSet)
    info = saved.info
    assert (saved.name, saved.temperature) == ("us-2018-v1", 2.5)
    assert (info.region, info.encoder_model_id, info.embedding_dim, info.source) == (
        "US",
        "num-regime-core-v1",
        DIM,
        "computed",
    )
    assert info.windows == {label: w.to_json() for label, w in WEAK.items()}
    assert info.fit is None
    user = client.execute("SELECT current_user").fetchone()
    assert user is not None and info.created_by == user[0]
    assert info.created_at.tzinfo is not None

    document = saved.document
    assert document.region == "US"
    assert [str(p.label) for p in document.prototypes] == ["CRISIS", "NEUTRAL"]
    for p in document.prototypes:
        window = WEAK[str(p.label)]
        assert_centre(p.center, window)
        rows = DATA.rows(window)
        assert p.window == window and p.n_dates == len(rows) and p.n_skipped == 0
        assert p.l2_norm == pytest.approx(np.linalg.norm(numpy_centre(window)), rel=1e-6)
        assert (p.first_date, p.last_date) == (
            min(d for d in DATA.dates if d >= window.start_date),
            max(d for d in DATA.dates if d <= window.end_date),
        )
    # The two centres differ where the regimes do (the first 8 dimensions, by about 0.5).
    by_label = document.by_label()
    gap = by_label["CRISIS"].center.astype(np.float64) - by_label["NEUTRAL"].center
    assert 0.3 < gap[:8].mean() < 0.7 and abs(gap[8:].mean()) < 0.05

    # What get_set reads back is the same set.
    again = get_set(client, "us-2018-v1")
    assert again.info == info
    assert again.document == document


@pytest.mark.parametrize(("windows", "separable"), [(WEAK, False), (STRONG, True)])
def test_fitted_temperature_matches_numpy(
    client: Connection, windows: dict[str, DateWindow], separable: bool
) -> None:
    saved = save_set(client, "fitted", "US", windows, temperature=None)
    fit = saved.info.fit
    assert fit is not None
    assert (fit.n, fit.separable) == (sum(len(DATA.rows(w)) for w in windows.values()), separable)
    assert saved.temperature == fit.temperature
    # The same rule in Python on the distances pgvector computes: equal to rounding
    # (about 1e-14 relative observed).
    same = fit_temperature(*sql_fit_inputs(client, "fitted", windows))
    assert fit.temperature == pytest.approx(same.temperature, rel=1e-12)
    assert fit.log_loss == pytest.approx(same.log_loss, rel=1e-12)
    assert fit.log_loss_at_1 == pytest.approx(same.log_loss_at_1, rel=1e-12)
    assert (fit.n, fit.separable) == (same.n, same.separable)
    # On numpy's float64 distances to the stored centres.  The distances differ by
    # about 1e-7 relative (float32 accumulation), and the fit amplifies that by up to
    # distance / T: 20 / 0.046 for the overlapping 2018 windows, where 1.2e-6 relative
    # is observed; 20 / 0.30 for the separated 2019 windows (1.8e-8 observed).
    d, own = numpy_fit_inputs(saved.document, windows)
    assert bool(np.all(d.argmin(axis=1) == own)) is separable
    expected = fit_temperature(d, own)
    tolerance = 1e-6 if separable else 1e-5
    assert fit.temperature == pytest.approx(expected.temperature, rel=tolerance)
    assert fit.log_loss == pytest.approx(expected.log_loss, rel=tolerance)
    assert fit.log_loss_at_1 == pytest.approx(expected.log_loss_at_1, rel=1e-6)
    assert fit.log_loss < fit.log_loss_at_1
    if separable:
        n = fit.n
        assert fit.log_loss == pytest.approx(np.log((n + 2) / (n + 1)), rel=1e-9)
    # fit_set_temperature computes the same fit and stores nothing.
    assert fit_set_temperature(client, "US", windows) == fit
    assert [s.name for s in list_sets(client)] == ["fitted"]
    # The stored row carries the fit (get_set reads it back).
    assert get_set(client, "fitted").info.fit == fit


def test_sets_take_window_dates_in_any_form(client: Connection) -> None:
    """Datetimes (pandas.Timestamp is one) and numpy.datetime64 are their calendar dates."""
    mixed = {
        "CRISIS": (dt.datetime(2018, 7, 1, 16, 0), np.datetime64("2018-12-31T23:59")),
        "NEUTRAL": ("2018-01-01", dt.date(2018, 6, 30)),
    }
    assert fit_set_temperature(client, "US", mixed) == fit_set_temperature(client, "US", WEAK)
    saved = save_set(client, "mixed", "US", mixed, temperature=None)
    reference = save_set(client, "reference", "US", WEAK, temperature=None)
    assert (
        saved.info.windows
        == reference.info.windows
        == {label: w.to_json() for label, w in WEAK.items()}
    )
    assert saved.document == reference.document
    assert saved.info.fit == reference.info.fit


def test_stored_document_equals_prototypes_document_byte_for_byte(client: Connection) -> None:
    windows = {**STRONG, "RISK_OFF": ("2018-03-01", "2018-03-01")}  # a one-day window too
    saved = save_set(client, "three", "US", windows)
    expected = prototypes_document(client, "US", windows).dumps()
    assert saved.document.dumps() == expected
    assert get_set(client, "three").document.dumps() == expected
    assert saved.document.by_label()["RISK_OFF"].n_dates == 1


def test_import_then_get_gives_the_same_bytes(client: Connection, tmp_path: Path) -> None:
    computed = prototypes_document(client, "US", WEAK)
    text = computed.dumps()
    imported = import_set(client, "from-file", PrototypeDocument.loads(text), temperature=0.75)
    assert imported.info.source == "document"
    assert (imported.temperature, imported.info.fit) == (0.75, None)
    assert imported.info.windows == {label: w.to_json() for label, w in WEAK.items()}
    assert get_set(client, "from-file").document.dumps() == text

    # A hand-made document: odd float32 values, statistics partly missing, no window.
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, DIM)).astype(np.float32) * 7
    centres[0, :7] = [0.1, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.1754942e-38]
    # l2_norm is checked against the centre on import: 1e38-ish and 17 significant digits
    big = float(np.linalg.norm(centres[0].astype(np.float64)))  # 4.81e38, beyond float32
    centres[1] *= np.float32(12.345678901234567 / np.linalg.norm(centres[1].astype(np.float64)))
    document = PrototypeDocument(
        "US",
        (
            RegimePrototype(
                "CRISIS",
                centres[0],
                window=WEAK["CRISIS"],
                n_dates=3,
                n_skipped=1,
                l2_norm=big,
                dispersion=0.25,
                first_date=dt.date(2018, 7, 2),
                last_date=dt.date(2018, 7, 4),
            ),
            RegimePrototype("NEUTRAL", centres[1], l2_norm=12.345678901234567),
            RegimePrototype("CARRY", centres[2]),
        ),
    )
    path = tmp_path / "hand.json"
    save_document(document, path)
    import_set(client, "hand-made", PrototypeDocument.loads(path.read_bytes()))
    stored = get_set(client, "hand-made")
    assert stored.document.dumps().encode() == path.read_bytes()
    assert stored.document == document
    assert stored.info.windows == {"CRISIS": WEAK["CRISIS"].to_json()}
    crisis = stored.document.by_label()["CRISIS"].center
    assert np.array_equal(crisis.view(np.uint32), (centres[0] + np.float32(0)).view(np.uint32))


def test_import_checks_each_l2_norm_against_its_centre(
    client: Connection, tmp_path: Path
) -> None:
    """A norm taken in float32 arithmetic is accepted; a norm 1e-4 off is refused, typed,
    naming the prototype, and nothing is stored."""
    computed = prototypes_document(client, "US", WEAK)
    crisis, neutral = computed.prototypes
    float32_norm = float(np.linalg.norm(crisis.center))  # float32 arithmetic, as numpy does
    assert float32_norm != crisis.l2_norm
    accepted = PrototypeDocument("US", (replace(crisis, l2_norm=float32_norm), neutral))
    path = tmp_path / "accepted.json"
    save_document(accepted, path)
    stored = import_set(client, "accepted", load_document(path))
    assert stored.document.by_label()["CRISIS"].l2_norm == float32_norm
    assert crisis.l2_norm is not None
    wrong = crisis.l2_norm * (1 + 1e-4)
    rejected = PrototypeDocument("US", (replace(crisis, l2_norm=wrong), neutral))
    save_document(rejected, path)
    with pytest.raises(InvalidDocumentError) as caught:
        import_set(client, "rejected", load_document(path))
    assert str(caught.value) == (
        f"prototype CRISIS: l2_norm {wrong:.9g} is not the norm of its center, "
        f"{crisis.l2_norm:.9g} (relative tolerance 2.3e-05)"
    )
    assert [info.name for info in list_sets(client)] == ["accepted"]


def test_import_with_a_fitted_temperature_equals_the_computed_fit(client: Connection) -> None:
    computed = save_set(client, "computed", "US", WEAK, temperature=None)
    imported = import_set(client, "imported", computed.document, temperature=None)
    assert imported.info.fit == computed.info.fit
    assert imported.temperature == computed.temperature


def test_list_and_delete(client: Connection) -> None:
    assert list_sets(client) == []
    save_set(client, "b-first", "US", WEAK)
    save_set(client, "a-second", "US", STRONG, temperature=None)
    import_set(client, "c-third", prototypes_document(client, "US", STRONG), temperature=3.0)
    infos = list_sets(client)
    assert all(isinstance(i, PrototypeSetInfo) for i in infos)
    assert [(i.name, i.source, i.fit is not None) for i in infos] == [
        ("b-first", "computed", False),
        ("a-second", "computed", True),
        ("c-third", "document", False),
    ]  # oldest first
    assert [i.created_at for i in infos] == sorted(i.created_at for i in infos)
    assert infos == [get_set(client, i.name).info for i in infos]

    delete_set(client, "a-second")
    assert [i.name for i in list_sets(client)] == ["b-first", "c-third"]
    with pytest.raises(UnknownPrototypeSetError, match="unknown prototype set 'a-second'"):
        get_set(client, "a-second")
    with pytest.raises(UnknownPrototypeSetError, match="unknown prototype set 'a-second'"):
        delete_set(client, "a-second")
    # The name is free again: a new set, not a changed one.
    assert save_set(client, "a-second", "US", WEAK, temperature=4.0).temperature == 4.0
    members = client.execute("SELECT count(*) FROM regime_prototype_set_members").fetchone()
    assert members == (6,)


# --------------------------------------------------------------------------- errors


def test_saving_an_existing_name_changes_nothing(client: Connection) -> None:
    first = save_set(client, "us-v1", "US", WEAK, temperature=2.0)
    with pytest.raises(PrototypeSetExistsError, match="prototype set 'us-v1' already exists"):
        save_set(client, "us-v1", "US", STRONG, temperature=3.0)
    with pytest.raises(PrototypeSetExistsError, match="already exists"):
        save_set(client, "us-v1", "US", WEAK, temperature=None)
    with pytest.raises(PrototypeSetExistsError, match="already exists"):
        import_set(client, "us-v1", first.document)
    again = get_set(client, "us-v1")
    assert again.info == first.info
    assert again.document.dumps() == first.document.dumps()


@pytest.mark.parametrize("name", ["", "bad name", "-leading", "a" * 65, "x/y", "ü", "a\x00"])
def test_bad_set_names(client: Connection, name: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        save_set(client, name, "US", WEAK)
    if "\x00" not in name:  # psycopg refuses NUL before the server sees it
        assert type(caught.value) is InvalidSetNameError
        assert "set name rule" in str(caught.value)
    document = prototypes_document(client, "US", WEAK)
    with pytest.raises(InvalidInputError):
        import_set(client, name, document)
    assert list_sets(client) == []


def test_longest_valid_name(client: Connection) -> None:
    name = "A1._-" + "z" * 59
    assert save_set(client, name, "US", WEAK).name == name


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_temperatures(client: Connection, temperature: float) -> None:
    with pytest.raises(InvalidInputError, match="temperature must be a positive finite number"):
        save_set(client, "t", "US", WEAK, temperature=temperature)
    with pytest.raises(InvalidInputError, match="temperature must be a positive finite number"):
        import_set(client, "t", prototypes_document(client, "US", WEAK), temperature=temperature)
    assert list_sets(client) == []


def test_other_save_errors(client: Connection) -> None:
    with pytest.raises(UnknownRegionError, match="unknown region 'EU'"):
        save_set(client, "eu", "EU", WEAK)
    with pytest.raises(InvalidInputError, match="at least two prototypes"):
        save_set(client, "one", "US", {"NEUTRAL": WEAK["NEUTRAL"]}, temperature=None)
    with pytest.raises(InvalidInputError, match="at least two prototypes"):
        fit_set_temperature(client, "US", {"NEUTRAL": WEAK["NEUTRAL"]})
    windowless = PrototypeDocument(
        "US", (RegimePrototype("CRISIS", np.ones(DIM)), RegimePrototype("NEUTRAL", np.zeros(DIM)))
    )
    with pytest.raises(InvalidInputError, match="have no window"):
        import_set(client, "windowless", windowless, temperature=None)
    small = PrototypeDocument("US", (RegimePrototype("NEUTRAL", np.zeros(3)),))
    with pytest.raises(DimensionMismatchError, match="embedding_dim is 3"):
        import_set(client, "small", small)
    assert list_sets(client) == []


def test_concurrent_saves_of_one_name_exactly_one_wins(dsn: str) -> None:
    workers = 5
    barrier = threading.Barrier(workers)
    outcome: list[object] = [None] * workers

    def run(i: int) -> None:
        with connect(dsn) as own:
            own.execute("SET statement_timeout = '60s'")
            barrier.wait(timeout=60)
            try:
                outcome[i] = save_set(own, "race", "US", WEAK, temperature=1.0 + i)
            except Exception as exc:  # the losers' exceptions are what is checked
                outcome[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [i for i, o in enumerate(outcome) if isinstance(o, PrototypeSet)]
    assert len(winners) == 1, outcome
    losers = [o for o in outcome if not isinstance(o, PrototypeSet)]
    assert all(type(o) is PrototypeSetExistsError for o in losers), losers
    assert all("prototype set 'race' already exists" in str(o) for o in losers)
    with connect(dsn) as conn:
        stored = get_set(conn, "race")
        assert [i.name for i in list_sets(conn)] == ["race"]
        assert stored.temperature == 1.0 + winners[0]
        assert stored.document.dumps() == prototypes_document(conn, "US", WEAK).dumps()
        members = conn.execute("SELECT count(*) FROM regime_prototype_set_members").fetchone()
    assert members == (2,)


# --------------------------------------------------------------------------- factories


def assert_state(
    state: RegimeState, day: dt.date, document: PrototypeDocument, temperature: float
) -> None:
    """The engine's RegimeState for the stored embedding of ``day``, checked against numpy."""
    embedding = DATA.on(day)
    label, confidence, distances = numpy_classify(embedding, document, temperature)
    assert isinstance(state, RegimeState)
    assert (state.as_of_date, state.region) == (day, "US")
    assert state.regime_label == label and isinstance(state.regime_label, RegimeLabel)
    assert state.confidence == pytest.approx(confidence, rel=1e-9)
    assert state.regime_embedding.dtype == np.float32
    assert np.array_equal(state.regime_embedding, embedding)
    assert set(state.metadata) == {"window_days", "temperature", "instrument_id", "distances"}
    assert state.metadata["window_days"] == DEFAULT_WINDOW_DAYS
    assert state.metadata["temperature"] == temperature
    assert state.metadata["instrument_id"] == "US"
    assert state.metadata["distances"] == pytest.approx(distances, rel=1e-12)


def sql_classification(conn: Connection, day: dt.date, set_name: str) -> tuple[object, ...]:
    row = conn.execute(
        "SELECT c.label, c.confidence, c.distances"
        "  FROM regime_embeddings_latest AS e, LATERAL classify_regime(e.embedding_vector, %s) c"
        " WHERE e.region = 'US' AND e.as_of_date = %s",
        (set_name, day),
    ).fetchone()
    assert row is not None
    return tuple(row)


DAYS = [dt.date(2018, 1, 2), dt.date(2018, 6, 29), dt.date(2018, 7, 2), dt.date(2019, 10, 15)]


def test_model_from_set_uses_the_set_temperature_and_stored_embeddings(
    client: Connection,
) -> None:
    saved = save_set(client, "weak-fitted", "US", WEAK, temperature=None)
    model = model_from_set(client, "weak-fitted")
    assert isinstance(model, NumericRegimeModel)
    assert isinstance(model.encoder, StoredEmbeddingEncoder)
    assert model.temperature == saved.temperature != 1.0
    assert model.region_instruments == {"US": "US"}
    assert (model.window_days, model.embedding_dim) == (DEFAULT_WINDOW_DAYS, DIM)
    assert list(model.prototypes) == list(saved.document.prototypes)
    labels = set()
    for day in DAYS:
        state = model.classify(day, "US")
        assert_state(state, day, saved.document, saved.temperature)
        label, confidence, distances = sql_classification(client, day, "weak-fitted")
        assert state.regime_label == label
        assert state.confidence == pytest.approx(confidence, rel=1e-5)
        assert state.metadata["distances"] == pytest.approx(distances, rel=1e-6)
        labels.add(label)
    assert labels == {"CRISIS", "NEUTRAL"}
    # The fitted temperature makes the confidence informative.
    confidences = [model.classify(day, "US").confidence for day in DATA.dates[:60]]
    assert min(confidences) < 0.9


def test_model_from_set_classifies_the_calendar_date_of_a_datetime(client: Connection) -> None:
    save_set(client, "weak", "US", WEAK, temperature=None)
    model = model_from_set(client, "weak")
    for day in DAYS:
        state = model.classify(day, "US")
        for when in (
            dt.datetime.combine(day, dt.time(16, 0)),
            np.datetime64(dt.datetime.combine(day, dt.time(23, 59)), "ns"),
            day.isoformat(),
        ):
            later = model.classify(when, "US")  # type: ignore[arg-type]
            assert type(later.as_of_date) is dt.date and later.as_of_date == day
            assert (later.regime_label, later.confidence) == (state.regime_label, state.confidence)
            assert np.array_equal(later.regime_embedding, state.regime_embedding)


def test_model_from_document_file_and_object(client: Connection, tmp_path: Path) -> None:
    document = prototypes_document(client, "US", STRONG)
    path = tmp_path / "regime_prototypes_US.json"
    save_document(document, path)
    from_path = model_from_document(path, conn=client, temperature=4.0)
    from_str = model_from_document(str(path), conn=client, temperature=4.0)
    from_object = model_from_document(document, conn=client, temperature=4.0)
    for model in (from_path, from_str, from_object):
        assert model.temperature == 4.0 and model.region_instruments == {"US": "US"}
        for day in DAYS:
            assert_state(model.classify(day, "US"), day, document, 4.0)
    # Default temperature: the engine's 1.0.
    assert model_from_document(document, conn=client).temperature == 1.0
    # Without a connection or encoder the model only classifies embeddings.
    bare = model_from_document(path)
    assert bare.encoder is None and bare.region_instruments == {}
    with pytest.raises(InvalidInputError, match="no encoder"):
        bare.classify(DAYS[0], "US")
    result = bare.classify_embedding(DATA.on(DAYS[-1]))
    label, confidence, distances = numpy_classify(DATA.on(DAYS[-1]), document, 1.0)
    assert (result.label, result.confidence) == (label, pytest.approx(confidence, rel=1e-9))
    assert result.distances == pytest.approx(distances, rel=1e-12)
    # Another region than the document's is refused (test_a_document_model_...).
    with pytest.raises(RegionMismatchError):
        from_path.classify(DAYS[0], "EU")


def test_a_document_model_classifies_the_documents_region_only(
    client: Connection, tmp_path: Path
) -> None:
    """A model from a document of region US refuses EU dates, even when EU has embeddings
    and region_instruments maps it, and without an encoder; a document of EU the reverse."""
    document = prototypes_document(client, "US", STRONG)
    path = tmp_path / "regime_prototypes_US.json"
    save_document(document, path)
    day = DATA.dates[0]
    insert_rows(client, "EU", [day], [DATA.on(day)])
    both = {"US": "US", "EU": "EU"}
    refusal = (
        "prototype document was saved for region 'US', not for region 'EU' "
        "(hint: Classify a region with a document saved for that region.)"
    )
    models = [
        model_from_document(path, conn=client),
        model_from_document(document, conn=client, region_instruments=both),
        model_from_document(document),
    ]
    for model in models:
        assert model.region == "US"
        with pytest.raises(RegionMismatchError) as caught:
            model.classify(day, "EU")
        assert str(caught.value) == refusal
    for model in models[:2]:
        assert_state(model.classify(day, "US"), day, document, 1.0)
    eu = model_from_document(PrototypeDocument("EU", document.prototypes), conn=client)
    assert eu.region_instruments == {"EU": "EU"}
    in_eu, in_us = eu.classify(day, "EU"), models[0].classify(day, "US")
    assert (in_eu.region, in_eu.metadata["instrument_id"]) == ("EU", "EU")
    assert (in_eu.regime_label, in_eu.confidence) == (in_us.regime_label, in_us.confidence)
    with pytest.raises(RegionMismatchError, match="saved for region 'EU', not for region 'US'"):
        eu.classify(day, "US")


def test_factory_errors(client: Connection, tmp_path: Path) -> None:
    with pytest.raises(InvalidDocumentError, match="cannot read"):
        model_from_document(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"region": "US", "embedding_dim": 384, "prototypes": ', encoding="utf-8")
    with pytest.raises(InvalidDocumentError, match="not valid JSON"):
        model_from_document(broken, conn=client)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps(
            {"region": "US", "embedding_dim": 2, "prototypes": {"NEUTRAL": {"center": [1.0]}}}
        ),
        encoding="utf-8",
    )
    with pytest.raises(InvalidDocumentError, match="center has 1 values"):
        model_from_document(wrong)
    with pytest.raises(UnknownPrototypeSetError, match="unknown prototype set 'nope'"):
        model_from_set(client, "nope")

    save_set(client, "us", "US", WEAK)
    model = model_from_set(client, "us")
    saturday = dt.date(2018, 1, 6)
    with pytest.raises(NoDataError, match="no usable stored embedding for region 'US'"):
        model.classify(saturday, "US")
    with pytest.raises(NoDataError):
        model.classify(dt.date(2030, 1, 2), "US")
    # A newer NULL row hides the date's embedding, as in SQL.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    insert_rows(client, "US", [DAYS[0]], [None], created_at=later)
    with pytest.raises(NoDataError, match=str(DAYS[0])):
        model.classify(DAYS[0], "US")
    assert model.classify(DAYS[1], "US").as_of_date == DAYS[1]


def test_a_set_applied_to_another_region_is_refused_as_in_sql(client: Connection) -> None:
    """model_from_set classifies the set's region only: the error SQL raises, typed the same,
    with the same message (regions quoted as PostgreSQL's quote_literal writes them)."""
    save_set(client, "us-v1", "US", WEAK)
    day = DATA.dates[0]
    for region in ("EU", "O'Brien \\x"):
        insert_rows(client, region, [day], [DATA.on(day)])
        with pytest.raises(RegionMismatchError) as in_sql, translated_errors():
            client.execute(
                "SELECT * FROM classify_regimes(%s, %s, %s, 'us-v1')", (region, day, day)
            )
        instruments = {"US": "US", region: region}
        for model in (
            model_from_set(client, "us-v1"),
            model_from_set(client, "us-v1", region_instruments=instruments),
        ):
            with pytest.raises(RegionMismatchError) as in_python:
                model.classify(day, region)
            assert str(in_python.value) == str(in_sql.value)
    assert str(in_python.value) == (
        "prototype set 'us-v1' was saved for region 'US', not for region E'O''Brien \\\\x' "
        "(hint: Classify a region with a set saved for that region.)"
    )
    assert model.classify(day, "US").region == "US"  # its own region still classifies
