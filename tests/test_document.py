"""The prototype document: exact bytes, float32 round trips, malformed files."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from regime_pg import (
    DateWindow,
    InvalidDocumentError,
    PrototypeDocument,
    RegimeLabel,
    RegimePrototype,
    load_document,
    save_document,
)
from regime_pg.atomic import cannot_write, write_atomically, write_files_atomically
from regime_pg.document import check_l2_norms, float32_json_values


def _prototype(label: str, center: np.ndarray, **extra: object) -> RegimePrototype:
    return RegimePrototype(label, center, **extra)  # type: ignore[arg-type]


def test_exact_bytes_of_a_small_document() -> None:
    doc = PrototypeDocument(
        "US",
        (
            _prototype(
                "NEUTRAL",
                np.array([0.1, -2.5], dtype=np.float32),
                window=DateWindow(dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
                l2_norm=2.502,
                n_dates=251,
            ),
            _prototype("CRISIS", np.array([1e-45, 3.4028235e38], dtype=np.float32)),
        ),
    )
    assert doc.dumps() == (
        "{\n"
        '  "embedding_dim": 2,\n'
        '  "prototypes": {\n'
        '    "CRISIS": {\n'
        '      "center": [\n'
        "        1e-45,\n"
        "        3.4028235e+38\n"
        "      ]\n"
        "    },\n"
        '    "NEUTRAL": {\n'
        '      "center": [\n'
        "        0.1,\n"
        "        -2.5\n"
        "      ],\n"
        '      "l2_norm": 2.502,\n'
        '      "n_dates": 251,\n'
        '      "window": {\n'
        '        "end_date": "2018-12-31",\n'
        '        "start_date": "2018-01-01"\n'
        "      }\n"
        "    }\n"
        "  },\n"
        '  "region": "US"\n'
        "}\n"
    )


def test_negative_zero_is_written_as_zero() -> None:
    assert json.dumps(float32_json_values(np.array([-0.0, 0.0], np.float32))) == "[0.0, 0.0]"


@settings(max_examples=200)
@given(arrays(np.float32, 8, elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_centres_round_trip_bit_exact_except_negative_zero(center: np.ndarray) -> None:
    doc = PrototypeDocument("US", (_prototype("NEUTRAL", center),))
    loaded = PrototypeDocument.loads(doc.dumps())
    back = loaded.prototypes[0].center
    assert np.array_equal(back, center)  # -0.0 == 0.0 numerically
    assert loaded.dumps() == doc.dumps()


def test_labels_become_members_and_others_stay_strings() -> None:
    doc = PrototypeDocument.loads(
        json.dumps(
            {
                "embedding_dim": 1,
                "prototypes": {"CRISIS": {"center": [1.0]}, "RECOVERY": {"center": [2.0]}},
                "region": "US",
            }
        )
    )
    crisis, recovery = doc.prototypes
    assert crisis.label is RegimeLabel.CRISIS
    assert recovery.label == "RECOVERY" and not isinstance(recovery.label, RegimeLabel)


def test_old_files_with_float64_centres_load_as_float32() -> None:
    value = float(np.float32(0.123456))  # what center.tolist() wrote: 0.12345600128173828
    doc = PrototypeDocument.loads(
        json.dumps(
            {
                "embedding_dim": 1,
                "prototypes": {
                    "NEUTRAL": {
                        "center": [value],
                        "l2_norm": value,
                        "window": {"end_date": "2018-12-31", "start_date": "2018-01-01"},
                    }
                },
                "region": "US",
            }
        )
    )
    assert doc.prototypes[0].center[0] == np.float32(0.123456)
    assert '"center": [\n        0.123456\n' in doc.dumps()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "is a JSON object"),
        ("{", "not valid JSON"),
        ('{"embedding_dim": 1, "prototypes": {}, "region": "US"}', "'prototypes' is empty"),
        (
            '{"embedding_dim": 2, "prototypes": {"A": {"center": [1]}}, "region": "US"}',
            "has 1 values",
        ),
        (
            '{"embedding_dim": 1, "prototypes": {"a": {"center": [1]}}, "region": "US"}',
            "label rule",
        ),
        (
            '{"embedding_dim": 1, "prototypes": {"A": {"center": ["x"]}}, "region": "US"}',
            "numbers only",
        ),
        (
            '{"embedding_dim": 1, "prototypes": {"A": {"center": [1e39]}}, "region": "US"}',
            "finite float32",
        ),
        (
            '{"embedding_dim": 1, "prototypes": {"A": {"center": [NaN]}}, "region": "US"}',
            "NaN is not allowed",
        ),
        (
            '{"embedding_dim": 1, "prototypes": {"A": {"center": [1]}}, "region": ""}',
            "region must be",
        ),
        (
            '{"embedding_dim": true, "prototypes": {"A": {"center": [1]}}, "region": "US"}',
            "wrong type",
        ),
        ('{"prototypes": {"A": {"center": [1]}}, "region": "US"}', "missing key 'embedding_dim'"),
        (
            '{"embedding_dim": 1, "prototypes": {"A": {"center": [1], "window": '
            '{"start_date": "2018-02-01", "end_date": "2018-01-01"}}}, "region": "US"}',
            "reversed",
        ),
        (
            '{"embedding_dim": 1, "prototypes": {"A": {"center": [1], "window": '
            '{"start_date": "2018-02-30", "end_date": "2018-03-01"}}}, "region": "US"}',
            "not a calendar date",
        ),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_documents_raise_invalid_document(text: str, message: str) -> None:
    with pytest.raises(InvalidDocumentError, match=message):
        PrototypeDocument.loads(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"embedding_dim": json_values, "prototypes": json_values, "region": json_values}
        ),
        st.fixed_dictionaries(
            {
                "embedding_dim": st.integers(-2, 3),
                "prototypes": st.dictionaries(
                    st.sampled_from(["NEUTRAL", "CRISIS", "bad", ""]),
                    st.fixed_dictionaries({"center": st.lists(json_values, max_size=3)}),
                ),
                "region": st.text(max_size=40),
            }
        ),
    )
)
def test_fuzzed_documents_load_or_raise_typed(obj: object) -> None:
    try:
        doc = PrototypeDocument.from_json(obj)
    except InvalidDocumentError:
        return
    assert PrototypeDocument.loads(doc.dumps()) == doc


def test_save_is_atomic_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "regime_prototypes_US.json"
    good = PrototypeDocument("US", (_prototype("NEUTRAL", np.ones(3, np.float32)),))
    save_document(good, target)
    before = target.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_document(
            PrototypeDocument("US", (_prototype("CRISIS", np.zeros(3, np.float32)),)), target
        )
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert load_document(target) == good


OLD = PrototypeDocument("US", (_prototype("NEUTRAL", np.ones(3, np.float32)),))
NEW = PrototypeDocument("US", (_prototype("CRISIS", np.full(3, 0.25, np.float32)),))


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a link as ``-> target``, a file as its text."""
    return {
        str(p.relative_to(root)): f"-> {os.readlink(p)}" if p.is_symlink() else p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_save_writes_through_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "prototypes-2026-11.json"
    save_document(OLD, target)
    target.chmod(0o640)
    link = tmp_path / "current.json"
    link.symlink_to("prototypes-2026-11.json")
    save_document(NEW, link)
    assert _tree(tmp_path) == {
        "current.json": "-> prototypes-2026-11.json",
        "prototypes-2026-11.json": NEW.dumps(),
    }
    assert target.read_bytes() == NEW.dumps().encode("utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert load_document(link) == NEW


def test_save_follows_a_chain_of_links_across_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "links").mkdir()
    save_document(OLD, tmp_path / "store" / "prototypes-2026-11.json")
    (tmp_path / "store" / "latest.json").symlink_to("prototypes-2026-11.json")
    (tmp_path / "links" / "current.json").symlink_to(tmp_path / "store" / "latest.json")
    monkeypatch.chdir(tmp_path / "links")
    save_document(NEW, "current.json")
    assert _tree(tmp_path) == {
        "links/current.json": f"-> {tmp_path / 'store' / 'latest.json'}",
        "store/latest.json": "-> prototypes-2026-11.json",
        "store/prototypes-2026-11.json": NEW.dumps(),
    }


def test_save_through_a_dangling_link_creates_its_target(tmp_path: Path) -> None:
    """As ``open(path, "w")`` would: the link then points to the new file."""
    link = tmp_path / "current.json"
    link.symlink_to("prototypes-2026-12.json")
    save_document(NEW, link)
    assert _tree(tmp_path) == {
        "current.json": "-> prototypes-2026-12.json",
        "prototypes-2026-12.json": NEW.dumps(),
    }


def test_save_through_a_link_into_a_missing_directory_changes_nothing(tmp_path: Path) -> None:
    link = tmp_path / "current.json"
    link.symlink_to("gone/prototypes-2026-12.json")
    with pytest.raises(FileNotFoundError):
        save_document(NEW, link)
    assert _tree(tmp_path) == {"current.json": "-> gone/prototypes-2026-12.json"}


def test_save_through_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").symlink_to("b.json")
    (tmp_path / "b.json").symlink_to("a.json")
    with pytest.raises(OSError) as caught:
        save_document(NEW, tmp_path / "a.json")
    assert caught.value.errno == errno.ELOOP
    assert caught.value.filename == str(tmp_path / "a.json")
    assert _tree(tmp_path) == {"a.json": "-> b.json", "b.json": "-> a.json"}


def test_failed_save_through_a_link_leaves_link_and_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "store").mkdir()
    save_document(OLD, tmp_path / "store" / "prototypes-2026-11.json")
    (tmp_path / "current.json").symlink_to("store/prototypes-2026-11.json")
    before = _tree(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_document(NEW, tmp_path / "current.json")
    assert _tree(tmp_path) == before


def test_load_missing_file_is_typed(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocumentError, match="cannot read"):
        load_document(tmp_path / "nope.json")


def test_unknown_keys_are_reported_not_silently_dropped(caplog: pytest.LogCaptureFixture) -> None:
    text = json.dumps(
        {
            "embedding_dim": 1,
            "prototypes": {"NEUTRAL": {"center": [1.0], "comment": "calm"}},
            "region": "US",
            "extra": 1,
        }
    )
    with caplog.at_level("WARNING", logger="regime_pg.document"):
        doc = PrototypeDocument.loads(text)
    assert "comment" not in doc.dumps() and "extra" not in doc.dumps()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "document: ignoring unknown keys extra (they are not kept)",
        "prototype NEUTRAL: ignoring unknown keys comment (they are not kept)",
    ]


