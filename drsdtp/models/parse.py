"""One ``[[models]]`` table -> :class:`AssetModel`, with every error naming its key.

Schema (every key of a field is optional except where a kernel needs it)::

    [[models]]
    name = "pump"                       # letters, digits, '.', '_', '-'
    version = "2"                       # a string or an integer; replicated with the twin
    description = "..."
    extends = "centrifugal_pump"        # start from a model declared before (or the library): its fields,
                                        # kernel and parameters; what this table sets replaces them
    [models.defaults]                   # field keys applied to every field (a field's own table wins)
    expected_period_s = 10.0
    [models.fields.flow]
    kind = "analog"                     # analog | counter | state | setpoint | actuator
    unit = "m3/h"
    expected_period_s = 10.0            # how often a reading should arrive
    resolution = 0.1                    # the sensor's quantum
    valid_min = 0.0                     # what is physically possible ...
    valid_max = 400.0
    low_limit = 5.0                     # ... and the operating limits (forecasts, what-if, risk)
    high_limit = 150.0
    redundancy_group = "flow"           # fields that measure the same quantity
    depends_on = ["speed"]              # fields this one follows physically
    # advanced: noise_floor, max_rate_per_min, trend_deadband_per_min, forecast_tolerance,
    #           stability_scale, calibration_tolerance
    [models.kernel]
    name = "pump.affinity"              # a kernel of the registry (built in, or a plug-in's entry point)
    bind = { head = "discharge_head" }  # kernel variable or input -> field(s); default: same-named fields
    [models.kernel.params]              # the kernel's declared parameters (the prior it refines per twin)
    rated_speed_rpm = 2900
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from drsdtp.errors import ConfigError
from drsdtp.intelligence.spec import FIELD_KINDS, FieldSpec, ModelSpec
from drsdtp.kernels import KernelRegistry, TrackingKernel
from drsdtp.models.model import DECLARED, AssetModel, field_values
from drsdtp.models.reader import Reader, did_you_mean

__all__ = ["FIELD_KEYS", "MODEL_KEYS", "check_name", "parse_model"]

MODEL_KEYS: Final = ("name", "version", "description", "extends", "defaults", "fields", "kernel")
KERNEL_KEYS: Final = ("name", "bind", "params")
FIELD_KEYS: Final = DECLARED
_NUMBERS: Final = tuple(k for k in DECLARED if k not in ("kind", "unit", "redundancy_group", "depends_on"))
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELD_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def check_name(name: str, key: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(key, f"{name!r} is not a valid model name (letters, digits, '.', '_', '-')")
    return name


def _read_field_keys(r: Reader, *, allow_relations: bool = True) -> dict[str, Any]:
    values: dict[str, Any] = {}
    kind = r.choice("kind", FIELD_KINDS)
    if kind is not None:
        values["kind"] = kind
    unit = r.string("unit")
    if unit is not None:
        values["unit"] = " " + unit  # shown after the value: "21.3 C"
    for name in _NUMBERS:
        number = r.number(name)
        if number is not None:
            values[name] = number
    if allow_relations:
        group = r.string("redundancy_group")
        if group is not None:
            values["redundancy_group"] = group
        depends = r.names("depends_on")
        if depends is not None:
            values["depends_on"] = depends
    r.done(
        FIELD_KEYS
        if allow_relations
        else [k for k in FIELD_KEYS if k not in ("redundancy_group", "depends_on")]
    )
    return values


def _build_field(name: str, values: Mapping[str, Any], key: str) -> FieldSpec:
    if not _FIELD_RE.fullmatch(name):
        raise ConfigError(key, f"{name!r} is not a valid field name (letters, digits, '_', '-'; no '.')")
    try:
        spec = FieldSpec(name, **values)
    except ConfigError as exc:  # FieldSpec keys are "<field>.<attr>"
        raise ConfigError(f"{key.rsplit('.', 1)[0]}.{exc.key}", exc.reason) from None
    for limit in ("low_limit", "high_limit"):
        value = getattr(spec, limit)
        if value is not None and not spec.valid_min <= value <= spec.valid_max:
            raise ConfigError(f"{key}.{limit}", f"{value:g} is outside valid_min..valid_max")
    if spec.low_limit is not None and spec.high_limit is not None and spec.low_limit >= spec.high_limit:
        raise ConfigError(f"{key}.low_limit", "must be below high_limit")
    return spec


def parse_model(
    raw: object,
    key: str,
    *,
    known: Mapping[str, AssetModel],
    registry: KernelRegistry,
    source: str,
    check_kernel: bool = True,
) -> AssetModel:
    """Validate one model table; ``known`` are the models it may extend. ``check_kernel=False`` skips the
    kernel's own parameter checks (they build a tracker, and with it numpy: see :func:`library_models`)."""
    r = Reader(raw, key)
    name = r.string("name")
    if name is None:
        raise ConfigError(f"{key}.name", "required key is missing")
    check_name(name, f"{key}.name")
    version = r.version("version")
    if version is None:
        raise ConfigError(f"{key}.version", 'required key is missing (a string or an integer, e.g. "1")')
    description = r.string("description", "") or ""
    base: AssetModel | None = None
    extends = r.string("extends")
    if extends is not None:
        base = known.get(extends)
        if base is None:
            raise ConfigError(
                f"{key}.extends",
                f"unknown model {extends!r}{did_you_mean(extends, known)}; "
                f"declared so far: {', '.join(known)}",
            )
    defaults: dict[str, Any] = {}
    defaults_table = r.table("defaults")
    if defaults_table is not None:
        defaults = _read_field_keys(defaults_table, allow_relations=False)

    fields: dict[str, dict[str, Any]] = {}
    if base is not None:
        fields = {f.name: {**field_values(f), **defaults} for f in base.spec.fields}
    fields_table = r.table("fields")
    if fields_table is not None:
        for fname, sub in fields_table.items():
            own = _read_field_keys(Reader(sub, f"{key}.fields.{fname}"))
            fields[fname] = {**fields.get(fname, {}), **defaults, **own}
    if not fields:
        raise ConfigError(f"{key}.fields", "a model needs at least one field ([models.fields.<name>])")
    specs = tuple(_build_field(f, v, f"{key}.fields.{f}") for f, v in fields.items())
    names = [s.name for s in specs]
    for s in specs:
        for dep in s.depends_on:
            if dep not in names:
                raise ConfigError(
                    f"{key}.fields.{s.name}.depends_on", f"no field {dep!r}{did_you_mean(dep, names)}"
                )

    kernel, bindings, params = _kernel(r.table("kernel"), base, names, key, registry, check_kernel)
    r.done(MODEL_KEYS)
    try:
        spec = ModelSpec(name, specs, kernel, MappingProxyType(bindings), MappingProxyType(params), version)
    except ConfigError as exc:  # ModelSpec keys are "model.<name>..."
        raise ConfigError(exc.key.replace(f"model.{name}", key, 1), exc.reason) from None
    return AssetModel(name, version, spec, source, description or (base.description if base else ""))


