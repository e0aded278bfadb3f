"""compute_regime_prototype(s) and regime_prototypes_json, against numpy's float64 answer."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regime_pg.connection import Connection, vector_to_numpy
from tests.engine import business_days, insert_rows

DIM = 384
COLUMNS = (
    "region, start_date, end_date, n_dates, n_skipped, center, l2_norm, dispersion, "
    "first_date, last_date"
)


def _embeddings(rng: np.random.Generator, n: int, scale: float = 3.0) -> np.ndarray:
    return (rng.standard_normal((n, DIM)) * scale + rng.standard_normal(DIM)).astype("<f4")


def assert_center_matches(center: np.ndarray, rows: np.ndarray) -> None:
    """Centre within 1e-6 of numpy's float64 mean, relative to the mean magnitude."""
    expected = rows.astype(np.float64).mean(axis=0)
    scale = np.abs(rows.astype(np.float64)).mean(axis=0)
    assert np.all(np.abs(center.astype(np.float64) - expected) <= 1e-6 * scale + 1e-30)


def test_one_window_matches_numpy(conn: Connection) -> None:
    rng = np.random.default_rng(7)
    dates = business_days(dt.date(2018, 1, 1), 300)
    x = _embeddings(rng, len(dates))
    insert_rows(conn, "US", dates, x)
    row = conn.execute(
        f"SELECT {COLUMNS} FROM compute_regime_prototype('US', '2018-01-01', '2018-12-31')"
    ).fetchone()
    assert row is not None
    in_window = [i for i, d in enumerate(dates) if d.year == 2018]
    window = x[in_window]
    center = vector_to_numpy(row[5])
    assert row[:5] == ("US", dt.date(2018, 1, 1), dt.date(2018, 12, 31), len(in_window), 0)
    assert_center_matches(center, window)
    expected = window.astype(np.float64).mean(axis=0)
    assert row[6] == pytest.approx(np.linalg.norm(center.astype(np.float64)), rel=1e-12)
    assert row[6] == pytest.approx(np.linalg.norm(expected), rel=1e-6)
    # pgvector accumulates squared differences in float32: ~1e-6 relative.
    assert row[7] == pytest.approx(np.linalg.norm(window - expected, axis=1).mean(), rel=1e-5)
    assert row[8:] == (dates[in_window[0]], dates[in_window[-1]])


def test_scalar_call_returns_one_composite(conn: Connection) -> None:
    insert_rows(conn, "US", [dt.date(2018, 1, 2)], [np.ones(DIM, dtype="<f4")])
    row = conn.execute(
        "SELECT (compute_regime_prototype('US', '2018-01-01', '2018-12-31')).n_dates"
    ).fetchone()
    assert row == (1,)


def test_latest_created_at_wins_and_dates_count_once(conn: Connection) -> None:
    day = dt.date(2018, 3, 1)
    early = dt.datetime(2018, 3, 1, 12, tzinfo=dt.UTC)
    late = dt.datetime(2018, 3, 2, 12, tzinfo=dt.UTC)
    old, new, other = (np.full(DIM, v, dtype="<f4") for v in (100.0, 2.0, 4.0))
    insert_rows(conn, "US", [day], [new], created_at=late)
    insert_rows(conn, "US", [day], [old], created_at=early)
    insert_rows(conn, "US", [dt.date(2018, 3, 2)], [other], created_at=early)
    row = conn.execute(
        "SELECT n_dates, n_skipped, center"
        " FROM compute_regime_prototype('US', '2018-03-01', '2018-03-31')"
    ).fetchone()
    assert row is not None
    assert row[:2] == (2, 0)
    assert np.array_equal(vector_to_numpy(row[2]), np.full(DIM, 3.0, dtype=np.float32))


def test_null_and_unconvertible_rows_are_skipped_and_counted(conn: Connection) -> None:
    conn.add_notice_handler(lambda d: None)
    dates = business_days(dt.date(2018, 1, 1), 5)
    good = np.arange(DIM, dtype="<f4")
    insert_rows(
        conn,
        "US",
        dates,
        [good, None, b"\x01\x02", good * 3, np.full(DIM, np.nan, "<f4").tobytes()],
    )
    row = conn.execute(
        "SELECT n_dates, n_skipped, center, first_date, last_date "
        "FROM compute_regime_prototype('US', '2018-01-01', '2018-01-31')"
    ).fetchone()
    assert row is not None
    assert row[:2] == (2, 3)
    assert np.array_equal(vector_to_numpy(row[2]), good * 2)
    assert (row[3], row[4]) == (dates[0], dates[3])


def test_a_newer_null_row_hides_an_older_embedding(conn: Connection) -> None:
    day = dt.date(2018, 1, 2)
    insert_rows(
        conn, "US", [day], [np.ones(DIM, "<f4")], created_at=dt.datetime(2018, 1, 2, tzinfo=dt.UTC)
    )
    insert_rows(conn, "US", [day], [None], created_at=dt.datetime(2018, 1, 3, tzinfo=dt.UTC))
    insert_rows(conn, "US", [dt.date(2018, 1, 3)], [np.zeros(DIM, "<f4")])
    row = conn.execute(
        "SELECT n_dates, n_skipped FROM compute_regime_prototype('US', '2018-01-01', '2018-01-31')"
    ).fetchone()
    assert row == (1, 1)


