"""bot.domain.durations.duration: the one way the bot writes a span of time."""

from __future__ import annotations

import pytest

from bot.domain.durations import duration


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0s"),
        (29.6, "30s"),
        (60, "60s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m05s"),
        (600, "10m"),
        (7199, "119m59s"),
        (7200, "2h00m"),
        (10_800 + 65, "3h01m"),
        (-5, "0s"),
    ],
)
def test_durations_read_as_people_write_them(seconds: float, words: str) -> None:
    assert duration(seconds) == words
