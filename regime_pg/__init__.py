"""regime-pg: regime prototypes computed inside PostgreSQL, and a thin client.

>>> from regime_pg import RegimeLabel, RegimePrototype
>>> RegimeLabel.CRISIS.value
'CRISIS'
"""

from regime_pg.client import (
    compute_prototype,
    compute_prototypes,
    prototypes_document,
    windows_json,
)
from regime_pg.connection import connect, resolve_dsn
from regime_pg.document import PrototypeDocument, load_document, save_document
from regime_pg.errors import (
    AmbiguousInstallationError,
    ConnectionFailedError,
    DimensionMismatchError,
    EmbeddedServerError,
    EmptyWindowError,
    ExtensionMissingError,
    InstallationNotFoundError,
    InsufficientPrivilegeError,
    InvalidDocumentError,
    InvalidInputError,
    InvalidLabelError,
    InvalidSetNameError,
    InvalidWindowError,
    InvalidWindowsDocumentError,
    MigrationError,
    NoDataError,
    PrototypeSetExistsError,
    PrototypeSetFrozenError,
    RegimePgError,
    RegionMismatchError,
    SchemaNotReadyError,
    UnknownPrototypeSetError,
    UnknownRegionError,
)
from regime_pg.model import NumericRegimeModel, RegimeState
from regime_pg.prototypes import (
    EMBEDDING_DIM,
    ENCODER_MODEL_ID,
    DateWindow,
    Label,
    RegimeLabel,
    RegimePrototype,
    parse_label,
)

__version__ = "0.1.0"

__all__ = [
    "EMBEDDING_DIM",
    "ENCODER_MODEL_ID",
    "AmbiguousInstallationError",
    "ConnectionFailedError",
    "DateWindow",
    "DimensionMismatchError",
    "EmbeddedServerError",
    "EmptyWindowError",
    "ExtensionMissingError",
    "InstallationNotFoundError",
    "InsufficientPrivilegeError",
    "InvalidDocumentError",
    "InvalidInputError",
    "InvalidLabelError",
    "InvalidSetNameError",
    "InvalidWindowError",
    "InvalidWindowsDocumentError",
    "Label",
    "MigrationError",
    "NoDataError",
    "NumericRegimeModel",
    "PrototypeDocument",
    "PrototypeSetExistsError",
    "PrototypeSetFrozenError",
    "RegimeLabel",
    "RegimePgError",
    "RegimePrototype",
    "RegimeState",
    "RegionMismatchError",
    "SchemaNotReadyError",
    "UnknownPrototypeSetError",
    "UnknownRegionError",
    "compute_prototype",
    "compute_prototypes",
    "connect",
    "load_document",
    "parse_label",
    "prototypes_document",
    "resolve_dsn",
    "save_document",
    "windows_json",
]
