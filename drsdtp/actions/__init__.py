"""Acting on assets: actuators, commands with a lifecycle bound to the twin, and their execution.

* :mod:`.record`: the command record, replicated state in the store (``_cmd/<id>``), and its state lattice;
* :mod:`.actuators`: the ``[[actuators]]`` config: what may be acted on, by which node and adapter, within
  which limits and interlocks;
* :mod:`.book`: the in-process interface (:class:`CommandBook`: ``issue_command``, ``get``, ``list``,
  ``cancel``, ``wait``), which the API, the CLI and rules use;
* :mod:`.executor`: on the node that owns an actuator, carries its commands out through the adapter's write
  half, checks safety first, and follows each to its outcome.
"""

from typing import TYPE_CHECKING

from drsdtp.lazy import exports

if TYPE_CHECKING:
    from drsdtp.actions.actuators import Actuators, ActuatorSpec, Interlock, parse_actuators
    from drsdtp.actions.book import CommandBook, CommandLimits, CommandRequest
    from drsdtp.actions.record import CommandId, CommandRecord, Mark, State

# Each name is imported from its submodule on first read: importing one submodule stays cheap.
__getattr__ = exports(
    __name__,
    {
        "ActuatorSpec": "actuators",
        "Actuators": "actuators",
        "CommandBook": "book",
        "CommandId": "record",
        "CommandLimits": "book",
        "CommandRecord": "record",
        "CommandRequest": "book",
        "Interlock": "actuators",
        "Mark": "record",
        "State": "record",
        "parse_actuators": "actuators",
    },
)

__all__ = [
    "ActuatorSpec",
    "Actuators",
    "CommandBook",
    "CommandId",
    "CommandLimits",
    "CommandRecord",
    "CommandRequest",
    "Interlock",
    "Mark",
    "State",
    "parse_actuators",
]
