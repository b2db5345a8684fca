"""Adapter configuration: every error names the full key and the reason; the registry finds adapter types."""

from __future__ import annotations

import importlib.util
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import drsdtp.adapters as registry
from drsdtp.adapters import build_adapter, register_adapter
from drsdtp.adapters.mqtt import MqttAdapter
from drsdtp.adapters.simulated import SimulatedAdapter
from drsdtp.errors import ConfigError

MQTT: dict[str, Any] = {
    "type": "mqtt",
    "name": "b",
    "host": "h",
    "client_id": "c",
    "topics": [{"template": "a/{twin}/{field}"}],
}
OPCUA: dict[str, Any] = {
    "type": "opcua",
    "name": "o",
    "url": "opc.tcp://h:4840",
    "security_policy": "None",
    "twin": "t",
    "nodes": [{"node_id": "ns=2;s=X", "field": "x"}],
}
MODBUS: dict[str, Any] = {
    "type": "modbus",
    "name": "m",
    "host": "h",
    "twin": "t",
    "registers": [{"field": "a", "address": 0}],
}


def error(raw: dict[str, Any], key: str = "adapters[0]") -> ConfigError:
    with pytest.raises(ConfigError) as err:
        build_adapter(raw, key)
    return err.value


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ({"name": "x"}, "adapters[0].type", "is required"),
        ({"type": "bacnet", "name": "x"}, "adapters[0].type", "unknown adapter type 'bacnet'"),
        (with_(MQTT, name="has space"), "adapters[0].name", "letters"),
        (with_(MQTT, port="1883"), "adapters[0].port", "expected an integer, got a string"),
        (with_(MQTT, port=70000), "adapters[0].port", "must be <= 65535"),
        ({k: v for k, v in MQTT.items() if k != "client_id"}, "adapters[0].client_id", "persistent_session"),
        (with_(MQTT, protocol="4"), "adapters[0].protocol", "must be one of '5', '3.1.1'"),
        (with_(MQTT, keepalive=30), "adapters[0].keepalive", "unknown key (did you mean 'keepalive_s'?)"),
        (with_(MQTT, topics=[]), "adapters[0].topics", "at least one"),
        (
            with_(MQTT, topics=[{"template": "a/{twin}/x"}, {"template": "a/#/b"}]),
            "adapters[0].topics[1].template",
            "'#' must be the last segment",
        ),
        (
            with_(MQTT, topics=[{"template": "a/{twin}x/{field}"}]),
            "adapters[0].topics[0].template",
            "whole segment",
        ),
        (
            with_(MQTT, topics=[{"template": "a/{twin}/{field}", "qos": 2}]),
            "adapters[0].topics[0].qos",
            "QoS 2",
        ),
        (
            with_(MQTT, topics=[{"template": "a/{twin}/{field}", "payload": "xml"}]),
            "adapters[0].topics[0].payload",
            "must be one of",
        ),
        (
            with_(MQTT, topics=[{"template": "a/{twin}", "payload": "json", "fields": {"t": "a..b"}}]),
            "adapters[0].topics[0].fields.t",
            "bad path",
        ),
        (with_(MQTT, password="p"), "adapters[0].username", "required when a password is set"),
        (with_(MQTT, tls={"ca_file": "/nonexistent/ca.pem"}), "adapters[0].tls.ca_file", "does not exist"),
        (
            with_(MQTT, ingest={"invalid": "ignore"}),
            "adapters[0].ingest.invalid",
            "must be one of 'drop', 'bad'",
        ),
        (
            with_(MQTT, ingest={"fields": [{"match": "*", "min": 5, "max": 1}]}),
            "adapters[0].ingest.fields[0].max",
            "must be >= min",
        ),
        (
            with_(MQTT, ingest={"fields": [{"match": "*", "deadband_percent": 1}]}),
            "adapters[0].ingest.fields[0].deadband_percent",
            "needs min and max",
        ),
        (with_(MQTT, reconnect={"initial_s": 0}), "adapters[0].reconnect.initial_s", "must be > 0"),
        (with_(OPCUA, url="http://h"), "adapters[0].url", "opc.tcp://"),
        (with_(OPCUA, security_policy="Basic128Rsa15"), "adapters[0].security_policy", "must be one of"),
        (with_(OPCUA, security_policy="Basic256Sha256"), "adapters[0].certificate", "needs certificate"),
        (
            with_(OPCUA, nodes=[{"node_id": "garbage", "field": "x"}]),
            "adapters[0].nodes[0].node_id",
            "not an OPC UA NodeId",
        ),
        (with_(OPCUA, nodes=[{"field": "x"}]), "adapters[0].nodes[0].node_id", "exactly one"),
        (
            with_(OPCUA, nodes=[{"browse_path": "Objects/Plant", "field": "x"}]),
            "adapters[0].nodes[0].browse_path",
            "namespace:BrowseName",
        ),
        (
            with_(OPCUA, nodes=[{"node_id": "i=1", "field": "x"}, {"node_id": "i=2", "field": "x"}]),
            "adapters[0].nodes[1].field",
            "mapped twice",
        ),
        (
            with_(MODBUS, registers=[{"field": "a", "address": 70000}]),
            "adapters[0].registers[0].address",
            "<= 65535",
        ),
        (
            with_(MODBUS, registers=[{"field": "a", "address": 65535, "data_type": "float32"}]),
            "adapters[0].registers[0].address",
            "runs past",
        ),
        (
            with_(MODBUS, registers=[{"field": "a", "address": 0, "table": "coil", "data_type": "int16"}]),
            "adapters[0].registers[0].data_type",
            "coils and discrete inputs",
        ),
        (
            with_(MODBUS, registers=[{"field": "a", "address": 0, "order": "ACBD"}]),
            "adapters[0].registers[0].order",
            "must be one of",
        ),
        (
            with_(MODBUS, registers=[{"field": "a", "address": 0}, {"field": "a", "address": 1}]),
            "adapters[0].registers[1].field",
            "already registers[0]",
        ),
        (
            {"type": "serial", "name": "s", "port": "/dev/x", "stopbits": 3},
            "adapters[0].stopbits",
            "must be <= 2",
        ),
    ],
)
def test_bad_config_names_key_and_reason(raw: dict[str, Any], key: str, reason: str) -> None:
    err = error(raw)
    assert err.key == key
    assert reason in err.reason
    assert str(err).startswith(key)


