"""Asset models with real node processes: a pump model and a third-party kernel loaded by entry point, a
replica that understands a twin it only replicates, check-config refusing bad models, reload by SIGHUP."""

from __future__ import annotations

import pathlib
import signal
from collections.abc import Iterator

import grpc
import pytest

from drsdtp.wire.v1 import api_pb2
from tests.daemon.model_nodes import (
    PLUGIN_KERNEL,
    NodeProcess,
    drsdtp,
    eventually,
    install_plugin,
    stuck_rooms_toml,
)

SPEED = 20  # plant seconds per wall second, for the simulated plants and the nodes' time_scale

PUMP_MODELS = f"""
[intelligence]
time_scale = {SPEED}
[[models]]
name = "pump"
version = "1"
extends = "centrifugal_pump"
[[models]]
name = "acme_pump"
version = "1"
extends = "centrifugal_pump"
[models.kernel]
name = "{PLUGIN_KERNEL}"
[[kernels]]
type = "{PLUGIN_KERNEL}"
[[twins]]
match = "pump-1"
model = "pump"
[[twins]]
match = "pump-2"
model = "acme_pump"
[[adapters]]
type = "simulated"
name = "pumps"
asset = "pump"
rooms = 2
dt_s = 10.0
speedup = {SPEED}
"""


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.mark.integration
async def test_a_node_runs_the_pump_model_and_a_kernel_from_an_installed_entry_point(
    tmp_path: pathlib.Path, nodes: list[NodeProcess]
) -> None:
    site = install_plugin(tmp_path / "plugin")
    node = NodeProcess(tmp_path, "edge-p", PUMP_MODELS, pythonpath=site)
    refused = drsdtp("check-config", "--skip-files", str(node.config))
    assert refused.returncode == 2
    assert f"kernels[0].type: unknown kernel '{PLUGIN_KERNEL}'" in refused.stderr, refused.stderr
    checked = drsdtp("check-config", "--skip-files", str(node.config), pythonpath=site)
    assert checked.returncode == 0, checked.stderr
    assert "acme_pump" in checked.stdout and PLUGIN_KERNEL in checked.stdout

    nodes.append(node)
    node.start()
    model = await eventually(lambda: node.insight("pump-2", "model"), 60, "pump-2 has its model")
    assert model["model"]["kernel"] == PLUGIN_KERNEL and model["model"]["version"] == "1"
    assert (await node.fields("pump-2")).get("_model_version") == model["tag"]
    health = await eventually(lambda: node.insight("pump-1"), 60, "a health pass over pump-1")
    assert {f["field"] for f in health["fields"]} == {"speed", "valve", "flow", "head", "power"}
    assert health["model"] == "pump"

    # What-if through the plug-in's simulate, and through the built-in affinity kernel.
    ratio = await node.insight("pump-2", "whatif", scenario="speed 1450", horizon_min=10)
    assert ratio is not None and ratio["kernel"] == f"montecarlo({PLUGIN_KERNEL})"
    assert ratio["trajectories"]["flow"][-1] == pytest.approx(1450 * 100 / 2900)
    half = await node.insight("pump-1", "whatif", scenario="speed 1450", horizon_min=10)
    full = await node.insight("pump-1", "whatif", scenario="speed 2900", horizon_min=10)
    assert half is not None and full is not None and half["kernel"] == "montecarlo(pump.affinity)"
    assert half["trajectories"]["power"][0] / full["trajectories"]["power"][0] == pytest.approx(
        0.125, rel=0.02
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await node.insight("pump-1", "whatif", scenario="rpm 100")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no input 'rpm'" in (
        bad.value.details() or ""
    )
    assert node.alive()


ROOMS = stuck_rooms_toml(SPEED)


def peer(node: NodeProcess) -> str:
    return f'[[peers]]\nname = "{node.name}"\naddress = "127.0.0.1:{node.peer_port}"\n'


