"""The SQL import checks each l2_norm against its centre (prototype_sets--3.sql, 0019).

``regime_pg.sets.import_set`` refuses a document whose prototype's ``l2_norm``
is not the norm of its centre (``regime_pg.document.check_l2_norms``).  Since
0019 ``save_regime_prototype_set_from_document`` refuses the same documents:
data_exception (22000) naming the prototype, nothing written, with the same
tolerance (relative dim * 2^-24, absolute sqrt(dim * 2^-149)) taken with the
same float8 operations.

The centres of the boundary tests hold integers (times a power of two), so
their squares and the sum of these are exact in float8 in any order: numpy's
norm and pgvector's ``vector_norm`` are then the same float8, and the last
``l2_norm`` accepted and the first refused on each side are found with
``math.isclose`` itself.  Both paths must agree on every one of them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import psycopg
import pytest

from regime_pg import migrate
from regime_pg.connection import Connection, translated_errors
from regime_pg.document import (
    PrototypeDocument,
    _norm_tolerance,
    check_l2_norms,
    float32_json_values,
)
from regime_pg.errors import InvalidDocumentError
from tests.test_prototype_sets_sql import export, norm64, set_rows

DIM = 384
REL_TOL = 384 * 2.0**-24
ABS_TOL = math.sqrt(384 * 2.0**-149)
IMPORT = "SELECT name FROM save_regime_prototype_set_from_document(%s, %s, %s)"
#: A centre of norm 5, exactly.
THREE_FOUR = np.zeros(DIM, dtype=np.float32)
THREE_FOUR[:2] = [3, 4]
HINT = "l2_norm is optional: give the norm of the center, or leave it out."


def document(prototypes: dict[str, tuple[Any, float | None]]) -> dict[str, Any]:
    """A document of region US: label -> (centre, l2_norm or None for none)."""
    entries: dict[str, Any] = {}
    for label, (center, l2_norm) in prototypes.items():
        values = center if isinstance(center, list) else float32_json_values(center)
        entries[label] = {"center": values}
        if l2_norm is not None:
            entries[label]["l2_norm"] = l2_norm
    return {"embedding_dim": DIM, "prototypes": entries, "region": "US"}


def python_accepts(doc: dict[str, Any]) -> bool:
    try:
        check_l2_norms(PrototypeDocument.from_json(doc))
    except InvalidDocumentError:
        return False
    return True


def sql_accepts(conn: Connection, doc: dict[str, Any]) -> bool:
    """Whether the SQL import takes ``doc`` (rolled back either way); a refusal is 22000."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(IMPORT, ("probe", json.dumps(doc), 1.0))
    except psycopg.Error as exc:
        assert exc.sqlstate == "22000", exc
        assert "is not the norm of its center" in (exc.diag.message_primary or "")
        return False
    return True


def edges(norm: float) -> list[tuple[float, bool]]:
    """The l2_norms either side of the edges of math.isclose(l2_norm, norm): (value, accepted).

    Starts from each edge worked out by hand (|x - norm| <= max(rel * max(x, norm), abs))
    and steps one float8 at a time to it; a lower edge below 0 is left out.
    """
    def close(x: float) -> bool:
        return math.isclose(x, norm, rel_tol=REL_TOL, abs_tol=ABS_TOL)

    out: list[tuple[float, bool]] = []
    for x, outwards in ((max(norm / (1 - REL_TOL), norm + ABS_TOL), math.inf),
                        (min(norm * (1 - REL_TOL), norm - ABS_TOL), -math.inf)):
        if x < 0:
            continue
        while close(math.nextafter(x, outwards)):
            x = math.nextafter(x, outwards)
        while not close(x):
            x = math.nextafter(x, -outwards)
        out += [(x, True), (math.nextafter(x, outwards), False)]
    return out


def test_the_tolerance_is_that_of_the_client() -> None:
    assert _norm_tolerance(DIM) == (REL_TOL, ABS_TOL)


@pytest.mark.parametrize(
    "case",
    ["integers", "integers times 2^100", "three-four", "zero", "subnormal"],
)
def test_sql_and_python_agree_at_the_edges_of_the_tolerance(conn: Connection, case: str) -> None:
    rng = np.random.default_rng(7)
    integers = rng.integers(-1000, 1001, DIM).astype(np.float32)
    center = {
        "integers": integers,
        "integers times 2^100": integers * np.float32(2.0**100),  # squares near 1e66
        "three-four": THREE_FOUR,
        "zero": np.zeros(DIM, dtype=np.float32),
        "subnormal": np.full(DIM, 1e-45, dtype=np.float32),  # 2^-149, float32's smallest
    }[case]
    norm = norm64(center)
    assert conn.execute("SELECT vector_norm(%s::real[]::vector)",
                        (center.tolist(),)).fetchone() == (norm,)
    values = edges(norm)
    if norm == 0:
        assert values == [(ABS_TOL, True), (math.nextafter(ABS_TOL, math.inf), False)]
        values.append((5e-324, True))  # the smallest float8: rel_tol * it would underflow
    elif norm < ABS_TOL:
        values.append((0.0, True))  # float32 squares of it underflow to 0
    assert len(values) == (4 if norm > ABS_TOL else 3)
    for l2_norm, accepted in values:
        doc = document({"CRISIS": (center, l2_norm)})
        assert (python_accepts(doc), sql_accepts(conn, doc)) == (accepted, accepted), l2_norm
    assert set_rows(conn) == []


