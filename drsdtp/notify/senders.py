"""One delivery attempt per target type: webhook (HTTP POST, HMAC-SHA256 signature), MQTT publish (QoS 1),
e-mail through an SMTP relay. Each raises :class:`DeliveryError` saying why an attempt failed; the
service (:mod:`drsdtp.notify.service`) retries with backoff."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import urllib.parse
from typing import Any

from drsdtp.errors import DrsdtpError
from drsdtp.notify.targets import NotifyTarget, fill

__all__ = ["DeliveryError", "deliver", "signature"]

MAX_REPLY = 64 * 1024


class DeliveryError(DrsdtpError):
    pass


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Drsdtp-Signature`` header's value: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def deliver(target: NotifyTarget, event: dict[str, Any]) -> None:
    try:
        async with asyncio.timeout(target.timeout_s):
            if target.type == "webhook":
                await _webhook(target, event)
            elif target.type == "mqtt":
                await _mqtt(target, event)
            else:
                await asyncio.to_thread(_email, target, event)
    except TimeoutError:
        raise DeliveryError(f"{target.name}: no answer within {target.timeout_s:g}s") from None
    except OSError as exc:  # smtplib.SMTPException is an OSError
        raise DeliveryError(f"{target.name}: {type(exc).__name__}: {exc}") from None


async def _webhook(target: NotifyTarget, event: dict[str, Any]) -> None:
    url = urllib.parse.urlsplit(target.url)
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    host = url.hostname or ""
    body = body_of(event)
    headers = {
        "Host": url.netloc,
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "User-Agent": "drsdtp-notify",
        "X-Drsdtp-Id": str(event.get("id", "")),
        "Connection": "close",
    }
    if target.secret:
        headers["X-Drsdtp-Signature"] = signature(target.secret, body)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if tls else None
    )
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    parts = status_line.decode("latin-1", "replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise DeliveryError(f"{target.name}: not an HTTP answer: {status_line[:80]!r}")
    status = int(parts[1])
    if not 200 <= status < 300:
        raise DeliveryError(f"{target.name}: HTTP {status}")


async def _mqtt(target: NotifyTarget, event: dict[str, Any]) -> None:
    import aiomqtt  # an optional dependency (the mqtt extra), as for the MQTT adapter

    try:
        async with aiomqtt.Client(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            timeout=target.timeout_s,
        ) as client:
            await client.publish(fill(target.topic, event), body_of(event), qos=target.qos)
    except aiomqtt.MqttError as exc:
        raise DeliveryError(f"{target.name}: MQTT: {exc}") from None


def _email(target: NotifyTarget, event: dict[str, Any]) -> None:
    # Imported here: smtplib and the email package are about 1 MB of a node no email target uses.
    import smtplib
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = target.sender
    message["To"] = ", ".join(target.to)
    message["Subject"] = fill(target.subject, event)
    message["X-Drsdtp-Id"] = str(event.get("id", ""))
    lines = [f"{k}: {v}" for k, v in sorted(event.items()) if k != "inputs"]
    lines += [f"input {k} = {v}" for k, v in sorted(dict(event.get("inputs", {})).items())]
    message.set_content("\n".join(lines) + "\n")
    with smtplib.SMTP(target.host, target.port, timeout=target.timeout_s) as smtp:
        if target.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if target.username:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)