def _kernel(
    table: Reader | None,
    base: AssetModel | None,
    fields: list[str],
    key: str,
    registry: KernelRegistry,
    check: bool = True,
) -> tuple[str | None, dict[str, tuple[str, ...]], dict[str, float]]:
    """Resolve the kernel name, bindings and parameters (inherited from ``base`` unless replaced)."""
    name = base.spec.kernel if base is not None else None
    bind: dict[str, tuple[str, ...]] = dict(base.spec.bindings) if base is not None else {}
    params: dict[str, float] = dict(base.spec.params) if base is not None else {}
    given_bind: dict[str, tuple[str, ...]] = {}
    if table is not None:
        new_name = table.string("name")
        if new_name is None and name is None:
            raise ConfigError(f"{key}.kernel.name", "required key is missing (a kernel of the registry)")
        if new_name is not None and new_name != name:
            name, bind, params = new_name, {}, {}
        bind_table = table.table("bind")
        if bind_table is not None:
            for var, _ in bind_table.items():
                targets = bind_table.names(var)
                assert targets is not None
                given_bind[var] = targets
        params_table = table.table("params")
        if params_table is not None:
            for pname, _ in params_table.items():
                value = params_table.number(pname)
                assert value is not None
                params[pname] = value
        table.done(KERNEL_KEYS)
    if name is None:
        return None, {}, {}
    kkey = f"{key}.kernel"
    if name not in registry:
        failed = "".join(
            f"; plug-in {n!r} failed to load: {e}" for n, e in sorted(registry.load_errors.items())
        )
        raise ConfigError(
            f"{kkey}.name",
            f"unknown kernel {name!r}{did_you_mean(name, registry.names())}; installed: "
            f"{', '.join(registry.names())}{failed}",
        )
    try:
        kernel = registry.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{kkey}.name", f"kernel {name!r} cannot be created: {exc.reason}") from None
    except Exception as exc:  # a plug-in's factory failing must be a config error, not a crash
        raise ConfigError(
            f"{kkey}.name", f"kernel {name!r} cannot be created: {type(exc).__name__}: {exc}"
        ) from None
    tracker = kernel if isinstance(kernel, TrackingKernel) else None
    allowed = tuple(kernel.variables) + (tuple(tracker.inputs) if tracker is not None else ())
    if not bind:  # same-named fields bind themselves
        bind = {v: (v,) for v in allowed if v in fields}
    for var, targets in given_bind.items():
        if var not in allowed:
            raise ConfigError(
                f"{kkey}.bind.{var}",
                f"kernel {name} has no variable or input {var!r}{did_you_mean(var, allowed)}; "
                f"it has: {', '.join(allowed)}",
            )
        for target in targets:
            if target not in fields:
                raise ConfigError(f"{kkey}.bind.{var}", f"no field {target!r}{did_you_mean(target, fields)}")
        bind[var] = targets
    if tracker is not None and not any(v in bind for v in kernel.variables):
        raise ConfigError(
            f"{kkey}.bind",
            f"binds none of kernel {name}'s variables ({', '.join(kernel.variables)}): name fields after "
            'them or map them with bind = { <variable> = "<field>" }',
        )
    declared = getattr(kernel, "default_params", None)
    if isinstance(declared, Mapping):
        for pname in params:
            if pname not in declared:
                raise ConfigError(
                    f"{kkey}.params.{pname}",
                    f"kernel {name} has no parameter {pname!r}{did_you_mean(pname, declared)}; "
                    f"it has: {', '.join(declared)}",
                )
    if tracker is not None and check:
        try:
            tracker.tracker(params)  # the kernel's own checks (ranges, consistency)
        except ConfigError as exc:
            sub = exc.key.split("params.", 1)[-1] if "params." in exc.key else ""
            raise ConfigError(f"{kkey}.params" + (f".{sub}" if sub else ""), exc.reason) from None
        except Exception as exc:
            raise ConfigError(
                f"{kkey}.params", f"kernel {name} refused them: {type(exc).__name__}: {exc}"
            ) from None
    return name, bind, params


def replace_period(model: AssetModel, period_s: float, name: str, source: str) -> AssetModel:
    """``model`` with every field's expected period set (the legacy ``[[kernels]]`` room form)."""
    fields = tuple(dataclasses.replace(f, expected_period_s=period_s) for f in model.spec.fields)
    spec = dataclasses.replace(model.spec, name=name, fields=fields)
    return AssetModel(name, model.version, spec, source, model.description)
