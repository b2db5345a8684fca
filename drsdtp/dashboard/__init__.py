"""The operator's dashboard: static files (HTML, CSS, JavaScript modules; no build step, no CDN) that the
node's HTTP face serves at ``/dashboard/``; the page talks to the node only through the HTTP/JSON API and
its server-sent events."""

from pathlib import Path

__all__ = ["STATIC"]

STATIC = Path(__file__).resolve().parent / "static"
