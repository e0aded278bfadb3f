"""Ready NumericRegimeModels from a prototype document file or a stored set.

The calibration script ended with: "For live use, add a small factory that
reads a prototype config from disk or a models table and returns a
fully-initialised NumericRegimeModel". These are those factories.

>>> from regime_pg import connect
>>> from regime_pg.factory import model_from_set
>>> with connect() as conn:                                       # doctest: +SKIP
...     model = model_from_set(conn, "us-2018-v1")
...     model.classify(datetime.date(2008, 10, 10), "US").regime_label
<RegimeLabel.CRISIS: 'CRISIS'>

A stored set's model classifies the set's region only, as the SQL functions
do: ``model.classify(day, "EU")`` raises ``RegionMismatchError``.  So does a
document's model, for any region but the document's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from regime_pg.connection import Connection
from regime_pg.document import PrototypeDocument, load_document
from regime_pg.model import (
    NumericRegimeModel,
    RegimeEncoder,
    RegimeState,
    StoredEmbeddingEncoder,
    identity_instruments,
)
from regime_pg.prototypes import DateLike
from regime_pg.sets import PrototypeSetInfo, check_prototypes_region, check_set_region, get_set

#: The engine's default embedding window (trading days).
DEFAULT_WINDOW_DAYS = 63


def model_from_document(
    document: PrototypeDocument | str | os.PathLike[str],
    *,
    encoder: RegimeEncoder | None = None,
    conn: Connection | None = None,
    region_instruments: Mapping[str, str] | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
    temperature: float = 1.0,
) -> PrototypeDocumentModel:
    """A model from a prototype document (or its file), for the document's region.

    Without ``encoder``, a ``conn`` gives a ``StoredEmbeddingEncoder`` that
    reads the document's region from ``regimes``; with neither, the model can
    only ``classify_embedding``.  Its ``classify`` raises ``RegionMismatchError``
    for another region than the document's, whatever ``region_instruments`` maps.
    """
    if not isinstance(document, PrototypeDocument):
        document = load_document(document)
    encoder, region_instruments = _encoder(encoder, conn, region_instruments, document.region)
    return PrototypeDocumentModel(document, encoder, region_instruments, window_days, temperature)


class PrototypeDocumentModel(NumericRegimeModel):
    """The model of a prototype document: only the document's ``region`` is classified.

    >>> model.classify(datetime.date(2008, 10, 10), "EU")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    regime_pg.errors.RegionMismatchError: prototype document was saved for region 'US', ...
    """

    def __init__(
        self,
        document: PrototypeDocument,
        encoder: RegimeEncoder | None,
        region_instruments: Mapping[str, str],
        window_days: int,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(encoder, region_instruments, window_days, document.prototypes, temperature)
        self.region = document.region

    def check_region(self, region: str) -> None:
        """``RegionMismatchError`` unless ``region`` is the one the prototypes were saved for."""
        check_prototypes_region("prototype document", "a document", self.region, region)

    def classify(self, as_of_date: DateLike, region: str) -> RegimeState:
        """As ``NumericRegimeModel.classify``; ``RegionMismatchError`` for another region."""
        self.check_region(region)
        return super().classify(as_of_date, region)


class PrototypeSetModel(PrototypeDocumentModel):
    """The model of a stored set: ``info`` is the set's row; only its region is classified.

    >>> model.classify(datetime.date(2008, 10, 10), "EU")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    regime_pg.errors.RegionMismatchError: prototype set 'us-2018-v1' was saved for region ...
    """

    def __init__(
        self,
        info: PrototypeSetInfo,
        document: PrototypeDocument,
        encoder: RegimeEncoder | None,
        region_instruments: Mapping[str, str],
        window_days: int,
    ) -> None:
        super().__init__(document, encoder, region_instruments, window_days, info.temperature)
        self.info = info

    def check_region(self, region: str) -> None:
        """``RegionMismatchError`` unless ``region`` is the set's, with SQL's message."""
        check_set_region(self.info.name, self.info.region, region)


def model_from_set(
    conn: Connection,
    name: str,
    *,
    encoder: RegimeEncoder | None = None,
    region_instruments: Mapping[str, str] | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> PrototypeSetModel:
    """A model from a stored set, with the set's temperature, for the set's region.

    Without ``encoder`` the model reads stored embeddings through ``conn``.
    Raises ``UnknownPrototypeSetError`` for an unknown name; its ``classify``
    raises ``RegionMismatchError`` for another region than the set's, as
    ``classify_regimes`` does in SQL (the same message).
    """
    stored = get_set(conn, name)
    encoder, instruments = _encoder(encoder, conn, region_instruments, stored.info.region)
    return PrototypeSetModel(stored.info, stored.document, encoder, instruments, window_days)


def _encoder(
    encoder: RegimeEncoder | None,
    conn: Connection | None,
    region_instruments: Mapping[str, str] | None,
    region: str,
) -> tuple[RegimeEncoder | None, Mapping[str, str]]:
    """The encoder and instruments to use: stored embeddings of ``region`` by default."""
    if encoder is None and conn is not None:
        return StoredEmbeddingEncoder(conn), region_instruments or identity_instruments([region])
    return encoder, region_instruments or {}
