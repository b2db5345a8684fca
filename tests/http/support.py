"""A real ``drsdtp run`` node with its HTTP/JSON face on (``tests.api.nodes.ApiNode``), and a small
blocking HTTP client for it (urllib: what any application has)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.api.nodes import ApiNode
from tests.ingest.support import free_port


class HttpNode(ApiNode):
    def __init__(self, name: str, root: Path, extra: str = "") -> None:
        super().__init__(name, root)
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.metrics_port = free_port()
        self.configure({}, f'{extra}[api.http]\nlisten = "127.0.0.1:{self.http_port}"\n')
        text = self.config.read_text()
        self.config.write_text(
            text.replace('metrics = "127.0.0.1:0"', f'metrics = "127.0.0.1:{self.metrics_port}"')
        )

    def start_blocking(self, token: str = "") -> None:
        """Spawns the process and returns once its HTTP face answers (to ``token``, when given)."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (
                f"{self.name} exited: {(self.dir / 'node.log').read_text()[-2000:]}"
            )
            try:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                status, _ = self.request("GET", "/api/v2/Status", headers=headers, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{self.name}'s HTTP face did not answer in time"
            time.sleep(0.2)

    def request(
        self,
        method: str,
        path: str,
        body: object | bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20,
    ) -> tuple[int, Any]:
        """(HTTP status, the JSON body parsed) of one request; ``body`` as JSON unless bytes."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def post(self, method: str, body: object | None = None) -> Any:
        """POST /api/v2/<method>; the reply, asserting success."""
        status, reply = self.request("POST", f"/api/v2/{method}", body if body is not None else {})
        assert status == 200, (method, status, reply)
        return reply

    def wait_health(self, limit_s: float = 60) -> None:
        """Until the node's intelligence has run a pass (Health answers), as a page polling it expects."""
        deadline = time.monotonic() + limit_s
        while self.request("POST", "/api/v2/Health", {})[0] != 200:
            assert time.monotonic() < deadline, "no intelligence pass ran"
            time.sleep(0.2)

    def metric_lines(self, name: str) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=20) as reply:
            text = reply.read().decode()
        return [line for line in text.splitlines() if line.startswith((name + " ", name + "{"))]

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric (0 when not exported yet)."""
        lines = self.metric_lines(name)
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


@contextmanager
def http_node(root: Path, extra: str = "", ready_token: str = "") -> Iterator[HttpNode]:
    node = HttpNode("h", root, extra)
    try:
        node.start_blocking(ready_token)
        yield node
    finally:
        node.stop()


def field_values(twin: dict[str, Any]) -> dict[str, Any]:
    """A Twin's fields (JSON mapping) by name: the one value each holds."""
    out: dict[str, Any] = {}
    for f in twin.get("fields", []):
        kinds = [k for k in ("f64", "i64", "flag", "text", "blob", "counter", "set", "desired") if k in f]
        out[f["name"]] = f[kinds[0]] if kinds else None
    return out
