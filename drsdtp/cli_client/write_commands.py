"""``drsdtp set|desire|tag|create|delete|watch``: the CLI's write and watch commands, on the SDK (their
command lines: :mod:`drsdtp.cli_client.args`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final

from drsdtp.cli_client.render import iso, show_field
from drsdtp.cli_client.session import open_client
from drsdtp.client import Change, WriteResult
from drsdtp.client.writes import (
    Ack,
    Create,
    Op,
    Scalar,
    TwinWrite,
    add,
    clear_desired,
    desire,
    remove,
    report,
)
from drsdtp.console import Console
from drsdtp.errors import ConfigError
from drsdtp.node_commands import EXIT_OK, ApiTarget

__all__ = ["HANDLERS"]

Handler = Callable[[argparse.Namespace, ApiTarget, Console], Coroutine[Any, Any, int]]


def _ack(args: argparse.Namespace) -> Ack:
    return "replicated" if args.ack == "replicated" else "durable"


async def _write(args: argparse.Namespace, target: ApiTarget, write: TwinWrite) -> WriteResult:
    async with open_client(target, actor=getattr(args, "actor", "")) as client:
        return await client.write(
            [write],
            idempotency_key=args.idempotency_key,
            ack=_ack(args),
            replicas=args.replicas,
            reason=args.reason,
        )


def _done(console: Console, what: str, twin: str, result: WriteResult) -> int:
    version = result.versions.get(twin, 0)
    if console.json_mode:
        doc = {"twin": twin, "version": version, "repeated": result.repeated, "replicated": result.replicated}
        console.json(doc)
        return EXIT_OK
    notes = []
    if result.repeated:
        notes.append("a repeat of an earlier request with this key: nothing applied again")
    if result.replicated:
        notes.append(f"acknowledged by {result.replicated} peers")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    console.line(f"{twin}: {what} (version {version}){suffix}")
    return EXIT_OK


def _shown(values: Sequence[tuple[str, Scalar]]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str | bytes) else f"{k}={v}" for k, v in values)


async def _cmd_set(args: argparse.Namespace, target: ApiTarget, console: Console) -> int:
    ops = tuple(report(k, v) for k, v in args.values)
    result = await _write(args, target, TwinWrite(args.twin_id, ops, if_version=args.if_version))
    return _done(console, f"{_shown(args.values)} written", args.twin_id, result)


async def _cmd_desire(args: argparse.Namespace, target: ApiTarget, console: Console) -> int:
    if not args.values and not args.clear:
        raise ConfigError("desire", "give FIELD=VALUE or --clear FIELD")
    ops: tuple[Op, ...] = tuple(desire(k, v) for k, v in args.values) + tuple(
        clear_desired(f) for f in args.clear
    )
    result = await _write(args, target, TwinWrite(args.twin_id, ops, if_version=args.if_version))
    what = ", ".join(filter(None, [_shown(args.values), ", ".join(f"{f} cleared" for f in args.clear)]))
    return _done(console, f"desired {what}", args.twin_id, result)


async def _cmd_tag(args: argparse.Namespace, target: ApiTarget, console: Console) -> int:
    adds, removes = [], list(args.remove)
    for token in args.adds:
        if not token.startswith("+") or len(token) < 2:
            raise ConfigError("tag", f"{token!r}: write +ELEMENT to add, -ELEMENT to remove")
        adds.append(token[1:])
    if not adds and not removes:
        raise ConfigError("tag", "give +ELEMENT to add or -ELEMENT to remove")
    ops = tuple(add(args.field, e) for e in adds) + tuple(remove(args.field, e) for e in removes)
    result = await _write(args, target, TwinWrite(args.twin_id, ops, if_version=args.if_version))
    what = " ".join([*(f"+{e}" for e in adds), *(f"-{e}" for e in removes)])
    return _done(console, f"{args.field} {what}", args.twin_id, result)


async def _cmd_create(args: argparse.Namespace, target: ApiTarget, console: Console) -> int:
    ops = tuple(report(k, v) for k, v in args.values)
    create = Create(args.model, args.scope, dict(args.meta))
    result = await _write(
        args, target, TwinWrite(args.twin_id, ops, create=create, if_version=args.if_version)
    )
    model = f" of model {args.model}" if args.model else ""
    return _done(console, f"created{model}", args.twin_id, result)


async def _cmd_delete(args: argparse.Namespace, target: ApiTarget, console: Console) -> int:
    result = await _write(args, target, TwinWrite(args.twin_id, delete=True, if_version=args.if_version))
    return _done(console, "deleted", args.twin_id, result)


def _change_doc(change: Change) -> dict[str, Any]:
    from drsdtp.cli_client.commands import twin_doc

    return {"origin": change.origin, "cursor": change.cursor, **twin_doc(change.twin)}


def _change_line(change: Change) -> str:
    newest = max((f.time_ms for f in change.twin.fields.values()), default=0)
    when = iso(newest)[11:] if newest else "-"
    values = " ".join(f"{name}={show_field(f)}" for name, f in change.twin.fields.items())
    cursor = f" @{change.cursor}" if change.cursor else ""
    return f"{when}  {change.twin.twin_id}  {change.origin}{cursor}  {values}"


async def _cmd_watch(args: argparse.Namespace, target: ApiTarget, console: Console) -> int:
    seen = 0
    async with open_client(target) as client:
        watch = client.watch(
            args.twin_ids, prefix=args.prefix, fields=args.fields, origins=args.origins, since=args.since
        )
        try:
            async with watch:
                async for change in watch:
                    if change.twin.twin_id.startswith("_") and change.twin.twin_id not in args.twin_ids:
                        continue  # the node's own records (membership ...), unless asked for by name
                    text = (
                        json.dumps(_change_doc(change), default=str)
                        if console.json_mode
                        else _change_line(change)
                    )
                    console.out.write(text + "\n")
                    console.out.flush()
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        finally:
            if watch.cursor is not None and not console.json_mode:
                console.message(f"resume with: drsdtp watch --since {watch.cursor}")
    return EXIT_OK


HANDLERS: Final[Mapping[str, Handler]] = {
    "set": _cmd_set,
    "desire": _cmd_desire,
    "tag": _cmd_tag,
    "create": _cmd_create,
    "delete": _cmd_delete,
    "watch": _cmd_watch,
}
