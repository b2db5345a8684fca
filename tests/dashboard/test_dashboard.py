"""The dashboard in a real headless Chromium against a real node fed by the simulated plant (two rooms,
room-2's temp_1 sensor goes stale): the pages load without console errors, a value written through the API
appears without a reload, a desired value shows beside the reported one, and the stale sensor shows as
such; every page passes axe-core and works by keyboard and on a tablet. Screenshots of each page go to
artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from drsdtp.api.auth.tokens import hash_token
from tests.dashboard.a11y import press, violations
from tests.dashboard.browser import Browser, Fault, chromium
from tests.http.support import HttpNode

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (make setup installs it)"),
    pytest.mark.asyncio(loop_scope="module"),  # one browser for the module's tests
]

REPO = Path(__file__).resolve().parents[2]
SPEEDUP = 20.0  # plant seconds per wall second; intelligence runs in plant time too
VIEWER_TOKEN = "dashboard-viewer-token"
ENGINEER_TOKEN = "dashboard-engineer-token"
# Callers without a token act as operators (the page's acting controls); the tokens show a viewer's page
# and an engineer's (snapshots, rollback, the audit trail).
API = f"""[api]
anonymous_role = "operator"
[[api.tokens]]
name = "viewer"
role = "viewer"
hash = "{hash_token(VIEWER_TOKEN)}"
[[api.tokens]]
name = "engineer"
role = "engineer"
hash = "{hash_token(ENGINEER_TOKEN)}"
[intelligence]
time_scale = {SPEEDUP}
[alerting]
period_s = 0.2
[[rules]]
name = "room-occupied"
twins = "room-1"
when = "humidity > 0"
for = "1s"
severity = "minor"
message = "room-1 is in use"
"""
# The plant and room-1's heater as an actuator: on the first node only (its peer replicates the twins).
PLANT = f"""[[adapters]]
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
[[actuators]]
twin = "room-1"
field = "heater"
node = "node-h"
adapter = "plant"
min = 0.0
max = 1.0
tolerance = 0.05
[actuators.write]
input = "heater"
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HttpNode, HttpNode]]:
    """The node the page shows (fed by the plant) and a peer replicating with it, both real processes."""
    root = tmp_path_factory.mktemp("dashboard")
    node, peer = HttpNode("h", root), HttpNode("p", root)
    for me, other, extra in ((node, peer, API + PLANT), (peer, node, API)):
        me.configure(
            {other.node_id: other.peer_port}, f'{extra}[api.http]\nlisten = "127.0.0.1:{me.http_port}"\n'
        )
    try:
        peer.start_blocking()
        node.start_blocking()
        # Health answers 503 (UNAVAILABLE) until the first intelligence pass: the browser logs that.
        node.wait_health()
        yield node, peer
    finally:
        node.stop()
        peer.stop()


