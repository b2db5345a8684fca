"""Commands in the node: the command book every node has, the audit of command events, and the hook that
turns an application's desired value of an actuated field into a command (with the caller's identity).

The executor of the actuators this node owns is added by :mod:`drsdtp.actions.executor`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drsdtp.actions import CommandBook, CommandLimits, CommandRecord, parse_actuators
from drsdtp.api.node import AuditEntry
from drsdtp.api.write_plan import DESIRED_SUFFIX
from drsdtp.core import intents
from drsdtp.errors import DrsdtpError
from drsdtp.history.audit import Change, Via

if TYPE_CHECKING:
    from drsdtp.node.node import Node

__all__ = ["Actuation"]

log = logging.getLogger(__name__)

_VIA: dict[str, Via] = {"api": "api", "cli": "cli", "desired": "api", "rule": "rule"}


class Actuation:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.actuators = parse_actuators(config.actuators)
        c = config.commands
        self.book = CommandBook(
            node.store,
            node.commit,
            node_id=config.node_id,
            actuators=self.actuators,
            changes=node.feed,
            limits=CommandLimits(c.max_records, c.default_deadline_s, c.max_deadline_s),
            audit=self.audit,
        )

    async def audit(self, record: CommandRecord, event: str, actor: str, reason: str) -> None:
        """One line per command event in the node's audit trail (``ref``: the command id)."""
        name = record.field or record.action
        changes = {name: Change(new=record.value)} if record.value is not None and event == "issued" else {}
        text = f"{event}: {reason}" if reason else event
        via = _VIA.get(record.origin, "system")
        await self.node.snapshots.audit_command(
            actor=actor, twin=record.twin, changes=changes, reason=text, via=via, ref=record.id
        )

    async def on_writes(self, entries: Sequence[AuditEntry]) -> None:
        """Desired values an application wrote here, on actuated fields: each becomes a command now, with
        the caller as its actor (the executor would also create it from the replicated value, without)."""
        for entry in entries:
            for name, change in entry.changes.items():
                if not name.endswith(DESIRED_SUFFIX) or not change.new:
                    continue
                spec = self.actuators.for_desired(entry.twin, name[: -len(DESIRED_SUFFIX)])
                if spec is None:
                    continue
                values = intents(self.node.store, entry.twin, name)
                if not values:
                    continue
                try:
                    await self.book.desired(spec, values[-1], actor=entry.actor, reason=entry.reason)
                except DrsdtpError as exc:  # the write itself stands; the executor may still pick it up
                    log.warning("desired %s/%s: no command: %s", entry.twin, name, exc)
