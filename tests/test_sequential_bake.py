"""A sequential bake (judge = "sequential") on a ManualClock, through the CloudWatch adapter over a
scripted GetMetricData that answers per minute: one call per look at a 60 s period, early promotion down
to min_bake_seconds, a bad canary failed at the first look with a whole minute, no traffic inconclusive,
the minutes read since `since`, and the memory fake's per-minute reads."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bot.adapters.metrics.cloudwatch import CloudWatchMetrics
from bot.adapters.metrics.memory import MemoryMetrics
from bot.app.measure import run_analysis
from bot.app.ports import MetricScope
from bot.clock import ManualClock
from bot.domain.analysis import AnalysisConfig, GroupMetrics, Measurement

CONFIG = AnalysisConfig(judge="sequential", error_rate_margin=0.005, min_bake_seconds=60)
CANARY = MetricScope((("TargetGroup", "targetgroup/c/1"),))
STABLE = MetricScope((("TargetGroup", "targetgroup/s/2"),))


class PerMinuteCloud:
    """Stands in for Aws.call: GetMetricData answered with one value per whole minute of the window,
    the same numbers each minute for each group (g0: the canary, g1 or m1: the stable group)."""

    def __init__(self, canary: GroupMetrics, stable: GroupMetrics):
        self.groups = [canary, stable]
        self.calls: list[dict] = []

    async def call(self, api, operation, role_arn=None, /, **params):
        assert operation == "get_metric_data"
        self.calls.append(params)
        start, end = params["StartTime"], params["EndTime"]
        results = []
        for q in params["MetricDataQueries"]:
            period = q["MetricStat"]["Period"]
            group = self.groups[int(q["Id"][1 : q["Id"].index("_")])]
            value = {
                "requests": group.requests,
                "errors": group.errors,
                "latency": None if group.latency_ms is None else group.latency_ms / 1000,
            }[q["Id"].split("_", 1)[1]]
            stamps = []
            at = start
            while at + timedelta(seconds=period) <= end:
                stamps.append(at)
                at += timedelta(seconds=period)
            values = [] if value is None else [value * period / 60] * len(stamps)
            results.append({"Id": q["Id"], "Values": values, "Timestamps": stamps[: len(values)]})
        return {"MetricDataResults": results}


async def drive(clock: ManualClock, task: asyncio.Task, step: float = 5.0, limit: int = 2000):
    for _ in range(limit):
        for _ in range(10):
            await asyncio.sleep(0)
        if task.done():
            return await task
        await clock.advance(step)
    raise AssertionError("the run did not end")


def bake(metrics, clock, duration, config=CONFIG, **kw):
    seen: list[Measurement] = []

    async def on_measurement(m: Measurement) -> None:
        seen.append(m)

    task = asyncio.create_task(
        run_analysis(
            metrics,
            config,
            duration_seconds=duration,
            clock=clock,
            account=None,
            canary=CANARY,
            stable=STABLE,
            label="canary 25%",
            on_measurement=on_measurement,
            **kw,
        )
    )
    return task, seen


async def test_a_healthy_canary_moves_on_at_the_minimum_bake():
    clock = ManualClock()  # starts on a whole minute
    start = clock.now()
    cloud = PerMinuteCloud(GroupMetrics(3000, 3, 80.0), GroupMetrics(9000, 9, 80.0))
    task, seen = bake(CloudWatchMetrics(cloud), clock, 600)
    run = await drive(clock, task)
    assert run.status == "successful" and run.reason.startswith("shown no worse")
    assert [m.at - start for m in seen] == [30, 60]  # 60 s of a 600 s bake: the minimum bake
    assert [m.verdict for m in seen] == ["inconclusive", "pass"]  # no whole minute at 30 s
    assert len(cloud.calls) == 1  # the look at 30 s has no whole minute to read: no call
    (query,) = cloud.calls
    assert {q["MetricStat"]["Period"] for q in query["MetricDataQueries"]} == {60}
    assert query["EndTime"] - query["StartTime"] == timedelta(seconds=60)


async def test_a_bad_canary_fails_at_the_first_whole_minute():
    clock = ManualClock()
    cloud = PerMinuteCloud(GroupMetrics(500, 40, 80.0), GroupMetrics(1500, 15, 80.0))
    task, seen = bake(CloudWatchMetrics(cloud), clock, 600)
    run = await drive(clock, task)
    assert run.status == "failed" and [m.verdict for m in seen] == ["inconclusive", "fail"]
    assert "regression of at least" in seen[-1].reasons[0] and "99% confidence" in seen[-1].reasons[0]
    assert seen[-1].evidence and seen[-1].evidence["decision"] == "fail"


async def test_no_traffic_runs_the_whole_bake_and_ends_inconclusive():
    clock = ManualClock()
    start = clock.now()
    task, seen = bake(CloudWatchMetrics(PerMinuteCloud(GroupMetrics(), GroupMetrics())), clock, 120)
    run = await drive(clock, task)
    assert run.status == "inconclusive"
    assert [m.at - start for m in seen] == [30, 60, 90, 120]  # measuring on, not pausing at the first
    assert {m.verdict for m in seen} == {"inconclusive"}


async def test_the_looks_read_every_minute_since_the_first_step():
    clock = ManualClock()
    since = clock.now() - 300  # the canary's first bake began five minutes ago
    cloud = PerMinuteCloud(GroupMetrics(100, 0, 80.0), GroupMetrics(900, 1, 80.0))
    task, seen = bake(CloudWatchMetrics(cloud), clock, 60, since=since)
    await drive(clock, task)
    assert cloud.calls[0]["StartTime"] == datetime.fromtimestamp(since, UTC)
    assert seen[0].evidence and seen[0].evidence["minutes"] == 5


async def test_thresholds_stay_the_default_and_without_a_stable_group():
    metrics = MemoryMetrics()
    clock = ManualClock()
    task, _ = bake(metrics, clock, 60, config=replace(CONFIG, judge="thresholds"))
    await drive(clock, task)
    assert "slot_minutes" not in metrics.calls and "slot_metrics" in metrics.calls


async def test_the_memory_fake_reads_whole_minutes():
    metrics = MemoryMetrics()
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    read = await metrics.slot_minutes(None, {"canary": CANARY}, start, start + timedelta(minutes=3))
    assert list(read["canary"]) == [datetime(2026, 1, 1, 0, m, tzinfo=UTC) for m in (1, 2)]


async def test_a_bake_starting_late_in_a_minute_reads_a_whole_minute_at_its_weights():
    clock = ManualClock(1_767_225_600.0 + 50)  # 50 s into a minute: a 60 s bake would end before one
    start = clock.now()
    cloud = PerMinuteCloud(GroupMetrics(300, 0, 80.0), GroupMetrics(2700, 2, 80.0))
    task, seen = bake(CloudWatchMetrics(cloud), clock, 60, final=False)
    run = await drive(clock, task)
    assert seen[-1].at - start == 70  # to the end of the first minute that began after it did
    assert seen[-1].evidence and seen[-1].evidence["minutes"] == 2
    assert run.status == "successful"


async def test_an_undecided_bake_bakes_on_to_max_bake_seconds_and_fails_on_the_evidence():
    # 3% vs 0.4% on 100 canary requests a minute: not shown worse within a 120 s bake
    cloud = PerMinuteCloud(GroupMetrics(100, 3, 80.0), GroupMetrics(900, 4, 80.0))
    clock = ManualClock()
    task, _ = bake(CloudWatchMetrics(cloud), clock, 120)
    assert (await drive(clock, task)).status == "inconclusive"  # max_bake_seconds = 0: pauses as before
    clock = ManualClock()
    start = clock.now()
    task, seen = bake(CloudWatchMetrics(cloud), clock, 120, config=replace(CONFIG, max_bake_seconds=600))
    run = await drive(clock, task)
    assert run.status == "failed" and "regression of at least" in run.reason
    assert 120 < seen[-1].at - start < 600  # past the bake's time, caught before the maximum


async def test_no_traffic_bakes_on_to_max_bake_seconds_then_ends_inconclusive():
    clock = ManualClock()
    start = clock.now()
    config = replace(CONFIG, max_bake_seconds=240)
    task, seen = bake(CloudWatchMetrics(PerMinuteCloud(GroupMetrics(), GroupMetrics())), clock, 120, config)
    run = await drive(clock, task)
    assert run.status == "inconclusive" and run.reason.startswith("too little traffic")
    assert [m.at - start for m in seen] == [30, 60, 90, 120, 150, 180, 210, 240]


async def test_a_healthy_canary_still_moves_on_at_the_minimum_bake_with_a_max_bake():
    clock = ManualClock()
    start = clock.now()
    cloud = PerMinuteCloud(GroupMetrics(3000, 3, 80.0), GroupMetrics(9000, 9, 80.0))
    task, seen = bake(CloudWatchMetrics(cloud), clock, 600, replace(CONFIG, max_bake_seconds=1800))
    assert (await drive(clock, task)).status == "successful" and seen[-1].at - start == 60