def test_other_regions_are_ignored(conn: Connection) -> None:
    dates = business_days(dt.date(2018, 1, 1), 10)
    insert_rows(conn, "US", dates, [np.ones(DIM, "<f4")] * 10)
    insert_rows(conn, "EU", dates, [np.full(DIM, 9.0, "<f4")] * 10)
    row = conn.execute(
        "SELECT n_dates, center FROM compute_regime_prototype('US', '2018-01-01', '2018-12-31')"
    ).fetchone()
    assert row is not None and row[0] == 10
    assert np.array_equal(vector_to_numpy(row[1]), np.ones(DIM, np.float32))


WINDOWS = {
    "NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-06-30"},
    "CRISIS": {"start_date": "2018-07-01", "end_date": "2018-08-31"},
}


def test_many_windows_one_statement(conn: Connection) -> None:
    rng = np.random.default_rng(3)
    dates = business_days(dt.date(2018, 1, 1), 200)
    x = _embeddings(rng, len(dates))
    insert_rows(conn, "US", dates, x)
    rows = conn.execute(
        f"SELECT label, {COLUMNS} FROM compute_regime_prototypes('US', %s)",
        (json.dumps(WINDOWS),),
    ).fetchall()
    assert [r[0] for r in rows] == ["CRISIS", "NEUTRAL"]
    for row in rows:
        window = WINDOWS[row[0]]
        start = dt.date.fromisoformat(window["start_date"])
        end = dt.date.fromisoformat(window["end_date"])
        picked = np.array([start <= d <= end for d in dates])
        assert row[1:5] == ("US", start, end, int(picked.sum()))
        assert_center_matches(vector_to_numpy(row[6]), x[picked])


def test_prototypes_json_document(conn: Connection) -> None:
    rng = np.random.default_rng(4)
    dates = business_days(dt.date(2018, 1, 1), 200)
    insert_rows(conn, "US", dates, _embeddings(rng, len(dates)))
    doc = conn.execute(
        "SELECT regime_prototypes_json('US', %s)", (json.dumps(WINDOWS),)
    ).fetchone()[0]
    assert sorted(doc) == ["embedding_dim", "prototypes", "region"]
    assert doc["embedding_dim"] == DIM and doc["region"] == "US"
    assert sorted(doc["prototypes"]) == ["CRISIS", "NEUTRAL"]
    rows = {
        r[0]: r
        for r in conn.execute(
            "SELECT label, center, l2_norm, n_dates FROM compute_regime_prototypes('US', %s)",
            (json.dumps(WINDOWS),),
        )
    }
    for label, entry in doc["prototypes"].items():
        assert entry["window"] == {
            "start_date": WINDOWS[label]["start_date"],
            "end_date": WINDOWS[label]["end_date"],
        }
        center = np.array(entry["center"], dtype=np.float32)
        assert np.array_equal(center, vector_to_numpy(rows[label][1]))
        assert entry["l2_norm"] == rows[label][2]
        assert entry["n_dates"] == rows[label][3]
        assert {"dispersion", "n_skipped", "first_date", "last_date"} <= set(entry)


