"""The receive throttle's arithmetic, on a fake clock."""

from __future__ import annotations

import pytest

from drsdtp.gossip.throttle import ReceiveThrottle


def test_a_burst_passes_then_reading_waits_for_the_rate() -> None:
    now = [0.0]
    throttle = ReceiveThrottle(1000.0, 2000.0, clock=lambda: now[0])
    assert throttle.charge(1500) == 0.0  # within the burst
    assert throttle.charge(1000) == pytest.approx(0.5)  # 500 bytes of debt at 1000 B/s
    now[0] += 0.5
    assert throttle.charge(0) == 0.0  # paid off
    now[0] += 10.0
    assert throttle.charge(2000) == 0.0  # refilled, but only up to the burst
    assert throttle.charge(1) == pytest.approx(0.001)


def test_a_message_larger_than_the_burst_is_read_then_paid_for() -> None:
    now = [0.0]
    throttle = ReceiveThrottle(100.0, 100.0, clock=lambda: now[0])
    assert throttle.charge(1100) == pytest.approx(10.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 5.0)])
def test_rate_and_burst_must_be_positive(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        ReceiveThrottle(rate, burst)
