"""Taking measurements for an analysis: one metrics read per interval, judged by the domain's analysis rules."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bot.clock import Clock
from bot.cloud import Cloud, CloudError
from bot.cloud.metrics import alarms_in_alarm, target_group_metrics
from bot.domain.analysis import Analysis, AnalysisConfig, Measurement, error_measurement, judge

# ------------------------------------------------------------------------------------------ talking to AWS


async def measure(
    cloud: Cloud,
    config: AnalysisConfig,
    *,
    role_arn: str | None,
    canary: list[dict[str, str]],
    stable: list[dict[str, str]] | None,
    clock: Clock,
    label: str,
) -> Measurement:
    """Take and judge one measurement: ONE GetMetricData call for both groups over the last window (and
    one DescribeAlarms when alarms are configured, concurrently). An AWS error gives verdict "error"."""
    at = float(math.floor(clock.now()))
    end = datetime.fromtimestamp(at, UTC)
    start = datetime.fromtimestamp(at - config.window_seconds, UTC)
    groups = {"canary": canary} if stable is None else {"canary": canary, "stable": stable}
    metrics, alarms = await asyncio.gather(
        target_group_metrics(cloud, role_arn, groups, start, end, config.latency_statistic),
        alarms_in_alarm(cloud, role_arn, list(config.alarms)),
        return_exceptions=True,
    )
    for result in (metrics, alarms):
        if isinstance(result, CloudError):
            return error_measurement(config, result, at, label)
        if isinstance(result, BaseException):
            raise result
    return judge(config, metrics["canary"], metrics.get("stable"), alarms, at, label)


async def run_analysis(
    cloud: Cloud,
    config: AnalysisConfig,
    *,
    duration_seconds: float,
    clock: Clock,
    role_arn: str | None,
    canary: list[dict[str, str]],
    stable: list[dict[str, str]] | None,
    label: str,
    on_measurement: Callable[[Measurement], Awaitable[None]],
    checkpoint: Callable[[], Awaitable[None]] | None = None,
    analysis: Analysis | None = None,
) -> Analysis:
    """The bake: a measurement every interval_seconds for duration_seconds (the first after one interval,
    so it sees the new weights; at least one), each handed to on_measurement, stopping early once the run
    has failed or is inconclusive. Time spent paused in checkpoint() does not count toward the bake.
    Pass `analysis` (rebuilt from stored measurements) to go on with a run after a restart."""
    run = analysis if analysis is not None else Analysis(config)
    deadline = clock.now() + max(0.0, duration_seconds)

    async def gate() -> None:
        nonlocal deadline
        if checkpoint is not None:
            before = clock.now()
            await checkpoint()
            deadline += clock.now() - before

    while True:
        await gate()
        await clock.sleep(min(config.interval_seconds, max(0.0, deadline - clock.now())))
        await gate()
        m = await measure(
            cloud, config, role_arn=role_arn, canary=canary, stable=stable, clock=clock, label=label
        )
        run.add(m)
        await on_measurement(m)
        if run.done or clock.now() >= deadline:
            break
    run.finish()
    return run
