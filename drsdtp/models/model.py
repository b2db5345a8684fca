"""An asset model as the node holds it: the intelligence's spec plus its name, version, origin and digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from drsdtp.intelligence.spec import FieldSpec, ModelSpec

__all__ = ["MODEL_FIELD", "AssetModel", "field_values", "fingerprint"]

# The twin field naming its model (set from the config's [[twins]] rules or by a create).
MODEL_FIELD = "_model"

# FieldSpec attributes a declaration may set (``analog`` follows from ``kind``).
DECLARED = (
    "kind",
    "unit",
    "expected_period_s",
    "resolution",
    "noise_floor",
    "valid_min",
    "valid_max",
    "low_limit",
    "high_limit",
    "max_rate_per_min",
    "trend_deadband_per_min",
    "forecast_tolerance",
    "stability_scale",
    "calibration_tolerance",
    "redundancy_group",
    "depends_on",
)


def field_values(spec: FieldSpec) -> dict[str, Any]:
    """The declared attributes of a field, as a declaration would give them."""
    return {name: getattr(spec, name) for name in DECLARED}


def _json(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # an unbounded range: JSON has no infinity
    return value


def fingerprint(spec: ModelSpec) -> str:
    """12 hex digits of a SHA-256 over the model's content: fields, kernel, bindings, parameters."""
    doc = {
        "fields": [{"name": f.name, **field_values(f)} for f in spec.fields],
        "kernel": spec.kernel,
        "bindings": {k: list(v) for k, v in sorted(spec.bindings.items())},
        "params": dict(sorted(spec.params.items())),
    }
    text = json.dumps(doc, sort_keys=True, default=repr, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class AssetModel:
    """One declared model. ``source`` says where it was declared (``library:room.toml``, ``models[2]``,
    ``models_dir/pumps.toml:models[0]``); ``fingerprint`` changes with any change of content, so two nodes
    can tell they hold different models even when someone forgot to bump ``version``."""

    name: str
    version: str
    spec: ModelSpec
    source: str
    description: str = ""
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.spec))

    @property
    def tag(self) -> str:
        """What a twin replicates as ``_model_version``: ``<version>#<fingerprint>``."""
        return f"{self.version}#{self.fingerprint}"

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "description": self.description,
            "kernel": spec.kernel,
            "bindings": {k: list(v) for k, v in spec.bindings.items()},
            "params": dict(spec.params),
            "fields": {f.name: {k: _json(v) for k, v in field_values(f).items()} for f in spec.fields},
        }

    def renamed(self, name: str, version: str, source: str) -> AssetModel:
        return AssetModel(name, version, dataclasses.replace(self.spec, name=name, version=version), source)
