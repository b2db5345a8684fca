"""Settings every adapter table shares: ``name``, ``[adapters.ingest]`` and ``[adapters.reconnect]``."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field

from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError
from drsdtp.ingest.options import IngestOptions, parse_ingest_options
from drsdtp.supervisor import Backoff

__all__ = ["CommonSettings", "SharedSettings", "parse_common", "require_module"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class CommonSettings:
    name: str
    ingest: IngestOptions = field(default_factory=IngestOptions)
    backoff: Backoff = field(default_factory=Backoff)


class SharedSettings:
    """The Adapter Protocol's ``name``, ``ingest`` and ``backoff``, read from the adapter's shared settings.

    Adapters set ``self.common`` in ``__init__``; their own ``stats`` stay theirs (their types differ).
    """

    common: CommonSettings

    @property
    def name(self) -> str:
        return self.common.name

    @property
    def ingest(self) -> IngestOptions:
        return self.common.ingest

    @property
    def backoff(self) -> Backoff:
        return self.common.backoff


def parse_common(t: Table) -> CommonSettings:
    t.ignore("type")
    name = t.get_str("name")
    if not _NAME.fullmatch(name):
        raise t.error("name", "use 1-64 letters, digits, '_', '.', '-' (it names metrics and log lines)")
    ingest = parse_ingest_options(t)
    r = t.table("reconnect")
    backoff = Backoff()
    if r is not None:
        initial = r.get_float("initial_s", backoff.initial_s, lo=0.0, lo_exclusive=True)
        cap = r.get_float("max_s", max(backoff.max_s, initial), lo=initial)
        try:
            backoff = Backoff(
                initial_s=initial,
                max_s=cap,
                multiplier=r.get_float("multiplier", backoff.multiplier, lo=1.0),
                healthy_after_s=r.get_float("healthy_after_s", backoff.healthy_after_s, lo=0.0),
            )
        except ConfigError as exc:
            raise ConfigError(f"{t.key}.{exc.key.replace('backoff', 'reconnect')}", exc.reason) from None
        r.done()
    return CommonSettings(name, ingest, backoff)


def require_module(t: Table, module: str, extra: str) -> None:
    """Fail at config time, naming the extra, when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise t.error("type", f"needs the optional dependency {module!r}: pip install 'drsdtp[{extra}]'")
