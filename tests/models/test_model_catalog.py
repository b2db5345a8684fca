"""Asset models as data: the library, [[models]] tables, model files, legacy [[kernels]], twin rules."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from drsdtp.config import NodeConfig, parse_config
from drsdtp.errors import ConfigError
from drsdtp.kernels import KernelRegistry, default_registry
from drsdtp.models import ModelCatalog, library_models
from drsdtp.sim.room_spec import room_model_spec

REGISTRY = default_registry(plugins=False)


def config(tmp_path: pathlib.Path, **extra: Any) -> NodeConfig:
    return parse_config({"node_id": "n", "data_dir": str(tmp_path), **extra})


def catalog(tmp_path: pathlib.Path, registry: KernelRegistry = REGISTRY, **extra: Any) -> ModelCatalog:
    return ModelCatalog.from_config(config(tmp_path, **extra), registry)


def error(tmp_path: pathlib.Path, **extra: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        catalog(tmp_path, **extra)
    return err.value


PUMP = {
    "name": "pump",
    "version": 2,
    "extends": "centrifugal_pump",
    "kernel": {"params": {"rated_speed_rpm": 1450.0, "shutoff_head_m": 22.0, "rated_head_m": 18.0}},
}


def test_the_library_holds_the_room_and_three_machines_each_with_a_kernel() -> None:
    models = {m.name: m for m in library_models(REGISTRY)}
    assert set(models) == {"room", "centrifugal_pump", "motor", "energy_meter"}
    kernels = {name: m.spec.kernel for name, m in models.items()}
    assert kernels == {
        "room": "thermal.first_order",
        "centrifugal_pump": "pump.affinity",
        "motor": "motor.thermal",
        "energy_meter": "meter.energy",
    }
    # The declared room is the simulated plant's room, field for field and parameter for parameter.
    room, code = models["room"].spec, room_model_spec()
    assert room.fields == code.fields and dict(room.bindings) == dict(code.bindings)
    assert dict(room.params) == pytest.approx(dict(code.params), rel=1e-12)
    assert models["energy_meter"].spec.field("energy").kind == "counter"
    assert models["centrifugal_pump"].spec.dependents("speed") == ("flow", "head", "power")


def test_a_model_extends_the_library_with_its_own_datasheet(tmp_path: pathlib.Path) -> None:
    cat = catalog(tmp_path, models=[PUMP], twins=[{"match": "pump-*", "model": "pump"}])
    pump, base = cat.get("pump"), cat.get("centrifugal_pump")
    assert (pump.version, pump.source) == ("2", "models[0]")
    assert [f.name for f in pump.spec.fields] == [f.name for f in base.spec.fields]
    assert pump.spec.params["rated_speed_rpm"] == 1450.0 and pump.spec.params["rated_flow_m3h"] == 100.0
    assert pump.fingerprint != base.fingerprint and pump.tag == f"2#{pump.fingerprint}"


def test_fields_defaults_and_bindings_of_a_new_model(tmp_path: pathlib.Path) -> None:
    chiller = {
        "name": "chiller",
        "version": "0.3",
        "defaults": {"expected_period_s": 30},
        "fields": {
            "supply": {"unit": "C", "redundancy_group": "supply"},
            "supply_b": {"unit": "C", "redundancy_group": "supply", "expected_period_s": 5},
            "mode": {"kind": "state"},
            "compressor_kwh": {"kind": "counter", "depends_on": "mode"},
        },
        "kernel": {"name": "kalman.local_trend"},
    }
    model = catalog(tmp_path, models=[chiller]).get("chiller")
    periods = {f.name: f.expected_period_s for f in model.spec.fields}
    assert periods == {"supply": 30.0, "supply_b": 5.0, "mode": 30.0, "compressor_kwh": 30.0}
    assert model.spec.field("supply").unit == " C" and not model.spec.field("mode").analog
    assert model.spec.field("compressor_kwh").depends_on == ("mode",)
    assert model.spec.kernel == "kalman.local_trend" and dict(model.spec.bindings) == {}


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"version": 1, "fields": {"a": {}}}, "models[0].name", "required"),
        ({"name": "x", "fields": {"a": {}}}, "models[0].version", "required"),
        ({"name": "x", "version": 1}, "models[0].fields", "at least one field"),
        (
            {"name": "x", "version": 1, "fields": {"flow": {"kind": "analogue"}}},
            "models[0].fields.flow.kind",
            "expected one of analog, counter, state, setpoint, actuator, got 'analogue' "
            "(did you mean 'analog'?)",
        ),
        (
            {"name": "x", "version": 1, "fields": {"flow": {"unti": "m3/h"}}},
            "models[0].fields.flow.unti",
            "did you mean 'unit'?",
        ),
        (
            {"name": "x", "version": 1, "fields": {"f": {"expected_period_s": -1}}},
            "models[0].fields.f.expected_period_s",
            "positive",
        ),
        (
            {"name": "x", "version": 1, "fields": {"f": {"valid_max": 10, "high_limit": 12}}},
            "models[0].fields.f.high_limit",
            "outside",
        ),
        (
            {"name": "x", "version": 1, "fields": {"f": {"depends_on": ["g"]}}},
            "models[0].fields.f.depends_on",
            "no field 'g'",
        ),
        (
            {"name": "x", "version": 1, "fields": {"a": {"depends_on": "b"}, "b": {"depends_on": "a"}}},
            "models[0].fields",
            "dependency cycle",
        ),
        (
            {"name": "x", "version": 1, "extends": "centrifugal_pmp"},
            "models[0].extends",
            "did you mean 'centrifugal_pump'?",
        ),
        (
            {"name": "x", "version": 1, "fields": {"a": {}}, "kernel": {"name": "pump.afinity"}},
            "models[0].kernel.name",
            "did you mean 'pump.affinity'?",
        ),
        (
            {"name": "x", "version": 1, "fields": {"a": {}}, "kernel": {"name": "pump.affinity"}},
            "models[0].kernel.bind",
            "binds none of kernel pump.affinity's variables",
        ),
        (
            {**PUMP, "kernel": {"params": {"rated_sped_rpm": 1}}},
            "models[0].kernel.params.rated_sped_rpm",
            "did you mean 'rated_speed_rpm'?",
        ),
        (
            {**PUMP, "kernel": {"params": {"rated_speed_rpm": 0}}},
            "models[0].kernel.params.rated_speed_rpm",
            "must be > 0",
        ),
        (
            {**PUMP, "kernel": {"bind": {"pressure": "head"}}},
            "models[0].kernel.bind.pressure",
            "has no variable or input 'pressure'",
        ),
        ({**PUMP, "kernel": {"bind": {"head": "hed"}}}, "models[0].kernel.bind.head", "did you mean 'head'?"),
        ({**PUMP, "colour": "red"}, "models[0].colour", "unknown key"),
    ],
)
def test_every_mistake_names_its_key(
    tmp_path: pathlib.Path, table: dict[str, Any], key: str, reason: str
) -> None:
    err = error(tmp_path, models=[table])
    assert err.key == key and reason in err.reason, str(err)


def test_twin_rules_must_name_a_declared_model(tmp_path: pathlib.Path) -> None:
    err = error(tmp_path, models=[PUMP], twins=[{"match": "p-*", "model": "pmup"}])
    assert err.key == "twins[0].model"
    assert "unknown model 'pmup' (did you mean 'pump'?)" in err.reason and "centrifugal_pump" in err.reason
    twice = error(tmp_path, models=[PUMP, PUMP])
    assert twice.key == "models[1].name" and "also declared by models[0]" in twice.reason


def test_model_files_in_models_dir_come_before_the_config_tables(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a_base.toml").write_text(
        '[[models]]\nname = "pump"\nversion = "1"\nextends = "centrifugal_pump"\n'
    )
    (folder / "b_line.toml").write_text(
        '[[models]]\nname = "line_pump"\nversion = "1"\nextends = "pump"\n'
        "[models.kernel.params]\nrated_power_kw = 15.0\n"
    )
    cat = catalog(tmp_path, models_dir=str(folder), models=[{**PUMP, "extends": "line_pump"}])
    assert cat.get("line_pump").source == "models_dir/b_line.toml:models[0]"
    assert cat.get("pump").spec.params["rated_power_kw"] == 15.0  # the config's pump extends the file's
    assert any("replaces the one from models_dir/a_base.toml" in note for note in cat.notes)
    (folder / "c_bad.toml").write_text('[[models]]\nname = "bad"\nversion = 1\n[models.fields.x]\nkind = 3\n')
    err = error(tmp_path, models_dir=str(folder))
    assert err.key == "models_dir/c_bad.toml:models[0].fields.x.kind"
    (folder / "c_bad.toml").write_text("[[models]\n")
    assert "invalid TOML" in error(tmp_path, models_dir=str(folder)).reason


def test_legacy_kernel_tables_map_onto_models_or_say_what_to_write(tmp_path: pathlib.Path) -> None:
    cat = catalog(tmp_path, kernels=[{"type": "room", "name": "fast_room", "expected_period_s": 1.0}])
    fast = cat.get("fast_room")
    assert {f.expected_period_s for f in fast.spec.fields} == {1.0}
    assert fast.spec.kernel == "thermal.first_order"
    assert any('extends = "room"' in note for note in cat.notes)
    assert catalog(tmp_path, kernels=[{"type": "pump.affinity"}]).required_kernels == ("pump.affinity",)
    err = error(tmp_path, kernels=[{"type": "pump.afinity"}])
    assert err.key == "kernels[0].type" and "did you mean 'pump.affinity'?" in err.reason
    assert "[models.kernel] name" in err.reason
    err = error(tmp_path, kernels=[{"type": "pump.affinity", "rated_speed_rpm": 1}])
    assert err.key == "kernels[0].rated_speed_rpm" and "[models.kernel.params]" in err.reason


def test_a_broken_plug_in_is_named_when_its_kernel_is_asked_for(tmp_path: pathlib.Path) -> None:
    registry = default_registry(plugins=False)
    registry.load_errors["acme.chiller"] = "ImportError: no module named acme"
    err = error(
        tmp_path,
        models=[{"name": "c", "version": 1, "fields": {"t": {}}, "kernel": {"name": "acme.chiller"}}],
    )
    assert err.key == "models[0].kernel.name"  # with the default registry: not installed at all
    with pytest.raises(ConfigError) as caught:
        ModelCatalog.from_config(
            config(
                tmp_path,
                models=[{"name": "c", "version": 1, "fields": {"t": {}}, "kernel": {"name": "acme.chiller"}}],
            ),
            registry,
        )
    assert "plug-in 'acme.chiller' failed to load: ImportError" in caught.value.reason
