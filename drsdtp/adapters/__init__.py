"""Ingestion adapters, found by ``type`` name.

Built-in types map to modules imported only when a config uses them, so an optional dependency (aiomqtt,
asyncua, pymodbus, pyserial) is imported only by the node that needs it. Third-party adapters register a
factory under the ``drsdtp.adapters`` entry-point group::

    [project.entry-points."drsdtp.adapters"]
    bacnet = "drsdtp_bacnet:build"      # build(raw: Mapping[str, Any], key_prefix: str) -> Adapter

A factory validates its table into frozen settings and raises ``ConfigError(key, reason)`` with full key
paths.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from drsdtp.adapters.base import (
    Adapter,
    AdapterStats,
    BatchSink,
    Interner,
    Quality,
    Reading,
    ReadingBatch,
    SourceBatch,
)
from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError
from drsdtp.plugins import installed_entry_points as entry_points  # a module name: tests patch it

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AdapterFactory",
    "AdapterStats",
    "BatchSink",
    "Interner",
    "Quality",
    "Reading",
    "ReadingBatch",
    "SourceBatch",
    "adapter_types",
    "build_adapter",
    "register_adapter",
]

ENTRY_POINT_GROUP = "drsdtp.adapters"

AdapterFactory = Callable[[Mapping[str, Any], str], Adapter]

_BUILTIN: dict[str, str] = {
    "mqtt": "drsdtp.adapters.mqtt",
    "opcua": "drsdtp.adapters.opcua",
    "modbus": "drsdtp.adapters.modbus",
    "serial": "drsdtp.adapters.serial",
    "simulated": "drsdtp.adapters.simulated",
}
_registered: dict[str, AdapterFactory] = {}


def register_adapter(type_name: str, factory: AdapterFactory) -> None:
    """Register a factory in-process (tests, embedding); entry points are the packaged way."""
    _registered[type_name] = factory


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def adapter_types() -> list[str]:
    return sorted({*_BUILTIN, *_registered, *_entry_point_factories()})


def _factory(type_name: str, key: str) -> AdapterFactory:
    if type_name in _registered:
        return _registered[type_name]
    if type_name in _BUILTIN:
        module = importlib.import_module(_BUILTIN[type_name])
        return cast(AdapterFactory, module.build)
    ep = _entry_point_factories().get(type_name)
    if ep is None:
        known = ", ".join(adapter_types())
        raise ConfigError(key, f"unknown adapter type {type_name!r}; known types: {known}")
    try:
        return cast(AdapterFactory, ep.load())
    except Exception as exc:
        raise ConfigError(key, f"adapter type {type_name!r} ({ep.value}) failed to load: {exc}") from exc


def build_adapter(raw: Mapping[str, Any], key_prefix: str) -> Adapter:
    """Validate one ``[[adapters]]`` table into an adapter; ``key_prefix`` is e.g. ``"adapters[0]"``."""
    t = Table(raw, key_prefix)
    type_name = t.get_str("type")
    return _factory(type_name, t.path("type"))(raw, key_prefix)
