"""The dashboard in a real headless Chromium against a real node fed by the simulated plant (two rooms,
room-2's temp_1 sensor goes stale): the pages load without console errors, a value written through the API
appears without a reload, a desired value shows beside the reported one, and the stale sensor shows as
such. Screenshots of each page go to $DRSDTP_ARTIFACTS/dashboard (else the test's temp dir)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drsdtp.api.auth.tokens import hash_token
from tests.dashboard.browser import Browser, chromium
from tests.http.support import HttpNode, http_node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (make setup installs it)"),
]

SPEEDUP = 20.0  # plant seconds per wall second; intelligence runs in plant time too
VIEWER_TOKEN = "dashboard-viewer-token"
# Callers without a token act as operators (the page's acting controls); the viewer token shows a viewer's.
PLANT = f"""[api]
anonymous_role = "operator"
[[api.tokens]]
name = "viewer"
role = "viewer"
hash = "{hash_token(VIEWER_TOKEN)}"
[intelligence]
time_scale = {SPEEDUP}
[[adapters]]
type = "simulated"
name = "plant"
rooms = 2
seed = 1
dt_s = 10.0
speedup = {SPEEDUP}
[[adapters.faults]]
kind = "stale"
twin = "room-2"
field = "temp_1"
onset_step = 5
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpNode]:
    with http_node(tmp_path_factory.mktemp("dashboard"), PLANT) as n:
        # Health answers 400 until the first intelligence pass, which the browser logs as an error.
        n.wait_health()
        yield n


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with Browser(tmp_path / "profile") as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    root = os.environ.get("DRSDTP_ARTIFACTS")
    return Path(root) / "dashboard" if root else tmp_path / "screenshots"


def wanted(field: str) -> str:
    return (
        f"document.querySelector('#fields tr[data-field=\"{field}\"] td.desired .wanted')?.textContent ?? ''"
    )


def cell(field: str, column: str) -> str:
    return f"document.querySelector('#fields tr[data-field=\"{field}\"] td.{column}')?.textContent ?? ''"


async def test_site_page_lists_the_twins_with_their_health(
    node: HttpNode, browser: Browser, shots: Path
) -> None:
    await browser.goto(f"{node.base}/dashboard")
    await browser.wait_for("document.querySelectorAll('#twins li').length >= 2", "both rooms listed")
    # room-2's stale sensor fails its health; room-1 stays healthy.
    await browser.wait_for(
        "document.querySelector('#twins li[data-twin=\"room-2\"] a')?.dataset.status === 'FAILED'",
        "room-2 shown as failed",
    )
    status = await browser.evaluate(
        "document.querySelector('#twins li[data-twin=\"room-1\"] a').dataset.status"
    )
    assert status == "HEALTHY"
    assert "node node-h" in await browser.evaluate("document.getElementById('node').textContent")
    assert await browser.evaluate("document.getElementById('link').textContent") == "live"
    await browser.screenshot(shots / "site.png")
    assert browser.errors == []


async def test_a_value_written_through_the_api_appears_live(
    node: HttpNode, browser: Browser, shots: Path
) -> None:
    await browser.goto(f"{node.base}/dashboard/#/twin/room-1")
    await browser.wait_for(cell("temp_1", "value") + " !== ''", "room-1's temp_1 shown")
    loaded = await browser.evaluate("performance.timeOrigin")
    note = f"checked-{uuid.uuid4().hex[:8]}"
    node.post(
        "Write",
        {
            "twins": [
                {
                    "twinId": "room-1",
                    "ops": [
                        {"field": "note", "report": {"text": note}},
                        {"field": "heater", "desire": {"f64": 0.75}},
                    ],
                }
            ]
        },
    )
    await browser.wait_for(f"{cell('note', 'value')} === {json.dumps(note)}", "the written value")
    desired = await browser.wait_for(wanted("heater"), "the desired value")
    assert desired.startswith("0.75")
    assert await browser.evaluate("performance.timeOrigin") == loaded  # no reload
    # Live readings keep arriving and their sparkline draws.
    await browser.wait_for(
        "document.querySelector('#fields tr[data-field=\"temp_1\"] polyline')?.getAttribute('points')",
        "temp_1's sparkline",
    )
    await browser.screenshot(shots / "twin.png")
    assert browser.errors == []


async def test_a_stale_sensor_shows_as_such(node: HttpNode, browser: Browser, shots: Path) -> None:
    await browser.goto(f"{node.base}/dashboard/#/twin/room-2")
    await browser.wait_for(
        "document.querySelector('#fields tr[data-field=\"temp_1\"]')?.classList.contains('stale')",
        "temp_1 marked stale",
    )
    assert "stale" in await browser.evaluate(cell("temp_1", "health"))
    # Its redundant partner still reports: not stale.
    await browser.wait_for(cell("temp_2", "health") + " !== ''", "temp_2's health")
    assert "stale" not in await browser.evaluate(cell("temp_2", "health"))
    await browser.screenshot(shots / "stale.png")
    assert browser.errors == []


async def test_a_desired_value_set_in_the_page_reaches_the_twin(node: HttpNode, browser: Browser) -> None:
    await browser.goto(f"{node.base}/dashboard/#/twin/room-1")
    form = "document.querySelector('#fields tr[data-field=\"fan\"] form.act')"
    await browser.wait_for(form, "the fan's desired-value form")
    await browser.evaluate(f"{form}.elements.desired.value = '0.5'; {form}.requestSubmit(); true")
    await browser.wait_for(f"{form}.querySelector('.outcome').textContent === 'sent'", "the write's answer")
    twin = node.post("GetTwin", {"twinId": "room-1", "fields": ["fan.desired"]})
    (field,) = twin["fields"]
    assert [v["f64"] for v in field["desired"]["values"]] == [0.5]
    await browser.wait_for(f"{wanted('fan')}.startsWith('0.5')", "the desired value shown")
    assert browser.errors == []


async def test_a_viewer_sees_no_acting_controls(node: HttpNode, browser: Browser, shots: Path) -> None:
    await browser.goto(f"{node.base}/dashboard/")
    await browser.evaluate(f"sessionStorage.setItem('drsdtp-token', '{VIEWER_TOKEN}'); true")
    await browser.goto(f"{node.base}/dashboard/#/twin/room-1")
    await browser.send("Page.reload")
    await browser.wait_for(
        "document.getElementById('node').textContent.includes('(viewer)')", "a viewer's page"
    )
    await browser.wait_for(cell("temp_1", "value") + " !== ''", "room-1's temp_1 shown")
    assert await browser.evaluate("document.querySelectorAll('form.act, button.ack').length") == 0
    await browser.screenshot(shots / "viewer.png")
    assert browser.errors == []
