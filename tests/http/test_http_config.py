"""``[api.http]``: off by default, an address when set, never the port of another listener."""

from __future__ import annotations

import pytest

from drsdtp.config import Address, parse_config
from drsdtp.errors import ConfigError


def test_off_by_default_and_an_address_when_set() -> None:
    assert parse_config({"node_id": "n", "data_dir": "/tmp/x"}).api.http.listen is None
    config = parse_config(
        {"node_id": "n", "data_dir": "/tmp/x", "api": {"http": {"listen": "127.0.0.1:7402"}}}
    )
    assert config.api.http.listen == Address("127.0.0.1", 7402)


def test_a_clash_with_another_listener_names_both() -> None:
    raw = {
        "node_id": "n",
        "data_dir": "/tmp/x",
        "listen": {"api": "127.0.0.1:7401"},
        "api": {"http": {"listen": "127.0.0.1:7401"}},
    }
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:7401 is already used by listen\.api") as info:
        parse_config(raw)
    assert info.value.key == "api.http.listen"
    with pytest.raises(ConfigError, match=r"api\.http\.colour"):
        parse_config({"node_id": "n", "data_dir": "/tmp/x", "api": {"http": {"colour": "red"}}})
