"""Deploy windows, freezes and scheduled deploys: the pure policy (is this time allowed, when is the next
allowed time, what to do with a deploy that fell due while the bot was down), the APScheduler 3.x wiring
that fires stored schedules on the bot's Clock, and the traffic data for choosing windows."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bot.domain import mrkdwn
from bot.domain.durations import duration

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


def _occurrences(
    windows: Iterable[Window], lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime, Window]]:
    """Every occurrence overlapping [lo, hi], sorted by start (UTC)."""
    found: list[tuple[datetime, datetime, Window]] = []
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


def active_freeze(freezes: Iterable[Freeze], env: str, at: datetime) -> Freeze | None:
    """The freeze on `env` at `at` (the one ending last when several overlap), or None."""
    at = _aware(at, "at")
    active = [f for f in freezes if f.applies_to(env) and f.active(at)]
    return max(active, key=lambda f: f.end) if active else None


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
                True, now, f"was due {duration(late)} ago; still inside an allowed window: running now"
            )
        if late <= grace_seconds:
            return Decision(
                True,
                now,
                f"was due {duration(late)} ago, within the {duration(grace_seconds)} grace: running now",
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


Callback = Callable[[str], Awaitable[None]]
MissedCallback = Callable[[str, float], Awaitable[None]]
