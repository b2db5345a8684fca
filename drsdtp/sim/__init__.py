"""Simulated plant for tests, validation and demos: rooms with heaters, fans, redundant sensors and faults."""

from drsdtp.sim.faults import FAULT_KINDS, Fault, FaultKind
from drsdtp.sim.plant import FIELDS, INPUTS, PARAMS, Plant, PlantParams, PlantRecording, SimReading, StepFrame

__all__ = [
    "FAULT_KINDS",
    "FIELDS",
    "INPUTS",
    "PARAMS",
    "Fault",
    "FaultKind",
    "Plant",
    "PlantParams",
    "PlantRecording",
    "SimReading",
    "StepFrame",
]
