"""The analysis grid is for company: a bake alone in the process measures one interval after it wakes,
not on the 5 s grid (nothing to share a read with); while two bake, every wake-up they plan is on the
grid, where the CloudWatch adapter merges their reads. On a ManualClock, through the memory metrics."""

from __future__ import annotations

import asyncio

from bot.adapters.metrics.memory import MemoryMetrics
from bot.app.measure import ANALYSIS_TICK_SECONDS, run_analysis
from bot.app.ports import MetricScope
from bot.clock import ManualClock
from bot.domain.analysis import AnalysisConfig, GroupMetrics, Measurement

CONFIG = AnalysisConfig(interval_seconds=6, min_requests=1)
CANARY = MetricScope((("TargetGroup", "targetgroup/c/1"),))
STABLE = MetricScope((("TargetGroup", "targetgroup/s/2"),))
START = 1_767_225_601.0  # one second past a multiple of the grid


def bake(metrics: MemoryMetrics, clock: ManualClock, seen: list[Measurement]) -> asyncio.Task:
    async def on_measurement(m: Measurement) -> None:
        seen.append(m)

    return asyncio.create_task(
        run_analysis(
            metrics,
            CONFIG,
            duration_seconds=12,
            clock=clock,
            account=None,
            canary=CANARY,
            stable=STABLE,
            label="canary 5%",
            on_measurement=on_measurement,
        )
    )


async def finish(clock: ManualClock, *tasks: asyncio.Task) -> None:
    for _ in range(200):
        for _ in range(10):
            await asyncio.sleep(0)
        if all(t.done() for t in tasks):
            for t in tasks:
                t.result()
            return
        await clock.advance(1)
    raise AssertionError("the bakes did not end")


def healthy() -> MemoryMetrics:
    return MemoryMetrics(GroupMetrics(requests=1000, errors=0, latency_ms=50.0))


async def test_a_bake_alone_measures_one_interval_after_it_wakes_off_the_grid():
    clock, seen = ManualClock(START), []
    await finish(clock, bake(healthy(), clock, seen))
    assert [m.at - START for m in seen] == [6, 12]
    assert all(m.at % ANALYSIS_TICK_SECONDS for m in seen)  # 1_767_225_607 and _613: neither on the grid


async def test_two_bakes_at_once_measure_on_the_grid_where_their_reads_meet():
    clock, first, second = ManualClock(START), [], []
    metrics = healthy()
    await finish(clock, bake(metrics, clock, first), bake(metrics, clock, second))
    # the first planned its first look alone (off the grid); the second began beside it: on the grid
    assert [m.at - START for m in first] == [6, 14]
    assert [m.at - START for m in second] == [9, 14]
    assert first[-1].at == second[-1].at and second[-1].at % ANALYSIS_TICK_SECONDS == 0  # one read
    assert second[0].at % ANALYSIS_TICK_SECONDS == 0


class SlowMetrics(MemoryMetrics):
    """Reads that take longer than the bake has left (a loaded host, a slow CloudWatch)."""

    def __init__(self, clock: ManualClock, seconds: float):
        super().__init__(GroupMetrics(requests=1000, errors=0, latency_ms=50.0))
        self.clock, self.seconds = clock, seconds

    async def slot_metrics(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await self.clock.advance(self.seconds)
        return await super().slot_metrics(*args, **kwargs)


async def test_a_slow_read_never_leaves_a_bake_with_fewer_measurements_than_planned():
    clock, seen = ManualClock(START), []
    await finish(clock, bake(SlowMetrics(clock, 7), clock, seen))  # the first read ends past the bake's 12 s
    assert len(seen) == 2 and all(m.verdict == "pass" for m in seen)  # 12 s at 6 s intervals: two
    assert seen[1].at - seen[0].at >= CONFIG.interval_seconds  # the second reads a later window
