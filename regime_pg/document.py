"""The prototype document: the JSON file users keep their prototypes in.

Format (keys sorted, 2-space indent, one trailing newline in a file)::

    {"embedding_dim": 384,
     "prototypes": {"CRISIS": {"center": [...], "l2_norm": 12.34,
                               "window": {"end_date": "2020-04-30",
                                          "start_date": "2020-03-01"},
                               "n_dates": 42, ...},
                    "NEUTRAL": {...}},
     "region": "US"}

Centres are float32: each value is written as the shortest decimal that
reads back to the same float32 (``-0.0`` is written as ``0.0``, as JSON in
PostgreSQL has no negative zero).  That makes the bytes a function of the
float32 values alone, so the document written from the client's objects, by
the CLI, and from ``regime_prototypes_json`` in SQL are identical.

>>> import numpy as np
>>> doc = PrototypeDocument("US", (RegimePrototype("NEUTRAL", np.full(2, 0.1)),))
>>> print(doc.dumps(), end="")
{
  "embedding_dim": 2,
  "prototypes": {
    "NEUTRAL": {
      "center": [
        0.1,
        0.1
      ]
    }
  },
  "region": "US"
}
>>> PrototypeDocument.loads(doc.dumps()) == doc
True
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from regime_pg.atomic import write_atomically
from regime_pg.errors import InvalidDocumentError, RegimePgError
from regime_pg.prototypes import DateWindow, RegimePrototype, parse_date, parse_label

MAX_REGION_LENGTH = 32

log = logging.getLogger("regime_pg.document")


def float32_json_values(center: npt.NDArray[np.float32]) -> list[float]:
    """Centre values as Python floats that print as their shortest float32 decimal.

    >>> float32_json_values(np.array([0.1, -0.0, 3e-45], dtype=np.float32))
    [0.1, 0.0, 3e-45]
    """
    return [float(str(value)) + 0.0 for value in center.astype(np.float32)]


@dataclass(frozen=True)
class PrototypeDocument:
    """A region's prototypes, as one document.

    ``prototypes`` is kept sorted by label; labels are unique.
    """

    region: str
    prototypes: tuple[RegimePrototype, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.prototypes, key=lambda p: str(p.label)))
        labels = [str(p.label) for p in ordered]
        if len(set(labels)) != len(labels):
            raise InvalidDocumentError(f"duplicate labels in {labels}")
        if not ordered:
            raise InvalidDocumentError("a prototype document needs at least one prototype")
        dims = {p.center.shape[0] for p in ordered}
        if len(dims) != 1:
            raise InvalidDocumentError(f"prototype centres differ in dimension: {sorted(dims)}")
        object.__setattr__(self, "prototypes", ordered)

    @property
    def embedding_dim(self) -> int:
        """The common dimension of the centres."""
        return int(self.prototypes[0].center.shape[0])

    def by_label(self) -> dict[str, RegimePrototype]:
        """The prototypes keyed by label name."""
        return {str(p.label): p for p in self.prototypes}

    def to_json(self) -> dict[str, Any]:
        """The document as JSON-ready Python objects."""
        return {
            "embedding_dim": self.embedding_dim,
            "prototypes": {str(p.label): _prototype_json(p) for p in self.prototypes},
            "region": self.region,
        }

    def dumps(self) -> str:
        """The document text: sorted keys, 2-space indent, one trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, obj: Any) -> PrototypeDocument:
        """A document from parsed JSON; ``InvalidDocumentError`` when malformed."""
        try:
            return _parse_document(obj)
        except InvalidDocumentError:
            raise
        except RegimePgError as exc:
            raise InvalidDocumentError(str(exc)) from None
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise InvalidDocumentError(f"malformed prototype document: {exc}") from None

    @classmethod
    def loads(cls, text: str | bytes) -> PrototypeDocument:
        """A document from its JSON text."""
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise InvalidDocumentError(f"not valid JSON: {str(exc)[:200]}") from None
        return cls.from_json(obj)


