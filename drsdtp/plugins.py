"""The installed plug-ins of an entry-point group, for the registries that find plug-ins by name (adapters,
kernels).

importlib.metadata is imported, and the installed distributions' metadata read, only when a registry asks
for a name no built-in has: about 2 MB of an idle node that names only built-ins (issue 13).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import EntryPoints

__all__ = ["installed_entry_points"]


def installed_entry_points(group: str) -> EntryPoints:
    """The installed entry points of ``group``."""
    from importlib.metadata import entry_points

    return entry_points(group=group)
