"""Field kinds and relationships on the intelligence's FieldSpec/ModelSpec (read by the health detectors)."""

from __future__ import annotations

import pytest

from drsdtp.errors import ConfigError
from drsdtp.intelligence.spec import FIELD_KINDS, FieldSpec, ModelSpec


def test_kind_and_analog_agree_whichever_is_given() -> None:
    assert FieldSpec("t").kind == "analog" and FieldSpec("t").analog
    assert FieldSpec("mode", analog=False).kind == "state"
    for kind in FIELD_KINDS:
        spec = FieldSpec("f", kind=kind)
        assert spec.kind == kind and spec.analog == (kind == "analog")
    # kind wins over a contradicting analog flag
    assert not FieldSpec("energy", kind="counter", analog=True).analog


def test_unknown_kind_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        FieldSpec("flow", kind="analogue")  # type: ignore[arg-type]
    assert err.value.key == "flow.kind" and "counter" in err.value.reason


def test_dependencies_name_fields_of_the_model_without_cycles() -> None:
    speed, flow = FieldSpec("speed"), FieldSpec("flow", depends_on=("speed",))
    model = ModelSpec("pump", (speed, flow, FieldSpec("head", depends_on=("speed", "flow"))))
    assert model.dependents("speed") == ("flow", "head") and model.dependents("head") == ()
    with pytest.raises(ConfigError) as err:
        ModelSpec("pump", (speed, FieldSpec("flow", depends_on=("sped",))))
    assert err.value.key == "model.pump.fields.flow.depends_on" and "'sped'" in err.value.reason
    with pytest.raises(ConfigError) as err:
        ModelSpec("loop", (FieldSpec("a", depends_on=("b",)), FieldSpec("b", depends_on=("a",))))
    assert "a -> b -> a" in err.value.reason
    with pytest.raises(ConfigError, match="itself"):
        FieldSpec("a", depends_on=("a",))
