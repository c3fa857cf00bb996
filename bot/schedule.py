"""Deploy windows, freezes and scheduled deploys: the pure policy (is this time allowed, when is the next
allowed time, what to do with a deploy that fell due while the bot was down), the APScheduler 3.x wiring
that fires stored schedules on the bot's Clock, and the traffic data for choosing windows."""

from __future__ import annotations

import asyncio
import difflib
import functools
import itertools
import logging
import math
import re
import time as _time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import mrkdwn
from bot.clock import Clock
from bot.configfile import ConfigError, _show, _Table

if TYPE_CHECKING:  # annotations only: the ports import settings, which import this module
    from bot.app.ports import Metrics, MetricScope

log = logging.getLogger(__name__)

WINDOW_SEARCH = timedelta(days=14)  # next_window_start looks this far ahead
ALLOWED_SEARCH = timedelta(days=30)  # next_allowed looks this far ahead (freezes may push past a window)
ALL_ENVIRONMENTS = "*"  # a freeze with env = "*" freezes every environment

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_ALIASES = {
    "daily": frozenset(range(7)),
    "everyday": frozenset(range(7)),
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
    "weekend": frozenset({5, 6}),
}
_DAYS_EXPECTED = 'day names like ["mon", "tue"], a range like "mon-thu", or "weekdays", "weekends", "daily"'
_WHEN_EXAMPLES = (
    '"2026-12-01 02:00 Europe/Berlin", "2026-12-01T02:00Z", "tomorrow 02:00", "02:00 UTC" or "+2h"'
)


# ------------------------------------------------------------------------------------------- time zones


@functools.cache
def _zone_names() -> dict[str, str]:
    """lower-case name -> the IANA name, so "europe/berlin" is found and typos get a suggestion."""
    return {name.lower(): name for name in available_timezones()}


def zone(name: str) -> ZoneInfo:
    """The time zone `name` (IANA, case-insensitive; "Z" is UTC) or ValueError with the nearest names."""
    text = name.strip()
    if text.upper() in ("Z", "UTC"):
        return ZoneInfo("UTC")
    canonical = _zone_names().get(text.lower())
    if canonical is not None:
        try:
            return ZoneInfo(canonical)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    near = difflib.get_close_matches(text.lower(), list(_zone_names()), n=1, cutoff=0.6)
    hint = (
        f' (did you mean "{_zone_names()[near[0]]}"?)' if near else ' (use an IANA name like "Europe/Berlin")'
    )
    raise ValueError(f'unknown time zone "{text}"{hint}')


def format_when(at: datetime, tz: ZoneInfo | str = "UTC") -> str:
    """'Tue 1 Dec 02:00 CET': how a time is shown to people (the zone's abbreviation, its name when it
    has none, like "+03")."""
    z = zone(tz) if isinstance(tz, str) else tz
    local = at.astimezone(z)
    abbreviation = local.tzname() or ""
    name = abbreviation if abbreviation[:1].isalpha() else z.key
    return f"{local:%a} {local.day} {local:%b %H:%M} {name}"


def _aware(at: datetime, name: str = "time") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC)