def check_l2_norms(document: PrototypeDocument) -> None:
    """Raise ``InvalidDocumentError`` naming a prototype whose ``l2_norm`` is not its centre's.

    A prototype without ``l2_norm`` passes.  The tolerance is relative,
    ``embedding_dim * 2**-24`` (2.3e-5 at 384 dimensions): see ``_norm_tolerance``.

    >>> fine = RegimePrototype("NEUTRAL", [3.0, 4.0], l2_norm=5.0000001)
    >>> check_l2_norms(PrototypeDocument("US", (fine,)))
    >>> wrong = RegimePrototype("CRISIS", [3.0, 4.0], l2_norm=5.01)
    >>> check_l2_norms(PrototypeDocument("US", (wrong,)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    regime_pg.errors.InvalidDocumentError: prototype CRISIS: l2_norm 5.01 is not the norm of ...
    """
    rel_tol, abs_tol = _norm_tolerance(document.embedding_dim)
    for p in document.prototypes:
        if p.l2_norm is None:
            continue
        norm = float(np.linalg.norm(p.center.astype(np.float64)))
        if not math.isclose(p.l2_norm, norm, rel_tol=rel_tol, abs_tol=abs_tol):
            raise InvalidDocumentError(
                f"prototype {p.label}: l2_norm {p.l2_norm:.9g} is not the norm of its center, "
                f"{norm:.9g} (relative tolerance {rel_tol:.2g})"
            )


def _norm_tolerance(dim: int) -> tuple[float, float]:
    """(relative, absolute) tolerance between a document's ``l2_norm`` and its centre's norm.

    Centres are written as the shortest decimals that read back to the same
    float32, so the centre read here is exactly the float32 centre written;
    ``l2_norm`` is a float64, written in full.  What may differ is how the
    writer took the norm: regime-pg (pgvector's ``vector_norm``) sums float64
    squares of the float32 values, within about ``dim * 2**-53``; a norm of
    the float64 mean before it was rounded to float32 is within ``2**-24``
    (every coordinate moved by at most that, relatively); a norm computed in
    float32 arithmetic (``np.linalg.norm`` of the float32 centre, as the
    calibration script could) is within ``dim / 2 * 2**-24`` plus one final
    rounding.  ``dim * 2**-24`` covers all three and still rejects a norm
    that belongs to another centre.  The absolute part, ``sqrt(dim *
    2**-149)`` (about 1e-21), is what float32 squares of subnormal values
    lose by underflowing to zero.
    """
    return dim * 2.0**-24, math.sqrt(dim * 2.0**-149)


