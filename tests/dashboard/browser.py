"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, with aiohttp's WebSocket
client (no driver library): navigate, evaluate JavaScript, wait for a condition, screenshot, and every
console error and uncaught exception the page produced."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["Browser", "Fault", "chromium"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._faults: list[Fault] = []
        self._answers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Browser:
        binary = chromium()
        assert binary is not None, "chromium is not installed (make setup installs it)"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "--headless=new",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,900",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.proc.returncode is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            targets = await reply.json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Fetch.requestPaused":
            task = asyncio.create_task(self._paused(params))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append(f"console.{params['type']}: {' '.join(args)}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text', '')} {entry.get('url', '')}".strip())

    async def fault(self, faults: list[Fault]) -> None:
        """Intercepts the page's requests: each fault answers the next requests whose URL contains its
        ``part`` (an HTTP status, or no answer at all: a failed connection); every other request goes
        through untouched. ``unfault`` ends it."""
        self._faults = faults
        await self.send("Fetch.enable", {"patterns": [{"urlPattern": f"*{f.part}*"} for f in faults]})

    async def unfault(self) -> None:
        await self.send("Fetch.disable")
        self._faults = []

    async def _paused(self, params: dict[str, Any]) -> None:
        request_id, url = params["requestId"], params["request"]["url"]
        fault = next((f for f in self._faults if f.part in url and f.times > len(f.hit)), None)
        if fault is None:
            await self.send("Fetch.continueRequest", {"requestId": request_id})
            return
        fault.hit.append(url)
        if fault.status is None:
            await self.send("Fetch.failRequest", {"requestId": request_id, "errorReason": "ConnectionFailed"})
        else:
            body = base64.b64encode(b'{"code": "UNAVAILABLE", "message": "injected by the test"}').decode()
            headers = [{"name": "Content-Type", "value": "application/json"}]
            answer = {"responseCode": fault.status, "responseHeaders": headers, "body": body}
            await self.send("Fetch.fulfillRequest", {"requestId": request_id, **answer})

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self.ws is not None
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params or {}}))
        async with asyncio.timeout(60):
            return await future

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, limit_s: float = 60) -> Any:
        """Polls ``expression`` until it is truthy (what it last was in the failure)."""
        deadline = time.monotonic() + limit_s
        failure = ""
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as exc:  # the page is (re)loading: its elements are not there yet
                value, failure = None, str(exc)
            if value:
                return value
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}; last failure: {failure}; errors: {self.errors}"
            )
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> None:
        """The whole page, not just the window (what a person scrolling through it would see)."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
        shot = await self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


@dataclass
class Fault:
    part: str  # a part of the URL
    times: int  # how many matching requests get it
    status: int | None = None  # None: no answer (the connection failed)
    hit: list[str] = field(default_factory=list)  # the URLs it answered


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
