"""Simulation kernels: the protocol, the registry (entry-point group ``drsdtp.kernels``) and the built-ins.

Built-ins: ``linear.trend`` (straight-line extrapolation), ``kalman.local_trend`` (level and slope from a
Kalman filter), ``thermal.first_order`` (Newton cooling with heater and fan, humidity, thermostat; its tracker
fuses redundant sensors with a Kalman filter and estimates parameters online by recursive least squares),
``pump.affinity`` (centrifugal pump: affinity laws with a fitted curve), ``motor.thermal`` (winding
temperature from current and ambient, vibration against a baseline), ``meter.energy`` (counter
monotonicity, resets and rollovers, power = d(energy)/dt), and :class:`MonteCarloKernel`, which wraps any of
them to turn parameter and state uncertainty into intervals.
"""

from typing import TYPE_CHECKING

from drsdtp.lazy import exports

if TYPE_CHECKING:
    from drsdtp.kernels.kalman import LocalTrendFilter, LocalTrendKernel, scalar_update
    from drsdtp.kernels.linear import LinearTrendKernel
    from drsdtp.kernels.meter import EnergyMeterKernel
    from drsdtp.kernels.montecarlo import EnsembleKernel, MonteCarloKernel
    from drsdtp.kernels.motor import MotorThermalKernel
    from drsdtp.kernels.protocol import (
        Observation,
        ParamChange,
        Prediction,
        Scenario,
        SimulationKernel,
        StateTracker,
        TrackerStep,
        TrackingKernel,
        TwinState,
    )
    from drsdtp.kernels.pump import AffinityPumpKernel
    from drsdtp.kernels.registry import ENTRY_POINT_GROUP, KernelRegistry, default_registry
    from drsdtp.kernels.thermal import DEFAULT_PARAMS as THERMAL_DEFAULT_PARAMS
    from drsdtp.kernels.thermal import FirstOrderThermalKernel, ThermalTracker

# Each name is imported from its submodule on first read: importing one submodule stays cheap.
__getattr__ = exports(
    __name__,
    {
        "AffinityPumpKernel": "pump",
        "ENTRY_POINT_GROUP": "registry",
        "EnergyMeterKernel": "meter",
        "EnsembleKernel": "montecarlo",
        "FirstOrderThermalKernel": "thermal",
        "KernelRegistry": "registry",
        "LinearTrendKernel": "linear",
        "LocalTrendFilter": "kalman",
        "LocalTrendKernel": "kalman",
        "MonteCarloKernel": "montecarlo",
        "MotorThermalKernel": "motor",
        "Observation": "protocol",
        "ParamChange": "protocol",
        "Prediction": "protocol",
        "Scenario": "protocol",
        "SimulationKernel": "protocol",
        "StateTracker": "protocol",
        "THERMAL_DEFAULT_PARAMS": "thermal:DEFAULT_PARAMS",
        "ThermalTracker": "thermal",
        "TrackerStep": "protocol",
        "TrackingKernel": "protocol",
        "TwinState": "protocol",
        "default_registry": "registry",
        "scalar_update": "kalman",
    },
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "THERMAL_DEFAULT_PARAMS",
    "AffinityPumpKernel",
    "EnergyMeterKernel",
    "EnsembleKernel",
    "FirstOrderThermalKernel",
    "KernelRegistry",
    "LinearTrendKernel",
    "LocalTrendFilter",
    "LocalTrendKernel",
    "MonteCarloKernel",
    "MotorThermalKernel",
    "Observation",
    "ParamChange",
    "Prediction",
    "Scenario",
    "SimulationKernel",
    "StateTracker",
    "ThermalTracker",
    "TrackerStep",
    "TrackingKernel",
    "TwinState",
    "default_registry",
    "scalar_update",
]