@pytest.mark.parametrize(
    ("call", "params", "sqlstate", "column", "message"),
    [
        (
            "compute_regime_prototype(%s, %s, %s)",
            ("US", "2018-12-31", "2018-01-01"),
            "22023",
            "as_of_date",
            "is reversed",
        ),
        (
            "compute_regime_prototype(%s, %s, %s)",
            ("XX", "2018-01-01", "2018-12-31"),
            "42704",
            "region",
            "unknown region 'XX'",
        ),
        (
            "compute_regime_prototype(%s, %s, %s)",
            ("US", "2030-01-01", "2030-12-31"),
            "P0002",
            "as_of_date",
            "no usable embedding for region 'US'",
        ),
        (
            "compute_regime_prototype(%s, %s, %s)",
            ("US", "-infinity", "2018-12-31"),
            "22008",
            "as_of_date",
            "finite dates",
        ),
        (
            "compute_regime_prototype(%s, %s, %s)",
            (None, "2018-01-01", "2018-12-31"),
            "22004",
            "region",
            "must not be NULL",
        ),
        (
            "compute_regime_prototype(%s, %s, %s)",
            ("U" * 33, "2018-01-01", "2018-12-31"),
            "22001",
            "region",
            "at most 32",
        ),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"bad": {"start_date": "2018-01-01", "end_date": "2018-06-30"}}'),
            "22P02",
            None,
            "label rule",
        ),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"A": {"start_date": "2018-02-30", "end_date": "2018-06-30"}}'),
            "22007",
            "as_of_date",
            "not a calendar date",
        ),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"A": {"start_date": "18-01-01", "end_date": "2018-06-30"}}'),
            "22007",
            "as_of_date",
            "YYYY-MM-DD",
        ),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"A": {"start_date": "2018-01-30"}}'),
            "22032",
            None,
            "must be {",
        ),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"A": {"start_date": "2018-01-30", "end_date": "2018-02-01", "x": 1}}'),
            "22032",
            None,
            "must be {",
        ),
        ("compute_regime_prototypes(%s, %s)", ("US", "[]"), "22032", None, "non-empty JSON object"),
        ("compute_regime_prototypes(%s, %s)", ("US", "{}"), "22032", None, "non-empty JSON object"),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"CRISIS": {"start_date": "2018-03-01", "end_date": "2018-02-01"}}'),
            "22023",
            "as_of_date",
            "label CRISIS is reversed",
        ),
        (
            "compute_regime_prototypes(%s, %s)",
            ("US", '{"CRISIS": {"start_date": "2030-03-01", "end_date": "2030-04-01"}}'),
            "P0002",
            "as_of_date",
            "label CRISIS in window 2030-03-01..2030-04-01",
        ),
        ("regime_prototypes_json(%s, %s)", ("US", '{"A": 1}'), "22032", None, "must be {"),
    ],
)
def test_errors_have_sqlstate_and_message(
    conn: Connection,
    call: str,
    params: tuple[object, ...],
    sqlstate: str,
    column: str | None,
    message: str,
) -> None:
    insert_rows(conn, "US", [dt.date(2018, 1, 2)], [np.ones(DIM, "<f4")])
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(f"SELECT * FROM {call}", params)
    assert caught.value.sqlstate == sqlstate
    assert message in (caught.value.diag.message_primary or "")
    assert caught.value.diag.column_name == column


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    n_days=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_windows_with_duplicates_and_bad_rows(
    conn: Connection, data: st.DataObject, n_days: int, seed: int
) -> None:
    """Property: the centre is numpy's mean over the latest usable row per date."""
    conn.execute("DELETE FROM regimes")
    conn.add_notice_handler(lambda d: None)
    rng = np.random.default_rng(seed)
    days = business_days(dt.date(2019, 1, 1), n_days)
    latest: dict[dt.date, np.ndarray | None] = {}
    base = dt.datetime(2019, 6, 1, tzinfo=dt.UTC)
    for version in range(data.draw(st.integers(1, 3), label="versions")):
        kinds = data.draw(
            st.lists(
                st.sampled_from(["ok", "ok", "ok", "null", "short", "nan"]),
                min_size=n_days,
                max_size=n_days,
            ),
            label="kinds",
        )
        payloads: list[np.ndarray | bytes | None] = []
        for day, kind in zip(days, kinds, strict=True):
            vec = (rng.standard_normal(DIM) * 10).astype("<f4")
            payload = {
                "ok": vec,
                "null": None,
                "short": b"\x00" * 8,
                "nan": np.full(DIM, np.nan, "<f4").tobytes(),
            }[kind]
            payloads.append(payload)
            latest[day] = vec if kind == "ok" else None
        insert_rows(conn, "R", days, payloads, created_at=base + dt.timedelta(hours=version))
    lo = data.draw(st.integers(0, n_days - 1), label="lo")
    hi = data.draw(st.integers(lo, n_days - 1), label="hi")
    chosen = [latest[d] for d in days[lo : hi + 1]]
    usable = [v for v in chosen if v is not None]
    query = "SELECT n_dates, n_skipped, center FROM compute_regime_prototype('R', %s, %s)"
    if not usable:
        with pytest.raises(psycopg.errors.NoDataFound):
            conn.execute(query, (days[lo], days[hi]))
        return
    row = conn.execute(query, (days[lo], days[hi])).fetchone()
    assert row is not None
    assert row[:2] == (len(usable), len(chosen) - len(usable))
    assert_center_matches(vector_to_numpy(row[2]), np.array(usable))


def _window_buffers(conn: Connection) -> int:
    plan = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
        "SELECT avg(embedding_vector) FROM regime_embeddings_latest "
        "WHERE region = 'US' AND as_of_date BETWEEN '2018-01-01' AND '2018-12-31'"
    ).fetchone()[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


def test_one_year_window_reads_heap_and_index_only(conn: Connection) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of a one-year window: heap and index pages, no TOAST."""
    rng = np.random.default_rng(5)
    dates = business_days(dt.date(2017, 1, 1), 3 * 261)
    for region in ("US", "EU"):
        insert_rows(conn, region, dates, _embeddings(rng, len(dates)))
    conn.execute("VACUUM ANALYZE regimes")
    n_rows = 261
    # ~1.6 kB inline per row: about 4 rows per 8 kB heap page, plus a few index pages.
    inline = _window_buffers(conn)
    assert inline < n_rows / 4 + 20, f"{inline} buffers for a one-year window"

    # Control: pgvector's default (EXTERNAL) storage moves the vector to TOAST,
    # as for an engine insert, and the same window then costs two more buffers per row.
    conn.execute("ALTER TABLE regimes ALTER COLUMN embedding_vector SET STORAGE EXTERNAL")
    conn.execute("UPDATE regimes SET regime_embedding = regime_embedding || ''::bytea")
    conn.execute("VACUUM ANALYZE regimes")
    assert _window_buffers(conn) > inline + 2 * n_rows
