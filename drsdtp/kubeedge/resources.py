"""DeviceModel and Device resources (KubeEdge ``devices.kubeedge.io/v1beta1``) from asset models.

The contract is KubeEdge's published CRDs (vendored, with their origin, in deploy/kubeedge/crds/): a
DeviceModel lists a model's properties (type, access mode, unit, range); a Device names its model, the edge
node that serves it and, per property, how the mapper reads it (``visitors``) and how often it reports. The
protocol is ``drsdtp``: the node itself is the mapper, and a property's visitor names the twin's field.

Kubernetes names are DNS-1123 labels; a model or twin id that is not one (``centrifugal_pump``,
``line1/pump-3``) is lowered, its other characters become ``-``, and a hash of the original is appended so
two ids never meet in one name; the original stays in an annotation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from drsdtp.intelligence.spec import FieldSpec
from drsdtp.models.model import AssetModel

API_VERSION: Final = "devices.kubeedge.io/v1beta1"
PROTOCOL: Final = "drsdtp"
ANNOTATION: Final = "drsdtp.io"
# Written by the cloud (desired values): a setpoint or an actuator; every other kind is only reported.
WRITABLE_KINDS: Final = frozenset({"setpoint", "actuator"})
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def k8s_name(text: str) -> str:
    """``text`` if it is a DNS-1123 label, else a label made from it with a hash of ``text`` appended."""
    if len(text) <= 63 and _LABEL.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[: 63 - 9].strip("-")
    return f"{base}-{digest}" if base else f"x-{digest}"


def _metadata(
    name: str, namespace: str, original: str, kind: str, extra: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "name": k8s_name(name),
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "drsdtp"},
        "annotations": {f"{ANNOTATION}/{kind}": original, **extra},
    }


def _number(value: float) -> str | None:
    return None if math.isinf(value) or math.isnan(value) else f"{value:g}"


def model_property(spec: FieldSpec) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "name": spec.name,
        # drsdtp fields hold float64 values whatever their kind (counters and states included).
        "type": "DOUBLE",
        "accessMode": "ReadWrite" if spec.kind in WRITABLE_KINDS else "ReadOnly",
        "visitors": {"protocolName": PROTOCOL, "configData": {"field": spec.name}},
    }
    if spec.unit.strip():
        prop["unit"] = spec.unit.strip()
    for key, value in (("minimum", spec.valid_min), ("maximum", spec.valid_max)):
        text = _number(value)
        if text is not None:
            prop[key] = text  # the CRD types the range as strings
    return prop


def device_model(model: AssetModel, namespace: str) -> dict[str, Any]:
    version = f"{model.version}#{model.fingerprint}" if model.fingerprint else model.version
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceModel",
        "metadata": _metadata(model.name, namespace, model.name, "model", {f"{ANNOTATION}/version": version}),
        "spec": {"protocol": PROTOCOL, "properties": [model_property(f) for f in model.spec.fields]},
    }


def device(twin: str, model: AssetModel, *, node_name: str, node_id: str, namespace: str) -> dict[str, Any]:
    properties = []
    for spec in model.spec.fields:
        cycle_ms = max(1, round(spec.expected_period_s * 1000))
        properties.append(
            {
                "name": spec.name,
                "visitors": {"protocolName": PROTOCOL, "configData": {"twin": twin, "field": spec.name}},
                "collectCycle": cycle_ms,  # milliseconds, as KubeEdge's mappers read them
                "reportCycle": cycle_ms,
                "reportToCloud": True,
            }
        )
    return {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": _metadata(twin, namespace, twin, "twin", {}),
        "spec": {
            "deviceModelRef": {"name": k8s_name(model.name)},
            "nodeName": node_name,
            "protocol": {"protocolName": PROTOCOL, "configData": {"nodeId": node_id, "twin": twin}},
            "properties": properties,
        },
    }


def resources(
    models: Iterable[AssetModel],
    devices: Sequence[tuple[str, AssetModel]],
    *,
    node_name: str,
    node_id: str,
    namespace: str,
) -> list[dict[str, Any]]:
    """Every model's DeviceModel (each once), then a Device per ``(twin id, model)``."""
    docs = [device_model(m, namespace) for m in models]
    docs += [device(t, m, node_name=node_name, node_id=node_id, namespace=namespace) for t, m in devices]
    return docs


def to_yaml(docs: Iterable[Mapping[str, Any]]) -> str:
    """A YAML stream for ``kubectl apply -f -``: each document in JSON, which is YAML."""
    return "".join(f"---\n{json.dumps(doc, indent=2)}\n" for doc in docs)
