"""Node configuration: one TOML file, plus environment overrides, validated once into frozen dataclasses.

The dataclasses below are the schema. Each field's type (and its ``Annotated`` rules) drives three things:
validation of the TOML table, typing of environment overrides, and the defaults. Every error is a
:class:`~drsdtp.errors.ConfigError` whose key is the full dotted path (``wal.fsync_bytes``,
``peers[1].address``, ``adapters[0].type``).

Environment overrides (for containers), applied before validation:

* ``DRSDTP_`` followed by the key path in upper case, path segments joined by a double underscore:
  ``DRSDTP_NODE_ID=edge-07``, ``DRSDTP_WAL__FSYNC_INTERVAL_MS=10``, ``DRSDTP_LISTEN__METRICS=0.0.0.0:9464``,
  ``DRSDTP_TLS__CERT=/etc/drsdtp/tls/tls.crt``. A single underscore stays part of the key name.
* The text is typed by the target field: integers and floats in Python syntax, booleans as
  ``true/false/1/0/yes/no/on/off``, lists of strings comma-separated (``DRSDTP_SCOPES=plant-a,line-3``),
  peers as ``name=host:port`` pairs, comma-separated (``DRSDTP_PEERS=edge-02=10.0.0.12:7400``).
  An empty value for an optional key (``DRSDTP_CLOCK__NTP_SERVER=``) restores its default (off).
* Arrays of tables other than peers (adapters, models, kernels, twins, actuators, rules, notify,
  history.downsample) come only from the file.
* Any other ``DRSDTP_*`` variable is an error naming it (a typo must not be ignored silently), except the
  CLI's own variables and the test hooks' listed in :data:`NON_CONFIG_ENV`.

Relative paths in the file are resolved against the directory of the file.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import math
import os
import re
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from drsdtp.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "NON_CONFIG_ENV",
    "Address",
    "AlertingConfig",
    "ApiCertificateConfig",
    "ApiConfig",
    "ApiOidcConfig",
    "ApiRole",
    "ApiTokenConfig",
    "ClockConfig",
    "CommandsConfig",
    "DeadLetterConfig",
    "DownsampleTier",
    "HistoryConfig",
    "IntelligenceSettings",
    "KubeEdgeConfig",
    "LimitsConfig",
    "ListenConfig",
    "NodeConfig",
    "PeerConfig",
    "RelationRule",
    "TlsConfig",
    "TwinRule",
    "WalConfig",
    "check_exposure",
    "check_files",
    "load_config",
    "load_config_with_overrides",
    "parse_address",
    "parse_config",
    "scope_problem",
    "url_problem",
]

ENV_PREFIX: Final = "DRSDTP_"
_ENV_SEPARATOR: Final = "__"
#: ``DRSDTP_*`` variables that are not config overrides: the CLI's own, and the test-only fault hooks'
#: (``drsdtp.clock_offset_hook``, ``drsdtp.gossip.link_hook``), which no config may set.
NON_CONFIG_ENV: Final = frozenset(
    {"DRSDTP_CONFIG", "DRSDTP_STAGES", "DRSDTP_TEST_CLOCK_OFFSET_FILE", "DRSDTP_TEST_LINK"}
)

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")
_MIB: Final = 1 << 20


# --- validation rules, attached to fields with typing.Annotated -------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive numeric bounds."""

    lo: float
    hi: float

    def check(self, value: Any, key: str) -> None:
        if not self.lo <= value <= self.hi:
            raise ConfigError(key, f"must be between {_num(self.lo)} and {_num(self.hi)}, got {_num(value)}")


@dataclass(frozen=True, slots=True)
class Name:
    """A short identifier: letters, digits, '.', '_' and '-', starting with a letter or digit."""

    def check(self, value: Any, key: str) -> None:
        if not _NAME_RE.fullmatch(value):
            raise ConfigError(
                key,
                f"{value!r} is not a valid name (1-64 characters: letters, digits, '.', '_', '-'; "
                "starting with a letter or digit)",
            )


@dataclass(frozen=True, slots=True)
class NonEmpty:
    def check(self, value: Any, key: str) -> None:
        if len(value) == 0:
            raise ConfigError(key, "must not be empty")


@dataclass(frozen=True, slots=True)
class HasType:
    """A raw plugin table (adapter, kernel), validated later by its plugin; here only ``type`` is checked."""

    def check(self, value: Any, key: str) -> None:
        kind = value.get("type")
        if kind is None:
            raise ConfigError(f"{key}.type", "required key is missing (it names the plugin)")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{key}.type", f"expected a non-empty string, got {_describe(kind)}")


class _Rule(typing.Protocol):
    def check(self, value: Any, key: str) -> None: ...


