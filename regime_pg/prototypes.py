"""Regime labels, date windows and prototypes: the values users hold.

``RegimeLabel`` and ``RegimePrototype`` keep the Regime Engine's names and
constructor, so engine code can switch its import.

Dates follow one rule everywhere the client takes them (windows, sets, the
model's as_of_date): ``as_date`` reads a ``datetime.date``, a
``datetime.datetime`` or subclass (``pandas.Timestamp``) as its date part, a
``numpy.datetime64`` of day precision or finer as its calendar date, and a
``YYYY-MM-DD`` string, in any mix; anything else is an ``InvalidWindowError``.

Labels outside the four members are allowed when they follow the label rule
(1 to 32 upper-case letters, digits or underscores, starting with a letter):
they stay plain ``str`` values, since ``RegimeLabel`` is a ``str`` enum both
compare equal to their name.

>>> import numpy as np
>>> p = RegimePrototype(RegimeLabel.NEUTRAL, np.zeros(384))
>>> p.label, p.center.dtype, p.center.shape
(<RegimeLabel.NEUTRAL: 'NEUTRAL'>, dtype('float32'), (384,))
>>> parse_label("RECOVERY")
'RECOVERY'
>>> parse_label("CRISIS") is RegimeLabel.CRISIS
True
"""

from __future__ import annotations

import datetime as dt
import re
import reprlib
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from regime_pg.errors import InvalidLabelError, InvalidWindowError

EMBEDDING_DIM = 384
ENCODER_MODEL_ID = "num-regime-core-v1"

LABEL_RULE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


class RegimeLabel(StrEnum):
    """The Regime Engine's labels, a ``str`` enum; each value equals its name."""

    CRISIS = "CRISIS"
    RISK_OFF = "RISK_OFF"
    CARRY = "CARRY"
    NEUTRAL = "NEUTRAL"


#: A regime label: a ``RegimeLabel`` member, or another name that follows the label rule.
Label: TypeAlias = RegimeLabel | str

#: A date as callers hold it (``datetime.datetime`` is a ``datetime.date``): see ``as_date``.
DateLike: TypeAlias = dt.date | np.datetime64 | str


def parse_label(name: str) -> Label:
    """The label called ``name``: the ``RegimeLabel`` member if there is one.

    Raises ``InvalidLabelError`` when ``name`` breaks the label rule.
    """
    if isinstance(name, RegimeLabel):
        return name
    if not isinstance(name, str) or not LABEL_RULE.fullmatch(name):
        raise InvalidLabelError(
            f"label {str(name)[:80]!r} does not follow the label rule: 1 to 32 upper-case "
            "letters, digits or underscores, starting with a letter (e.g. NEUTRAL, RISK_OFF)"
        )
    try:
        return RegimeLabel(name)
    except ValueError:
        return name


@dataclass(frozen=True)
class DateWindow:
    """An inclusive window of as_of_dates; its ends are read with ``as_date``.

    >>> DateWindow.parse("2018-01-01", "2018-12-31")
    DateWindow(start_date=datetime.date(2018, 1, 1), end_date=datetime.date(2018, 12, 31))
    >>> DateWindow(dt.datetime(2018, 1, 1, 16, 0), np.datetime64("2018-12-31")).end_date
    datetime.date(2018, 12, 31)
    """

    start_date: dt.date
    end_date: dt.date

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_date", as_date(self.start_date, "start_date"))
        object.__setattr__(self, "end_date", as_date(self.end_date, "end_date"))
        if self.end_date < self.start_date:
            raise InvalidWindowError(
                f"window is reversed: end_date {self.end_date} is before "
                f"start_date {self.start_date}"
            )

    def __str__(self) -> str:
        return f"{self.start_date}..{self.end_date}"

    @classmethod
    def parse(cls, start_date: DateLike, end_date: DateLike) -> DateWindow:
        """A window from two ``YYYY-MM-DD`` strings, or any dates ``as_date`` takes.

        ``__post_init__`` reads each end with ``as_date``, once.

        >>> DateWindow.parse("2008-09-15", np.datetime64("2009-03-09T16:00")).end_date
        datetime.date(2009, 3, 9)
        """
        return cls(start_date, end_date)  # type: ignore[arg-type]  # read by __post_init__

    def to_json(self) -> dict[str, str]:
        """``{"end_date": "YYYY-MM-DD", "start_date": "YYYY-MM-DD"}``."""
        return {"end_date": self.end_date.isoformat(), "start_date": self.start_date.isoformat()}


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(text: str, what: str = "date") -> dt.date:
    """A date written exactly as ``YYYY-MM-DD``; ``InvalidWindowError`` otherwise."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise InvalidWindowError(f"{what} must be a date as YYYY-MM-DD, got {str(text)[:40]!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidWindowError(f"{what} is not a calendar date: {text}") from None


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60

#: numpy.datetime64 units of a day or finer (``D`` only with a count of 1).
_DAY_OR_FINER = frozenset({"D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"})


def as_date(value: object, what: str = "date") -> dt.date:
    """The calendar date of ``value``; ``InvalidWindowError`` when it is no date.

    A ``datetime.datetime`` (or subclass, such as ``pandas.Timestamp``) gives
    its date part, in its own timezone; a ``numpy.datetime64`` of day
    precision or finer gives its day; a string must be ``YYYY-MM-DD``.

    >>> as_date(dt.datetime(2008, 10, 10, 16, 0))
    datetime.date(2008, 10, 10)
    >>> as_date(np.datetime64("2017-12-31T23:59:59.5")), as_date("2018-01-02")
    (datetime.date(2017, 12, 31), datetime.date(2018, 1, 2))
    """
    if isinstance(value, str):
        return parse_date(value, what)
    if isinstance(value, dt.date):
        try:  # not value.date(): pandas.NaT is a datetime whose year is NaN
            return dt.date(value.year, value.month, value.day)
        except (TypeError, ValueError):
            pass
    elif isinstance(value, np.datetime64) and not np.isnat(value):
        unit, count = np.datetime_data(value.dtype)
        if unit in _DAY_OR_FINER and (unit != "D" or count == 1):
            day = value.astype("datetime64[D]").astype(object)  # an int outside years 1..9999
            if isinstance(day, dt.date):
                return day
    shown = " ".join(_SHORT.repr(value).split())
    if isinstance(value, np.datetime64):
        shown += f" ({value.dtype})"  # the unit: np.datetime64('2018-01-04') may be a week
    raise InvalidWindowError(
        f"{what} must be a date, a datetime, a numpy.datetime64 of day precision or finer, "
        f"or a YYYY-MM-DD string, got {shown}"
    )


def _as_center(values: Any) -> npt.NDArray[np.float32]:
    center = np.array(values, dtype=np.float32)
    if center.ndim != 1 or center.size == 0:
        raise ValueError(f"center must be a non-empty 1-D array, got shape {center.shape}")
    center.setflags(write=False)
    return center


@dataclass(frozen=True, eq=False)
class RegimePrototype:
    """A regime prototype: the mean embedding of a labelled window.

    ``label`` and ``center`` are the engine's fields; the statistics the
    server computed ride along and are None when unknown.
    """

    label: Label
    center: npt.NDArray[np.float32]
    window: DateWindow | None = None
    n_dates: int | None = None
    n_skipped: int | None = None
    l2_norm: float | None = None
    dispersion: float | None = None
    first_date: dt.date | None = None
    last_date: dt.date | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", parse_label(self.label))
        object.__setattr__(self, "center", _as_center(self.center))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegimePrototype):
            return NotImplemented
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            same = np.array_equal(mine, theirs) if f.name == "center" else mine == theirs
            if not same:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]