def test_secrets_are_read_from_files_and_not_shown(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    a = build_adapter(with_(MQTT, username="u", password_file=str(tmp_path / "pw")), "adapters[0]")
    assert isinstance(a, MqttAdapter)
    assert a.settings.password == "s3cret"
    assert "s3cret" not in repr(a.settings)
    assert (
        error(with_(MQTT, username="u", password_file=str(tmp_path / "missing"))).key
        == "adapters[0].password_file"
    )


def test_missing_optional_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiomqtt" else real(name)
    )
    err = error(MQTT)
    assert err.key == "adapters[0].type"
    assert "pip install 'drsdtp[mqtt]'" in err.reason


def test_registered_and_entry_point_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def factory(raw: Any, key: str) -> SimulatedAdapter:
        built.append(key)
        return SimulatedAdapter.__new__(SimulatedAdapter)

    register_adapter("custom", factory)
    build_adapter({"type": "custom"}, "adapters[7]")
    assert built == ["adapters[7]"]
    ep = EntryPoint(name="plant", value="drsdtp.adapters.simulated:build", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else []
    )
    assert isinstance(build_adapter({"type": "plant", "name": "p"}, "adapters[0]"), SimulatedAdapter)
    assert {"plant", "custom", "mqtt", "opcua", "modbus", "serial", "simulated"} <= set(
        registry.adapter_types()
    )