# ---------------------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """Deploys allowed on `days` (Monday=0) from `start` to `end`, wall time in `tz`.

    An end at or before the start crosses midnight: 22:00-02:00 belongs to the day it starts, and
    start == end is a whole day (00:00-24:00). Occurrences are computed on local wall times with zoneinfo,
    so a window keeps its local hours across DST (on a spring-forward day a start inside the gap begins
    at the first valid instant; on a fall-back day an ambiguous start is the first one)."""

    days: frozenset[int]
    start: time
    end: time
    tz: ZoneInfo

    def __post_init__(self) -> None:
        days = frozenset(self.days)
        if not days or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
            raise ValueError(f"days must be weekday numbers 0..6 (Monday=0), got {sorted(self.days)!r}")
        object.__setattr__(self, "days", days)

    def describe(self) -> str:
        """'Mon-Thu 02:00-05:00 Europe/Berlin'."""
        return f"{describe_days(self.days)} {self.hours()} {self.tz.key}"

    def hours(self) -> str:
        end = "24:00" if self.end == time(0) else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"

    def occurrences(self, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
        """(start, end) in UTC of each occurrence starting on a local date in first..last."""
        day = first
        while day <= last:
            if day.weekday() in self.days:
                begin = datetime.combine(day, self.start, tzinfo=self.tz)
                end_day = day if self.end > self.start else day + timedelta(days=1)
                end = datetime.combine(end_day, self.end, tzinfo=self.tz)
                # Both ends are converted to UTC before any comparison: aware datetimes sharing one
                # tzinfo compare by wall time, which is wrong across a DST change.
                yield begin.astimezone(UTC), end.astimezone(UTC)
            day += timedelta(days=1)


def describe_days(days: Iterable[int]) -> str:
    """{0,1,2,3} -> 'Mon-Thu'; all seven -> 'daily'; {0,2,4} -> 'Mon,Wed,Fri'; {4,5,6,0} -> 'Fri-Mon'."""
    chosen = sorted(set(days))
    if len(chosen) == 7:
        return "daily"
    # Start the walk just after a day that is not chosen, so a run across Sunday stays one run.
    first = next(d for d in range(7) if (d - 1) % 7 not in chosen and d in chosen)
    runs: list[list[int]] = []
    for d in ((first + i) % 7 for i in range(7)):
        if d not in chosen:
            continue
        if runs and (runs[-1][-1] + 1) % 7 == d:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts = []
    for run in runs:
        a, b = DAY_NAMES[run[0]].title(), DAY_NAMES[run[-1]].title()
        parts.append(a if len(run) == 1 else f"{a}-{b}" if len(run) > 2 else f"{a},{b}")
    return ",".join(parts)


def _day(word: str) -> int | None:
    w = word.strip().lower()
    if w in DAY_NAMES:
        return DAY_NAMES.index(w)
    if w in _FULL_DAY_NAMES:
        return _FULL_DAY_NAMES.index(w)
    return None


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


def _occurrences(
    windows: Iterable[Window], lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime, Window]]:
    """Every occurrence overlapping [lo, hi], sorted by start (UTC)."""
    found = []
    for w in windows:
        first = lo.astimezone(w.tz).date() - timedelta(days=1)
        last = hi.astimezone(w.tz).date() + timedelta(days=1)
        found.extend((s, e, w) for s, e in w.occurrences(first, last) if e > lo and s <= hi)
    return sorted(found, key=lambda o: (o[0], o[1]))


def _spans(windows: Iterable[Window], lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """Occurrences overlapping [lo, hi], overlapping or touching ones merged (Mon 22-02 + Tue 02-05)."""
    merged: list[list[datetime]] = []
    for s, e, _ in _occurrences(windows, lo, hi):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def in_window(windows: Collection[Window], at: datetime) -> bool:
    """Whether `at` is inside a window (start inclusive, end exclusive). No windows: always allowed."""
    if not windows:
        return True
    return window_at(windows, at) is not None


def window_at(windows: Collection[Window], at: datetime) -> tuple[datetime, datetime] | None:
    """The (start, end) in UTC of the window `at` is in (touching windows merged), or None."""
    at = _aware(at, "at")
    # A week either side, so a chain of touching windows (Mon 22:00-24:00, Tue 00:00-03:00) is one span.
    spans = _spans(windows, at - timedelta(days=7), at + timedelta(days=7))
    return next(((s, e) for s, e in spans if s <= at < e), None)


def next_window_start(windows: Collection[Window], after: datetime) -> datetime | None:
    """`after` itself when it is inside a window (or nothing is configured), else the next window's start
    (UTC), looking WINDOW_SEARCH ahead; None when no window opens in that time."""
    after = _aware(after, "after")
    if not windows:
        return after
    for s, e in _spans(windows, after, after + WINDOW_SEARCH):
        if s <= after < e:
            return after
        if s > after:
            return s
    return None


def _display_zone(windows: Collection[Window], at: datetime | None = None) -> ZoneInfo:
    """The zone people think of these windows in: the one of the window holding `at`, else the first."""
    if at is not None:
        for s, e, w in _occurrences(windows, at, at):
            if s <= at < e:
                return w.tz
    return next(iter(windows)).tz if windows else ZoneInfo("UTC")


def describe_windows(windows: Collection[Window]) -> str:
    return "; ".join(w.describe() for w in windows) if windows else "none (deploys allowed at any time)"


# ---------------------------------------------------------------------------------------------- freezes


@dataclass(frozen=True)
class Freeze:
    """No deploys to `env` ("*": every environment) from `start` until `end` (exclusive), UTC."""

    env: str
    start: datetime
    end: datetime
    reason: str
    created_by: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _aware(self.start, "freeze start"))
        object.__setattr__(self, "end", _aware(self.end, "freeze end"))
        if self.end <= self.start:
            raise ValueError(f"a freeze must end after it starts ({self.start} .. {self.end})")

    def applies_to(self, env: str) -> bool:
        return self.env in (env, ALL_ENVIRONMENTS)

    def active(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def describe(self) -> str:
        """'production frozen until Mon 5 Jan 09:00 UTC: end-of-year freeze' (mrkdwn: the reason escaped)."""
        who = "every environment" if self.env == ALL_ENVIRONMENTS else self.env
        return f"{who} frozen until {format_when(self.end)}: {mrkdwn.text(self.reason)}"


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


def active_freeze(freezes: Iterable[Freeze], env: str, at: datetime) -> Freeze | None:
    """The freeze on `env` at `at` (the one ending last when several overlap), or None."""
    at = _aware(at, "at")
    active = [f for f in freezes if f.applies_to(env) and f.active(at)]
    return max(active, key=lambda f: f.end) if active else None


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
    lowered = cleaned.lower()

    m = _RELATIVE.match(lowered)
    if m:
        seconds = 0
        for amount, unit in re.findall(r"(\d+)\s*([a-z]+)", m.group(1)):
            if unit not in _UNITS:
                raise _bad(cleaned, f'unknown unit "{unit}" (use m, h or d)')
            seconds += int(amount) * _UNITS[unit]
        return now + timedelta(seconds=seconds)

    words = cleaned.split(" ")
    tz = zone(default_tz)
    explicit_tz = False
    last = words[-1]
    if len(words) > 1 and not _CLOCK.match(last) and not _DATE.match(last):
        try:
            tz = zone(last)
        except ValueError as exc:
            if "/" in last:  # meant as a zone name: say which one is close
                raise _bad(cleaned, str(exc)) from None
            raise _bad(cleaned, f'"{last}" is neither a time of day nor a time zone') from None
        explicit_tz = True
        words = words[:-1]

    at: datetime | None = None
    if len(words) == 1 and "t" in words[0].lower() and words[0][:4].isdigit():
        try:
            parsed = datetime.fromisoformat(words[0].upper())
        except ValueError:
            raise _bad(cleaned, f'"{words[0]}" is not an ISO 8601 date-time') from None
        if parsed.tzinfo is not None and explicit_tz:
            raise _bad(cleaned, "it gives both a UTC offset and a time zone")
        if parsed.tzinfo is None:
            at = _local(parsed.date(), parsed.time(), tz, cleaned)
        else:
            at = parsed.astimezone(UTC)
    else:
        day_word, clock_word = (words[0], words[1]) if len(words) == 2 else (None, words[0])
        if len(words) > 2:
            raise _bad(cleaned, "too many words")
        if day_word is None and _DATE.match(clock_word):
            day_word, clock_word = clock_word, "00:00"
        cm = _CLOCK.match(clock_word)
        if not cm:
            raise _bad(cleaned, f'"{clock_word}" is not a time of day (HH:MM)')
        hour, minute, second = int(cm.group(1)), int(cm.group(2)), int(cm.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise _bad(cleaned, f'"{clock_word}" is not a time of day (00:00..23:59)')
        clock = time(hour, minute, second)
        today = now.astimezone(tz).date()
        if day_word is None:
            at = _local(today, clock, tz, cleaned)
            if at <= now:
                at = _local(today + timedelta(days=1), clock, tz, cleaned)
        elif day_word.lower() in ("today", "tomorrow"):
            day = today + timedelta(days=1 if day_word.lower() == "tomorrow" else 0)
            at = _local(day, clock, tz, cleaned)
        elif _DATE.match(day_word):
            try:
                day = date.fromisoformat(day_word)
            except ValueError:
                raise _bad(cleaned, f'"{day_word}" is not a date') from None
            at = _local(day, clock, tz, cleaned)
        else:
            raise _bad(cleaned, f'"{day_word}" is not a date (YYYY-MM-DD), "today" or "tomorrow"')
    if at < now:
        raise ValueError(
            f'"{cleaned}" is {format_when(at, tz)}, which is in the past (now: {format_when(now, tz)})'
        )
    return at


# ---------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Decision:
    """What the policy says about a deploy time.

    decide(): ok means the requested time is allowed and run_at is that time; not ok means refused, and
    run_at is the next allowed time (None when there is none within ALLOWED_SEARCH) for `--window` or the
    message. overdue(): ok means run at run_at as planned (now, or the due time); not ok means the deploy
    was moved to run_at (None: nowhere to move it). `freeze` is set when a freeze is what blocks."""

    ok: bool
    run_at: datetime | None
    reason: str
    freeze: Freeze | None = None


def next_allowed(
    windows: Collection[Window], freezes: Iterable[Freeze], env: str, after: datetime
) -> datetime | None:
    """The first time at or after `after` inside a window and outside every freeze on env (UTC), looking
    ALLOWED_SEARCH ahead; None when there is no such time."""
    after = _aware(after, "after")
    freezes = [f for f in freezes if f.applies_to(env)]
    limit = after + ALLOWED_SEARCH
    t = after
    while t <= limit:
        frozen = active_freeze(freezes, env, t)
        if frozen is not None:
            t = frozen.end
            continue
        start = next_window_start(windows, t)
        if start is None:
            return None
        if start == t:
            return t
        t = start
    return None


def _next_text(windows: Collection[Window], at: datetime | None) -> str:
    if at is None:
        return f"no allowed time in the next {ALLOWED_SEARCH.days} days"
    return f"the next allowed time is {format_when(at, _display_zone(windows, at))}"


def decide(
    at: datetime, windows: Collection[Window], freezes: Iterable[Freeze], env: str, *, now: datetime
) -> Decision:
    """Whether a deploy to `env` may run at `at` (now for an immediate deploy, the `--at` time): a freeze
    beats a window; outside every window it is refused. When refused, run_at is the next allowed time
    (what `--window` schedules) and the reason names it."""
    at, now = _aware(at, "at"), _aware(now, "now")
    freezes = list(freezes)
    frozen = active_freeze(freezes, env, at)
    if frozen is not None:
        nxt = next_allowed(windows, freezes, env, at)
        return Decision(False, nxt, f"{frozen.describe()}; {_next_text(windows, nxt)}", frozen)
    if not windows:
        return Decision(True, at, f"no deploy windows are configured for {env}")
    span = window_at(windows, at)
    tz = _display_zone(windows, at)
    if span is not None:
        return Decision(True, at, f"inside a deploy window for {env} (until {format_when(span[1], tz)})")
    nxt = next_allowed(windows, freezes, env, at)
    when = "now" if abs((at - now).total_seconds()) < 60 else format_when(at, tz)
    return Decision(
        False,
        nxt,
        f"{when} is outside the deploy windows for {env} ({describe_windows(windows)}); "
        f"{_next_text(windows, nxt)}",
    )


def overdue(
    due: datetime,
    windows: Collection[Window],
    freezes: Iterable[Freeze],
    env: str,
    *,
    now: datetime,
    grace_seconds: float,
) -> Decision:
    """What to do at start (or on a missed job) with a deploy that was due at `due`: run now when it is
    not late, when `now` is allowed (inside a window, no freeze), or when it is at most grace_seconds late
    and not frozen; otherwise move it to the next allowed time, never running it outside its window.
    (A deploy scheduled with a window override should pass windows=() so it is not moved.)"""
    due, now = _aware(due, "due"), _aware(now, "now")
    freezes = list(freezes)
    if due >= now:
        return Decision(True, due, f"due at {format_when(due, _display_zone(windows, due))}")
    late = (now - due).total_seconds()
    frozen = active_freeze(freezes, env, now)
    if frozen is None:
        if in_window(windows, now):
            return Decision(
                True, now, f"was due {_ago(late)} ago; still inside an allowed window: running now"
            )
        if late <= grace_seconds:
            return Decision(
                True, now, f"was due {_ago(late)} ago, within the {_ago(grace_seconds)} grace: running now"
            )
    nxt = next_allowed(windows, freezes, env, now)
    missed = _occurrences(windows, due, due)
    occurrence = next(((s, e, w) for s, e, w in missed if s <= due < e), None)
    if occurrence is not None:
        s, e, w = occurrence
        local_s, local_e = s.astimezone(w.tz), e.astimezone(w.tz)
        what = f"the window {local_s:%a %d %b %H:%M}-{local_e:%H:%M} {w.tz.key} opened"
    else:
        what = f"the deploy was due ({format_when(due, _display_zone(windows, due))})"
    where = (
        f"moved to {format_when(nxt, _display_zone(windows, nxt))}"
        if nxt is not None
        else f"not rescheduled: no allowed time in the next {ALLOWED_SEARCH.days} days"
    )
    why = f"; {frozen.describe()}" if frozen is not None else ""
    return Decision(False, nxt, f"the bot was down when {what}{why}; {where}", frozen)


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# ------------------------------------------------------------------------------------------- scheduler

Callback = Callable[[str], Awaitable[None]]
MissedCallback = Callable[[str, float], Awaitable[None]]
_SCHEDULERS: weakref.WeakValueDictionary[str, Scheduler] = weakref.WeakValueDictionary()
_IDS = itertools.count(1)


async def _fire(scheduler_id: str, key: str, token: int) -> None:
    """The one APScheduler job function (module-level, so a job names it by reference): it hands the key
    to the Scheduler that added the job."""
    scheduler = _SCHEDULERS.get(scheduler_id)
    if scheduler is None:
        log.debug("schedule %s fired after its scheduler shut down: ignored", key)
        return
    scheduler._dispatch(key, token)


class Scheduler:
    """Fires `callback(key)` once at each key's due time (virtual epoch seconds of `clock`).

    The store is the source of truth; this only holds in-memory APScheduler date jobs, rebuilt by the
    caller at start (apply overdue() to past due times first). Job ids are the keys, so scheduling a key
    again replaces its job. Because a ScaledClock runs `speed` times faster than the wall, a due time
    becomes the wall-clock run date `time.time() + (due - clock.now()) / clock.speed`; a due time already
    past runs at once. `misfire_grace_seconds` (clock seconds) is converted the same way, to whole wall
    seconds, at least 1: APScheduler's default of 1 s would silently drop a job delayed by a busy loop;
    such a drop is logged and handed to `on_missed(key, due)`. coalesce=True, max_instances=1. The
    callback runs in its own task (a long callback never blocks other jobs, and may reschedule its own
    key); its exceptions are logged and never stop the scheduler."""

    def __init__(
        self,
        clock: Clock,
        callback: Callback,
        misfire_grace_seconds: float = 300.0,
        on_missed: MissedCallback | None = None,
    ):
        if misfire_grace_seconds <= 0:
            raise ValueError(f"misfire_grace_seconds must be > 0, got {misfire_grace_seconds}")
        self.clock, self.callback, self.on_missed = clock, callback, on_missed
        self.misfire_grace_seconds = float(misfire_grace_seconds)
        self.misfire_grace_wall = max(1, math.ceil(self.misfire_grace_seconds / clock.speed))
        self.id = f"scheduler-{next(_IDS)}"
        self._tokens = itertools.count(1)
        self._jobs: dict[str, tuple[int, float]] = {}  # key -> (token of its current job, due epoch)
        self._tasks: set[asyncio.Task] = set()
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "misfire_grace_time": self.misfire_grace_wall,
                "coalesce": True,
                "max_instances": 1,
            },
        )
        self._aps.add_listener(self._missed, EVENT_JOB_MISSED)
        _SCHEDULERS[self.id] = self

    @property
    def running(self) -> bool:
        return self._aps.running

    def start(self) -> None:
        """Start firing; call from inside the running event loop."""
        _SCHEDULERS[self.id] = self
        self._aps.start()

    def shutdown(self) -> None:
        """Stop firing, forget every job, cancel callbacks still running. Jobs stay in the store."""
        _SCHEDULERS.pop(self.id, None)
        self._jobs.clear()
        if self._aps.running:
            self._aps.remove_all_jobs()
            self._aps.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()

    def wall_time(self, due_epoch: float) -> float:
        """The wall-clock epoch at which the clock reads `due_epoch`."""
        return _time.time() + (due_epoch - self.clock.now()) / self.clock.speed

    def schedule(self, key: str, due_epoch: float) -> None:
        """Fire callback(key) when the clock reads due_epoch, replacing the key's job if it has one."""
        token = next(self._tokens)
        self._jobs[key] = (token, float(due_epoch))
        run_date = datetime.fromtimestamp(max(self.wall_time(due_epoch), _time.time()), UTC)
        self._aps.add_job(
            _fire,
            "date",
            run_date=run_date,
            args=(self.id, key, token),
            id=key,
            name=f"deploybot {key}",
            replace_existing=True,
            misfire_grace_time=self.misfire_grace_wall,
            coalesce=True,
            max_instances=1,
        )

    def cancel(self, key: str) -> bool:
        """Forget the key's job; True when there was one."""
        existed = self._jobs.pop(key, None) is not None
        try:
            self._aps.remove_job(key)
        except JobLookupError:
            pass
        return existed

    def jobs(self) -> dict[str, float]:
        """key -> due epoch (clock seconds) of every job not yet fired."""
        return {key: due for key, (_, due) in self._jobs.items()}

    def _dispatch(self, key: str, token: int) -> None:
        current = self._jobs.get(key)
        if current is None or current[0] != token:
            log.debug("schedule %s fired for a replaced or cancelled job: ignored", key)
            return
        del self._jobs[key]
        self._spawn(self._run(key), f"schedule {key}")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: str) -> None:
        try:
            await self.callback(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled job %s failed; the scheduler goes on", key)

    def _missed(self, event: JobExecutionEvent) -> None:
        key = event.job_id
        if self._aps.get_job(key) is not None:
            return  # a newer job with this key is waiting
        current = self._jobs.pop(key, None)
        if current is None:
            return
        due = current[1]
        log.warning(
            "scheduled job %s (due %s) was not run: the event loop reached it more than %s s (wall) late",
            key,
            datetime.fromtimestamp(due, UTC).isoformat(),
            self.misfire_grace_wall,
        )
        if self.on_missed is not None:
            self._spawn(self._run_missed(key, due), f"missed {key}")

    async def _run_missed(self, key: str, due: float) -> None:
        try:
            await self.on_missed(key, due)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_missed for scheduled job %s failed", key)


# --------------------------------------------------------------------------------------------- traffic


async def lowest_traffic_hours(
    metrics: Metrics,
    account: str | None,
    scopes: list[MetricScope],
    *,
    now: datetime,
    tz: str,
    days: int = 14,
    top: int = 3,
) -> list[tuple[int, float]]:
    """The `top` quietest hours of the day in `tz` as (hour, average requests in that hour), quietest
    first, from requests per hour over the last `days` whole days summed across `scopes` (e.g. both
    slots): ONE metrics request (on CloudWatch one GetMetricData call, NextToken pages followed).

    An ALB publishes no RequestCount datapoint for an hour without requests, so from the first hour with
    data on, a missing hour counts as zero; each hour of the day is averaged over the times it occurred
    (a DST day has one hour twice and one not at all). No data at all: []."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not scopes:
        return []
    z = zone(tz)
    end = _aware(now, "now").replace(minute=0, second=0, microsecond=0)  # whole hours, aligned to the hour
    start = end - timedelta(days=days)
    per_hour = await metrics.requests_per_hour(account, scopes, start, end)
    if not per_hour:
        return []
    totals, seen = [0.0] * 24, [0] * 24
    bucket = max(min(per_hour), start)
    while bucket < end:
        hour = bucket.astimezone(z).hour
        totals[hour] += per_hour.get(bucket, 0.0)
        seen[hour] += 1
        bucket += timedelta(hours=1)
    averages = [(h, totals[h] / seen[h]) for h in range(24) if seen[h]]
    return sorted(averages, key=lambda hv: (hv[1], hv[0]))[:top]


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def suggest_text(windows: Collection[Window], hours: list[tuple[int, float]], tz: str, days: int = 14) -> str:
    """For Slack: the configured windows and the quietest hours, e.g. "Configured windows: Mon-Thu
    02:00-05:00 Europe/Berlin\nLowest traffic (last 14 days, Europe/Berlin): 03:00 (12 req/h), ..."."""
    lines = [f"Configured windows: {describe_windows(windows)}"]
    if hours:
        quiet = ", ".join(f"{h:02d}:00 ({_rate(v)} req/h)" for h, v in hours)
        lines.append(f"Lowest traffic (last {days} days, {zone(tz).key}): {quiet}")
    else:
        lines.append(f"Lowest traffic (last {days} days): no traffic data (CloudWatch RequestCount is empty)")
    return "\n".join(lines)
