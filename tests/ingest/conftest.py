from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import MOSQUITTO, DictInterner, Mosquitto, RecordingSink, running


@pytest.fixture
def interner() -> DictInterner:
    return DictInterner()


@pytest.fixture
def sink(interner: DictInterner) -> RecordingSink:
    return RecordingSink(interner)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            f"mosquitto not found at {MOSQUITTO}; the CI setup script installs it (apt-get install mosquitto)"
        )
    with running(Mosquitto(tmp_path)) as b:
        yield b
