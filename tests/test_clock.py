"""The injected clock: a ScaledClock pinned to a start instant and held until begin(), and the spec string
that gives the bot process the same clock as the sandbox that starts it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from bot.__main__ import build_parser, main
from bot.clock import Clock, ScaledClock

START = 1_796_385_600.0  # 2026-12-04T12:00:00Z, far from the wall time a test runs at


def test_a_held_clock_reads_its_start_until_it_begins_then_runs_from_there():
    clock = ScaledClock(60, start=START, held=True)
    assert clock.held and clock.now() == START
    time.sleep(0.05)  # wall time passes while held (a bot booting): the clock does not move
    assert clock.now() == START
    origin = time.time() - 2.0  # as if it had begun two wall seconds ago
    clock.begin(origin)
    assert not clock.held
    assert START + 120 <= clock.now() < START + 120 + 60 * 1.0  # 2 s at 60x, give or take a wall second


def test_the_spec_gives_another_process_the_same_clock():
    held = ScaledClock(60, start=START, held=True)
    assert held.spec() == f"60.0@held@{START!r}"
    twin = ScaledClock.from_spec(held.spec())
    assert isinstance(twin, ScaledClock) and twin.held and twin.now() == START
    twin.begin()
    held.begin(ScaledClock.from_spec(twin.spec()).origin)  # what the sandbox does with the bot's ready line
    assert held.spec() == twin.spec()
    assert abs(held.now() - twin.now()) < 60 * 0.5


def test_older_specs_still_parse():
    assert type(ScaledClock.from_spec("1")) is Clock
    c = ScaledClock.from_spec("10@1764000000.5")
    assert c.speed == 10 and c.origin == 1764000000.5 and c.start == 1764000000.5
    running = ScaledClock.from_spec("60")
    assert abs(running.now() - time.time()) < 60
    pinned = ScaledClock.from_spec(f"60@{time.time()!r}@{START!r}")
    assert START <= pinned.now() < START + 60


@pytest.mark.parametrize("spec", ["fast", "60@soon", "60@held", "60@1@2@3", "0", "-5@held@1"])
def test_a_bad_spec_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="clock spec|speed must be"):
        ScaledClock.from_spec(spec)


def test_deploybot_sandbox_takes_a_clock_start(capsys):
    args = build_parser().parse_args(["sandbox", "--clock-start", "2026-12-04T12:00Z"])
    assert args.clock_start == datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert args.clock_start.timestamp() == START
    zoned = build_parser().parse_args(["sandbox", "--clock-start", "2026-12-04 13:00+01:00"])
    assert zoned.clock_start.timestamp() == START
    assert main(["sandbox", "--clock-start", "friday"]) == 2
    assert "'friday' is not a date and time like 2026-12-04T12:00Z" in capsys.readouterr().err