def load_document(path: str | os.PathLike[str]) -> PrototypeDocument:
    """Read a prototype document file.

    >>> load_document("regime_prototypes_US.json")   # doctest: +SKIP
    PrototypeDocument(region='US', prototypes=(...))
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidDocumentError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return PrototypeDocument.loads(data)
    except InvalidDocumentError as exc:
        raise InvalidDocumentError(f"{path}: {exc}") from None


def save_document(document: PrototypeDocument, path: str | os.PathLike[str]) -> None:
    """Write ``document`` to ``path`` whole or not at all (never a half-written file).

    A symbolic link is written through and kept (see ``regime_pg.atomic``).
    """
    write_atomically(Path(path), document.dumps())


def _reject_constant(name: str) -> None:
    raise InvalidDocumentError(f"{name} is not allowed in a prototype document")


def _prototype_json(p: RegimePrototype) -> dict[str, Any]:
    out: dict[str, Any] = {"center": float32_json_values(p.center)}
    if p.l2_norm is not None:
        out["l2_norm"] = float(p.l2_norm)
    if p.window is not None:
        out["window"] = p.window.to_json()
    if p.n_dates is not None:
        out["n_dates"] = int(p.n_dates)
    if p.n_skipped is not None:
        out["n_skipped"] = int(p.n_skipped)
    if p.dispersion is not None:
        out["dispersion"] = float(p.dispersion)
    if p.first_date is not None:
        out["first_date"] = p.first_date.isoformat()
    if p.last_date is not None:
        out["last_date"] = p.last_date.isoformat()
    return out


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise InvalidDocumentError(f"{where}: missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidDocumentError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    return _require(obj, key, kind, where) if key in obj else None


def _finite(value: float, where: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise InvalidDocumentError(f"{where} is not a finite number")
    return number


_DOCUMENT_KEYS = frozenset({"embedding_dim", "prototypes", "region"})
_PROTOTYPE_KEYS = frozenset(
    {"center", "l2_norm", "window", "n_dates", "n_skipped", "dispersion", "first_date", "last_date"}
)


def _warn_unknown(obj: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k)[:40] for k in obj if k not in known)
    if unknown:
        log.warning("%s: ignoring unknown keys %s (they are not kept)", where, ", ".join(unknown))


def _parse_document(obj: Any) -> PrototypeDocument:
    if not isinstance(obj, dict):
        raise InvalidDocumentError("a prototype document is a JSON object")
    _warn_unknown(obj, _DOCUMENT_KEYS, "document")
    region = _require(obj, "region", str, "document")
    if not region or len(region) > MAX_REGION_LENGTH or "\x00" in region:
        raise InvalidDocumentError(f"region must be 1 to {MAX_REGION_LENGTH} characters")
    dim = _require(obj, "embedding_dim", int, "document")
    if dim <= 0:
        raise InvalidDocumentError(f"embedding_dim must be positive, got {dim}")
    entries = _require(obj, "prototypes", dict, "document")
    if not entries:
        raise InvalidDocumentError("document: 'prototypes' is empty")
    prototypes = [_parse_prototype(label, entry, dim) for label, entry in entries.items()]
    return PrototypeDocument(region, tuple(prototypes))


def _parse_prototype(label: str, entry: Any, dim: int) -> RegimePrototype:
    name = parse_label(label)
    where = f"prototype {label}"
    if not isinstance(entry, dict):
        raise InvalidDocumentError(f"{where} must be a JSON object")
    _warn_unknown(entry, _PROTOTYPE_KEYS, where)
    values = _require(entry, "center", list, where)
    if len(values) != dim:
        raise InvalidDocumentError(
            f"{where}: center has {len(values)} values, embedding_dim is {dim}"
        )
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InvalidDocumentError(f"{where}: center must hold numbers only")
    with np.errstate(over="ignore"):
        center = np.array(values, dtype=np.float64).astype(np.float32)
    if not np.all(np.isfinite(center)):
        raise InvalidDocumentError(f"{where}: center values must be finite float32 numbers")
    window = _optional(entry, "window", dict, where)
    l2_norm = _optional(entry, "l2_norm", (int, float), where)
    dispersion = _optional(entry, "dispersion", (int, float), where)
    n_dates = _optional(entry, "n_dates", int, where)
    n_skipped = _optional(entry, "n_skipped", int, where)
    first_date = _optional(entry, "first_date", str, where)
    last_date = _optional(entry, "last_date", str, where)
    return RegimePrototype(
        name,
        center,
        window=None if window is None else _parse_window(window, where),
        n_dates=n_dates,
        n_skipped=n_skipped,
        l2_norm=None if l2_norm is None else _finite(l2_norm, f"{where}: l2_norm"),
        dispersion=None if dispersion is None else _finite(dispersion, f"{where}: dispersion"),
        first_date=None if first_date is None else parse_date(first_date, f"{where}: first_date"),
        last_date=None if last_date is None else parse_date(last_date, f"{where}: last_date"),
    )


def _parse_window(window: dict[str, Any], where: str) -> DateWindow:
    start = _require(window, "start_date", str, f"{where}: window")
    end = _require(window, "end_date", str, f"{where}: window")
    return DateWindow.parse(start, end)
