"""Every model a node knows: the library shipped with drsdtp, model files, the config's ``[[models]]``.

Resolution order (a later declaration of the same name replaces an earlier one, and may ``extends`` it):

1. the library (``drsdtp/models/library/*.toml``): ``room``, ``centrifugal_pump``, ``motor``,
   ``energy_meter``, each a ``[[models]]`` table like any other;
2. ``[[kernels]]`` tables: ``type = "<kernel>"`` requires a kernel to be installed (a plug-in the node must
   not run without); the legacy ``type = "room"`` (with ``name`` and ``expected_period_s``) is the library
   room under that name with that period;
3. ``models_dir``: every ``*.toml`` file in it, in name order, each holding ``[[models]]`` tables;
4. the node config's ``[[models]]`` tables, in order (one name declared twice there is an error).

``[[twins]] model = ...`` must name one of them (an unknown name is refused with a did-you-mean).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from drsdtp.config import NodeConfig
from drsdtp.errors import ConfigError
from drsdtp.kernels import KernelRegistry
from drsdtp.models.model import AssetModel
from drsdtp.models.parse import check_name, parse_model, replace_period
from drsdtp.models.reader import did_you_mean

__all__ = ["LEGACY_ROOM", "ModelCatalog", "library_models"]

LEGACY_ROOM: Final = "room"
_MAX_FILE_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """Name -> model, plus notes worth showing in ``check-config`` (overrides, legacy forms)."""

    models: Mapping[str, AssetModel]
    notes: tuple[str, ...] = ()
    required_kernels: tuple[str, ...] = field(default=())

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __iter__(self) -> Iterator[AssetModel]:
        return iter(self.models.values())

    def get(self, name: str, key: str = "model") -> AssetModel:
        model = self.models.get(name)
        if model is None:
            raise ConfigError(key, self.unknown(name))
        return model

    def unknown(self, name: str) -> str:
        return f"unknown model {name!r}{did_you_mean(name, self.models)}; declared: {', '.join(self.models)}"

    @classmethod
    def from_config(cls, config: NodeConfig, registry: KernelRegistry) -> ModelCatalog:
        """Build and validate every model of ``config``; the first problem is raised as a ConfigError. A
        config that declares no model, kernel, model file or twin rule gets the library alone, parsed at its
        first read (with the kernels it names: an idle node that models nothing does not import them)."""
        if not (config.kernels or config.models_dir is not None or config.models or config.twins):
            return cls(_Library(registry))
        models: dict[str, AssetModel] = {}
        notes: list[str] = []

        def add(model: AssetModel) -> None:
            if model.name in models:
                notes.append(
                    f"{model.source}: model {model.name!r} replaces the one from {models[model.name].source}"
                )
            models[model.name] = model

        for model in library_models(registry, check_kernels=False):
            add(model)
        # Required kernels first: a missing plug-in is named as such, not as a model's unknown kernel.
        required: list[str] = []
        for i, table in enumerate(config.kernels):
            legacy = _legacy_kernel(table, f"kernels[{i}]", models, registry)
            if isinstance(legacy, AssetModel):
                add(legacy)
                notes.append(
                    f"kernels[{i}]: the legacy room form; the same as [[models]] name = {legacy.name!r}, "
                    f'extends = "room", version = "1" with [models.defaults] expected_period_s = '
                    f"{legacy.spec.fields[0].expected_period_s:g}"
                )
            else:
                required.append(legacy)
        if config.models_dir is not None:
            for path, raw in _model_files(config.models_dir):
                for j, table in enumerate(raw):
                    source = f"models_dir/{path.name}:models[{j}]"
                    add(parse_model(table, source, known=models, registry=registry, source=source))
        seen: dict[str, int] = {}
        for i, table in enumerate(config.models):
            model = parse_model(table, f"models[{i}]", known=models, registry=registry, source=f"models[{i}]")
            if model.name in seen:
                raise ConfigError(
                    f"models[{i}].name",
                    f"model {model.name!r} is also declared by models[{seen[model.name]}]",
                )
            seen[model.name] = i
            add(model)
        catalog = cls(models, tuple(notes), tuple(required))
        for i, rule in enumerate(config.twins):
            if rule.model not in catalog:
                raise ConfigError(f"twins[{i}].model", catalog.unknown(rule.model))
        return catalog


class _Library(Mapping[str, AssetModel]):
    """The library's models by name, parsed at the first read (issue 13: idle RSS)."""

    def __init__(self, registry: KernelRegistry) -> None:
        self._registry = registry
        self._models: dict[str, AssetModel] | None = None

    def _loaded(self) -> dict[str, AssetModel]:
        if self._models is None:
            self._models = {m.name: m for m in library_models(self._registry, check_kernels=False)}
        return self._models

    def __getitem__(self, name: str) -> AssetModel:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def _legacy_kernel(
    raw: Mapping[str, Any], key: str, models: Mapping[str, AssetModel], registry: KernelRegistry
) -> AssetModel | str:
    kind = raw.get("type")
    if kind == LEGACY_ROOM:
        unknown = sorted(set(raw) - {"type", "name", "expected_period_s"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", "unknown key (type, name, expected_period_s)")
        period = raw.get("expected_period_s", 10.0)
        if isinstance(period, bool) or not isinstance(period, int | float) or not 0 < period <= 86_400:
            raise ConfigError(f"{key}.expected_period_s", f"expected seconds in (0, 86400], got {period!r}")
        name = raw.get("name", LEGACY_ROOM)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}.name", "expected a non-empty string")
        check_name(name, f"{key}.name")
        return replace_period(models[LEGACY_ROOM], float(period), name, key)
    if not isinstance(kind, str) or kind not in registry:
        failed = "".join(
            f"; plug-in {n!r} failed to load: {e}" for n, e in sorted(registry.load_errors.items())
        )
        choices = (LEGACY_ROOM, *registry.names())
        raise ConfigError(
            f"{key}.type",
            f"unknown kernel {kind!r}{did_you_mean(str(kind), choices)}; "
            f"installed: {', '.join(registry.names())}{failed}. "
            'A kernel is used by a model: [[models]] ... [models.kernel] name = "<kernel>"',
        )
    unknown = sorted(set(raw) - {"type"})
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}",
            "a [[kernels]] table only requires a kernel (type); declare its parameters in a model's "
            "[models.kernel.params]",
        )
    return kind


