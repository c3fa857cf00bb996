"""Windows, freezes, `--at` times and the schedule policy (decide, next_allowed, overdue): pure, on fixed
instants, in named zones across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from bot.config.tables import ConfigError
from bot.config.timing import parse_freezes, parse_windows
from bot.domain.when import parse_when
from bot.domain.windows import (
    Freeze,
    Window,
    active_freeze,
    decide,
    in_window,
    next_allowed,
    next_window_start,
    overdue,
    window_at,
)

BERLIN = ZoneInfo("Europe/Berlin")
PATH = "config/deploybot.toml"
KEY = "environments.production.windows"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def window(days="mon-thu", hours="02:00-05:00", tz="Europe/Berlin") -> Window:
    (w,) = parse_windows([{"days": days, "hours": hours, "timezone": tz}], PATH, KEY)
    return w


NIGHTS = (window(),)  # Mon-Thu 02:00-05:00 Europe/Berlin
# 2026-11-30 is a Monday.
MON = berlin(2026, 11, 30, 0, 0)


# --- parse_windows ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("days", "hours", "tz", "expected_days", "start", "end", "text"),
    [
        (["mon", "tue", "wed", "thu"], "02:00-05:00", "Europe/Berlin", {0, 1, 2, 3}, time(2), time(5),
         "Mon-Thu 02:00-05:00 Europe/Berlin"),
        ("mon-thu", "02:00-05:00", "Europe/Berlin", {0, 1, 2, 3}, time(2), time(5),
         "Mon-Thu 02:00-05:00 Europe/Berlin"),
        ("weekdays", "22:00-02:00", "UTC", {0, 1, 2, 3, 4}, time(22), time(2), "Mon-Fri 22:00-02:00 UTC"),
        ("daily", "00:00-24:00", "UTC", set(range(7)), time(0), time(0), "daily 00:00-24:00 UTC"),
        (["Friday", "sat-mon"], "9:30-11:00", "europe/berlin", {4, 5, 6, 0}, time(9, 30), time(11),
         "Fri-Mon 09:30-11:00 Europe/Berlin"),
        ("mon,wed,fri", "20:00-24:00", "America/New_York", {0, 2, 4}, time(20), time(0),
         "Mon,Wed,Fri 20:00-24:00 America/New_York"),
        ("weekends", "10:00-12:00", "UTC", {5, 6}, time(10), time(12), "Sat,Sun 10:00-12:00 UTC"),
    ],
)  # fmt: skip
def test_parse_windows_reads_days_hours_and_zone(days, hours, tz, expected_days, start, end, text):
    w = window(days, hours, tz)
    assert (w.days, w.start, w.end) == (expected_days, start, end)
    assert w.describe() == text


def test_parse_windows_defaults_to_utc_and_accepts_no_windows():
    (w,) = parse_windows([{"days": "daily", "hours": "01:00-02:00"}], PATH, KEY)
    assert w.tz.key == "UTC"
    assert parse_windows(None, PATH, KEY) == ()
    assert parse_windows([], PATH, KEY) == ()


@pytest.mark.parametrize(
    ("item", "key", "words"),
    [
        ({"days": ["mnday"], "hours": "02:00-05:00"}, f"{KEY}[0].days", ['"mnday"', 'did you mean "monday"', "mon-thu"]),
        ({"days": [], "hours": "02:00-05:00"}, f"{KEY}[0].days", ["no days given", "weekdays"]),
        ({"days": 3, "hours": "02:00-05:00"}, f"{KEY}[0].days", ["got 3", "a list of days"]),
        ({"days": "mon", "hours": "2-5"}, f"{KEY}[0].hours", ["'2-5'", "HH:MM-HH:MM", '"02:00-05:00"']),
        ({"days": "mon", "hours": "02:00-25:00"}, f"{KEY}[0].hours", ["25:00 is not a time of day"]),
        ({"days": "mon", "hours": "02:00-02:00"}, f"{KEY}[0].hours", ["the same", "00:00-24:00"]),
        ({"hours": "02:00-05:00"}, f"{KEY}[0].days", ["required but missing"]),
        ({"days": "mon"}, f"{KEY}[0].hours", ["required but missing"]),
        ({"days": "mon", "hours": "02:00-05:00", "timezone": "Europe/Berln"}, f"{KEY}[0].timezone",
         ['"Europe/Berln"', 'did you mean "Europe/Berlin"']),
        ({"days": "mon", "hours": "02:00-05:00", "tz": "UTC"}, f"{KEY}[0].tz", ['unknown key', 'timezone']),
        ({"days": "mon", "hours": "02:00-05:00", "timezon": "UTC"}, f"{KEY}[0].timezon",
         ['did you mean "timezone"']),
    ],
)  # fmt: skip
def test_parse_windows_errors_name_file_key_and_value(item, key, words):
    with pytest.raises(ConfigError) as err:
        parse_windows([item], PATH, KEY)
    assert err.value.path == PATH and err.value.key == key
    message = str(err.value)
    assert message.startswith(f"{PATH}: {key}: ")
    for word in words:
        assert word in message


def test_parse_windows_names_the_index_of_the_bad_table_and_rejects_a_non_list():
    with pytest.raises(ConfigError, match=r"windows\[1\]\.hours"):
        parse_windows([{"days": "mon", "hours": "01:00-02:00"}, {"days": "mon", "hours": "x"}], PATH, KEY)
    with pytest.raises(
        ConfigError, match=r"expected a list of tables \(\[\[environments.production.windows\]\]\)"
    ):
        parse_windows({"days": "mon"}, PATH, KEY)


# --- in_window / window_at / next_window_start ------------------------------------------------------------
@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (berlin(2026, 11, 30, 1, 59), False),
        (berlin(2026, 11, 30, 2, 0), True),  # start inclusive
        (berlin(2026, 11, 30, 4, 59), True),
        (berlin(2026, 11, 30, 5, 0), False),  # end exclusive
        (berlin(2026, 12, 3, 3, 0), True),  # Thursday
        (berlin(2026, 12, 4, 3, 0), False),  # Friday
        (utc(2026, 11, 30, 1, 30), True),  # 02:30 in Berlin (CET, UTC+1)
    ],
)
def test_in_window(at, inside):
    assert in_window(NIGHTS, at) is inside


def test_no_windows_means_always_allowed():
    assert in_window((), utc(2026, 12, 5, 13, 0))
    assert next_window_start((), utc(2026, 12, 5, 13, 0)) == utc(2026, 12, 5, 13, 0)
    assert window_at((), utc(2026, 12, 5, 13, 0)) is None


def test_a_window_crossing_midnight_belongs_to_the_day_it_starts():
    fri = (window("fri", "22:00-02:00", "UTC"),)  # 2026-12-04 is a Friday
    assert not in_window(fri, utc(2026, 12, 4, 21, 59))
    assert in_window(fri, utc(2026, 12, 4, 22, 0))
    assert in_window(fri, utc(2026, 12, 5, 1, 59))  # Saturday morning, still Friday's window
    assert not in_window(fri, utc(2026, 12, 5, 2, 0))
    assert not in_window(fri, utc(2026, 12, 5, 23, 0))  # Saturday night: no window starts on Saturday
    assert not in_window(fri, utc(2026, 12, 4, 1, 0))  # Friday morning belongs to Thursday: none
    assert window_at(fri, utc(2026, 12, 5, 1, 0)) == (utc(2026, 12, 4, 22, 0), utc(2026, 12, 5, 2, 0))
    assert next_window_start(fri, utc(2026, 12, 5, 3, 0)) == utc(2026, 12, 11, 22, 0)


def test_touching_windows_merge_into_one_span():
    ws = (window("mon", "22:00-24:00", "UTC"), window("tue", "00:00-03:00", "UTC"))
    assert window_at(ws, utc(2026, 12, 1, 1, 0)) == (utc(2026, 11, 30, 22, 0), utc(2026, 12, 1, 3, 0))


def test_next_window_start():
    assert next_window_start(NIGHTS, berlin(2026, 11, 30, 3, 0)) == berlin(2026, 11, 30, 3, 0)  # inside: now
    assert next_window_start(NIGHTS, berlin(2026, 11, 30, 1, 0)) == berlin(2026, 11, 30, 2, 0)
    assert next_window_start(NIGHTS, berlin(2026, 11, 30, 5, 0)) == berlin(2026, 12, 1, 2, 0)
    assert next_window_start(NIGHTS, berlin(2026, 12, 3, 6, 0)) == berlin(2026, 12, 7, 2, 0)  # Thu -> Mon
    assert next_window_start(NIGHTS, MON).tzinfo == UTC


def test_windows_keep_their_local_hours_across_the_spring_dst_change():
    daily = (window("daily", "02:00-05:00"),)
    # Sat 2026-03-28, CET (UTC+1): 01:00-04:00 UTC.
    assert window_at(daily, utc(2026, 3, 28, 2, 0)) == (utc(2026, 3, 28, 1, 0), utc(2026, 3, 28, 4, 0))
    # Sun 2026-03-29: 02:00 does not exist (clocks jump to 03:00 CEST); the window opens at the change
    # (01:00 UTC = 03:00 CEST) and closes at 05:00 CEST = 03:00 UTC: two hours long.
    assert window_at(daily, utc(2026, 3, 29, 2, 0)) == (utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 3, 0))
    assert not in_window(daily, utc(2026, 3, 29, 0, 59))
    assert not in_window(daily, utc(2026, 3, 29, 3, 0))
    # Mon 2026-03-30, CEST (UTC+2): 00:00-03:00 UTC.
    assert next_window_start(daily, utc(2026, 3, 29, 4, 0)) == utc(2026, 3, 30, 0, 0)
    assert next_window_start(daily, utc(2026, 3, 29, 4, 0)).astimezone(BERLIN).hour == 2


def test_windows_keep_their_local_hours_across_the_autumn_dst_change():
    daily = (window("daily", "02:00-05:00"),)
    # Sun 2026-10-25: 02:00 CEST (00:00 UTC) until 05:00 CET (04:00 UTC): four hours, 03:00 twice.
    assert window_at(daily, utc(2026, 10, 25, 3, 30)) == (utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 4, 0))
    assert next_window_start(daily, utc(2026, 10, 24, 23, 0)) == utc(2026, 10, 25, 0, 0)
    # Mon 2026-10-26, CET: 01:00 UTC.
    assert next_window_start(daily, utc(2026, 10, 25, 4, 0)) == utc(2026, 10, 26, 1, 0)
    late = (window("sun", "22:00-02:00"),)  # crossing midnight into the change's night
    assert window_at(late, utc(2026, 10, 24, 23, 0)) is None  # Saturday night
    assert window_at(late, utc(2026, 10, 25, 22, 0)) == (utc(2026, 10, 25, 21, 0), utc(2026, 10, 26, 1, 0))


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(NIGHTS, datetime(2026, 11, 30, 3, 0))


# --- freezes ----------------------------------------------------------------------------------------------
def freezes(*items: dict) -> tuple[Freeze, ...]:
    return parse_freezes(list(items), PATH, environments=("staging", "production"))


EOY = {
    "env": "production",
    "start": "2026-12-20T00:00:00+01:00",
    "end": "2027-01-05T09:00:00Z",
    "reason": "end-of-year freeze",
}


def test_parse_freezes_reads_strings_toml_datetimes_and_local_times_with_a_zone():
    (a,) = freezes(EOY)
    assert (a.env, a.start, a.end, a.reason) == (
        "production",
        utc(2026, 12, 19, 23, 0),
        utc(2027, 1, 5, 9, 0),
        "end-of-year freeze",
    )
    assert a.describe() == "production frozen until Tue 5 Jan 09:00 UTC: end-of-year freeze"
    (b,) = freezes(
        {**EOY, "start": berlin(2026, 12, 20, 0, 0), "end": datetime(2027, 1, 5, 10, 0, tzinfo=UTC)}
    )
    assert (b.start, b.end) == (utc(2026, 12, 19, 23, 0), utc(2027, 1, 5, 10, 0))
    (c,) = freezes(
        {**EOY, "env": "*", "start": "2026-12-20 00:00", "end": "2027-01-05", "timezone": "Europe/Berlin"}
    )
    assert (c.start, c.end) == (utc(2026, 12, 19, 23, 0), utc(2027, 1, 4, 23, 0))
    assert c.describe().startswith("every environment frozen until")
    assert parse_freezes(None, PATH) == ()


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"end": "2026-12-19T00:00:00Z"}, "freezes[0].end", ["'2026-12-19T00:00:00Z'", "is not after start"]),
        ({"end": "2026-12-19T23:00:00Z"}, "freezes[0].end", ["is not after start"]),
        ({"start": "next week"}, "freezes[0].start", ["'next week'", "2026-12-20T00:00:00+01:00"]),
        ({"start": "2026-12-20T00:00:00"}, "freezes[0].start", ["no UTC offset", "timezone"]),
        ({"env": "prodution"}, "freezes[0].env", ["'prodution'", 'did you mean "production"']),
        ({"reason": ""}, "freezes[0].reason", ["a reason"]),
        ({"reason": None}, "freezes[0].reason", ["required but missing"]),
        ({"timezone": "Mars/Base"}, "freezes[0].timezone", ['unknown time zone "Mars/Base"']),
        ({"by": "me"}, "freezes[0].by", ["unknown key"]),
    ],
)  # fmt: skip
def test_parse_freezes_errors_name_file_key_and_value(change, key, words):
    item = {k: v for k, v in {**EOY, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        freezes(item)
    assert (err.value.path, err.value.key) == (PATH, key)
    for word in words:
        assert word in str(err.value)


def test_active_freeze_ends_exclusive_and_only_for_its_environment():
    fs = freezes(EOY, {**EOY, "env": "*", "end": "2026-12-21T00:00:00Z", "reason": "company offsite"})
    assert active_freeze(fs, "production", utc(2026, 12, 19, 22, 59)) is None
    assert (
        active_freeze(fs, "production", utc(2026, 12, 19, 23, 0)).reason == "end-of-year freeze"
    )  # ends last
    assert active_freeze(fs, "staging", utc(2026, 12, 20, 12, 0)).reason == "company offsite"
    assert active_freeze(fs, "staging", utc(2026, 12, 21, 0, 0)) is None
    assert active_freeze(fs, "production", utc(2027, 1, 5, 8, 59)) is not None
    assert active_freeze(fs, "production", utc(2027, 1, 5, 9, 0)) is None  # the end is exclusive


def test_a_freeze_must_end_after_it_starts():
    with pytest.raises(ValueError, match="must end after it starts"):
        Freeze("production", utc(2026, 1, 2), utc(2026, 1, 1), "x")


# --- parse_when -------------------------------------------------------------------------------------------
NOW = utc(2026, 11, 26, 16, 0)  # Thursday 17:00 in Berlin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01 02:00 Europe/Berlin", utc(2026, 12, 1, 1, 0)),
        ('"2026-12-01 02:00 Europe/Berlin"', utc(2026, 12, 1, 1, 0)),
        ("2026-12-01 02:00", utc(2026, 12, 1, 2, 0)),
        ("2026-12-01T02:00Z", utc(2026, 12, 1, 2, 0)),
        ("2026-12-01t02:00z", utc(2026, 12, 1, 2, 0)),
        ("2026-12-01T02:00:00+01:00", utc(2026, 12, 1, 1, 0)),
        ("2026-12-01T02:00 Europe/Berlin", utc(2026, 12, 1, 1, 0)),
        ("2026-12-01", utc(2026, 12, 1, 0, 0)),
        ("tomorrow 02:00", utc(2026, 11, 27, 2, 0)),
        ("tomorrow 02:00 Europe/Berlin", utc(2026, 11, 27, 1, 0)),
        ("today 18:30 europe/berlin", utc(2026, 11, 26, 17, 30)),
        ("02:00", utc(2026, 11, 27, 2, 0)),  # the next 02:00
        ("18:00 UTC", utc(2026, 11, 26, 18, 0)),  # later today
        ("16:30 Europe/Berlin", utc(2026, 11, 27, 15, 30)),  # already past today: tomorrow
        ("+2h", utc(2026, 11, 26, 18, 0)),
        ("+30m", utc(2026, 11, 26, 16, 30)),
        ("+1h30m", utc(2026, 11, 26, 17, 30)),
        ("in 2h", utc(2026, 11, 26, 18, 0)),
        ("in 90 minutes", utc(2026, 11, 26, 17, 30)),
        ("in 1 day", utc(2026, 11, 27, 16, 0)),
    ],
)
def test_parse_when_good(text, expected):
    at = parse_when(text, now=NOW)
    assert at == expected and at.tzinfo == UTC


def test_parse_when_uses_the_default_zone_for_zone_less_times():
    assert parse_when("2026-12-01 02:00", now=NOW, default_tz="Europe/Berlin") == utc(2026, 12, 1, 1, 0)
    assert parse_when("02:00", now=NOW, default_tz="Europe/Berlin") == utc(2026, 11, 27, 1, 0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["it is empty", "e.g."]),
        ("soon", ['"soon" is not a time of day', '"2026-12-01 02:00 Europe/Berlin"', '"+2h"']),
        ("next tuesday", ['"tuesday" is neither a time of day nor a time zone', "e.g."]),
        ("02:00 Europe/Berln", ['unknown time zone "Europe/Berln"', 'did you mean "Europe/Berlin"']),
        ("25:00", ['"25:00" is not a time of day']),
        ("2026-13-01 02:00", ['"2026-13-01" is not a date']),
        ("2026-12-01T02:00+01:00 Europe/Berlin", ["both a UTC offset and a time zone"]),
        ("2026-12-01Tnope", ["not an ISO 8601 date-time"]),
        ("+2w", ['unknown unit "w"']),
        ("yesterday 02:00", ['"yesterday" is not a date']),
        ("2026-12-01 02:00 Europe/Berlin extra", ['"extra" is neither a time of day nor a time zone']),
        ("2026-12-01 02:00 03:00 UTC", ["too many words"]),
        ("2026-11-01 02:00", ["in the past", "Sun 1 Nov 02:00 UTC", "now: Thu 26 Nov 16:00 UTC"]),
        ("today 09:00 Europe/Berlin", ["in the past", "Europe/Berlin"]),
        ("2027-03-28 02:30 Europe/Berlin", ["02:30 does not exist in Europe/Berlin on 2027-03-28"]),
    ],
)
def test_parse_when_bad(text, words):
    with pytest.raises(ValueError) as err:
        parse_when(text, now=NOW)
    for word in words:
        assert word in str(err.value)


# --- decide / next_allowed / overdue -----------------------------------------------------------------------
FROZEN = freezes(
    {**EOY, "start": "2026-11-30T00:00:00Z", "end": "2026-12-01T12:00:00Z", "reason": "Black Friday"}
)


def test_decide_inside_a_window_is_ok():
    d = decide(berlin(2026, 11, 30, 3, 0), NIGHTS, (), "production", now=NOW)
    assert d.ok and d.run_at == utc(2026, 11, 30, 2, 0) and d.freeze is None
    assert d.reason == "inside a deploy window for production (until Mon 30 Nov 05:00 CET)"


def test_decide_without_windows_allows_any_time_but_not_a_freeze():
    assert decide(NOW, (), (), "production", now=NOW).ok
    d = decide(utc(2026, 11, 30, 6, 0), (), FROZEN, "production", now=NOW)
    assert not d.ok and d.run_at == utc(2026, 12, 1, 12, 0)


def test_decide_outside_every_window_refuses_with_the_next_allowed_time():
    d = decide(NOW, NIGHTS, (), "production", now=NOW)
    assert not d.ok and d.run_at == berlin(2026, 11, 30, 2, 0)
    assert d.reason == (
        "now is outside the deploy windows for production (Mon-Thu 02:00-05:00 Europe/Berlin); "
        "the next allowed time is Mon 30 Nov 02:00 CET"
    )
    at = decide(berlin(2026, 12, 5, 14, 0), NIGHTS, (), "production", now=NOW)
    assert at.reason.startswith("Sat 5 Dec 14:00 CET is outside the deploy windows for production")
    assert at.run_at == berlin(2026, 12, 7, 2, 0)


def test_a_freeze_beats_a_window():
    d = decide(berlin(2026, 11, 30, 3, 0), NIGHTS, FROZEN, "production", now=NOW)  # inside the window
    assert not d.ok and d.freeze == FROZEN[0]
    # The freeze ends Tue 13:00 Berlin, after Tuesday's window: the next allowed time is Wednesday 02:00.
    assert d.run_at == berlin(2026, 12, 2, 2, 0)
    assert d.reason == (
        "production frozen until Tue 1 Dec 12:00 UTC: Black Friday; "
        "the next allowed time is Wed 2 Dec 02:00 CET"
    )
    assert decide(berlin(2026, 11, 30, 3, 0), NIGHTS, FROZEN, "staging", now=NOW).ok


def test_next_allowed_starts_mid_window_when_a_freeze_ends_inside_it():
    short = freezes({**EOY, "start": "2026-11-30T00:00:00Z", "end": "2026-12-01T02:30:00Z", "reason": "x"})
    assert next_allowed(NIGHTS, short, "production", MON) == utc(2026, 12, 1, 2, 30)  # 03:30 Berlin
    assert next_allowed(NIGHTS, short, "staging", MON) == berlin(2026, 11, 30, 2, 0)
    # The freeze ends Tue 5 Jan 10:00 Berlin, after that morning's window: Wednesday.
    assert next_allowed(NIGHTS, freezes(EOY), "production", berlin(2026, 12, 21, 0, 0)) == berlin(
        2027, 1, 6, 2, 0
    )
    endless = freezes({**EOY, "start": "2026-11-01T00:00:00Z", "end": "2027-06-01T00:00:00Z"})
    assert next_allowed(NIGHTS, endless, "production", MON) is None
    d = decide(MON, NIGHTS, endless, "production", now=MON)
    assert not d.ok and d.run_at is None and d.reason.endswith("no allowed time in the next 30 days")


def test_overdue_after_downtime_across_a_window_start_moves_to_the_next_window():
    d = overdue(
        berlin(2026, 11, 30, 2, 0),
        NIGHTS,
        (),
        "production",
        now=berlin(2026, 11, 30, 6, 0),
        grace_seconds=300,
    )
    assert not d.ok and d.run_at == berlin(2026, 12, 1, 2, 0)
    assert d.reason == (
        "the bot was down when the window Mon 30 Nov 02:00-05:00 Europe/Berlin opened; "
        "moved to Tue 1 Dec 02:00 CET"
    )


def test_overdue_still_inside_the_window_runs_now():
    now = berlin(2026, 11, 30, 3, 0)
    d = overdue(berlin(2026, 11, 30, 2, 0), NIGHTS, (), "production", now=now, grace_seconds=300)
    assert d.ok and d.run_at == now
    assert "still inside an allowed window: running now" in d.reason


def test_overdue_within_grace_runs_now_even_just_after_the_window():
    now = berlin(2026, 11, 30, 5, 1)
    d = overdue(berlin(2026, 11, 30, 4, 59), NIGHTS, (), "production", now=now, grace_seconds=300)
    assert d.ok and d.run_at == now and "within the 5m grace" in d.reason
    late = overdue(berlin(2026, 11, 30, 4, 50), NIGHTS, (), "production", now=now, grace_seconds=300)
    assert not late.ok and late.run_at == berlin(2026, 12, 1, 2, 0)


def test_overdue_not_yet_due_keeps_its_time_and_a_freeze_still_wins():
    due = berlin(2026, 11, 30, 2, 0)
    d = overdue(due, NIGHTS, (), "production", now=berlin(2026, 11, 29, 12, 0), grace_seconds=300)
    assert d.ok and d.run_at == due
    frozen = overdue(due, NIGHTS, FROZEN, "production", now=berlin(2026, 11, 30, 2, 0, 30), grace_seconds=300)
    assert not frozen.ok and frozen.freeze == FROZEN[0] and frozen.run_at == berlin(2026, 12, 2, 2, 0)
    assert "Black Friday" in frozen.reason and "moved to Wed 2 Dec 02:00 CET" in frozen.reason
