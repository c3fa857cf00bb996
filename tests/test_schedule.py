"""Scheduling's adapters: the APScheduler wiring on a ScaledClock, and the quietest hours read from the
sandbox's moto CloudWatch. The pure policy (windows, freezes, `--at`, decide/overdue) is tested in
tests/unit/domain/test_windows.py."""

from __future__ import annotations

import asyncio
import logging
import time as time_module
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.adapters.aws import Aws
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics, scope_of
from bot.adapters.scheduler import Scheduler
from bot.app.traffic_hours import lowest_traffic_hours, suggest_text
from bot.clock import ManualClock, ScaledClock
from bot.config.model import AwsSettings
from bot.config.timing import parse_windows
from bot.domain.windows import (
    Window,
)
from bot.sandbox.aws import AwsWorld

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


# --- Scheduler --------------------------------------------------------------------------------------------
class Recorder:
    """The scheduler's callback: records (key, virtual time) and sets one event per key."""

    def __init__(self, clock, fail: tuple[str, ...] = ()):
        self.clock, self.fail = clock, fail
        self.fired: list[tuple[str, float]] = []
        self.events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def __call__(self, key: str) -> None:
        self.fired.append((key, self.clock.now()))
        self.event(key).set()
        if key in self.fail:
            raise RuntimeError(f"deploy for {key} blew up")

    async def wait(self, key: str, within: float = 5.0) -> None:
        await asyncio.wait_for(self.event(key).wait(), within)


@pytest.fixture
async def sched():
    clock = ScaledClock(speed=1000)
    made: list[Scheduler] = []

    def make(fail: tuple[str, ...] = ()) -> tuple[Scheduler, Recorder]:
        recorder = Recorder(clock, fail)
        s = Scheduler(clock, recorder, misfire_grace_seconds=300)
        s.start()
        made.append(s)
        return s, recorder

    yield clock, make
    for s in made:
        s.shutdown()


async def test_a_job_fires_once_at_its_virtual_time(sched):
    clock, make = sched
    s, rec = make()
    due = clock.now() + 5
    s.schedule("deploy:1", due)
    assert s.jobs() == {"deploy:1": due}
    await rec.wait("deploy:1")
    s.schedule("sentinel", clock.now() + 50)  # by the time this fires, a second run would have happened
    await rec.wait("sentinel")
    assert [k for k, _ in rec.fired] == ["deploy:1", "sentinel"]
    fired_at = rec.fired[0][1]
    assert due <= fired_at < due + 1000  # on time, within a wall second at 1000x
    assert s.jobs() == {}


async def test_cancel_and_reschedule(sched):
    clock, make = sched
    s, rec = make()
    now = clock.now()
    s.schedule("cancelled", now + 20)
    s.schedule("moved", now + 60_000)  # a minute of wall time away ...
    s.schedule("moved", now + 30)  # ... replaced: fires soon, once
    assert s.cancel("cancelled") and not s.cancel("cancelled")
    assert s.jobs() == {"moved": now + 30}
    await rec.wait("moved")
    s.schedule("sentinel", clock.now() + 100)
    await rec.wait("sentinel")
    assert [k for k, _ in rec.fired] == ["moved", "sentinel"]
    assert rec.fired[0][1] >= now + 30


async def test_jobs_scheduled_before_start_fire_after_it():
    clock = ScaledClock(speed=1000)
    rec = Recorder(clock)
    s = Scheduler(clock, rec)
    now = clock.now()
    s.schedule("early", now + 60_000)
    s.schedule("early", now + 10)  # replaced before start, as when jobs are rebuilt from the store
    s.schedule("dropped", now + 10)
    s.cancel("dropped")
    s.start()
    try:
        await rec.wait("early")
        s.schedule("sentinel", clock.now() + 50)
        await rec.wait("sentinel")
        assert [k for k, _ in rec.fired] == ["early", "sentinel"]
    finally:
        s.shutdown()


async def test_a_failing_callback_is_logged_and_the_scheduler_goes_on(sched, caplog):
    clock, make = sched
    s, rec = make(fail=("boom",))
    caplog.set_level(logging.ERROR, logger="bot.adapters.scheduler")
    s.schedule("boom", clock.now() + 5)
    await rec.wait("boom")
    s.schedule("after", clock.now() + 5)
    await rec.wait("after")
    assert s.running
    failures = [r for r in caplog.records if "boom" in r.getMessage()]
    assert failures and "deploy for boom blew up" in failures[0].exc_text


async def test_a_past_due_time_runs_at_once_and_the_grace_is_set_on_purpose(sched):
    clock, make = sched
    s, rec = make()
    s.schedule("late", clock.now() - 10_000)
    await rec.wait("late")
    # 300 virtual seconds at 1000x is 0.3 s of wall time: rounded up to APScheduler's whole seconds.
    assert s.misfire_grace_wall == 1
    assert Scheduler(ManualClock(), rec, misfire_grace_seconds=300).misfire_grace_wall == 300
    with pytest.raises(ValueError, match="misfire_grace_seconds"):
        Scheduler(clock, rec, misfire_grace_seconds=0)


