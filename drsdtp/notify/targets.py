"""The ``[[notify]]`` config: where notifications go.

Settings::

    [[notify]]
    name = "ops"                       # what rule actions name (target = "ops")
    type = "webhook"                   # webhook | mqtt | email
    timeout_s = 5.0                    # one delivery attempt
    # webhook: an HTTP POST of the event as JSON; with a secret, the header
    #   X-Drsdtp-Signature: sha256=<hex HMAC-SHA256 of the body>; X-Drsdtp-Id names the event (the same
    #   id on every node and every retry: a receiver drops repeats)
    url = "https://ops.example/hooks/drsdtp"
    secret_file = "/etc/drsdtp/webhook.secret"   # or secret = "..."
    # mqtt: a QoS 1 publish of the event as JSON
    host = "127.0.0.1"
    port = 1883
    topic = "drsdtp/alarms/{rule}/{twin}"        # {rule} {twin} {severity} {event} {node} are filled in
    # email: through an SMTP relay
    host = "smtp.example"
    port = 25
    sender = "drsdtp@plant.example"
    to = ["ops@plant.example"]
    subject = "[{severity}] {rule} {event} on {twin}"
    starttls = false
    username = "..."                   # optional, with password / password_file
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError

__all__ = ["TARGET_TYPES", "NotifyTarget", "fill", "parse_targets"]

TargetType = Literal["webhook", "mqtt", "email"]
TARGET_TYPES: Final[tuple[TargetType, ...]] = ("webhook", "mqtt", "email")
PLACEHOLDERS: Final = ("rule", "twin", "severity", "event", "node", "alarm")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    name: str
    type: TargetType
    timeout_s: float
    url: str = ""
    secret: str | None = None
    host: str = ""
    port: int = 0
    topic: str = ""
    qos: int = 1
    sender: str = ""
    to: tuple[str, ...] = ()
    subject: str = ""
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    key: str = ""


def fill(template: str, event: Mapping[str, Any]) -> str:
    """``{rule}`` etc. from the event ("" for a field it lacks); MQTT wildcards never come from data."""

    def one(m: re.Match[str]) -> str:
        value = str(event.get(m.group(1), ""))
        return value.replace("+", "_").replace("#", "_")

    return _PLACEHOLDER.sub(one, template)


def _check_template(t: Table, name: str, text: str) -> str:
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) not in PLACEHOLDERS:
            raise t.error(name, f"unknown placeholder {{{m.group(1)}}} (known: {', '.join(PLACEHOLDERS)})")
    return text


def _parse_one(t: Table) -> NotifyTarget:
    name = t.get_str("name")
    if not _NAME.fullmatch(name):
        raise t.error("name", f"{name!r} is not a valid name (letters, digits, '.', '_', '-'; up to 64)")
    kind = t.choice("type", TARGET_TYPES)
    timeout_s = t.get_float("timeout_s", 5.0, lo=0.0, lo_exclusive=True, hi=600.0)
    target: NotifyTarget
    if kind == "webhook":
        url = t.get_str("url")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise t.error("url", f"{url!r} is not an http:// or https:// URL")
        target = NotifyTarget(name, kind, timeout_s, url=url, secret=t.secret("secret"), key=t.key)
    elif kind == "mqtt":
        target = NotifyTarget(
            name,
            kind,
            timeout_s,
            host=t.get_str("host", "127.0.0.1"),
            port=t.get_int("port", 1883, lo=1, hi=65535),
            topic=_check_template(t, "topic", t.get_str("topic", "drsdtp/alarms/{rule}/{twin}")),
            qos=t.get_int("qos", 1, lo=0, hi=2),
            username=t.opt_str("username"),
            password=t.secret("password"),
            key=t.key,
        )
    else:
        to = tuple(t.str_list("to"))
        if not to:
            raise t.error("to", "name at least one recipient")
        target = NotifyTarget(
            name,
            kind,
            timeout_s,
            host=t.get_str("host"),
            port=t.get_int("port", 25, lo=1, hi=65535),
            sender=t.get_str("sender"),
            to=to,
            subject=_check_template(
                t, "subject", t.get_str("subject", "[{severity}] {rule} {event} on {twin}")
            ),
            starttls=t.get_bool("starttls", False),
            username=t.opt_str("username"),
            password=t.secret("password"),
            key=t.key,
        )
    t.done()
    return target


def parse_targets(raw: Sequence[Mapping[str, Any]], key: str = "notify") -> tuple[NotifyTarget, ...]:
    out: list[NotifyTarget] = []
    seen: dict[str, str] = {}
    for i, table in enumerate(raw):
        target = _parse_one(Table(table, f"{key}[{i}]"))
        if target.name in seen:
            raise ConfigError(f"{target.key}.name", f"{target.name!r} is already {seen[target.name]}")
        seen[target.name] = target.key
        out.append(target)
    return tuple(out)
