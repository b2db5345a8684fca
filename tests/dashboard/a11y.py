"""Accessibility checks in the page: axe-core (Deque's engine, the copy the ``axe-core-python`` wheel ships,
so no network), injected over DevTools and run against WCAG 2.0/2.1 A and AA and axe's best practices; and
the keyboard, driven with real key events."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from tests.dashboard.browser import Browser

__all__ = ["SERIOUS", "press", "violations"]

SERIOUS = ("serious", "critical")
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]

RUN = """(async () => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: %s}, resultTypes: ['violations']});
  return result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + (n.failureSummary || ''))}));
})()"""

KEYS = {
    "Tab": 9, "Enter": 13, "Escape": 27, " ": 32, "End": 35, "Home": 36, "ArrowLeft": 37, "ArrowRight": 39,
}  # fmt: skip


@cache
def _source() -> str:
    return resources.files("axe_core_python").joinpath("axe.min.js").read_text(encoding="utf-8")


async def violations(browser: Browser, impacts: tuple[str, ...] = SERIOUS) -> list[dict[str, Any]]:
    """axe-core's violations of the page as it is now, of these impacts."""
    if not await browser.evaluate("typeof window.axe === 'object'"):
        await browser.evaluate(_source() + "\n;true")
    found: list[dict[str, Any]] = await browser.evaluate(RUN % TAGS)
    return [v for v in found if v["impact"] in impacts]


async def press(browser: Browser, key: str, shift: bool = False) -> None:
    """One key press as the keyboard sends it (keydown with its text, keyup)."""
    code = KEYS[key]
    base = {"key": key, "windowsVirtualKeyCode": code, "modifiers": 8 if shift else 0}
    text = {"Enter": "\r", " ": " "}.get(key)
    await browser.send(
        "Input.dispatchKeyEvent", {"type": "keyDown", **base, **({"text": text} if text else {})}
    )
    await browser.send("Input.dispatchKeyEvent", {"type": "keyUp", **base})
