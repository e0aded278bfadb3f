"""NumericRegimeModel: label an embedding by its nearest prototype, with a softmax confidence.

Same constructor, checks and semantics as the Regime Engine's model, so engine
code can switch its import: distances are Euclidean (L2, float64) from the
embedding to each prototype centre, the label is the nearest prototype (ties:
the alphabetically first label, as in SQL), and the confidence is the
softmax of ``-distance / temperature`` (shifted by the max) at the winner.

``classify_embedding`` labels one embedding, shape (d,), as the engine's
does: a batch (n, d) raises ``DimensionMismatchError``, and ``distances``
is the call that takes one.

The encoder is any object with ``encode(instrument_id, as_of_date,
window_days) -> array``; ``region_instruments`` maps a region to the
instrument the encoder is asked about.  ``classify`` reads its as_of_date
with ``regime_pg.prototypes.as_date`` (a datetime or ``pandas.Timestamp`` is
its date part) and asks the encoder about that ``datetime.date``.
``StoredEmbeddingEncoder`` reads the embedding the engine already stored in
``regimes``, so a model classifies history without recomputing embeddings.

>>> import numpy as np
>>> from regime_pg import RegimePrototype
>>> model = NumericRegimeModel(
...     encoder=None, region_instruments={}, window_days=63,
...     prototypes=[RegimePrototype("NEUTRAL", np.zeros(2)), RegimePrototype("CRISIS", np.ones(2))])
>>> result = model.classify_embedding(np.array([0.1, 0.0]))
>>> result.label, round(result.confidence, 4), round(result.distances["CRISIS"], 4)
(<RegimeLabel.NEUTRAL: 'NEUTRAL'>, 0.7765, 1.3454)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from regime_pg.connection import Connection, translated_errors, vector_to_numpy
from regime_pg.errors import DimensionMismatchError, InvalidInputError, NoDataError
from regime_pg.installation import qualified
from regime_pg.prototypes import DateLike, Label, RegimePrototype, as_date
from regime_pg.softmax import softmax_confidences


class RegimeEncoder(Protocol):
    """What the model asks for an embedding."""

    def encode(self, instrument_id: str, as_of_date: dt.date, window_days: int) -> npt.ArrayLike:
        """The regime embedding of ``instrument_id`` on ``as_of_date``."""
        ...


@dataclass(frozen=True)
class RegimeState:
    """The engine's classification result for one (region, as_of_date)."""

    as_of_date: dt.date
    region: str
    regime_label: Label
    confidence: float
    regime_embedding: npt.NDArray[np.float32]
    metadata: dict[str, Any] = field(default_factory=dict)


class Classification(NamedTuple):
    """The label, its confidence, and the distance to every prototype."""

    label: Label
    confidence: float
    distances: dict[str, float]


