"""The one table of who may call what: a ladder of roles, and the least role each method needs."""

from __future__ import annotations

from typing import Final

from drsdtp.config import ApiRole

__all__ = ["METHOD_ROLES", "ROLES", "UNLISTED_ROLE", "at_least", "required_role"]

# Each role may do everything the roles before it may.
ROLES: Final[tuple[ApiRole, ...]] = ("viewer", "operator", "engineer", "admin")

METHOD_ROLES: Final[dict[str, ApiRole]] = {
    # Reading twins, their history and the node's state.
    "Status": "viewer",
    "ListTwins": "viewer",
    "GetTwin": "viewer",
    "ReadHistory": "viewer",
    "Watch": "viewer",
    "Insight": "viewer",
    "ListSnapshots": "viewer",
    "GetRecovery": "viewer",
    "ListAnomalies": "viewer",
    "WatchAnomalies": "viewer",
    "Health": "viewer",
    "ListAlarms": "viewer",
    "WatchAlarms": "viewer",
    "ListRules": "viewer",
    "GetCommand": "viewer",  # commands (issue 12): reading them
    "ListCommands": "viewer",
    "WaitCommand": "viewer",
    "WaitCommands": "viewer",  # scopes checked per command by the method (one refusal is one result)
    "FollowCommands": "viewer",  # as WaitCommands, streamed
    "Query": "viewer",
    "WhoAmI": "viewer",  # the caller's own identity and role (the dashboard)
    # Changing values of twins that exist: reported, desired, set elements, counters; acknowledging alarms;
    # commands (acting on a twin, as a desired value does).
    "Write": "operator",
    "AcknowledgeAlarm": "operator",  # by alarm id: checked by role only, not by the alarm's twin
    "IssueCommand": "operator",
    "IssueCommands": "operator",  # scopes checked per command by the method
    "CancelCommand": "operator",
    # Changing which twins exist, their past, and what ingestion refused.
    "Write.create": "engineer",
    "Write.delete": "engineer",
    "Relate": "engineer",  # the plant's structure, like which twins exist
    "TakeSnapshot": "engineer",
    "Rollback": "engineer",
    "ReadAudit": "engineer",
    "ListDeadLetters": "engineer",
    "ReplayDeadLetters": "engineer",
    # Throwing data away, accepting a loss.
    "PurgeDeadLetters": "admin",
    "AcceptRecovery": "admin",
}

# A method missing from the table (added to the proto, not yet here) is admitted for admins only: a new
# method is never open by mistake.
UNLISTED_ROLE: Final[ApiRole] = "admin"


def required_role(method: str) -> ApiRole:
    return METHOD_ROLES.get(method, UNLISTED_ROLE)


def at_least(role: ApiRole, needed: ApiRole) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)
