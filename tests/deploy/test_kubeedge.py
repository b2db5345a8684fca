"""`drsdtp kubeedge`: the DeviceModel and Device resources it prints validate against KubeEdge's published
CRD schemas (deploy/kubeedge/crds/, vendored with their origin), unknown fields refused; they refer to each
other consistently; and a broken resource fails the same validation."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from drsdtp.kubeedge.resources import k8s_name

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "kubeedge" / "crds"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists fields and does not preserve unknown ones."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
            out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"devices_v1beta1_{kind.lower()}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    assert version["served"] and version["storage"]
    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    # metadata is `type: object` in a CRD (the API server checks it): hold it to what we emit.
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name", "namespace"],
        "properties": {
            "name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
            "namespace": {"type": "string", "pattern": DNS_LABEL},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


SCHEMAS = {kind: crd_schema(kind) for kind in ("Device", "DeviceModel")}


def validate(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "devices.kubeedge.io/v1beta1"
    jsonschema.validate(doc, SCHEMAS[doc["kind"]], cls=jsonschema.Draft7Validator)


CONFIG = """
node_id = "edge_07"
data_dir = "{data}"
[[models]]
name = "feed_pump"
version = "2"
extends = "centrifugal_pump"
[[twins]]
match = "line1/pump-3"
model = "feed_pump"
[[twins]]
match = "room-*"
model = "room"
"""


def kubeedge(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "node.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "drsdtp", "kubeedge", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    result = kubeedge(
        tmp_path_factory.mktemp("kubeedge"), "--device", "room-1=room", "--namespace", "plant-a"
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_every_resource_validates_against_the_crds(docs: list[dict[str, Any]]) -> None:
    assert sorted(d["kind"] for d in docs) == ["Device", "Device", "DeviceModel", "DeviceModel"]
    for doc in docs:
        validate(doc)


def test_models_and_devices_match(docs: list[dict[str, Any]]) -> None:
    models = {d["metadata"]["name"]: d for d in docs if d["kind"] == "DeviceModel"}
    devices = {d["metadata"]["annotations"]["drsdtp.io/twin"]: d for d in docs if d["kind"] == "Device"}
    assert set(devices) == {"line1/pump-3", "room-1"}  # the plain-id rule and --device; not the glob
    pump = devices["line1/pump-3"]
    assert pump["metadata"]["name"] == k8s_name("line1/pump-3") != "line1/pump-3"
    assert pump["spec"]["nodeName"] == "edge_07"
    model = models[pump["spec"]["deviceModelRef"]["name"]]
    assert model["metadata"]["annotations"]["drsdtp.io/model"] == "feed_pump"
    assert model["metadata"]["annotations"]["drsdtp.io/version"].startswith("2#")
    names = [p["name"] for p in model["spec"]["properties"]]
    assert [p["name"] for p in pump["spec"]["properties"]] == names
    assert {"flow", "speed"} <= set(names)
    access = {p["name"]: p["accessMode"] for p in model["spec"]["properties"]}
    assert access["flow"] == "ReadOnly"
    assert "ReadWrite" in access.values()  # the pump's valve or setpoint: what the cloud may desire
    for doc in docs:
        assert doc["metadata"]["namespace"] == "plant-a"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.properties.0.accessMode", "WriteOnly"),
        ("spec.properties.0.type", "REAL"),
        ("spec.protocl", "drsdtp"),
        ("spec.properties.0.minimum", 0),
        ("metadata.name", "Feed_Pump"),
    ],
    ids=["bad access mode", "bad type", "misspelled field", "number for string", "not a DNS label"],
)
def test_a_broken_device_model_fails_validation(docs: list[dict[str, Any]], path: str, value: Any) -> None:
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "DeviceModel"))
    *parents, last = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_a_broken_device_fails_validation(docs: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Device"))
    broken["spec"]["properties"][0]["reportCycle"] = "10s"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_an_unknown_model_is_named(tmp_path: Path) -> None:
    result = kubeedge(tmp_path, "--device", "p-1=feed_pmp")
    assert result.returncode == 2
    assert "unknown model 'feed_pmp'" in result.stderr and "feed_pump" in result.stderr


def test_names_are_dns_labels_and_distinct() -> None:
    ids = ["room-1", "line1/pump-3", "line1_pump-3", "Room-1", "x" * 80, "__"]
    names = [k8s_name(i) for i in ids]
    assert names[0] == "room-1"  # a valid name is kept
    assert len(set(names)) == len(ids)
    for name in names:
        assert len(name) <= 63
        jsonschema.validate(name, {"type": "string", "pattern": DNS_LABEL})