# --- the schema -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` pair; IPv6 hosts are written in brackets (``[::1]:7400``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(
    text: str, key: str, *, default_port: int | None = None, allow_port_zero: bool = True
) -> Address:
    """Parse ``host:port`` (or ``host`` alone when ``default_port`` is given); errors name ``key``."""
    port_text: str | None
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ConfigError(key, f"expected [ipv6]:port, got {text!r}")
        port_text = rest[1:] if rest else None
        if not _is_ipv6(host):
            raise ConfigError(key, f"{host!r} is not an IPv6 address")
    elif text.count(":") > 1:
        # A bare IPv6 address is only unambiguous without a port.
        if default_port is None or not _is_ipv6(text):
            raise ConfigError(key, f"an IPv6 address needs brackets, as in [::1]:7400; got {text!r}")
        host, port_text = text, None
    else:
        host, sep, port_text = text.partition(":")
        port_text = port_text if sep else None
        if not _HOST_RE.fullmatch(host):
            raise ConfigError(key, f"{host!r} is not a host name or address")
    if port_text is None:
        if default_port is None:
            raise ConfigError(key, f"expected host:port, got {text!r}")
        port_text = str(default_port)
    if not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(key, f"port {port_text!r} is not a number")
    port = int(port_text)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= 65535:
        raise ConfigError(key, f"port must be between {lowest} and 65535, got {port}")
    return Address(host, port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where the node listens. Port 0 picks a free port (tests)."""

    peer: Address = Address("0.0.0.0", 7400)  # gRPC for peer nodes (gossip)
    api: Address = Address("127.0.0.1", 7401)  # gRPC for applications and the CLI
    metrics: Address = Address("0.0.0.0", 9464)  # Prometheus /metrics, /healthz, /readyz


@dataclass(frozen=True, slots=True)
class ApiHttpConfig:
    """The HTTP/JSON face of the application API (``drsdtp.api.http``): off unless ``listen`` is set."""

    listen: Address | None = None
    dashboard: bool = True  # the operator's dashboard at /dashboard/ on the same port


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: Annotated[str, Name()]
    address: Address


@dataclass(frozen=True, slots=True)
class ClockConfig:
    # CockroachDB's default: a remote stamp further ahead than this is rejected and counted.
    max_offset_ms: Annotated[int, Range(1, 3_600_000)] = 500
    ntp_server: str | None = None  # host or host:port; None: offset not measured (reported unknown)
    ntp_interval_s: Annotated[float, Range(1, 86_400)] = 300.0
    ntp_timeout_s: Annotated[float, Range(0.05, 60)] = 2.0
    # How often the HLC high-water mark is written to the data dir.
    persist_interval_s: Annotated[float, Range(0.01, 3600)] = 1.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca: Path
    cert: Path
    key: Path
    # Peers are identified by their certificate's name, so a peer without one could never be admitted:
    # turning this off is refused rather than silently ineffective.
    require_client_auth: bool = True
    allowed_names: tuple[
        Annotated[str, NonEmpty()], ...
    ] = ()  # peer certificate names; empty: any the CA signed
    # The application API: plaintext ("off": it listens on loopback by default), TLS with this node's
    # certificate ("server"), or TLS that also requires a client certificate from the CA ("mutual").
    api: Literal["off", "server", "mutual"] = "off"

    def __post_init__(self) -> None:
        if not self.require_client_auth:
            raise ConfigError(
                "tls.require_client_auth",
                "peers are identified by their client certificate, so it cannot be turned off "
                "(tls.api chooses whether API clients need one)",
            )


# --- authorization of the application API (drsdtp.api.auth) ---------------------------------------------
ApiRole = Literal["viewer", "operator", "engineer", "admin"]


@dataclass(frozen=True, slots=True)
class ApiTokenConfig:
    """A bearer token, stored as its hash ("sha256:<hex>"; ``drsdtp token new`` prints token and hash)."""

    name: Annotated[str, Name()]
    role: ApiRole
    hash: Annotated[str, NonEmpty()]
    scopes: tuple[Annotated[str, NonEmpty()], ...] = ("*",)  # twin id globs: "line1/*", an id, "*"
    rate_per_s: Annotated[float, Range(0, 1e9)] | None = None  # None: api.rate_per_s


@dataclass(frozen=True, slots=True)
class ApiCertificateConfig:
    """The role of a client certificate name (mutual TLS); names not listed get api.certificate_role."""

    name: Annotated[str, NonEmpty()]
    role: ApiRole
    scopes: tuple[Annotated[str, NonEmpty()], ...] = ("*",)


@dataclass(frozen=True, slots=True)
class ApiOidcConfig:
    """JWTs of an OpenID Connect issuer, verified against its key sets (drsdtp.api.auth.jwks): the one it
    publishes (from jwks_url, else found through the issuer's discovery document) and a static one."""

    issuer: Annotated[str, NonEmpty()]
    audience: Annotated[str, NonEmpty()]
    jwks_url: str = ""  # empty: the jwks_uri of <issuer>/.well-known/openid-configuration (discovery)
    discovery: bool = True  # false: no discovery; only jwks_url (when set) and jwks_file are used
    jwks_file: Path | None = None  # a static key set (a JWKS document), used besides the fetched one
    ca_file: Path | None = None  # CA certificates for the issuer's https (default: the system's)
    identity_claim: Annotated[str, NonEmpty()] = "sub"
    role_claim: Annotated[str, NonEmpty()] = "drsdtp_role"  # a role, or a list (the highest counts)
    scopes_claim: Annotated[str, NonEmpty()] = "drsdtp_scopes"  # a list or a space-separated string
    default_role: ApiRole | None = None  # None: a JWT without the role claim is refused
    algorithms: Annotated[tuple[Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"], ...],
                          NonEmpty()] = ("RS256", "ES256")  # fmt: skip
    leeway_s: Annotated[float, Range(0, 600)] = 30.0  # clock skew allowed on exp/nbf/iat
    jwks_refresh_s: Annotated[float, Range(1, 86_400)] = 300.0  # key set kept this long before a refetch
    jwks_timeout_s: Annotated[float, Range(0.1, 60)] = 5.0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    # Callers with no credential: "auto" is admin while no tokens and no issuer are configured (the API on
    # loopback, as before roles), and refused (UNAUTHENTICATED) once they are; "none" always refuses.
    anonymous_role: Literal["auto", "none", "viewer", "operator", "engineer", "admin"] = "auto"
    certificate_role: ApiRole = (
        "admin"  # client certificates (tls.api = "mutual") not in [[api.certificates]]
    )
    # A plaintext API without tokens or an issuer on a non-loopback address is refused unless this is set.
    allow_plaintext_remote: bool = False
    # Requests per second per caller (token bucket; 0: unlimited) and the burst above it (0: one second's).
    rate_per_s: Annotated[float, Range(0, 1e9)] = 0.0
    rate_burst: Annotated[float, Range(0, 1e9)] = 0.0
    tokens: tuple[ApiTokenConfig, ...] = ()
    certificates: tuple[ApiCertificateConfig, ...] = ()
    oidc: ApiOidcConfig | None = None
    http: ApiHttpConfig = ApiHttpConfig()  # the HTTP/JSON face (drsdtp.api.http)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_bytes: Annotated[int, Range(4096, 1 << 30)] = 4 * _MIB
    max_batch: Annotated[int, Range(1, 1_000_000)] = 1000
    max_name_bytes: Annotated[int, Range(8, 65_535)] = 256
    ingest_queue: Annotated[int, Range(1, 100_000_000)] = (
        10_000  # readings buffered between adapters and store
    )
    peer_buffer: Annotated[int, Range(1, 100_000_000)] = 100_000  # deltas kept per peer before full catch-up
    # Bytes per second read from one peer; 0: unlimited. A flooding peer is slowed, not served first.
    peer_receive_bytes_per_s: Annotated[int, Range(0, 1 << 40)] = 0
    # Twins and fields (every field slot, _scope and _model included) the store may hold before ingestion
    # stops creating new ones; counted from the store, so they hold across restarts. Peers' state is merged
    # regardless (refusing it would break convergence).
    max_twins: Annotated[int, Range(1, 1 << 32)] = 200_000
    max_fields: Annotated[int, Range(1, 1 << 40)] = 2_000_000
    # Application API. Watch streams open at once, on the node and per caller (its TLS identity, else its
    # address); more are refused with RESOURCE_EXHAUSTED. A stream holds one message in flight at a time.
    api_max_watchers: Annotated[int, Range(1, 100_000)] = 64
    api_max_watchers_per_caller: Annotated[int, Range(1, 100_000)] = 8
    # A Watch write not taken by the client within this time ends the stream (RESOURCE_EXHAUSTED).
    api_watch_stall_s: Annotated[float, Range(0.1, 3600)] = 10.0
    # Other (unary) API requests served at once; more are refused with RESOURCE_EXHAUSTED.
    api_max_requests: Annotated[int, Range(1, 100_000)] = 32
    # Write idempotency keys remembered (on disk, across restarts): the newest this many, none older than
    # api_idempotency_s. A retry within both gets the original reply and applies nothing.
    api_idempotency_keys: Annotated[int, Range(1, 10_000_000)] = 10_000
    api_idempotency_s: Annotated[float, Range(1, 30 * 86_400)] = 86_400.0


@dataclass(frozen=True, slots=True)
class DeadLetterConfig:
    """Messages adapters could not decode, kept under ``data_dir/deadletters`` (``drsdtp deadletters``)."""

    max_letters: Annotated[int, Range(1, 10_000_000)] = 10_000
    max_bytes: Annotated[int, Range(65_536, 1 << 40)] = 64 * _MIB
    max_payload_bytes: Annotated[int, Range(256, 256 * _MIB)] = _MIB  # kept of one payload (more: truncated)


@dataclass(frozen=True, slots=True)
class WalConfig:
    enabled: bool = True
    # Group commit: at most one fsync per interval (counted from the last one, so a lone write is not
    # held), or sooner once this many bytes are pending.
    fsync_interval_ms: Annotated[int, Range(0, 60_000)] = 5
    fsync_bytes: Annotated[int, Range(0, 1 << 30)] = _MIB
    # A snapshot truncates the log: taken every snapshot_every entries or once the log reaches segment_bytes.
    segment_bytes: Annotated[int, Range(_MIB, 1 << 32)] = 64 * _MIB
    snapshot_every: Annotated[int, Range(1, 1 << 40)] = 100_000
    # Snapshot generations kept, each with the log after it (the fallback should the newest be damaged).
    keep_snapshots: Annotated[int, Range(1, 100)] = 2
    # Damage found on start that is not a torn tail: "quarantine" keeps the records after it, copies the
    # damaged bytes to wal/quarantine/ and reports; the node is not ready until `drsdtp recover --accept`.
    # "refuse" does not start; the error names the file, offset and damage.
    on_corruption: Literal["quarantine", "refuse"] = "quarantine"
    # Bounds of wal/quarantine/ (the oldest copies go first; reports not yet accepted are kept).
    quarantine_max_entries: Annotated[int, Range(1, 10_000)] = 16
    quarantine_max_bytes: Annotated[int, Range(_MIB, 1 << 40)] = 256 * _MIB


@dataclass(frozen=True, slots=True)
class DownsampleTier:
    interval_s: Annotated[int, Range(1, 31_536_000)]
    retention_s: Annotated[int, Range(1, 3_153_600_000)]


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    enabled: bool = True
    raw_retention_s: Annotated[int, Range(1, 3_153_600_000)] = 86_400
    raw_max_points: Annotated[int, Range(1, 1 << 40)] = 100_000  # per field
    snapshots_per_twin: Annotated[int, Range(1, 1_000_000)] = 100  # twin snapshots kept (the oldest go first)
    downsample: tuple[DownsampleTier, ...] = (
        DownsampleTier(interval_s=60, retention_s=30 * 86_400),
        DownsampleTier(interval_s=3600, retention_s=365 * 86_400),
    )


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """``[postgres]``: stream every reading this node ingests to PostgreSQL (drsdtp.northbound.postgres)."""

    # libpq-style URL or key=value string; keep the password out of the file (PGPASSWORD or ~/.pgpass).
    dsn: Annotated[str, NonEmpty()]
    schema: Annotated[str, Name()] = "public"
    # The local outbox that holds readings while the database is down; past it, `drop_policy` decides.
    outbox_max_bytes: Annotated[int, Range(1 << 20, 1 << 44)] = 1 << 30
    drop_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    batch_bytes: Annotated[int, Range(1024, 1 << 30)] = 4 << 20  # outbox bytes per COPY transaction
    flush_interval_s: Annotated[float, Range(0.01, 3600)] = 1.0
    connect_timeout_s: Annotated[float, Range(0.1, 600)] = 10.0
    max_backoff_s: Annotated[float, Range(0.2, 3600)] = 30.0
    # `drsdtp history` (and the API) read points older than the node's own tiers back from the database.
    read_back: bool = True
    # Anomalies, alarm and command transitions to `drsdtp_events` (drsdtp.northbound.postgres.events).
    events: bool = True
    # Desired values, metadata, tags, relations, twins created and deleted to `drsdtp_twin_changes`
    # (drsdtp.northbound.postgres.changes).
    changes: bool = True


@dataclass(frozen=True, slots=True)
class SparkplugConfig:
    """``[sparkplug]``: publish twins as a Sparkplug B edge node (drsdtp.northbound.sparkplug)."""

    host: Annotated[str, NonEmpty()]
    group_id: Annotated[str, Name()]
    port: Annotated[int, Range(1, 65535)] = 1883
    edge_node_id: Annotated[str, Name()] | None = None  # default: node_id
    twins: Annotated[tuple[Annotated[str, NonEmpty()], ...], NonEmpty()] = ("*",)  # globs
    interval_s: Annotated[float, Range(0.01, 3600)] = 1.0
    max_metrics: Annotated[int, Range(1, 10_000_000)] = 100_000
    keepalive_s: Annotated[int, Range(1, 65535)] = 30
    username: str | None = None
    password_file: Path | None = None
    max_backoff_s: Annotated[float, Range(0.2, 3600)] = 30.0
    # Forecast fields' next value, interval and time to threshold as metrics (northbound.sparkplug_forecast),
    # published when they move by more than this fraction of the interval's half-width (a time: of itself).
    forecasts: bool = True
    forecast_deadband: Annotated[float, Range(0.0, 100.0)] = 0.25


@dataclass(frozen=True, slots=True)
class KubeEdgeConfig:
    """``[kubeedge]``: serve KubeEdge's device twins as a DMI device mapper (drsdtp.kubeedge.mapper)."""

    # edgecore's DMI socket (its default); the mapper registers there and reports twins and states.
    edgecore_socket: Path = Path("/etc/kubeedge/dmi.sock")
    # Where this mapper serves DeviceMapperService for edgecore (default: data_dir/kubeedge/drsdtp.sock).
    socket: Path | None = None
    name: Annotated[str, Name()] = "drsdtp"
    # The Devices' spec.protocol.protocolName this mapper serves (`drsdtp kubeedge` writes "drsdtp").
    protocol: Annotated[str, Name()] = "drsdtp"
    # A device's report cycle when its properties give none (reportCycle 0), and the floor of any: every
    # report is a write to the cloud's API server, which does not take high rates.
    report_interval_s: Annotated[float, Range(0.01, 86_400)] = 10.0
    min_report_interval_s: Annotated[float, Range(0.01, 86_400)] = 1.0
    # edgecore refuses DMI calls beyond 1/s (burst 100): the mapper paces its reports to this.
    reports_per_s: Annotated[float, Range(0.01, 100_000)] = 1.0
    max_devices: Annotated[int, Range(1, 1_000_000)] = 10_000
    max_backoff_s: Annotated[float, Range(0.2, 3600)] = 30.0


@dataclass(frozen=True, slots=True)
class TwinRule:
    """Twins whose id matches the glob get this model and scope when the node first creates them."""

    match: Annotated[str, NonEmpty()]
    model: Annotated[str, Name()]
    scope: Annotated[str, Name()] | None = None  # None: the node's first scope


@dataclass(frozen=True, slots=True)
class RelationRule:
    """``twin`` --relation--> ``target``, declared at start (``drsdtp.relations``): replicated like a
    relation written over the API. ``located_in`` builds the site > area > line > asset > sensor tree."""

    twin: Annotated[str, NonEmpty()]
    relation: Annotated[str, Name()]
    target: Annotated[str, NonEmpty()]


PluginTable = Annotated[Mapping[str, Any], HasType()]
# A raw [[models]] table: drsdtp.models validates it (with the kernels it needs) into an asset model.
ModelTable = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    """Commands to actuators (``drsdtp.actions``); the actuators themselves are ``[[actuators]]``."""

    # Command records (replicated ``_cmd/`` twins) this node holds before it refuses new commands; counted
    # from the store, so the cap holds across restarts (the engine cannot delete a record yet).
    max_records: Annotated[int, Range(1, 100_000_000)] = 100_000
    # Commands this node carries out at once (each waits for its device and its echo); more stay pending.
    max_active: Annotated[int, Range(1, 1_000_000)] = 1000
    default_deadline_s: Annotated[float, Range(0.01, 30 * 86_400)] = 60.0
    max_deadline_s: Annotated[float, Range(0.01, 30 * 86_400)] = 86_400.0


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """Rules, alarms and notifications (``drsdtp.rules``, ``drsdtp.alarms``, ``drsdtp.notify``); the rules
    and targets themselves are ``[[rules]]`` and ``[[notify]]``."""

    period_s: Annotated[float, Range(0.01, 3600)] = 1.0  # seconds between rule evaluation passes
    # Alarm records (replicated ``_alarm/`` twins) this node holds before it refuses to raise new ones.
    max_alarms: Annotated[int, Range(1, 100_000_000)] = 100_000
    # The notification outbox on disk: beyond either bound the oldest pending notification is dropped
    # (counted in drsdtp_notify_dropped).
    outbox_max_items: Annotated[int, Range(1, 10_000_000)] = 10_000
    outbox_max_bytes: Annotated[int, Range(4096, 1 << 40)] = 64 * _MIB
    retry_min_s: Annotated[float, Range(0.01, 3600)] = 0.5  # first wait after a failed delivery (doubles)
    retry_max_s: Annotated[float, Range(0.01, 86_400)] = 60.0


@dataclass(frozen=True, slots=True)
class IntelligenceSettings:
    # Plant seconds per wall-clock second: 10 when a simulated plant runs ten times faster than real time.
    # Health, forecasts, kernels and the divergence monitor all run in plant time, so the physics holds.
    time_scale: Annotated[float, Range(0.001, 100_000)] = 1.0
    # The anomaly log under data_dir/anomalies (drsdtp anomalies): newest events kept per twin, and in all.
    anomalies_per_twin: Annotated[int, Range(1, 1_000_000)] = 1000
    anomalies_max: Annotated[int, Range(1, 100_000_000)] = 100_000


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: Annotated[str, Name()]
    data_dir: Path
    scopes: Annotated[tuple[Annotated[str, Name()], ...], NonEmpty()] = ("default",)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_s: Annotated[float, Range(0.1, 3600)] = 10.0
    listen: ListenConfig = ListenConfig()
    clock: ClockConfig = ClockConfig()
    peers: tuple[PeerConfig, ...] = ()  # seeds; an entry named like this node is dropped (shared peer lists)
    tls: TlsConfig | None = None
    api: ApiConfig = ApiConfig()  # authorization of the application API; its HTTP/JSON face
    limits: LimitsConfig = LimitsConfig()
    wal: WalConfig = WalConfig()
    history: HistoryConfig = HistoryConfig()
    postgres: PostgresConfig | None = None
    sparkplug: SparkplugConfig | None = None
    kubeedge: KubeEdgeConfig | None = None
    deadletters: DeadLetterConfig = DeadLetterConfig()
    # Raw plugin tables: drsdtp.adapters.build_adapter(raw, key_prefix=f"adapters[{i}]") validates the rest.
    adapters: tuple[PluginTable, ...] = ()
    # Asset models (drsdtp.models): the library's, files in models_dir, then these tables.
    models: tuple[ModelTable, ...] = ()
    models_dir: Path | None = None
    # Kernels the node requires (plug-ins); type = "room" is the legacy form of a room model.
    kernels: tuple[PluginTable, ...] = ()
    twins: tuple[TwinRule, ...] = ()
    relations: tuple[RelationRule, ...] = ()
    intelligence: IntelligenceSettings = IntelligenceSettings()
    # Raw [[actuators]] tables: drsdtp.actions.parse_actuators validates them (their write targets: the
    # executing node's adapter).
    actuators: tuple[ModelTable, ...] = ()
    commands: CommandsConfig = CommandsConfig()
    # Raw [[rules]] and [[notify]] tables: drsdtp.rules.config.parse_alerting validates them.
    rules: tuple[ModelTable, ...] = ()
    notify: tuple[ModelTable, ...] = ()
    alerting: AlertingConfig = AlertingConfig()


# --- loading ----------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read, override from ``env`` (default ``os.environ``) and validate the TOML file at ``path``."""
    return load_config_with_overrides(path, env)[0]


def load_config_with_overrides(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> tuple[NodeConfig, dict[str, str]]:
    """Like :func:`load_config`, also returning the applied overrides as ``{dotted key: variable name}``."""
    file = Path(path)
    try:
        with file.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read the config file: {exc.strerror or exc}") from None
    return _parse(raw, os.environ if env is None else env, file.resolve().parent)


def parse_config(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> NodeConfig:
    """Validate an already-parsed table (tests, the demo). ``env`` defaults to no overrides."""
    return _parse(raw, env or {}, base_dir or Path.cwd())[0]


def check_files(config: NodeConfig) -> list[ConfigError]:
    """Files the config names that cannot be read (kept out of parsing so configs validate anywhere)."""
    problems: list[ConfigError] = []
    if config.tls is not None:
        for name in ("ca", "cert", "key"):
            file: Path = getattr(config.tls, name)
            if not os.access(file, os.R_OK) or not file.is_file():
                problems.append(ConfigError(f"tls.{name}", f"cannot read {file}"))
    if config.data_dir.exists() and not config.data_dir.is_dir():
        problems.append(ConfigError("data_dir", f"{config.data_dir} exists and is not a directory"))
    return problems


def _parse(
    raw: Mapping[str, Any], env: Mapping[str, str], base_dir: Path
) -> tuple[NodeConfig, dict[str, str]]:
    table = copy.deepcopy(dict(raw))
    sources = _apply_env(table, env)
    try:
        config = _Builder(base_dir).build(NodeConfig, table, "")
        return _check_node(config), sources
    except ConfigError as exc:
        for dotted, var in sources.items():
            if exc.key == dotted or exc.key.startswith((f"{dotted}.", f"{dotted}[")):
                raise ConfigError(exc.key, f"{exc.reason} (set by environment variable {var})") from None
        raise


T = TypeVar("T")


class _Builder:
    """Converts TOML values to the schema types; ``base_dir`` anchors relative paths."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def build(self, cls: type[T], raw: object, key: str) -> T:
        if not isinstance(raw, dict):
            raise ConfigError(key or "<root>", f"expected a table, got {_describe(raw)}")
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = [f.name for f in fields]
        unknown = [k for k in raw if k not in names]
        if unknown:
            raise ConfigError(_join(key, unknown[0]), _unknown_reason(unknown, names))
        hints = typing.get_type_hints(cls, include_extras=True)
        values: dict[str, Any] = {}
        for f in fields:
            sub = _join(key, f.name)
            if f.name in raw:
                values[f.name] = self.convert(hints[f.name], raw[f.name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(sub, "required key is missing")
        return cls(**values)

    def convert(self, tp: Any, value: object, key: str) -> Any:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            base, *rules = typing.get_args(tp)
            result = self.convert(base, value, key)
            for rule in rules:
                typing.cast(_Rule, rule).check(result, key)
            return result
        if origin in (types.UnionType, typing.Union):
            # Only ``X | None`` occurs; TOML has no null, so a present value is always an X.
            (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
            return self.convert(inner, value, key)
        if origin is Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise ConfigError(
                    key, f"expected one of {', '.join(map(repr, choices))}, got {_describe(value)}"
                )
            return value
        if origin is tuple:
            item_type = typing.get_args(tp)[0]
            items = _expect(list, value, key, "an array")
            return tuple(self.convert(item_type, item, f"{key}[{i}]") for i, item in enumerate(items))
        if origin is Mapping:
            # Plugin tables stay raw; a read-only view keeps the config immutable at its top level.
            return types.MappingProxyType(_expect(dict, value, key, "a table"))
        if dataclasses.is_dataclass(tp) and tp is not Address:
            return self.build(typing.cast(type[Any], tp), value, key)
        return self.scalar(tp, value, key)

    def scalar(self, tp: Any, value: object, key: str) -> Any:
        if tp is bool:
            return _expect(bool, value, key, "a boolean")
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(key, f"expected an integer, got {_describe(value)}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(key, f"expected a number, got {_describe(value)}")
            if not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number, got {value}")
            return float(value)
        text = _expect(str, value, key, "a string")
        if tp is str:
            return text
        if not text:
            raise ConfigError(key, "must not be empty")
        if tp is Path:
            path = Path(text).expanduser()
            return path if path.is_absolute() else self.base_dir / path
        if tp is Address:
            return parse_address(text, key)
        raise TypeError(f"config schema type {tp!r} at {key} has no converter")  # a bug in this module


def _check_node(config: NodeConfig) -> NodeConfig:
    """Rules that span several keys."""
    peers: list[PeerConfig] = []
    seen: dict[str, int] = {}
    for i, peer in enumerate(config.peers):
        if peer.name in seen:
            raise ConfigError(
                f"peers[{i}].name", f"duplicate peer name {peer.name!r} (also peers[{seen[peer.name]}])"
            )
        seen[peer.name] = i
        if peer.address.port == 0:
            raise ConfigError(f"peers[{i}].address", "a peer address needs a real port, not 0")
        if peer.name != config.node_id:
            peers.append(peer)
    if config.clock.ntp_server is not None:
        parse_address(config.clock.ntp_server, "clock.ntp_server", default_port=123, allow_port_zero=False)
    if len(set(config.scopes)) != len(config.scopes):
        raise ConfigError("scopes", "contains a scope twice")
    for i, rule in enumerate(config.twins):
        if rule.scope is not None and rule.scope not in config.scopes:
            raise ConfigError(
                f"twins[{i}].scope",
                f"{rule.scope!r} is not one of this node's scopes ({', '.join(config.scopes)})",
            )
    if config.commands.default_deadline_s > config.commands.max_deadline_s:
        raise ConfigError("commands.default_deadline_s", "is above commands.max_deadline_s")
    _check_listen(config.listen, config.api.http.listen)
    _check_api(config.api)
    _check_history(config.history)
    if config.postgres is not None and not (config.history.enabled and config.wal.enabled):
        # The sink follows history's journal in the log: without both it could not promise every reading.
        raise ConfigError(
            "postgres", "needs history.enabled and wal.enabled (the sink follows history's journal)"
        )
    if config.limits.api_max_watchers_per_caller > config.limits.api_max_watchers:
        raise ConfigError(
            "limits.api_max_watchers_per_caller",
            f"is more than limits.api_max_watchers ({config.limits.api_max_watchers})",
        )
    return dataclasses.replace(config, peers=tuple(peers))


def _check_listen(listen: ListenConfig, http: Address | None) -> None:
    taken: dict[tuple[str, int], str] = {}
    named = [(f"listen.{name}", getattr(listen, name)) for name in ("peer", "api", "metrics")]
    for key, address in [*named, *([("api.http.listen", http)] if http is not None else [])]:
        if address.port == 0:
            continue
        clash = taken.get((address.host, address.port))
        if clash:
            raise ConfigError(key, f"{address} is already used by {clash}")
        taken[(address.host, address.port)] = key


_TOKEN_HASH_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")


def scope_problem(glob: str) -> str | None:
    """Why ``glob`` is not a valid twin scope (an id, or a prefix ending in ``*``), None when it is."""
    if "*" in glob[:-1] or "?" in glob or "[" in glob:
        return f"{glob!r} is not a scope: a twin id, or a prefix ending in '*' (e.g. 'line1/*', '*')"
    return None


def _check_api(api: ApiConfig) -> None:
    named: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for i, token in enumerate(api.tokens):
        key = f"api.tokens[{i}]"
        if token.name in named:
            raise ConfigError(
                f"{key}.name", f"duplicate token name {token.name!r} (also api.tokens[{named[token.name]}])"
            )
        named[token.name] = i
        if not _TOKEN_HASH_RE.fullmatch(token.hash):
            raise ConfigError(
                f"{key}.hash",
                "expected 'sha256:' and 64 lowercase hex digits (`drsdtp token hash` prints it)",
            )
        if token.hash in hashes:
            raise ConfigError(f"{key}.hash", f"the same token as api.tokens[{hashes[token.hash]}]")
        hashes[token.hash] = i
    if api.oidc is not None:
        _check_oidc(api.oidc)
    scoped = [(f"api.tokens[{i}]", t.scopes) for i, t in enumerate(api.tokens)]
    scoped += [(f"api.certificates[{i}]", c.scopes) for i, c in enumerate(api.certificates)]
    for key, scopes in scoped:
        for j, glob in enumerate(scopes):
            problem = scope_problem(glob)
            if problem:
                raise ConfigError(f"{key}.scopes[{j}]", problem)


def url_problem(url: str) -> str | None:
    """Why the node will not fetch an issuer's keys from ``url``, None when it will: https, or http on
    loopback only (a key set over plain HTTP across a network could be replaced by anyone on the way)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        if _is_loopback(parts.hostname):
            return None
        return f"{url!r} is plain http to {parts.hostname}: use https (http only on loopback)"
    return f"{url!r} is not an https:// URL"


def _check_oidc(oidc: ApiOidcConfig) -> None:
    if oidc.jwks_url:
        problem = url_problem(oidc.jwks_url)
        if problem:
            raise ConfigError("api.oidc.jwks_url", problem)
    elif oidc.discovery:
        problem = url_problem(oidc.issuer)
        if problem:
            raise ConfigError(
                "api.oidc.issuer",
                f"{problem}; the key set is found through <issuer>/.well-known/openid-configuration "
                "(or set jwks_url, or jwks_file with discovery = false)",
            )
    elif oidc.jwks_file is None:
        raise ConfigError(
            "api.oidc", "no key set to verify JWTs with: set jwks_url or jwks_file, or discovery = true"
        )
    if oidc.jwks_file is not None:
        try:
            keys = json.loads(oidc.jwks_file.read_bytes()).get("keys")
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError("api.oidc.jwks_file", f"cannot read a key set from it: {exc}") from None
        if not isinstance(keys, list) or not keys:
            raise ConfigError(
                "api.oidc.jwks_file", "not a key set: a JSON object with a non-empty 'keys' list"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: NodeConfig) -> list[ConfigError]:
    """An application API anyone on the network could call (and write through): plaintext, no tokens and no
    issuer, on a non-loopback address, unless ``api.allow_plaintext_remote`` says it is meant."""
    host = config.listen.api.host
    tls = config.tls is not None and config.tls.api != "off"
    if tls or _is_loopback(host) or config.api.tokens or config.api.oidc or config.api.allow_plaintext_remote:
        return []
    return [
        ConfigError(
            "listen.api",
            f"{host} is not a loopback address, and the API is plaintext with no [[api.tokens]] or "
            "[api.oidc]: anyone who reaches it could read and write every twin. Set tls.api, configure "
            "tokens, or set api.allow_plaintext_remote = true if the network itself is trusted",
        )
    ]


def _check_history(history: HistoryConfig) -> None:
    previous_interval, previous_retention = 0, history.raw_retention_s
    for i, tier in enumerate(history.downsample):
        if tier.interval_s <= previous_interval:
            raise ConfigError(
                f"history.downsample[{i}].interval_s", "intervals must increase from tier to tier"
            )
        if tier.retention_s <= previous_retention:
            raise ConfigError(
                f"history.downsample[{i}].retention_s",
                f"must be longer than the previous tier's retention ({previous_retention} s)",
            )
        previous_interval, previous_retention = tier.interval_s, tier.retention_s


# --- environment overrides --------------------------------------------------------------------------------


def _apply_env(table: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Write the ``DRSDTP_*`` overrides into ``table``; returns ``{dotted key: variable}``."""
    sources: dict[str, str] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in NON_CONFIG_ENV:
            continue
        path = var[len(ENV_PREFIX) :].lower().split(_ENV_SEPARATOR)
        dotted = ".".join(path)
        tp = _field_type(path, var)
        text = env[var]
        target = table
        for segment in path[:-1]:
            section = target.setdefault(segment, {})
            if not isinstance(section, dict):
                raise ConfigError(_join("", segment), f"expected a table, got {_describe(section)}")
            target = section
        if text == "" and _is_optional(tp):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = _env_value(tp, text, dotted, var)
        sources[dotted] = var
    return sources


def _field_type(path: list[str], var: str) -> Any:
    cls: Any = NodeConfig
    for depth, segment in enumerate(path):
        fields = {f.name for f in dataclasses.fields(cls)}
        if segment not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise ConfigError(
                var, f"does not name a config key: no {segment!r} in {where}{_suggest(segment, fields)}"
            )
        tp = typing.get_type_hints(cls, include_extras=True)[segment]
        bare = _strip(tp)
        if depth == len(path) - 1:
            if dataclasses.is_dataclass(bare) and bare is not Address:
                raise ConfigError(var, f"{'.'.join(path)} is a table; set its keys (e.g. {var}__<KEY>)")
            return tp
        if not dataclasses.is_dataclass(bare) or bare is Address:
            raise ConfigError(var, f"{'.'.join(path[: depth + 1])} has no sub-keys")
        cls = bare
    raise AssertionError("unreachable")


def _env_value(tp: Any, text: str, key: str, var: str) -> Any:
    bare = _strip(tp)
    origin = typing.get_origin(bare)
    if origin is tuple:
        item = _strip(typing.get_args(bare)[0])
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if item is PeerConfig:
            return [_env_peer(p, key, var) for p in parts]
        if item is str:
            return parts
        raise ConfigError(key, f"cannot be set from the environment ({var}); set it in the config file")
    try:
        if bare is bool:
            return _parse_bool(text)
        if bare is int:
            return int(text)
        if bare is float:
            return float(text)
    except ValueError:
        kind = {bool: "a boolean (true/false)", int: "an integer", float: "a number"}[bare]
        raise ConfigError(key, f"expected {kind}, got {text!r} (from environment variable {var})") from None
    return text


def _env_peer(text: str, key: str, var: str) -> dict[str, str]:
    name, sep, address = text.partition("=")
    if not sep:
        raise ConfigError(key, f"expected name=host:port, got {text!r} (from environment variable {var})")
    return {"name": name.strip(), "address": address.strip()}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


# --- small helpers ----------------------------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    """The bare type under ``Annotated`` and ``| None``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (types.UnionType, typing.Union):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _is_optional(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in typing.get_args(tp)


def _expect(kind: type[T], value: object, key: str, what: str) -> T:
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {what}, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return kind
    return f"{kind} ({value!r})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _num(value: float) -> str:
    return f"{value:,.0f}".replace(",", "_") if float(value).is_integer() else str(value)


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    import difflib  # here: only a refused name needs it (idle RSS, issue 13)

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_reason(unknown: list[str], known: list[str]) -> str:
    reason = f"unknown key{_suggest(unknown[0], known)}"
    if len(unknown) > 1:
        reason += f"; also unknown: {', '.join(unknown[1:])}"
    return reason + f"; known keys here: {', '.join(known)}"
