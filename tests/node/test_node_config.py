"""Config: TOML and environment into frozen dataclasses; every error names its full key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from drsdtp.config import (
    Address,
    NodeConfig,
    check_files,
    load_config,
    load_config_with_overrides,
    parse_address,
    parse_config,
)
from drsdtp.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "drsdtp.example.toml"
MINIMAL = 'node_id = "edge-01"\ndata_dir = "/var/lib/drsdtp"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "drsdtp.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env or {})
    return info.value


def test_example_config_loads_with_its_documented_values() -> None:
    config = load_config(EXAMPLE, {})
    assert config.node_id == "edge-01"
    assert config.data_dir == Path("/var/lib/drsdtp")
    assert config.scopes == ("plant-a", "line-3")
    assert config.listen.metrics == Address("0.0.0.0", 9464)
    assert [p.name for p in config.peers] == ["edge-02", "edge-03"]
    assert config.peers[1].address == Address("fd00::13", 7400)
    assert str(config.peers[1].address) == "[fd00::13]:7400"
    assert config.clock.ntp_server == "pool.ntp.org"
    assert config.tls is None
    assert [t.interval_s for t in config.history.downsample] == [60, 3600]
    assert config.adapters[0]["type"] == "mqtt"
    assert config.adapters[0]["topics"][0]["template"] == "plant-a/{twin}/{field}"
    assert config.models[0]["name"] == "pump" and config.models[0]["extends"] == "centrifugal_pump"
    assert config.twins[0].model == "pump" and config.twins[0].scope == "line-3"


def test_example_config_documents_the_defaults_it_claims() -> None:
    # Keys the example shows without "# example" must equal the schema defaults, so the comments stay true.
    example = load_config(EXAMPLE, {})
    defaults = parse_config({"node_id": "x", "data_dir": "/d"})
    for section in ("listen", "limits", "wal", "history", "deadletters", "intelligence"):
        assert getattr(example, section) == getattr(defaults, section), section
    assert example.clock.max_offset_ms == defaults.clock.max_offset_ms == 500
    assert example.shutdown_timeout_s == defaults.shutdown_timeout_s


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    assert config.scopes == ("default",)
    assert config.clock.max_offset_ms == 500
    assert config.clock.ntp_server is None
    assert config.peers == ()
    assert config.adapters == ()
    assert config.wal.enabled is True
    assert config.listen.api == Address("127.0.0.1", 7401)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + '[[adapters]]\ntype = "mqtt"\n'), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.adapters[0]["type"] = "opcua"  # type: ignore[index]


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'node_id = "a"\ndata_dir = "state"\n'), {})
    assert config.data_dir == tmp_path.resolve() / "state"


def test_a_peer_named_like_this_node_is_dropped(tmp_path: Path) -> None:
    text = MINIMAL + '[[peers]]\nname = "edge-01"\naddress = "10.0.0.1:7400"\n'
    text += '[[peers]]\nname = "edge-02"\naddress = "10.0.0.2:7400"\n'
    config = load_config(write(tmp_path, text), {})
    assert [p.name for p in config.peers] == ["edge-02"]


BAD_CONFIGS: list[tuple[str, str, str, str]] = [
    # (test id, TOML, expected key, fragment of the reason)
    ("missing node_id", 'data_dir = "/d"\n', "node_id", "required key is missing"),
    ("missing data_dir", 'node_id = "a"\n', "data_dir", "required key is missing"),
    ("unknown top-level key", MINIMAL + 'nodeid = "x"\n', "nodeid", "did you mean 'node_id'"),
    ("unknown key in a section", MINIMAL + "[wal]\nfsync_ms = 3\n", "wal.fsync_ms", "unknown key"),
    ("unknown section", MINIMAL + "[wall]\nenabled = true\n", "wall", "did you mean 'wal'"),
    (
        "string for an integer",
        MINIMAL + '[wal]\nfsync_bytes = "1MB"\n',
        "wal.fsync_bytes",
        "expected an integer",
    ),
    (
        "boolean for an integer",
        MINIMAL + "[limits]\nmax_batch = true\n",
        "limits.max_batch",
        "expected an integer",
    ),
    (
        "below the range",
        MINIMAL + "[wal]\nfsync_interval_ms = -1\n",
        "wal.fsync_interval_ms",
        "between 0 and",
    ),
    (
        "above the range",
        MINIMAL + "[clock]\nmax_offset_ms = 99999999\n",
        "clock.max_offset_ms",
        "between 1 and",
    ),
    ("not finite", MINIMAL + "shutdown_timeout_s = nan\n", "shutdown_timeout_s", "finite"),
    (
        "no Watch streams",
        MINIMAL + "[limits]\napi_max_watchers = 0\n",
        "limits.api_max_watchers",
        "between 1 and",
    ),
    (
        "per-caller Watch cap above the node's",
        MINIMAL + "[limits]\napi_max_watchers = 4\napi_max_watchers_per_caller = 5\n",
        "limits.api_max_watchers_per_caller",
        "more than limits.api_max_watchers (4)",
    ),
    (
        "stall time of zero",
        MINIMAL + "[limits]\napi_watch_stall_s = 0\n",
        "limits.api_watch_stall_s",
        "between",
    ),
    ("section is not a table", MINIMAL + "wal = 5\n", "wal", "expected a table"),
    ("invalid node id", 'node_id = "edge 01"\ndata_dir = "/d"\n', "node_id", "not a valid name"),
    ("empty scopes", MINIMAL + "scopes = []\n", "scopes", "must not be empty"),
    ("invalid scope", MINIMAL + 'scopes = ["ok", "no/slash"]\n', "scopes[1]", "not a valid name"),
    ("duplicate scope", MINIMAL + 'scopes = ["a", "a"]\n', "scopes", "twice"),
    ("bad log level", MINIMAL + 'log_level = "verbose"\n', "log_level", "expected one of"),
    ("address without port", MINIMAL + '[listen]\npeer = "0.0.0.0"\n', "listen.peer", "expected host:port"),
    ("IPv6 without brackets", MINIMAL + '[listen]\napi = "::1:7401"\n', "listen.api", "needs brackets"),
    ("bad bracketed host", MINIMAL + '[listen]\napi = "[nope]:1"\n', "listen.api", "not an IPv6 address"),
    ("bad host", MINIMAL + '[listen]\napi = "a b:1"\n', "listen.api", "not a host name"),
    (
        "port out of range",
        MINIMAL + '[listen]\nmetrics = "0.0.0.0:70000"\n',
        "listen.metrics",
        "port must be",
    ),
    (
        "listen addresses clash",
        MINIMAL + '[listen]\npeer = "0.0.0.0:7000"\napi = "0.0.0.0:7000"\n',
        "listen.api",
        "already used by listen.peer",
    ),
    (
        "bad peer address",
        MINIMAL + '[[peers]]\nname = "b"\naddress = "b:1"\n[[peers]]\nname = "c"\naddress = "c:port"\n',
        "peers[1].address",
        "not a number",
    ),
    (
        "duplicate peer",
        MINIMAL + '[[peers]]\nname = "b"\naddress = "b:1"\n[[peers]]\nname = "b"\naddress = "c:2"\n',
        "peers[1].name",
        "duplicate peer name 'b' (also peers[0])",
    ),
    (
        "peer missing address",
        MINIMAL + '[[peers]]\nname = "b"\n',
        "peers[0].address",
        "required key is missing",
    ),
    ("peer port zero", MINIMAL + '[[peers]]\nname = "b"\naddress = "b:0"\n', "peers[0].address", "not 0"),
    (
        "adapter without type",
        MINIMAL + '[[adapters]]\ntype = "mqtt"\n[[adapters]]\nhost = "x"\n',
        "adapters[1].type",
        "required key is missing",
    ),
    (
        "adapter type not a string",
        MINIMAL + "[[adapters]]\ntype = 5\n",
        "adapters[0].type",
        "non-empty string",
    ),
    ("kernels not tables", MINIMAL + 'kernels = ["thermal"]\n', "kernels[0]", "expected a table"),
    (
        "twin scope not ours",
        MINIMAL + '[[twins]]\nmatch = "p-*"\nmodel = "pump"\nscope = "elsewhere"\n',
        "twins[0].scope",
        "not one of this node's scopes",
    ),
    (
        "tls incomplete",
        MINIMAL + '[tls]\nca = "ca.crt"\ncert = "tls.crt"\n',
        "tls.key",
        "required key is missing",
    ),
    (
        "peer client auth off",
        MINIMAL + '[tls]\nca = "ca.crt"\ncert = "tls.crt"\nkey = "k"\nrequire_client_auth = false\n',
        "tls.require_client_auth",
        "cannot be turned off",
    ),
    (
        "downsample not increasing",
        MINIMAL + "[[history.downsample]]\ninterval_s = 60\nretention_s = 999999\n"
        "[[history.downsample]]\ninterval_s = 30\nretention_s = 9999999\n",
        "history.downsample[1].interval_s",
        "must increase",
    ),
    ("bad ntp server", MINIMAL + '[clock]\nntp_server = "ntp:abc"\n', "clock.ntp_server", "not a number"),
    (
        "unknown corruption policy",
        MINIMAL + '[wal]\non_corruption = "ignore"\n',
        "wal.on_corruption",
        "'quarantine'",
    ),
    ("no snapshot kept", MINIMAL + "[wal]\nkeep_snapshots = 0\n", "wal.keep_snapshots", "between 1 and 100"),
    (
        "quarantine too small",
        MINIMAL + "[wal]\nquarantine_max_bytes = 10\n",
        "wal.quarantine_max_bytes",
        "between",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "reason"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_errors_name_the_full_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert reason in error.reason
    assert str(error).startswith(f"{key}: ")


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    error = error_for(tmp_path, 'data_dir = "/d"\n')
    assert isinstance(error, ValueError)


def test_every_unknown_key_is_named(tmp_path: Path) -> None:
    error = error_for(tmp_path, MINIMAL + "[wal]\nfoo = 1\nbar = 2\n")
    assert error.key == "wal.foo"
    assert "also unknown: bar" in error.reason


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "node_id = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == str(path)
    assert "invalid TOML" in info.value.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml", {})


# --- environment overrides --------------------------------------------------------------------------------


def test_env_overrides_are_typed_by_their_field(tmp_path: Path) -> None:
    env = {
        "DRSDTP_NODE_ID": "edge-07",
        "DRSDTP_WAL__FSYNC_INTERVAL_MS": "10",
        "DRSDTP_WAL__ENABLED": "off",
        "DRSDTP_SHUTDOWN_TIMEOUT_S": "2.5",
        "DRSDTP_LISTEN__METRICS": "127.0.0.1:0",
        "DRSDTP_DATA_DIR": "/srv/drsdtp",
        "DRSDTP_SCOPES": "plant-a, line-3",
        "DRSDTP_PEERS": "edge-02=10.0.0.12:7400,edge-03=[fd00::13]:7400",
        "DRSDTP_CLOCK__NTP_SERVER": "ntp.example:1123",
        "PATH": "/usr/bin",  # not ours: ignored
        "DRSDTP_CONFIG": "/etc/drsdtp/drsdtp.toml",  # the CLI's: ignored
    }
    config, sources = load_config_with_overrides(write(tmp_path, MINIMAL), env)
    assert config.node_id == "edge-07"
    assert config.wal.fsync_interval_ms == 10
    assert config.wal.enabled is False
    assert config.shutdown_timeout_s == 2.5
    assert config.listen.metrics == Address("127.0.0.1", 0)
    assert config.data_dir == Path("/srv/drsdtp")
    assert config.scopes == ("plant-a", "line-3")
    assert [(p.name, str(p.address)) for p in config.peers] == [
        ("edge-02", "10.0.0.12:7400"),
        ("edge-03", "[fd00::13]:7400"),
    ]
    assert config.clock.ntp_server == "ntp.example:1123"
    assert sources["wal.fsync_interval_ms"] == "DRSDTP_WAL__FSYNC_INTERVAL_MS"
    assert "config" not in sources


def test_env_override_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[limits]\nmax_batch = 10\n")
    assert load_config(path, {"DRSDTP_LIMITS__MAX_BATCH": "20"}).limits.max_batch == 20
    assert load_config(path, {}).limits.max_batch == 10


def test_empty_env_value_restores_an_optional_default(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[clock]\nntp_server = "pool.ntp.org"\n')
    assert load_config(path, {"DRSDTP_CLOCK__NTP_SERVER": ""}).clock.ntp_server is None


def test_env_can_supply_a_required_key(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'data_dir = "/d"\n'), {"DRSDTP_NODE_ID": "n1"}).node_id == "n1"


def test_env_can_create_a_section(tmp_path: Path) -> None:
    env = {"DRSDTP_TLS__CA": "/t/ca", "DRSDTP_TLS__CERT": "/t/c", "DRSDTP_TLS__KEY": "/t/k"}
    tls = load_config(write(tmp_path, MINIMAL), env).tls
    assert tls is not None
    assert (tls.ca, tls.key, tls.require_client_auth) == (Path("/t/ca"), Path("/t/k"), True)


BAD_ENV: list[tuple[str, dict[str, str], str, str]] = [
    ("unknown variable", {"DRSDTP_NODE_IDD": "x"}, "DRSDTP_NODE_IDD", "did you mean 'node_id'"),
    ("unknown section key", {"DRSDTP_WAL__FSYNC": "1"}, "DRSDTP_WAL__FSYNC", "no 'fsync' in wal"),
    ("a whole section", {"DRSDTP_WAL": "1"}, "DRSDTP_WAL", "is a table"),
    ("below a scalar", {"DRSDTP_NODE_ID__X": "1"}, "DRSDTP_NODE_ID__X", "has no sub-keys"),
    ("bad integer", {"DRSDTP_WAL__FSYNC_BYTES": "1MB"}, "wal.fsync_bytes", "DRSDTP_WAL__FSYNC_BYTES"),
    ("bad boolean", {"DRSDTP_WAL__ENABLED": "maybe"}, "wal.enabled", "expected a boolean"),
    ("bad peer pair", {"DRSDTP_PEERS": "edge-02"}, "peers", "expected name=host:port"),
    ("adapters", {"DRSDTP_ADAPTERS": "mqtt"}, "adapters", "cannot be set from the environment"),
    (
        "range check names the variable",
        {"DRSDTP_LIMITS__MAX_BATCH": "0"},
        "limits.max_batch",
        "DRSDTP_LIMITS__MAX_BATCH",
    ),
    (
        "bad peer address",
        {"DRSDTP_PEERS": "b=nope"},
        "peers[0].address",
        "set by environment variable DRSDTP_PEERS",
    ),
]


@pytest.mark.parametrize(("env", "key", "reason"), [c[1:] for c in BAD_ENV], ids=[c[0] for c in BAD_ENV])
def test_env_errors_name_the_key_or_variable(
    tmp_path: Path, env: dict[str, str], key: str, reason: str
) -> None:
    error = error_for(tmp_path, MINIMAL, env)
    assert error.key == key
    assert reason in error.reason


def test_parse_config_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRSDTP_NODE_ID", "from-env")
    assert parse_config({"node_id": "given", "data_dir": "/d"}).node_id == "given"


def test_parse_config_does_not_mutate_its_input() -> None:
    raw: dict[str, Any] = {"node_id": "a", "data_dir": "/d", "wal": {"enabled": True}}
    parse_config(raw, env={"DRSDTP_WAL__ENABLED": "false"})
    assert raw["wal"] == {"enabled": True}


# --- addresses and files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", Address("127.0.0.1", 80)),
        ("[::1]:7400", Address("::1", 7400)),
        ("edge-02.plant.example:7400", Address("edge-02.plant.example", 7400)),
        ("localhost:0", Address("localhost", 0)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, "k") == expected
    assert str(expected) == text


def test_parse_address_default_port_and_bare_ipv6() -> None:
    assert parse_address("pool.ntp.org", "k", default_port=123) == Address("pool.ntp.org", 123)
    assert parse_address("fd00::1", "k", default_port=123) == Address("fd00::1", 123)
    with pytest.raises(ConfigError, match="needs brackets"):
        parse_address("fd00::1:7400", "k")


def test_check_files_names_unreadable_tls_files(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    text = MINIMAL + '[tls]\nca = "ca.crt"\ncert = "tls.crt"\nkey = "tls.key"\n'
    config = load_config(write(tmp_path, text), {})
    assert [e.key for e in check_files(config)] == ["tls.cert", "tls.key"]
    (tmp_path / "tls.crt").write_text("x")
    (tmp_path / "tls.key").write_text("x")
    assert check_files(config) == []


def test_check_files_rejects_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    config = load_config(write(tmp_path, 'node_id = "a"\ndata_dir = "state"\n'), {})
    assert [e.key for e in check_files(config)] == ["data_dir"]


def test_schema_defaults_are_what_the_dataclasses_say() -> None:
    # The example's raw TOML is also a valid NodeConfig input without the file loader.
    raw = tomllib.loads(EXAMPLE.read_text())
    assert isinstance(parse_config(raw), NodeConfig)


def test_the_corruption_policy_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[wal]\non_corruption = "refuse"\nkeep_snapshots = 3\n')
    config = load_config(path, {})
    assert (config.wal.on_corruption, config.wal.keep_snapshots) == ("refuse", 3)
    assert load_config(path, {"DRSDTP_WAL__ON_CORRUPTION": "quarantine"}).wal.on_corruption == "quarantine"
