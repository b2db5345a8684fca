from __future__ import annotations

import pytest

from .sim import build_firmware


@pytest.fixture(scope="session", autouse=True)
def firmware() -> None:
    """Builds the firmware and the simavr harness once (make -C firmware): the tests run the real .elf."""
    build_firmware()
