"""A time given by a person (`--at`, `freeze ... until`): absolute, relative, a weekday, in a named zone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.domain.windows import _aware, format_when, zone

_WHEN_EXAMPLES = (
    '"2026-12-01 02:00 Europe/Berlin", "2026-12-01T02:00Z", "tomorrow 02:00", "02:00 UTC" or "+2h"'
)

# ------------------------------------------------------------------------------------------ --at parsing

_RELATIVE = re.compile(r"^(?:\+\s*|in\s+)((?:\d+\s*[a-z]+\s*)+)$")
_UNITS = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def _bad(text: str, problem: str) -> ValueError:
    return ValueError(f'cannot read "{text}" as a time: {problem}; write e.g. {_WHEN_EXAMPLES}')


def _local(day: date, clock: time, tz: ZoneInfo, text: str) -> datetime:
    """A wall time in tz, refusing one that the clocks skip (DST gap)."""
    at = datetime.combine(day, clock, tzinfo=tz)
    if at.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != at.replace(tzinfo=None):
        raise ValueError(
            f'"{text}": {clock:%H:%M} does not exist in {tz.key} on {day.isoformat()} '
            f"(the clocks go forward then); pick a time after the change"
        )
    return at.astimezone(UTC)


def parse_when(text: str, *, now: datetime, default_tz: str = "UTC") -> datetime:
    """A time given by a person (`--at`, `freeze ... until`) as an aware UTC datetime.

    Accepts "2026-12-01 02:00 Europe/Berlin", "2026-12-01T02:00Z", "2026-12-01T02:00:00+01:00",
    "2026-12-01" (midnight), "tomorrow 02:00 [TZ]", "today 02:00 [TZ]", "02:00 [TZ]" (the next 02:00),
    "+2h", "+30m", "+1h30m", "in 2h", "in 90 minutes". A zone-less time is in `default_tz`. Raises
    ValueError saying what was wrong (with examples), or that the time is in the past."""
    now = _aware(now, "now")
    original = " ".join(text.split())
    cleaned = original.strip("\"'“”‘’ ")
    if not cleaned:
        raise _bad(original, "it is empty")
    m = _RELATIVE.match(cleaned.lower())
    if m:
        return now + timedelta(seconds=_relative_seconds(m.group(1), cleaned))
    words, tz, explicit_tz = _split_zone(cleaned.split(" "), zone(default_tz), cleaned)
    if len(words) == 1 and "t" in words[0].lower() and words[0][:4].isdigit():
        at = _iso_instant(words[0], tz, explicit_tz, cleaned)
    else:
        at = _day_and_clock(words, tz, now, cleaned)
    if at < now:
        raise ValueError(
            f'"{cleaned}" is {format_when(at, tz)}, which is in the past (now: {format_when(now, tz)})'
        )
    return at


def _relative_seconds(spec: str, cleaned: str) -> int:
    """ "1h30m" -> 5400."""
    seconds = 0
    for amount, unit in re.findall(r"(\d+)\s*([a-z]+)", spec):
        if unit not in _UNITS:
            raise _bad(cleaned, f'unknown unit "{unit}" (use m, h or d)')
        seconds += int(amount) * _UNITS[unit]
    return seconds


def _split_zone(words: list[str], tz: ZoneInfo, cleaned: str) -> tuple[list[str], ZoneInfo, bool]:
    """The words without a trailing time zone, the zone (`tz` when none is given), and whether one was."""
    last = words[-1]
    if len(words) == 1 or _CLOCK.match(last) or _DATE.match(last):
        return words, tz, False
    try:
        return words[:-1], zone(last), True
    except ValueError as exc:
        if "/" in last:  # meant as a zone name: say which one is close
            raise _bad(cleaned, str(exc)) from None
        raise _bad(cleaned, f'"{last}" is neither a time of day nor a time zone') from None


def _iso_instant(word: str, tz: ZoneInfo, explicit_tz: bool, cleaned: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(word.upper())
    except ValueError:
        raise _bad(cleaned, f'"{word}" is not an ISO 8601 date-time') from None
    if parsed.tzinfo is not None and explicit_tz:
        raise _bad(cleaned, "it gives both a UTC offset and a time zone")
    if parsed.tzinfo is None:
        return _local(parsed.date(), parsed.time(), tz, cleaned)
    return parsed.astimezone(UTC)


def _clock_of(word: str, cleaned: str) -> time:
    cm = _CLOCK.match(word)
    if not cm:
        raise _bad(cleaned, f'"{word}" is not a time of day (HH:MM)')
    hour, minute, second = int(cm.group(1)), int(cm.group(2)), int(cm.group(3) or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise _bad(cleaned, f'"{word}" is not a time of day (00:00..23:59)')
    return time(hour, minute, second)


def _day_and_clock(words: list[str], tz: ZoneInfo, now: datetime, cleaned: str) -> datetime:
    """ "[DAY] HH:MM" or a bare date: DAY is today, tomorrow or YYYY-MM-DD; no DAY is the next HH:MM."""
    if len(words) > 2:
        raise _bad(cleaned, "too many words")
    day_word, clock_word = (words[0], words[1]) if len(words) == 2 else (None, words[0])
    if day_word is None and _DATE.match(clock_word):
        day_word, clock_word = clock_word, "00:00"
    clock = _clock_of(clock_word, cleaned)
    today = now.astimezone(tz).date()
    if day_word is None:
        at = _local(today, clock, tz, cleaned)
        return at if at > now else _local(today + timedelta(days=1), clock, tz, cleaned)
    if day_word.lower() in ("today", "tomorrow"):
        return _local(today + timedelta(days=1 if day_word.lower() == "tomorrow" else 0), clock, tz, cleaned)
    if _DATE.match(day_word):
        try:
            day = date.fromisoformat(day_word)
        except ValueError:
            raise _bad(cleaned, f'"{day_word}" is not a date') from None
        return _local(day, clock, tz, cleaned)
    raise _bad(cleaned, f'"{day_word}" is not a date (YYYY-MM-DD), "today" or "tomorrow"')