@pytest.fixture(scope="module")
def node(pair: tuple[HttpNode, HttpNode]) -> HttpNode:
    return pair[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium_page(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    async with Browser(tmp_path_factory.mktemp("chromium") / "profile") as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium_page: Browser) -> AsyncIterator[Browser]:
    """The shared page, as a new visitor's: no token, a desktop window, no errors yet."""
    chromium_page.errors.clear()
    yield chromium_page
    await chromium_page.send("Emulation.clearDeviceMetricsOverride")
    await chromium_page.evaluate("sessionStorage.clear(); true")
    await chromium_page.goto("about:blank")  # the next test's page loads afresh, not by a hash change


@pytest.fixture(scope="module")
def shots() -> Path:
    """artifacts/dashboard/ in the checkout (git-ignored; CI keeps it), or under $ARTIFACTS_DIR. Not a
    DRSDTP_* variable: the node reads those as config overrides."""
    return Path(os.environ.get("ARTIFACTS_DIR") or REPO / "artifacts") / "dashboard"


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


async def test_the_site_listing_is_one_compact_document(node: HttpNode) -> None:
    """What the site page fetches: every twin id, sorted, and the change-feed position to watch on from."""
    status, doc = await asyncio.to_thread(node.request, "GET", "/dashboard/twins.json")
    assert status == 200, doc
    assert set(doc) == {"cursor", "twins"} and int(doc["cursor"]) > 0
    assert doc["twins"] == sorted(doc["twins"]) and {"room-1", "room-2"} <= set(doc["twins"])
    assert not any(t.startswith("_") for t in doc["twins"])
    status, refused = await asyncio.to_thread(
        node.request, "GET", "/dashboard/twins.json", headers={"Authorization": "Bearer nope"}
    )
    assert status == 401 and refused["code"] == "UNAUTHENTICATED", refused


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


async def test_the_pages_recover_from_requests_that_got_no_answer_or_an_error(
    node: HttpNode, browser: Browser
) -> None:
    """A page opened while the node restarts or the network changes under it (Chromium fails requests in
    flight with ERR_NETWORK_CHANGED) must still start and follow the node: WhoAmI and the site listing that
    got no answer are tried again, and a Watch answered with an error status (which closes an EventSource
    for good) is opened again, resuming."""
    whoami = Fault("/api/v2/WhoAmI", times=5)  # more than a read retries: the page starts later
    listing = Fault("/dashboard/twins.json", times=1)
    watch = Fault("/api/v2/Watch?twin_ids=room-1", times=2, status=503)
    await browser.fault([whoami, listing, watch])
    try:
        await browser.goto(f"{node.base}/dashboard/#/")
        await browser.wait_for(
            "document.querySelectorAll('#twins li').length >= 2", "the site's twins after a failed listing"
        )
        await browser.goto("about:blank")
        await browser.goto(f"{node.base}/dashboard/#/twin/room-1")
        await browser.wait_for(cell("temp_1", "value") + " !== ''", "room-1's temp_1 after a refused Watch")
    finally:
        await browser.unfault()
    # Each fault was really met: the pages recovered from it, not around it.
    assert len(whoami.hit) == 5 and len(listing.hit) == 1, (whoami.hit, listing.hit)
    assert len(watch.hit) == 2, watch.hit
    assert all("exception" not in error for error in browser.errors), browser.errors


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
    # What acts on the twin is absent (desired values, commands, snapshots, rollback, alarm acks) ...
    await browser.wait_for("document.querySelector('#acting form.whatif-run') !== null", "the what-if form")
    assert await browser.evaluate("document.querySelectorAll('form.act, .act, button.ack').length") == 0
    assert await browser.evaluate("document.querySelector('#acting .snapshots, #acting .audit')") is None
    # ... while what only reads stays: the command lifecycle list and what-if runs on a fork.
    assert await browser.evaluate("document.querySelector('#acting .command-list') !== null")
    await browser.screenshot(shots / "viewer.png")
    assert browser.errors == []


def overflow() -> str:
    """Pixels the page is wider than the window (a tablet must not scroll sideways)."""
    return "document.documentElement.scrollWidth - window.innerWidth"


async def test_every_page_passes_axe_on_a_desktop_and_a_tablet(
    node: HttpNode, browser: Browser, shots: Path
) -> None:
    pages = {
        "site": (
            "#/",  # the list draws the cards in view: scroll to it
            "(document.getElementById('twins').scrollIntoView(),"
            " document.querySelectorAll('#twins li a[data-status=\"FAILED\"]').length > 0)",
        ),
        "twin": ("#/twin/room-2", cell("temp_1", "health") + " !== ''"),
    }
    tablet = {"width": 768, "height": 1024, "deviceScaleFactor": 1, "mobile": True}
    for screen in ("desktop", "tablet"):
        if screen == "tablet":
            await browser.send("Emulation.setDeviceMetricsOverride", tablet)
        for name, (route, ready) in pages.items():
            await browser.goto("about:blank")
            await browser.goto(f"{node.base}/dashboard/{route}")
            await browser.wait_for(ready, f"the {name} page")
            assert await violations(browser) == [], (screen, name)
            assert await browser.evaluate(overflow()) <= 0, (screen, name)
            await browser.screenshot(shots / f"{name}-{screen}.png")
    # The sign-in form (a token the node does not know).
    await browser.evaluate("sessionStorage.setItem('drsdtp-token', 'no-such-token'); true")
    await browser.send("Page.reload")
    await browser.wait_for("!document.getElementById('login').hidden", "the sign-in form")
    assert await violations(browser) == []
    await browser.screenshot(shots / "login-tablet.png")
    assert [e for e in browser.errors if "401" not in e] == []


async def test_the_pages_work_by_keyboard(node: HttpNode, browser: Browser) -> None:
    await browser.goto(f"{node.base}/dashboard/")
    await browser.wait_for("document.querySelectorAll('#twins li a').length >= 2", "the twins listed")
    await press(browser, "Tab")
    assert await browser.evaluate("document.activeElement.className") == "skip"
    await press(browser, "Enter")
    assert await browser.evaluate("document.activeElement.id") == "main"
    # The heat map is the next stop: the arrow keys walk its twins, each named as it is reached.
    await press(browser, "Tab")
    assert await browser.evaluate("document.activeElement.id") == "heat"
    reached = "document.getElementById('heat-cell').textContent"
    assert (await browser.evaluate(reached)).startswith("room-1: ")
    await press(browser, "ArrowRight")
    assert (await browser.evaluate(reached)).startswith("room-2: ")
    assert "(2 of 2)" in await browser.evaluate(reached)
    await press(browser, "End")
    assert (await browser.evaluate(reached)).startswith("room-2: ")
    await press(browser, "Home")
    assert (await browser.evaluate(reached)).startswith("room-1: ")
    await press(browser, "ArrowRight")
    await press(browser, "Enter")
    await browser.wait_for("location.hash === '#/twin/room-2'", "room-2's page, opened from the heat map")
    await browser.goto("about:blank")
    await browser.goto(f"{node.base}/dashboard/")
    await browser.wait_for("document.querySelectorAll('#twins li a').length >= 2", "the twins listed")
    await browser.evaluate("document.getElementById('main').focus(); true")
    # Tab on to room-1's card and open it.
    for _ in range(20):
        await press(browser, "Tab")
        if await browser.evaluate("document.activeElement.closest('li')?.dataset.twin === 'room-1'"):
            break
    else:
        raise AssertionError("room-1's card is not reachable by Tab")
    await press(browser, "Enter")
    await browser.wait_for("location.hash === '#/twin/room-1'", "room-1's page")
    # Set the fan's desired value without a mouse: Tab to its field, type, Enter.
    form = "document.querySelector('#fields tr[data-field=\"fan\"] form.act')"
    await browser.wait_for(form, "the fan's desired-value form")
    for _ in range(60):
        await press(browser, "Tab")
        if await browser.evaluate(f"document.activeElement === {form}.elements.desired"):
            break
    else:
        raise AssertionError("the fan's desired value is not reachable by Tab")
    await browser.send("Input.insertText", {"text": "0.25"})
    await press(browser, "Enter")
    await browser.wait_for(f"{wanted('fan')}.startsWith('0.25')", "the desired value set by keyboard")
    assert browser.errors == []


async def test_the_site_shows_its_peer_and_an_alarm_acked_in_the_page_is_acked_on_the_peer(
    pair: tuple[HttpNode, HttpNode], browser: Browser, shots: Path
) -> None:
    node, peer = pair
    await browser.goto(f"{node.base}/dashboard/")
    await browser.wait_for(
        "document.querySelector('#peers tr[data-peer=\"node-p\"] .link')?.textContent === 'up'", "the peer up"
    )
    # Its clock offset, measured over the replication stream (both clocks are this machine's), and
    # convergence by state digest.
    row = "document.querySelector('#peers tr[data-peer=\"node-p\"]')"
    offset = await browser.wait_for(
        f"{row}.querySelector('.offset').textContent.match(/^[+−]([0-9.]+) ms/)", "the peer's clock offset"
    )
    assert float(offset[1]) < 50, offset
    await browser.wait_for(
        f"{row}.querySelector('.digest').textContent.startsWith('equal')",
        "the peer's state digest equal to this node's",
    )
    await browser.wait_for(
        "document.getElementById('convergence').textContent.startsWith('Converged: every peer')", "converged"
    )
    # Ingest per adapter: the plant's rate, from two Status replies.
    await browser.wait_for(
        "[...document.querySelectorAll('#node-facts dt')].some((dt) => dt.textContent === 'Ingest: plant'"
        " && /^[0-9.]+ readings\\/s/.test(dt.nextElementSibling.textContent))",
        "the plant adapter's ingest rate",
    )
    await browser.wait_for(
        "document.querySelector('#severities [data-severity=\"minor\"]')?.textContent === 'minor: 1'",
        "room-1's alarm counted by severity",
    )
    assert "2 twins" in await browser.evaluate("document.getElementById('heat').getAttribute('aria-label')")
    ack = "document.querySelector('#alarm-list li button.ack')"
    await browser.wait_for(f"{ack} !== null", "the alarm's Acknowledge button")
    await browser.screenshot(shots / "site-alarm.png")
    await browser.evaluate(f"{ack}.click(); true")
    await browser.wait_for(
        "document.querySelector('#alarm-list li em')?.textContent === '(acknowledged)'", "the ack's answer"
    )
    deadline = time.monotonic() + 30
    while True:  # the acknowledgement replicates to the peer
        (alarm,) = (await asyncio.to_thread(peer.post, "ListAlarms", {"twinId": "room-1"}))["alarms"]
        if alarm["state"] == "acknowledged":
            break
        assert time.monotonic() < deadline, alarm
        await asyncio.sleep(0.2)
    assert alarm["ackReason"] == "acknowledged in the dashboard" and alarm["ackedBy"]
    assert browser.errors == []


def plot(expression: str) -> str:
    return f"document.querySelector('#plot svg.chart {expression}')"


async def test_the_twin_plot_zooms_and_shows_tiers_forecast_limits_and_alarms(
    node: HttpNode, browser: Browser, shots: Path
) -> None:
    await browser.goto(f"{node.base}/dashboard/#/twin/room-1")
    await browser.wait_for(plot(".line") + "?.getAttribute('points')", "the plotted history")
    # A field the model sets limits on is plotted first, with its limits and forecast.
    assert await browser.evaluate("document.getElementById('plot-field').value") in ("humidity", "temp_1")
    await browser.wait_for(plot(".limits line") + " !== null", "the field's limits")
    await browser.wait_for(plot(".fc-line") + "?.getAttribute('points')", "the forecast")
    assert "Forecast" in await browser.evaluate("document.querySelector('.forecast-summary').textContent")
    await browser.wait_for(plot(".markers .alarm") + " !== null", "room-1's alarm on the time axis")
    span = "Number(document.querySelector('#plot svg.chart').dataset.span)"
    await browser.wait_for(f"Math.abs({span} - 600000) < 1000", "the last 10 minutes shown")
    await browser.evaluate("document.querySelector('[aria-label=\"Zoom out\"]').click(); true")
    await browser.wait_for(f"Math.abs({span} - 1200000) < 1000", "zoomed out to 20 minutes")
    # A dragged range zooms in on it and stops following now.
    box = await browser.evaluate(
        "(() => { const s = document.querySelector('#plot svg.chart'); s.scrollIntoView();"
        " const r = s.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
    )
    x, y = box[0] + box[2] * 0.5, box[1] + box[3] / 2
    for kind, at in (
        ("mousePressed", x),
        ("mouseMoved", x + box[2] * 0.2),
        ("mouseReleased", x + box[2] * 0.2),
    ):
        await browser.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": at, "y": y, "button": "left", "buttons": 1 if kind != "mouseReleased" else 0,
             "clickCount": 1},
        )  # fmt: skip
    await browser.wait_for(f"{span} < 1200000 * 0.3", "zoomed in on the dragged range")
    assert await browser.evaluate("document.querySelector('#plot svg.chart').dataset.follow") == "false"
    # A downsampled tier on request: its buckets, said so.
    await browser.evaluate("document.querySelector('[aria-label=\"Show the last 1 h\"]').click(); true")
    await browser.evaluate(
        "const t = document.getElementById('plot-tier'); t.value = '1m';"
        " t.dispatchEvent(new Event('change')); true"
    )
    await browser.wait_for(
        "document.querySelector('#plot svg.chart').dataset.tier === '1m'", "the 1 min tier"
    )
    assert "1m buckets" in await browser.evaluate("document.querySelector('#plot .tier').textContent")
    await browser.screenshot(shots / "twin-plot.png")
    assert browser.errors == []


