"""The demo's webhook receiver: where the first node's alarm notifications land (``[[notify]]`` type
``webhook``), as an operator's endpoint would take them. It checks each POST's ``X-Drsdtp-Signature`` (the
HMAC of the body with the shared secret), keeps the last few lines for the demo's screen and prints each one
as it arrives. Bounded: bodies over :data:`MAX_BODY` are refused, and only the last :data:`KEEP` lines are
kept. A duplicate delivery (the same ``X-Drsdtp-Id``) is said once, as a receiver should dedupe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
from collections.abc import Callable

from drsdtp.notify.senders import signature

__all__ = ["MAX_BODY", "WebhookReceiver"]

MAX_BODY = 64 * 1024
KEEP = 4
_SEEN = 1024  # delivery ids remembered for de-duplication


class WebhookReceiver:
    def __init__(self, secret: str, say: Callable[[str], None]) -> None:
        self.secret = secret
        self.say = say
        self.lines: collections.deque[str] = collections.deque(maxlen=KEEP)
        self.received = 0
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = "400 Bad Request"
        try:
            async with asyncio.timeout(5):
                status = await self._request(reader)
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> str:
        await reader.readline()  # POST /alarms HTTP/1.1
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY:
            return "413 Payload Too Large"
        body = await reader.readexactly(length)
        signed = hmac.compare_digest(headers.get("x-drsdtp-signature", ""), signature(self.secret, body))
        if not signed:
            self.say("webhook: refused a POST with a bad signature")
            return "401 Unauthorized"
        delivery = headers.get("x-drsdtp-id", "")
        if delivery and delivery in self._seen:
            return "200 OK"  # a retry of one already taken
        self._seen[delivery] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        event = json.loads(body)
        self.received += 1
        line = (
            f"webhook received (signature ok): alarm {event.get('event', '?')} {event.get('rule', '?')} on "
            f"{event.get('twin', '?')} [{event.get('severity', '?')}] from {event.get('node', '?')}: "
            f"{event.get('message', '')}"
        )
        self.lines.append(line)
        self.say(line)
        return "200 OK"