def _model_files(directory: Path) -> list[tuple[Path, Sequence[Any]]]:
    if not directory.is_dir():
        raise ConfigError("models_dir", f"{directory} is not a directory")
    out: list[tuple[Path, Sequence[Any]]] = []
    for path in sorted(directory.glob("*.toml")):
        out.append((path, _read_models(path.read_bytes(), f"models_dir/{path.name}")))
    return out


def _read_models(data: bytes, where: str) -> Sequence[Any]:
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(where, f"model file larger than {_MAX_FILE_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(where, f"invalid TOML: {exc}") from None
    extra = sorted(set(doc) - {"models"})
    if extra:
        raise ConfigError(f"{where}:{extra[0]}", "a model file holds only [[models]] tables")
    models = doc.get("models", [])
    if not isinstance(models, list):
        raise ConfigError(f"{where}:models", "expected [[models]] tables")
    return models


def library_models(registry: KernelRegistry, *, check_kernels: bool = True) -> list[AssetModel]:
    """The models shipped with drsdtp, in file name order (room first: the others may not extend it).
    ``check_kernels=False`` (the node's start) skips the kernels' own parameter checks, which build a tracker
    and import numpy into a node that may never hold a reading (issue 13: idle RSS); the test suite runs them
    on the shipped files (``tests/models/test_model_catalog.py``), and a tracker built for a twin runs them
    again."""
    out: dict[str, AssetModel] = {}
    # The package's own directory: importlib.resources would import zipfile and its readers for a package
    # that is never zipped (the node ships a native module), about 1 MB of an idle node (issue 13).
    files = sorted((Path(__file__).parent / "library").iterdir(), key=lambda p: p.name)
    for entry in files:
        if not entry.name.endswith(".toml"):
            continue
        where = f"library:{entry.name}"
        for j, table in enumerate(_read_models(entry.read_bytes(), where)):
            model = parse_model(
                table,
                f"{where}:models[{j}]",
                known=out,
                registry=registry,
                source=where,
                check_kernel=check_kernels,
            )
            out[model.name] = model
    return list(out.values())
