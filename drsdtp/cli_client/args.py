"""The command lines of ``drsdtp set|desire|tag|create|delete|watch`` (argparse only: no SDK import, so
parsing stays fast for every command).

Values are ``FIELD=VALUE``: ``true``/``false`` are flags, ``21``/``21.5``/``1e3`` numbers, ``"quoted"`` (JSON)
text, anything else text as written.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["add_parsers", "parse_assignment", "parse_value", "rewrite_tag_args"]

Scalar = float | int | bool | str

_NUMBER: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT: Final = re.compile(r"[+-]?\d+")
ParserFactory = Callable[[str, str], argparse.ArgumentParser]


def parse_value(text: str) -> Scalar:
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        return str(value)
    return text


def parse_assignment(text: str) -> tuple[str, Scalar]:
    """``FIELD=VALUE`` as (field, value); argparse reports the ``ArgumentTypeError``."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    return field, parse_value(value)


def _meta(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _version(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (a number from `drsdtp get`)") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 64-bit version")
    return value


def _cursor(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a cursor (a number a watch printed)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a cursor (a number a watch printed)")
    return value


def rewrite_tag_args(argv: Sequence[str]) -> list[str]:
    """``tag TWIN +A -B``: ``-B`` would read as an option, so it becomes ``--remove=B`` before parsing (an
    element that starts with '-' is written ``--remove=-x``)."""
    argv = list(argv)
    at = 0
    while at < len(argv) and argv[at].startswith("-"):  # the options before the command
        at += 2 if argv[at] == "--log-level" else 1
    if at >= len(argv) or argv[at] != "tag":
        return argv
    rest = [
        f"--remove={arg[1:]}" if arg[:1] == "-" and arg[1:2] not in ("", "-") and arg != "-h" else arg
        for arg in argv[at + 1 :]
    ]
    return [*argv[: at + 1], *rest]


def _write_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--if-version", type=_version, metavar="V", help="only if the twin is at this version")
    p.add_argument(
        "--ack",
        choices=("durable", "replicated"),
        default="durable",
        help="answer once on this node's disk (default) or also made durable by --replicas peers",
    )
    p.add_argument("--replicas", type=int, default=0, metavar="N", help="with --ack replicated (default 1)")
    p.add_argument(
        "--idempotency-key", metavar="KEY", help="retried safely: the node applies a key's write once"
    )
    p.add_argument("--reason", "-m", default="", help="why (recorded in the audit trail)")


def add_parsers(client: ParserFactory) -> None:
    """Adds the write and watch subcommands (``client`` adds one with the common client options)."""
    p = client("set", "write reported values of a twin (manual readings, MES/ERP values)")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("values", nargs="+", type=parse_assignment, metavar="FIELD=VALUE")
    _write_options(p)

    p = client("desire", "set desired values of a twin (a conflict with a concurrent one is kept)")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("values", nargs="*", type=parse_assignment, metavar="FIELD=VALUE")
    p.add_argument("--clear", action="append", default=[], metavar="FIELD", help="withdraw FIELD's intents")
    _write_options(p)

    p = client("tag", "add (+A) and remove (-B) elements of a set field of a twin")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("adds", nargs="*", metavar="+ELEMENT", help="+A adds A, -B removes B")
    p.add_argument("--remove", action="append", default=[], metavar="ELEMENT", help=argparse.SUPPRESS)
    p.add_argument("--field", default="tags", help="the set field (default: %(default)s)")
    _write_options(p)

    p = client("create", "create a twin")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument(
        "--set",
        action="append",
        type=parse_assignment,
        default=[],
        dest="values",
        metavar="FIELD=VALUE",
        help="an initial reported value (repeatable)",
    )
    p.add_argument("--model", default="", help="an asset model the node knows (its fields are checked)")
    p.add_argument("--scope", default="", help="default: the node's first scope")
    p.add_argument("--meta", action="append", type=_meta, default=[], metavar="KEY=VALUE", help="metadata")
    _write_options(p)

    p = client("delete", "delete a twin (a replicated tombstone; create brings it back)")
    p.add_argument("twin_id", metavar="TWIN")
    _write_options(p)

    p = client("watch", "print changes to twins as they happen (resumes by itself after a disconnect)")
    p.add_argument("twin_ids", nargs="*", metavar="TWIN", help="only these twins (default: all)")
    p.add_argument("--prefix", default="", help="only twin ids starting with this")
    p.add_argument("--field", action="append", default=[], dest="fields", help="only this field (repeatable)")
    p.add_argument(
        "--origin", action="append", default=[], dest="origins", choices=("local", "ingest", "peer")
    )
    p.add_argument(
        "--since", type=_cursor, metavar="CURSOR", help="resume: changes after this cursor, no snapshot"
    )
    p.add_argument("--count", type=int, metavar="N", help="stop after N changes")
