"""A real asyncua server for the adapter tests (in the test's event loop), restartable on the same port."""

from __future__ import annotations

import datetime
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID

from .support import free_port

NS_URI = "urn:drsdtp:test"
SERVER_URI = "urn:drsdtp:test-server"
CLIENT_URI = "urn:drsdtp:client"


class PasswordUsers:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


@dataclass(frozen=True)
class Certs:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


async def make_certs(directory: Path) -> Certs:
    host = socket.gethostname()
    certs = Certs(
        directory / "server.der", directory / "server.pem", directory / "client.der", directory / "client.pem"
    )
    await cert_gen.setup_self_signed_certificate(
        certs.server_key, certs.server_cert, SERVER_URI, host, [ExtendedKeyUsageOID.SERVER_AUTH], {}
    )
    await cert_gen.setup_self_signed_certificate(
        certs.client_key, certs.client_cert, CLIENT_URI, host, [ExtendedKeyUsageOID.CLIENT_AUTH], {}
    )
    return certs


class OpcServer:
    """Variables under Objects/Plant: Temp, Hum (Double), Running (Boolean), Label (String), and Level
    (Double, with an EURange of 0 to 200)."""

    def __init__(
        self,
        *,
        policies: list[ua.SecurityPolicyType] | None = None,
        certs: Certs | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/test/"
        self.policies = policies or [ua.SecurityPolicyType.NoSecurity]
        self.certs = certs
        self.users = users
        self.server: Server | None = None
        self.idx = 0

    def node(self, name: str) -> ua.NodeId:
        return ua.NodeId.from_string(f"ns={self.idx};s={name}")

    async def start(self) -> None:
        srv = Server(user_manager=PasswordUsers(self.users) if self.users else None)  # type: ignore[arg-type]
        await srv.init()
        srv.set_endpoint(self.url)
        await srv.set_application_uri(SERVER_URI)
        srv.set_security_policy(self.policies)
        if self.users:
            srv.set_identity_tokens([ua.UserNameIdentityToken])
        if self.certs:
            await srv.load_certificate(self.certs.server_cert)
            await srv.load_private_key(self.certs.server_key)
        self.idx = await srv.register_namespace(NS_URI)
        plant = await srv.nodes.objects.add_object(self.idx, "Plant")
        await plant.add_variable(self.node("Temp"), f"{self.idx}:Temp", 0.0)
        await plant.add_variable(self.node("Hum"), f"{self.idx}:Hum", 0.0)
        await plant.add_variable(self.node("Running"), f"{self.idx}:Running", False)
        await plant.add_variable(self.node("Label"), f"{self.idx}:Label", "")
        level = await plant.add_variable(self.node("Level"), f"{self.idx}:Level", 0.0)
        await level.add_property(0, "EURange", ua.Range(Low=0.0, High=200.0))
        await srv.start()
        self.server = srv

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def write(
        self,
        name: str,
        value: Any,
        *,
        status: int = StatusCodes.Good,
        source_time: datetime.datetime | None = None,
    ) -> None:
        assert self.server is not None
        variant = ua.Variant(value, ua.VariantType.Double) if isinstance(value, float) else ua.Variant(value)
        dv = ua.DataValue(
            variant,
            StatusCode=ua.StatusCode(ua.UInt32(status)),
            SourceTimestamp=cast(ua.DateTime, source_time or datetime.datetime.now(datetime.UTC)),
        )
        await self.server.write_attribute_value(self.node(name), dv)
