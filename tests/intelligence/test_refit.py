"""Which sensor-vs-model offsets a parameter commit invalidates: the kernel's prediction decides."""

from __future__ import annotations

import math

import pytest

from drsdtp.errors import InvalidValueError
from drsdtp.intelligence.refit import prediction_shift
from drsdtp.kernels import Prediction, Scenario, TwinState
from drsdtp.kernels.pump import PUMP_DEFAULT_PARAMS, AffinityPumpKernel
from drsdtp.kernels.thermal import DEFAULT_PARAMS, FirstOrderThermalKernel

PUMP_STATE = {"speed": 2600.0, "valve": 1.0, "flow": 90.0, "head": 34.0, "power": 9.5}
ROOM_STATE = {"temp": 21.0, "humidity": 48.0, "outdoor_temp": 8.0, "heater": 0.6, "fan": 0.0}


def test_a_pump_curve_refined_by_a_few_percent_moves_its_head_prediction_by_metres() -> None:
    before = dict(PUMP_DEFAULT_PARAMS)
    after = {**before, "rated_head_m": before["rated_head_m"] * 1.03}
    shift = prediction_shift(AffinityPumpKernel(), "pump-1", 0.0, PUMP_STATE, before, after)
    assert shift["head"] > 0.5  # far above a head sensor's noise: its offset must be forgotten
    assert shift["power"] == 0.0  # the power curve did not change
    assert shift["flow"] == 0.0


def test_a_room_whose_temperature_model_moved_keeps_its_humidity_prediction() -> None:
    before = dict(DEFAULT_PARAMS)
    after = {**before, "heater_gain": before["heater_gain"] * 1.2}
    shift = prediction_shift(FirstOrderThermalKernel(), "room-1", 0.0, ROOM_STATE, before, after)
    assert shift["temp"] > 0.01
    assert shift["humidity"] == 0.0


def test_unchanged_parameters_shift_nothing() -> None:
    params = dict(DEFAULT_PARAMS)
    shift = prediction_shift(FirstOrderThermalKernel(), "room-1", 0.0, ROOM_STATE, params, params)
    assert shift == {"temp": 0.0, "humidity": 0.0}


class _Refusing:
    name = "refusing"
    variables = ("level",)

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        raise InvalidValueError(f"twin {state.twin!r}: no level to start from")


def test_a_kernel_that_cannot_predict_forgets_every_variable() -> None:
    shift = prediction_shift(_Refusing(), "tank-1", 0.0, {}, {}, {})
    assert shift == {"level": math.inf}


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_prediction_counts_as_moved(bad: float) -> None:
    state = {**PUMP_STATE, "speed": bad}
    before = dict(PUMP_DEFAULT_PARAMS)
    shift = prediction_shift(AffinityPumpKernel(), "pump-1", 0.0, state, before, before)
    assert all(v == math.inf for v in shift.values())
