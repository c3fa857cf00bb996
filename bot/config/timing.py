"""Loading the time sections of the config file — deploy windows and freezes — into domain values, with errors naming the file, the key and the value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from bot.config.tables import ConfigError, _show, _Table
from bot.domain.windows import (
    _DAY_ALIASES,
    _FULL_DAY_NAMES,
    ALL_ENVIRONMENTS,
    DAY_NAMES,
    Freeze,
    Window,
    _day,
    zone,
)

_DAYS_EXPECTED = 'day names like ["mon", "tue"], a range like "mon-thu", or "weekdays", "weekends", "daily"'


def parse_days(spec: str | list) -> frozenset[int]:
    """'mon-thu', 'weekdays', 'daily', 'mon,wed', ['mon', 'fri-sun'] -> weekday numbers; ValueError."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError("no days given")
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a day name")
        for part in item.split(","):
            word = part.strip().lower()
            if word in _DAY_ALIASES:
                days |= _DAY_ALIASES[word]
                continue
            lo, dash, hi = word.partition("-")
            a, b = _day(lo), _day(hi) if dash else _day(lo)
            if a is None or b is None:
                bad = lo if a is None else hi
                known = [*DAY_NAMES, *_FULL_DAY_NAMES, *_DAY_ALIASES]
                near = difflib.get_close_matches(bad.strip(), known, n=1, cutoff=0.5)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                raise ValueError(f'unknown day "{bad.strip()}"{hint}')
            days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_hours(text: str) -> tuple[time, time]:
    """'02:00-05:00' -> (02:00, 05:00); '22:00-02:00' crosses midnight; '00:00-24:00' is a whole day."""
    m = _HOURS.match(text)
    if not m:
        raise ValueError('expected "HH:MM-HH:MM"')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if not (0 <= h1 <= 23 and 0 <= m1 <= 59):
        raise ValueError(f"{h1:02d}:{m1:02d} is not a time of day")
    if not ((0 <= h2 <= 23 and 0 <= m2 <= 59) or (h2, m2) == (24, 0)):
        raise ValueError(f"{h2:02d}:{m2:02d} is not a time of day (24:00 may end a window)")
    start, end = time(h1, m1), time(0) if h2 == 24 else time(h2, m2)
    if start == end and (h2, m2) != (24, 0):
        raise ValueError("start and end are the same; for a whole day write 00:00-24:00")
    return start, end


def parse_windows(raw: Any, path: str, key: str) -> tuple[Window, ...]:
    """Windows from a TOML array of tables (`[[environments.production.windows]]`): `days`, `hours`,
    `timezone` (IANA, default UTC). Errors are ConfigErrors naming path, `key[i].field`, the value."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, key, f"expected a list of tables ([[{key}]]), got {_show(raw)}")
    windows = []
    for i, item in enumerate(raw):
        t = _Table(path, f"{key}[{i}]", item)
        days_value = t.get("days", (list, str), expect=f"a list of days ({_DAYS_EXPECTED})")
        try:
            days = parse_days(days_value)
        except ValueError as exc:
            raise ConfigError(
                path, t.key("days"), f"{exc} in {_show(days_value)}; expected {_DAYS_EXPECTED}"
            ) from None
        hours_value = t.get("hours", str, expect='a string "HH:MM-HH:MM" like "02:00-05:00"')
        try:
            start, end = parse_hours(hours_value)
        except ValueError as exc:
            raise ConfigError(
                path, t.key("hours"), f'{exc}, got {_show(hours_value)} (e.g. "02:00-05:00")'
            ) from None
        tz_value = t.get("timezone", str, "UTC", expect='an IANA time zone like "Europe/Berlin"')
        try:
            tz = zone(tz_value)
        except ValueError as exc:
            raise ConfigError(path, t.key("timezone"), str(exc)) from None
        t.finish()
        windows.append(Window(days, start, end, tz))
    return tuple(windows)


def _freeze_time(t: _Table, name: str, tz: ZoneInfo | None) -> datetime:
    expect = 'a date-time with a UTC offset like 2026-12-20T00:00:00+01:00 (or set timezone = "...")'
    value = t.get(name, (str, datetime, date), expect=expect)
    at: datetime
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, date):
        at = datetime.combine(value, time(0))
    else:
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(t.path, t.key(name), f"expected {expect}, got {_show(value)}") from None
    if at.tzinfo is None:
        if tz is None:
            raise ConfigError(
                t.path,
                t.key(name),
                f"{_show(value)} has no UTC offset: write it like "
                f'2026-12-20T00:00:00+01:00 or set timezone = "Europe/Berlin" in this table',
            )
        at = at.replace(tzinfo=tz)
    return at.astimezone(UTC)


def parse_freezes(
    raw: Any, path: str, key: str = "freezes", environments: Collection[str] | None = None
) -> tuple[Freeze, ...]:
    """Freezes from `[[freezes]]` tables: env ("*" for all), start, end (TOML date-times or ISO strings
    with an offset; or local ones with `timezone`), reason. `environments`, when given, checks env."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, key, f"expected a list of tables ([[{key}]]), got {_show(raw)}")
    freezes = []
    for i, item in enumerate(raw):
        t = _Table(path, f"{key}[{i}]", item)
        env = t.get("env", str, check=lambda v: bool(v.strip()), expect='an environment name, or "*" for all')
        if environments is not None and env != ALL_ENVIRONMENTS and env not in environments:
            near = difflib.get_close_matches(env, list(environments), n=1, cutoff=0.5)
            hint = f' (did you mean "{near[0]}"?)' if near else f" (known: {', '.join(environments)}, or *)"
            raise ConfigError(path, t.key("env"), f"no such environment {env!r}{hint}")
        tz = None
        if "timezone" in t.data:
            tz_value = t.get("timezone", str, expect='an IANA time zone like "Europe/Berlin"')
            try:
                tz = zone(tz_value)
            except ValueError as exc:
                raise ConfigError(path, t.key("timezone"), str(exc)) from None
        start, end = _freeze_time(t, "start", tz), _freeze_time(t, "end", tz)
        if end <= start:
            raise ConfigError(
                path, t.key("end"), f"{_show(t.data['end'])} is not after start {_show(t.data['start'])}"
            )
        reason = t.get("reason", str, check=lambda v: bool(v.strip()), expect="a reason people will read")
        t.finish()
        freezes.append(Freeze(env=env, start=start, end=end, reason=reason.strip()))
    return tuple(freezes)