def test_sql_and_python_agree_on_the_norms_writers_take(conn: Connection) -> None:
    """The norms check_l2_norms documents as accepted (tests/test_document.py), the
    centre also written as float64 decimals, and norms 1e-4 off or of another centre."""
    mean = np.random.default_rng(5).standard_normal(DIM) * 3 + 0.5
    center = mean.astype(np.float32)
    exact = norm64(center)
    running = float(np.sqrt(np.cumsum(center * center, dtype=np.float32)[-1]))
    other = norm64((np.random.default_rng(6).standard_normal(DIM) * 3).astype(np.float32))
    cases: list[tuple[Any, float, bool]] = [
        (center, exact, True),                      # regime-pg
        (center, float(np.linalg.norm(mean)), True),  # the float64 mean's
        (center, float(np.linalg.norm(center)), True),  # numpy in float32
        (center, running, True),                    # a float32 running sum
        (mean.tolist(), float(np.linalg.norm(mean)), True),  # an old float64 file
        (center, exact * (1 + 1e-4), False),
        (center, exact * (1 - 1e-4), False),
        (center, 0.0, False),
        (center, other, False),
    ]
    for values, l2_norm, accepted in cases:
        doc = document({"NEUTRAL": (values, l2_norm)})
        assert (python_accepts(doc), sql_accepts(conn, doc)) == (accepted, accepted), l2_norm


def test_a_wrong_l2_norm_is_22000_naming_the_first_label_and_nothing_is_written(
    conn: Connection,
) -> None:
    bad = document({"A_B": (THREE_FOUR, 5.01), "AB": (THREE_FOUR, 4.99),
                    "NEUTRAL": (THREE_FOUR, 5.0), "RISK_OFF": (THREE_FOUR, None)})
    # the check comes before the fit: no "have no window" error for temperature NULL
    for temperature in (1.0, None):
        with pytest.raises(psycopg.errors.DataException) as caught:
            conn.execute(IMPORT, ("bad", json.dumps(bad), temperature))
        error = caught.value
        assert error.sqlstate == "22000"
        assert error.diag.message_primary == (
            "prototype AB: l2_norm 4.99 is not the norm of its center, 5"
            " (relative tolerance 2.288818359375e-05)"
        )
        assert (error.diag.table_name, error.diag.column_name) == (
            "regime_prototype_set_members", "l2_norm")
        assert error.diag.message_hint == HINT
        assert set_rows(conn) == []
    # the client names the same prototype (labels in byte order: "AB" < "A_B")
    with pytest.raises(InvalidDocumentError, match=r"^prototype AB: l2_norm 4\.99 is not"):
        check_l2_norms(PrototypeDocument.from_json(bad))
    # through the client's error translation: the type import_set raises
    with pytest.raises(InvalidDocumentError) as typed, translated_errors():
        conn.execute(IMPORT, ("bad", json.dumps(bad), 1.0))
    assert str(typed.value) == (
        "prototype AB: l2_norm 4.99 is not the norm of its center, 5"
        f" (relative tolerance 2.288818359375e-05) (hint: {HINT})"
    )
    assert set_rows(conn) == []
    # right norms, or none, import
    good = document({"AB": (THREE_FOUR, 5.0), "A_B": (THREE_FOUR, 5.0000001),
                     "RISK_OFF": (THREE_FOUR, None)})
    assert conn.execute(IMPORT, ("good", json.dumps(good), 1.0)).fetchone() == ("good",)
    assert export(conn, "good") == good


def test_downgrade_to_0018_imports_a_wrong_l2_norm_and_upgrade_to_0019_refuses_it(
    db: str,
) -> None:
    bad = document({"CRISIS": (THREE_FOUR, 5.01)})
    migrate.downgrade(db, "0018")
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute(IMPORT, ("before", json.dumps(bad), 1.0)).fetchone() == ("before",)
    migrate.upgrade(db, "0019")
    assert migrate.current_revision(db) == "0019"
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DataException, match=r"prototype CRISIS: l2_norm 5\.01 "):
            conn.execute(IMPORT, ("after", json.dumps(bad), 1.0))
        # a set stored before is left as it is
        assert export(conn, "before") == bad
        assert [row[0] for row in set_rows(conn)] == ["before"]