@pytest.mark.integration
async def test_a_replica_answers_insight_and_history_for_a_twin_it_only_replicates(
    tmp_path: pathlib.Path, nodes: list[NodeProcess]
) -> None:
    origin = NodeProcess(tmp_path, "edge-a", ROOMS)
    replica = NodeProcess(tmp_path, "edge-b", f"[intelligence]\ntime_scale = {SPEED}\n")
    origin.write(ROOMS + peer(replica))
    replica.write(f"[intelligence]\ntime_scale = {SPEED}\n" + peer(origin))
    nodes += [origin, replica]
    origin.start()
    replica.start()

    # The replica ingests nothing: what it knows of a/room-1 came in peers' deltas.
    doc = await eventually(lambda: replica.insight("a/room-1"), 90, "the replica answers insight")
    assert doc["model"] == "room" and doc["replica"] is True

    async def statuses() -> tuple[dict[str, str], dict[str, str]] | None:
        views = []
        for node in (origin, replica):
            docs = [await node.insight(f"a/room-{k}") for k in (1, 2)]
            if any(d is None for d in docs):
                return None
            views.append({d["twin"]: d["status"] for d in docs if d is not None})
        a, b = views
        stuck = a["a/room-1"] != "HEALTHY"  # room-1's temp_2 sticks after 40 plant steps
        return (a, b) if stuck and a == b else None

    origin_view, replica_view = await eventually(statuses, 120, "both nodes agree the stuck room is unwell")
    assert origin_view["a/room-2"] == replica_view["a/room-2"] == "HEALTHY"
    health = await replica.insight("a/room-1")
    assert health is not None
    temp_2 = next(f for f in health["fields"] if f["field"] == "temp_2")
    assert temp_2["judged_by"] == "origin" and temp_2["status"] != "HEALTHY"

    # Recent values are in the replica's own history, and the model versions agree.
    history = await replica.call("ReadHistory", api_pb2.HistoryRequest(twin_id="a/room-1", field="temp_1"))
    assert len(history.values) >= 10 and list(history.ts_ms) == sorted(history.ts_ms)
    model = await replica.insight("a/room-1", "model")
    assert model is not None and model["local"] is False
    assert model["same_as_origin"] is True and model["replicated_tag"] == model["tag"]
    assert origin.alive() and replica.alive()


@pytest.mark.integration
def test_check_config_and_the_daemon_refuse_a_bad_model_with_a_clear_error(tmp_path: pathlib.Path) -> None:
    node = NodeProcess(tmp_path, "edge-x", "")
    node.write('[[models]]\nname = "pump"\nversion = 1\n[models.fields.flow]\nkind = "analogue"\n')
    result = drsdtp("check-config", "--skip-files", str(node.config))
    assert result.returncode == 2
    assert (
        "error: models[0].fields.flow.kind: expected one of analog, counter, state, setpoint, actuator, "
        "got 'analogue' (did you mean 'analog'?)" in result.stderr
    ), result.stderr
    node.write(
        '[[models]]\nname = "pump"\nversion = 1\nextends = "centrifugal_pump"\n'
        '[[twins]]\nmatch = "p-*"\nmodel = "pmup"\n'
    )
    result = drsdtp("check-config", "--skip-files", str(node.config))
    assert (
        result.returncode == 2
        and "twins[0].model: unknown model 'pmup' (did you mean 'pump'?)" in result.stderr
    )
    run = drsdtp("run", "--config", str(node.config), timeout=60)  # the daemon refuses it before starting
    assert run.returncode == 2 and "unknown model 'pmup'" in run.stderr


PUMP_V = """
[intelligence]
time_scale = {speed}
[[models]]
name = "pump"
version = "{version}"
extends = "centrifugal_pump"
[models.fields.flow]
kind = "{kind}"
[[twins]]
match = "pump-*"
model = "pump"
[[adapters]]
type = "simulated"
name = "pumps"
asset = "pump"
rooms = 1
speedup = {speed}
"""


@pytest.mark.integration
async def test_models_reload_on_sighup_and_a_bad_reload_keeps_the_running_models(
    tmp_path: pathlib.Path, nodes: list[NodeProcess]
) -> None:
    node = NodeProcess(tmp_path, "edge-r", PUMP_V.format(speed=SPEED, version="1", kind="analog"))
    nodes.append(node)
    node.start()
    first = await eventually(lambda: node.insight("pump-1", "model"), 60, "the pump model is in use")
    assert first["model"]["version"] == "1"

    node.write(
        PUMP_V.format(speed=SPEED, version="2", kind="analog")
        + "[models.kernel.params]\nrated_head_m = 33.0\n"
    )
    result = drsdtp("reload", "--config", str(node.config))
    assert result.returncode == 0, result.stderr

    async def version_2() -> dict[str, object] | None:
        doc = await node.insight("pump-1", "model")
        return doc if doc is not None and doc["model"]["version"] == "2" else None

    second = await eventually(version_2, 60, "the reloaded model is in use")
    assert second["model"]["params"]["rated_head_m"] == 33.0 and second["tag"] != first["tag"]
    await eventually(
        lambda: _field_is(node, "pump-1", "_model_version", second["tag"]),
        60,
        "the new version is replicated state",
    )

    node.write(PUMP_V.format(speed=SPEED, version="3", kind="analogue"))
    refused = drsdtp("reload", "--config", str(node.config))
    assert refused.returncode == 2 and "not sent" in refused.stderr
    node.signal(signal.SIGHUP)  # the daemon re-validates by itself, and refuses too
    await eventually(lambda: _logged(node, "reload refused"), 60, "the node logs the refused reload")
    after = await node.insight("pump-1", "model")
    assert after is not None and after["model"]["version"] == "2" and node.alive()


async def _field_is(node: NodeProcess, twin: str, field: str, value: object) -> bool:
    return (await node.fields(twin)).get(field) == value


async def _logged(node: NodeProcess, text: str) -> bool:
    return text in node.log()