async def test_a_command_shows_its_lifecycle_and_a_what_if_is_plotted_beside_the_twin(
    node: HttpNode, browser: Browser, shots: Path
) -> None:
    await browser.goto(f"{node.base}/dashboard/#/twin/room-1")
    form = "document.querySelector('#acting form.command')"
    await browser.wait_for(f"{form} !== null", "the command form")
    await browser.evaluate(
        "document.getElementById('command-action').value = 'heater';"
        f"document.getElementById('command-value').value = '0.8'; {form}.requestSubmit(); true"
    )
    first = await browser.wait_for(f"{form}.querySelector('.outcome').textContent", "the node's answer")
    assert not first.startswith("refused"), first
    # The list follows the command to its outcome (the plant applies it; the twin reports it back).
    await browser.wait_for(
        "document.querySelector('.command-list tbody tr')?.dataset.state === 'applied'", "the command applied"
    )
    scenario = "document.querySelector('#acting form.whatif-run')"
    await browser.evaluate(
        "document.getElementById('whatif-scenario').value = 'fan off';"
        f"document.getElementById('whatif-horizon').value = '30'; {scenario}.requestSubmit(); true"
    )
    await browser.wait_for(f"{scenario}.querySelector('.outcome').textContent", "the what-if's answer")
    assert await browser.evaluate(f"{scenario}.querySelector('.outcome').textContent") == "done"
    await browser.wait_for(plot(".wi-line") + "?.getAttribute('points')", "the what-if plotted")
    await browser.screenshot(shots / "twin-acting.png")
    assert browser.errors == []


