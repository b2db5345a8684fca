"""The twin an alarm or a command belongs to, read from the node, so a request naming the record is checked
against the caller's twin scopes like one naming the twin (:class:`drsdtp.api.auth.access.RecordTwins`)."""

from __future__ import annotations

from drsdtp.api.node import NodeApi

__all__ = ["NodeRecords"]


class NodeRecords:
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    def alarm_twin(self, alarm_id: str) -> str | None:
        record = self.node.alerting.alarm(alarm_id)
        return record.twin if record is not None else None

    def command_twin(self, command_id: str) -> str | None:
        record = self.node.commands.get(command_id)
        return record.twin if record is not None else None
