"""Kernel registry: built-ins plus plug-ins from the ``drsdtp.kernels`` entry-point group.

A plug-in package declares, in its ``pyproject.toml``::

    [project.entry-points."drsdtp.kernels"]
    "hvac.two_zone" = "my_pkg.kernels:TwoZoneKernel"

The entry point must load to a zero-argument callable (usually the class) returning an object that satisfies
:class:`~drsdtp.kernels.protocol.SimulationKernel`. The registry creates each kernel once and hands the same
instance to every twin of every model type that names it. A plug-in that fails to load is skipped and its
error kept in :attr:`KernelRegistry.load_errors`, so one broken package cannot stop the node.

The entry points are scanned only when a name is asked for that no built-in has (or the list of names):
scanning installed packages imports importlib.metadata and reads every distribution's metadata, about 2 MB
of an idle node that names only built-in kernels (issue 13).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from drsdtp.errors import ConfigError
from drsdtp.kernels.protocol import SimulationKernel
from drsdtp.plugins import installed_entry_points as entry_points  # a module name: tests patch it

__all__ = ["ENTRY_POINT_GROUP", "KernelRegistry", "default_registry"]

ENTRY_POINT_GROUP = "drsdtp.kernels"
_log = logging.getLogger(__name__)

KernelFactory = Callable[[], SimulationKernel]


# Name -> "module:class". A built-in's module is imported when its kernel is first created: the six hold
# about 0.3 MiB of an idle node that models nothing (issue 13). Each name is its class's ``name``
# (tests/intelligence/test_intel_kernels.py checks).
BUILTINS: dict[str, str] = {
    "linear.trend": "drsdtp.kernels.linear:LinearTrendKernel",
    "thermal.first_order": "drsdtp.kernels.thermal:FirstOrderThermalKernel",
    "kalman.local_trend": "drsdtp.kernels.kalman:LocalTrendKernel",
    "pump.affinity": "drsdtp.kernels.pump:AffinityPumpKernel",
    "motor.thermal": "drsdtp.kernels.motor:MotorThermalKernel",
    "meter.energy": "drsdtp.kernels.meter:EnergyMeterKernel",
}


def builtin_factory(path: str) -> KernelFactory:
    """The factory of the built-in at ``module:class``: imports its module at its first call."""

    def factory() -> SimulationKernel:
        module, _, name = path.partition(":")
        kernel: SimulationKernel = getattr(importlib.import_module(module), name)()
        return kernel

    return factory


class KernelRegistry:
    """Name -> factory, and name -> the one shared instance (created on first use)."""

    def __init__(self, *, plugins: str | None = None) -> None:
        """``plugins``: an entry-point group to register too, scanned when first needed."""
        self._factories: dict[str, KernelFactory] = {}
        self._instances: dict[str, SimulationKernel] = {}
        self._load_errors: dict[str, str] = {}
        self._pending = plugins

    @property
    def load_errors(self) -> dict[str, str]:
        """Plug-ins that failed to load: name -> why."""
        self._scan()
        return self._load_errors

    def _scan(self) -> None:
        group, self._pending = self._pending, None
        if group is not None:
            self.load_entry_points(group)

    def register(self, name: str, factory: KernelFactory, *, replace: bool = False) -> None:
        if not name:
            raise ConfigError("kernel.name", "must not be empty")
        if name in self._factories and not replace:
            raise ConfigError(f"kernel.{name}", "already registered")
        self._factories[name] = factory
        self._instances.pop(name, None)

    def names(self) -> tuple[str, ...]:
        self._scan()
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        if name not in self._factories:
            self._scan()
        return name in self._factories

    def get(self, name: str) -> SimulationKernel:
        """The shared instance of kernel ``name``."""
        if name not in self._factories:
            self._scan()
        if name not in self._instances:
            factory = self._factories.get(name)
            if factory is None:
                raise ConfigError(
                    f"kernel.{name}", f"not registered; known kernels: {', '.join(self.names())}"
                )
            kernel = factory()
            if not isinstance(kernel, SimulationKernel):
                raise ConfigError(f"kernel.{name}", "factory did not return a SimulationKernel")
            self._instances[name] = kernel
        return self._instances[name]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> tuple[str, ...]:
        """Register every kernel advertised in ``group``; returns the names added."""
        added: list[str] = []
        for ep in entry_points(group=group):
            try:
                factory = ep.load()
                if not callable(factory):
                    raise TypeError(f"{ep.value} is not callable")
                self.register(ep.name, factory)
            except Exception as exc:  # a broken plug-in must not stop the node
                self._load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                _log.warning("kernel plug-in %r (%s) not loaded: %s", ep.name, ep.value, exc)
                continue
            added.append(ep.name)
        return tuple(added)


def default_registry(*, plugins: bool = True) -> KernelRegistry:
    """Built-in kernels, plus the ``drsdtp.kernels`` entry points when ``plugins`` is true (scanned when a
    name no built-in has is first asked for)."""
    registry = KernelRegistry(plugins=ENTRY_POINT_GROUP if plugins else None)
    for name, path in BUILTINS.items():
        registry.register(name, builtin_factory(path))
    return registry
