"""Asset models as data: what a twin's fields are, how they relate, and the kernel that explains them.

A model is declared in TOML (``[[models]]`` in the node config, files in ``models_dir``, or the library
shipped here), validated with errors that name the key (``models[1].fields.flow.kind: expected one of ...``)
and turned into the intelligence's :class:`~drsdtp.intelligence.spec.ModelSpec`. See :mod:`.parse` for the
schema and :mod:`.catalog` for how the declarations combine.
"""

from drsdtp.models.catalog import ModelCatalog, library_models
from drsdtp.models.model import MODEL_FIELD, AssetModel, fingerprint
from drsdtp.models.parse import parse_model

__all__ = ["MODEL_FIELD", "AssetModel", "ModelCatalog", "fingerprint", "library_models", "parse_model"]
