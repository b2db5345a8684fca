"""The intelligence model spec that matches the simulated rooms (fields, limits and the thermal kernel).

The node declares the same model as data (``drsdtp/models/library/room.toml``); this builds it in code for a
plant with other parameters or period, and a test keeps the two equal for the nominal plant.
"""

from __future__ import annotations

from types import MappingProxyType

from drsdtp.intelligence.spec import FieldSpec, ModelSpec
from drsdtp.sim.plant import PlantParams

__all__ = ["room_model_spec"]


def room_model_spec(dt_s: float = 10.0, params: PlantParams | None = None, name: str = "room") -> ModelSpec:
    """Fields of a simulated room, bound to ``thermal.first_order`` with the plant's nominal parameters."""
    p = params if params is not None else PlantParams()

    def temp(field: str) -> FieldSpec:
        return FieldSpec(
            field,
            expected_period_s=dt_s,
            unit=" C",
            resolution=p.temp_quantum_c,
            redundancy_group="temp",
            valid_min=-40.0,
            valid_max=80.0,
            low_limit=12.0,
            high_limit=30.0,
            max_rate_per_min=0.5,
            trend_deadband_per_min=0.005,
            forecast_tolerance=0.5,
            stability_scale=0.5,
            calibration_tolerance=0.5,
            depends_on=("heater", "fan", "outdoor_temp"),
        )

    fields = (
        temp("temp_1"),
        temp("temp_2"),
        FieldSpec(
            "humidity",
            expected_period_s=dt_s,
            unit=" %RH",
            resolution=p.humidity_quantum_pct,
            valid_min=0.0,
            valid_max=100.0,
            high_limit=70.0,
            max_rate_per_min=2.0,
            trend_deadband_per_min=0.02,
            forecast_tolerance=3.0,
            stability_scale=3.0,
            calibration_tolerance=5.0,
            depends_on=("fan",),
        ),
        FieldSpec(
            "outdoor_temp",
            expected_period_s=dt_s,
            unit=" C",
            resolution=0.0,
            valid_min=-60.0,
            valid_max=60.0,
            forecast_tolerance=1.0,
            stability_scale=1.0,
        ),
        FieldSpec("heater", expected_period_s=dt_s, kind="actuator", valid_min=0.0, valid_max=1.0),
        FieldSpec("fan", expected_period_s=dt_s, kind="actuator", valid_min=0.0, valid_max=1.0),
    )
    bindings = {
        "temp": ("temp_1", "temp_2"),
        "humidity": ("humidity",),
        "outdoor_temp": ("outdoor_temp",),
        "heater": ("heater",),
        "fan": ("fan",),
    }
    kernel_params = {
        "loss": p.loss_per_s,
        "fan_loss": p.fan_loss_per_s,
        "heater_gain": p.heater_gain_c_per_s,
        "hum_rate": p.humidity_rate_per_s,
        "hum_ambient": p.humidity_ambient_pct,
        "fan_hum_rate": p.fan_humidity_rate_per_s,
        "hum_dry": p.humidity_dry_pct,
        "hysteresis": p.thermostat_hysteresis_c,
        # Process noise per second, twice the plant's (a margin for model error).
        "temp_process_var": 2.0 * p.temp_process_noise_c**2 / 10.0,
        "hum_process_var": 2.0 * p.humidity_process_noise_pct**2 / 10.0,
    }
    return ModelSpec(
        name=name,
        fields=fields,
        kernel="thermal.first_order",
        bindings=MappingProxyType(bindings),
        params=MappingProxyType(kernel_params),
    )