async def test_an_engineer_snapshots_rolls_back_after_confirming_and_reads_the_audit(
    node: HttpNode, browser: Browser, shots: Path
) -> None:
    await browser.goto(f"{node.base}/dashboard/")
    await browser.evaluate(f"sessionStorage.setItem('drsdtp-token', '{ENGINEER_TOKEN}'); true")
    await browser.goto("about:blank")
    await browser.goto(f"{node.base}/dashboard/#/twin/room-2")
    snap = "document.querySelector('#acting form.snapshot')"
    await browser.wait_for(f"{snap} !== null", "the snapshot form (an engineer's)")
    await browser.evaluate(
        f"document.getElementById('snapshot-reason').value = 'before the test'; {snap}.requestSubmit(); true"
    )
    await browser.wait_for(
        "document.querySelector('.snapshot-list li[data-snapshot] button.rollback') !== null",
        "the snapshot listed",
    )
    rollback = "document.querySelector('.snapshot-list li[data-snapshot] button.rollback')"
    dialog = "document.querySelector('dialog.confirm')"
    # Cancelled: nothing is rolled back.
    await browser.evaluate(f"{rollback}.click(); true")
    assert await browser.evaluate(f"{dialog}.open") is True
    await browser.evaluate(
        f"[...{dialog}.querySelectorAll('button')].find((b) => b.textContent === 'Cancel').click(); true"
    )
    assert await browser.evaluate(f"{dialog}.open") is False
    # Confirmed, with a reason: rolled back, and the audit trail says who and why.
    await browser.evaluate(f"{rollback}.click(); true")
    await browser.evaluate(
        "document.getElementById('rollback-reason').value = 'undo the test';"
        f"{dialog}.querySelector('form').requestSubmit(); true"
    )
    await browser.wait_for(
        "document.querySelector('.rollback-outcome').textContent.startsWith('rolled back')", "the rollback"
    )
    await browser.wait_for(
        "[...document.querySelectorAll('.audit-list tr[data-action=\"rollback\"]')]"
        ".some((tr) => tr.textContent.includes('undo the test'))",
        "the rollback in the audit trail",
    )
    chain = await browser.evaluate("document.querySelector('.audit .chain').textContent")
    assert chain.startswith("Hash chain verified"), chain
    assert await violations(browser) == []
    await browser.screenshot(shots / "twin-engineer.png")
    assert browser.errors == []