async def test_a_job_the_loop_reaches_after_the_grace_is_reported_missed_not_dropped_silently(caplog):
    clock = ScaledClock(speed=1000)
    rec = Recorder(clock)
    missed: list[tuple[str, float]] = []
    reported = asyncio.Event()

    async def on_missed(key: str, due: float) -> None:
        missed.append((key, due))
        reported.set()

    s = Scheduler(clock, rec, misfire_grace_seconds=300, on_missed=on_missed)  # 1 s of wall time
    s.start()
    try:
        due = clock.now() + 5
        s.schedule("stalled", due)
        time_module.sleep(1.3)  # noqa: ASYNC251 -- a stalled event loop is the point of this test
        await asyncio.wait_for(reported.wait(), 5)
        assert missed == [("stalled", due)] and rec.fired == [] and s.jobs() == {}
        assert any("stalled" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        s.shutdown()


async def test_the_callback_may_reschedule_its_own_key(sched):
    clock, make = sched
    s: Scheduler
    done = asyncio.Event()
    runs: list[float] = []

    async def again(key: str) -> None:
        runs.append(clock.now())
        if len(runs) < 2:
            s.schedule(key, clock.now() + 5)
        else:
            done.set()

    s = Scheduler(clock, again)
    s.start()
    try:
        s.schedule("repeat", clock.now() + 5)
        await asyncio.wait_for(done.wait(), 5)
        assert len(runs) == 2 and s.jobs() == {}
    finally:
        s.shutdown()


# --- traffic: quiet hours from the sandbox's CloudWatch ------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    w = AwsWorld(ManualClock(), services=("web",), environments=("staging", "production"))
    w.start()
    w.provision()
    yield w
    w.stop()


@pytest.fixture
def cloud(world, aws_env):
    return CloudWatchMetrics(Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=2)))


def count_get_metric_data(cloud: CloudWatchMetrics) -> list[str]:
    seen: list[str] = []
    cloud.aws.client("cloudwatch").meta.events.register(
        "before-call.cloudwatch.GetMetricData", lambda **kw: seen.append("GetMetricData")
    )
    return seen


QUIET = {3: 12.0, 4: 15.0, 2: 20.0}  # requests per hour by Berlin hour; every other hour is busy


async def test_lowest_traffic_hours_finds_the_quiet_berlin_hours_in_one_call(world, cloud):
    now = utc(2026, 11, 1, 12, 17)  # the 14 days before cross the 2026-10-25 DST change
    end = now.replace(minute=0)
    dims = [world.metric_dimensions("web", "production", slot) for slot in ("blue", "green")]
    data = []
    hour = end - timedelta(days=14)
    while hour < end:
        rate = QUIET.get(hour.astimezone(BERLIN).hour, 400.0 + hour.astimezone(BERLIN).hour)
        for dimensions, share in zip(dims, (0.75, 0.25), strict=True):  # live slot and a canary
            data.append(
                {
                    "MetricName": "RequestCount",
                    "Dimensions": dimensions,  # world.metric_dimensions' order: moto matches by order
                    "Timestamp": hour + timedelta(minutes=30),
                    "Value": rate * share,
                    "Unit": "Count",
                }
            )
        hour += timedelta(hours=1)
    # Older than the 14 days: must not count (it would make 10:00 the quietest by far).
    data.append({**data[0], "Timestamp": end - timedelta(days=15), "Value": 0.0})
    cw = world.client("cloudwatch")
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data[i : i + 500])

    calls = count_get_metric_data(cloud)
    hours = await lowest_traffic_hours(cloud, None, [scope_of(d) for d in dims], now=now, tz="Europe/Berlin")
    assert calls == ["GetMetricData"]
    assert [h for h, _ in hours] == [3, 4, 2]
    assert [v for _, v in hours] == [pytest.approx(12.0), pytest.approx(15.0), pytest.approx(20.0)]
    assert suggest_text(NIGHTS, hours, "Europe/Berlin") == (
        "Configured windows: Mon-Thu 02:00-05:00 Europe/Berlin\n"
        "Lowest traffic (last 14 days, Europe/Berlin): 03:00 (12 req/h), 04:00 (15 req/h), 02:00 (20 req/h)"
    )
    # The same traffic read in UTC: the quiet hours sit an hour or two earlier (CET/CEST).
    utc_hours = await lowest_traffic_hours(cloud, None, [scope_of(d) for d in dims], now=now, tz="UTC", top=4)
    assert {h for h, _ in utc_hours} == {0, 1, 2, 3}


async def test_lowest_traffic_hours_without_data_is_empty(world, cloud):
    dims = [world.metric_dimensions("web", "staging", slot) for slot in ("blue", "green")]
    calls = count_get_metric_data(cloud)
    assert (
        await lowest_traffic_hours(
            cloud, None, [scope_of(d) for d in dims], now=utc(2026, 11, 1, 12), tz="Europe/Berlin"
        )
        == []
    )
    assert calls == ["GetMetricData"]
    assert suggest_text((), [], "Europe/Berlin") == (
        "Configured windows: none (deploys allowed at any time)\n"
        "Lowest traffic (last 14 days): no traffic data (CloudWatch RequestCount is empty)"
    )


async def test_missing_hours_count_as_zero_traffic():
    # An ALB publishes no RequestCount for an hour without requests: such an hour is the quietest.
    class Fake:
        async def call(self, api, operation, role_arn=None, /, **params):
            start = params["StartTime"]
            stamps = [start + timedelta(hours=i) for i in range(48) if (start + timedelta(hours=i)).hour != 7]
            return {
                "MetricDataResults": [{"Id": "r0", "Timestamps": stamps, "Values": [100.0] * len(stamps)}]
            }

    dims = [[{"Name": "TargetGroup", "Value": "x"}]]
    hours = await lowest_traffic_hours(
        CloudWatchMetrics(Fake()), None, [scope_of(d) for d in dims], now=utc(2026, 11, 3), tz="UTC", days=2
    )
    assert hours[0] == (7, 0.0) and hours[1] == (0, 100.0)