# --------------------------------------------------------------------------- several files at once


def test_several_files_are_written_through_links_text_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "us-2026-11.json").write_text("old\n")
    (tmp_path / "current.json").symlink_to("store/us-2026-11.json")
    write_files_atomically(
        [(tmp_path / "current.json", "new\n"), (tmp_path / "plot.svg", b"<?xml?>\n")]
    )
    assert _tree(tmp_path) == {
        "current.json": "-> store/us-2026-11.json",
        "plot.svg": "<?xml?>\n",
        "store/us-2026-11.json": "new\n",
    }


def test_several_files_all_or_none(tmp_path: Path) -> None:
    """A directory in the second file's place: the first file is not replaced either."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("old\n")
    second.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_files_atomically([(first, "new\n"), (second, "new\n")])
    assert (caught.value.errno, caught.value.filename) == (errno.EISDIR, str(second))
    assert _tree(tmp_path) == {"a.json": "old\n"}  # and no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_a_failed_write_names_the_callers_path_not_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "current.json"
    link.symlink_to("gone/us.json")
    with pytest.raises(FileNotFoundError) as caught:
        write_atomically(link, "new\n")
    assert caught.value.filename == str(link)
    assert str(cannot_write(link, caught.value)) == (
        f"cannot write {link}: No such file or directory"
    )
    assert str(cannot_write("x.csv", OSError(errno.EACCES, os.strerror(errno.EACCES)))) == (
        "cannot write x.csv: Permission denied"
    )


# --------------------------------------------------------------------------- l2_norm


def _norm_document(l2_norm: float, center: np.ndarray) -> PrototypeDocument:
    return PrototypeDocument("US", (_prototype("CRISIS", center, l2_norm=l2_norm),))


def test_l2_norms_as_writers_take_them_are_accepted() -> None:
    """The float32 centre's norm in float64 (regime-pg), the norm of the float64 mean before
    it was rounded, and norms taken in float32 arithmetic (numpy, a running sum)."""
    mean = np.random.default_rng(5).standard_normal(384) * 3 + 0.5
    center = mean.astype(np.float32)
    exact = float(np.linalg.norm(center.astype(np.float64)))
    running = float(np.sqrt(np.cumsum(center * center, dtype=np.float32)[-1]))
    writers = {
        "regime-pg": exact,
        "float64 mean": float(np.linalg.norm(mean)),
        "numpy float32": float(np.linalg.norm(center)),
        "float32 running sum": running,
    }
    for writer, l2_norm in writers.items():
        document = _norm_document(l2_norm, center)
        check_l2_norms(document)  # raises for a rejected one
        loaded = PrototypeDocument.loads(document.dumps())  # as written: shortest decimals
        assert loaded.prototypes[0].l2_norm == l2_norm, writer
        check_l2_norms(loaded)
    assert 0 < abs(running - exact) / exact < 384 * 2.0**-24
    check_l2_norms(PrototypeDocument("US", (_prototype("CRISIS", center),)))  # no l2_norm
    check_l2_norms(_norm_document(0.0, np.zeros(384, np.float32)))
    check_l2_norms(_norm_document(0.0, np.full(384, 1e-45, np.float32)))  # underflows in float32


def test_an_l2_norm_of_another_centre_is_rejected_naming_the_prototype() -> None:
    center = (np.random.default_rng(6).standard_normal(384) * 3).astype(np.float32)
    exact = float(np.linalg.norm(center.astype(np.float64)))
    wrong = exact * (1 + 1e-4)
    with pytest.raises(InvalidDocumentError) as caught:
        check_l2_norms(PrototypeDocument.loads(_norm_document(wrong, center).dumps()))
    assert str(caught.value) == (
        f"prototype CRISIS: l2_norm {wrong:.9g} is not the norm of its center, {exact:.9g} "
        "(relative tolerance 2.3e-05)"
    )
    for bad in (-exact, 0.0, 1e38):
        with pytest.raises(InvalidDocumentError, match=r"^prototype CRISIS: l2_norm "):
            check_l2_norms(_norm_document(bad, center))