class NumericRegimeModel:
    """Nearest-prototype regime classifier with a softmax confidence."""

    def __init__(
        self,
        encoder: RegimeEncoder | None,
        region_instruments: Mapping[str, str],
        window_days: int,
        prototypes: Sequence[RegimePrototype],
        temperature: float = 1.0,
    ) -> None:
        if window_days <= 0:
            raise InvalidInputError(f"window_days must be positive, got {window_days}")
        if not (temperature > 0 and np.isfinite(temperature)):
            raise InvalidInputError(f"temperature must be a positive number, got {temperature}")
        if not prototypes:
            raise InvalidInputError("a NumericRegimeModel needs at least one prototype")
        shapes = {p.center.shape for p in prototypes}
        if len(shapes) != 1:
            raise DimensionMismatchError(f"prototype centres differ in shape: {sorted(shapes)}")
        labels = [str(p.label) for p in prototypes]
        if len(set(labels)) != len(labels):
            raise InvalidInputError(f"duplicate prototype labels: {labels}")
        self.encoder = encoder
        self.region_instruments = dict(region_instruments)
        self.window_days = window_days
        self.temperature = float(temperature)
        self.prototypes = tuple(sorted(prototypes, key=lambda p: str(p.label)))
        self._centres = np.array([p.center for p in self.prototypes], dtype=np.float64)

    @property
    def embedding_dim(self) -> int:
        """The dimension of the prototype centres."""
        return int(self._centres.shape[1])

    def distances(self, embeddings: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """L2 distances (float64) of one embedding (shape (d,)) or many (n, d) to each centre."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.shape[-1:] != (self.embedding_dim,) or x.ndim not in (1, 2):
            raise DimensionMismatchError(
                f"embedding has shape {x.shape}, prototypes have dimension {self.embedding_dim}"
            )
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("embedding holds NaN or infinite values")
        return np.asarray(np.linalg.norm(x[..., None, :] - self._centres, axis=-1))

    def classify_embedding(self, embedding: npt.ArrayLike) -> Classification:
        """Label one embedding, shape (d,), by its nearest prototype.

        A batch (n, d) raises ``DimensionMismatchError``: ``distances`` takes one.
        """
        x = np.asarray(embedding, dtype=np.float64)
        if x.ndim > 1:
            raise DimensionMismatchError(
                f"classify_embedding takes one embedding of shape ({self.embedding_dim},), "
                f"got shape {x.shape}; for a batch, distances() takes (n, {self.embedding_dim})"
            )
        distances = self.distances(x)
        confidences = softmax_confidences(distances, self.temperature)
        winner = int(np.argmin(distances))  # first of equal minima: alphabetical label
        return Classification(
            self.prototypes[winner].label,
            float(confidences[winner]),
            {str(p.label): float(d) for p, d in zip(self.prototypes, distances, strict=True)},
        )

    def classify(self, as_of_date: DateLike, region: str) -> RegimeState:
        """Encode ``region`` on the calendar date of ``as_of_date`` and classify it."""
        day = as_date(as_of_date, "as_of_date")
        if self.encoder is None:
            raise InvalidInputError("this model has no encoder: use classify_embedding")
        instrument_id = self.region_instruments.get(region)
        if instrument_id is None:
            raise InvalidInputError(
                f"region {region!r} has no instrument (known: {sorted(self.region_instruments)})"
            )
        embedding = np.asarray(
            self.encoder.encode(instrument_id, day, self.window_days), dtype=np.float32
        )
        result = self.classify_embedding(embedding)
        return RegimeState(
            as_of_date=day,
            region=region,
            regime_label=result.label,
            confidence=result.confidence,
            regime_embedding=embedding,
            metadata={
                "window_days": self.window_days,
                "temperature": self.temperature,
                "instrument_id": instrument_id,
                "distances": result.distances,
            },
        )


class StoredEmbeddingEncoder:
    """An encoder that reads the embedding already stored in ``regimes``.

    ``instrument_id`` is the region (``region_instruments`` maps each region
    to itself); of several rows for a date the latest ``created_at`` wins, as
    in the SQL functions.  ``window_days`` is ignored: the stored embedding was
    computed by the engine with its own window.  The view and the operators
    are named with their schemas, never through the session's search_path.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def encode(self, instrument_id: str, as_of_date: DateLike, window_days: int) -> npt.ArrayLike:
        """The stored embedding of region ``instrument_id`` on ``as_of_date`` (see ``as_date``)."""
        day = as_date(as_of_date, "as_of_date")
        with translated_errors():
            statement = qualified(
                self.conn,
                "SELECT embedding_vector FROM {schema}.regime_embeddings_latest"
                " WHERE region OPERATOR(pg_catalog.=) %s"
                "   AND as_of_date OPERATOR(pg_catalog.=) %s",
            )
            row = self.conn.execute(statement, (instrument_id, day)).fetchone()
        if row is None or row[0] is None:
            raise NoDataError(f"no usable stored embedding for region {instrument_id!r} on {day}")
        return vector_to_numpy(row[0])


def identity_instruments(regions: Iterable[str]) -> dict[str, str]:
    """``{region: region}``: what StoredEmbeddingEncoder expects."""
    return {region: region for region in regions}
