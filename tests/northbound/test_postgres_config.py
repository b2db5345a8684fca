"""The [postgres] table: defaults, and the keys it depends on."""

from __future__ import annotations

import pathlib
import tomllib

import pytest

from drsdtp.config import parse_config
from drsdtp.errors import ConfigError

BASE = 'node_id = "n1"\ndata_dir = "/tmp/x"\n'


def test_a_sink_takes_its_defaults(tmp_path: pathlib.Path) -> None:
    config = parse_config(
        tomllib.loads(BASE + '[postgres]\ndsn = "postgresql://u@h/db"\n'), base_dir=tmp_path
    )
    assert config.postgres is not None
    assert (config.postgres.schema, config.postgres.drop_policy) == ("public", "drop_oldest")


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("[wal]\nenabled = false\n", "postgres", "wal.enabled"),
        ("[history]\nenabled = false\n", "postgres", "history.enabled"),
        ('drop_policy = "drop_all"\n', "postgres.drop_policy", "drop_oldest"),
        ("outbox_max_bytes = 10\n", "postgres.outbox_max_bytes", ""),
    ],
)
def test_a_bad_sink_config_names_the_key(tmp_path: pathlib.Path, extra: str, key: str, reason: str) -> None:
    table = '[postgres]\ndsn = "postgresql://u@h/db"\n'
    text = BASE + (extra + table if extra.startswith("[") else table + extra)
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text), base_dir=tmp_path)
    assert err.value.key == key
    assert reason in err.value.reason
