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
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from regime_pg.connection import Connection
from regime_pg.document import PrototypeDocument, load_document
from regime_pg.model import (
    NumericRegimeModel,
    RegimeEncoder,
    StoredEmbeddingEncoder,
    identity_instruments,
)
from regime_pg.sets import get_set

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
) -> NumericRegimeModel:
    """A model from a prototype document (or its file).

    Without ``encoder``, a ``conn`` gives a ``StoredEmbeddingEncoder`` that
    reads the document's region from ``regimes``; with neither, the model can
    only ``classify_embedding``.
    """
    if not isinstance(document, PrototypeDocument):
        document = load_document(document)
    if encoder is None and conn is not None:
        encoder = StoredEmbeddingEncoder(conn)
        region_instruments = region_instruments or identity_instruments([document.region])
    return NumericRegimeModel(
        encoder=encoder,
        region_instruments=region_instruments or {},
        window_days=window_days,
        prototypes=document.prototypes,
        temperature=temperature,
    )


def model_from_set(
    conn: Connection,
    name: str,
    *,
    encoder: RegimeEncoder | None = None,
    region_instruments: Mapping[str, str] | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> NumericRegimeModel:
    """A model from a stored set, with the set's temperature.

    Without ``encoder`` the model reads stored embeddings through ``conn``.
    Raises ``UnknownPrototypeSetError`` for an unknown name.
    """
    stored = get_set(conn, name)
    return model_from_document(
        stored.document,
        encoder=encoder,
        conn=conn,
        region_instruments=region_instruments,
        window_days=window_days,
        temperature=stored.temperature,
    )
