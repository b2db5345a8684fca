"""Mutual TLS between peers: certificates from the cluster CA named by node id replicate; a plaintext peer,
a peer whose certificate comes from another CA, and a peer with the wrong name are all refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from drsdtp.gossip.replicator import Replicator

from .pki import Ca, issue, make_ca
from .support import eventually, running, same_state

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ca, Ca]:
    directory = tmp_path_factory.mktemp("pki")
    return directory, make_ca(directory, "cluster-ca"), make_ca(directory, "other-ca")


async def refused_for_a_while(victim: Replicator, intruder: Replicator, peer: str = "victim") -> str:
    """Let the intruder fail a few dial attempts; nothing must have connected. Returns its last error."""
    await eventually(lambda: intruder.peer_stats()[peer].dial_failures >= 3, what="repeated dial failures")
    assert victim.connected_peers() == []
    assert intruder.connected_peers() == []
    return intruder.peer_stats()[peer].last_error


async def test_peers_with_certificates_from_the_cluster_ca_replicate(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, _ = pki
    async with (
        running("victim", tls=issue(ca, directory, "victim")) as a,
        running("b", peers=[("victim", a.port)], tls=issue(ca, directory, "b")) as b,
    ):
        await b.wait_for_peers(["victim"], 30)
        b.on_local_delta(b.store.set("pump", "rpm", 1200))
        a.on_local_delta(a.store.add("pump", "tags", "tls"))
        await eventually(lambda: same_state(a.store, b.store), what="convergence over mTLS")
        assert a.store.get("pump", "rpm") == 1200


async def test_a_plaintext_peer_is_refused(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, _ = pki
    async with (
        running("victim", tls=issue(ca, directory, "victim")) as victim,
        running("b", peers=[("victim", victim.port)]) as plaintext,
    ):
        plaintext.on_local_delta(plaintext.store.set("intruder", "x", 1))
        error = await refused_for_a_while(victim, plaintext)
        assert "UNAVAILABLE" in error
        assert "intruder" not in victim.store


async def test_a_tls_node_refuses_to_dial_a_plaintext_server(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, _ = pki
    async with (
        running("b") as plaintext,
        running("victim", peers=[("b", plaintext.port)], tls=issue(ca, directory, "victim")) as victim,
    ):
        error = await refused_for_a_while(plaintext, victim, peer="b")
        assert "UNAVAILABLE" in error


async def test_a_peer_whose_certificate_comes_from_another_ca_is_refused(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, other = pki
    # The intruder trusts the cluster CA (so it would accept the victim) but holds a foreign certificate.
    foreign = issue(other, directory, "b", trust=ca)
    async with (
        running("victim", tls=issue(ca, directory, "victim")) as victim,
        running("b", peers=[("victim", victim.port)], tls=foreign) as intruder,
    ):
        intruder.on_local_delta(intruder.store.set("intruder", "x", 1))
        error = await refused_for_a_while(victim, intruder)
        assert "UNAVAILABLE" in error
        assert "intruder" not in victim.store


async def test_a_server_whose_certificate_comes_from_another_ca_is_refused(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, other = pki
    async with (
        running("b", tls=issue(other, directory, "b", trust=ca)) as impostor,
        running("victim", peers=[("b", impostor.port)], tls=issue(ca, directory, "victim")) as victim,
    ):
        error = await refused_for_a_while(impostor, victim, peer="b")
        assert "UNAVAILABLE" in error


async def test_a_client_certificate_that_does_not_name_the_node_is_refused(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, _ = pki
    stolen = issue(ca, directory, "mallory")  # valid, from the right CA, but not for node "b"
    async with (
        running("victim", tls=issue(ca, directory, "victim")) as victim,
        running("b", peers=[("victim", victim.port)], tls=stolen) as intruder,
    ):
        error = await refused_for_a_while(victim, intruder)
        assert "PERMISSION_DENIED" in error
        assert "node id 'b' is not a name of its certificate (names: 127.0.0.1, mallory)" in error
        assert victim.stats.refused_handshakes["identity"] >= 3


async def test_a_server_certificate_that_does_not_name_the_dialled_node_is_refused(
    pki: tuple[Path, Ca, Ca],
) -> None:
    directory, ca, _ = pki
    # "b" serves with a certificate for "mallory": the dialler checks the name it dialled.
    async with (
        running("b", tls=issue(ca, directory, "mallory")) as impostor,
        running("victim", peers=[("b", impostor.port)], tls=issue(ca, directory, "victim")) as victim,
    ):
        error = await refused_for_a_while(impostor, victim, peer="b")
        assert "UNAVAILABLE" in error


async def test_allowed_names_narrow_who_may_connect(pki: tuple[Path, Ca, Ca]) -> None:
    directory, ca, _ = pki
    tls = dataclasses.replace(issue(ca, directory, "victim"), allowed_names=("c",))
    async with (
        running("victim", tls=tls) as victim,
        running("b", peers=[("victim", victim.port)], tls=issue(ca, directory, "b")) as intruder,
    ):
        error = await refused_for_a_while(victim, intruder)
        assert "node 'b' is not in tls.allowed_names" in error


@pytest.mark.parametrize("side", ["server", "client"])
async def test_rotated_certificate_files_are_used_without_a_restart(
    pki: tuple[Path, Ca, Ca], side: str
) -> None:
    # One side starts with an expired certificate, so every handshake fails; its files are then replaced in
    # place (as cert-manager renews a Secret) and the next dial succeeds, with neither replicator restarted.
    directory, ca, _ = pki
    stems = {"server": f"rotate-victim-{side}", "client": f"rotate-b-{side}"}
    victim_tls = issue(ca, directory, "victim", expired=side == "server", stem=stems["server"])
    b_tls = issue(ca, directory, "b", expired=side == "client", stem=stems["client"])
    async with (
        running("victim", tls=victim_tls) as victim,
        running("b", peers=[("victim", victim.port)], tls=b_tls) as b,
    ):
        await refused_for_a_while(victim, b)
        issue(ca, directory, "victim" if side == "server" else "b", stem=stems[side])  # renewed in place
        await b.wait_for_peers(["victim"], 30)
        b.on_local_delta(b.store.set("pump", "rpm", 900))
        await eventually(lambda: victim.store.get("pump", "rpm") == 900, what="replication after rotation")
