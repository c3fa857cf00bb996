"""Taking measurements for a bake: read the slots' metrics and alarms through a Metrics port, judge them
(bot.analysis), and run a bake's measurements on the clock. An API error is an "error" measurement."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from bot.app.ports import Metrics, MetricScope, PlatformError
from bot.clock import Clock
from bot.domain.analysis import (
    Analysis,
    AnalysisConfig,
    GroupMetrics,
    Measurement,
    error_measurement,
    judge,
    planned_measurements,
)
from bot.domain.judging import SequentialAnalysis, sequential_measurement
from bot.domain.sequential import Minute

# Reads the "canary" (and "stable") groups' metrics over a window, in one backend request: a flag rollout
# reads its variants this way (Metrics.flag_metrics), a deployment its slots (Metrics.slot_metrics).
Reader = Callable[[datetime, datetime], Awaitable[dict[str, GroupMetrics]]]

# Measurements come due on a grid of this many clock seconds, so the analyses of many deployments that
# fall due within one tick read the same window at the same instant: the CloudWatch adapter merges their
# reads into as few GetMetricData calls as its 500-query limit allows (bot/adapters/metrics/batch.py).
ANALYSIS_TICK_SECONDS = 5.0
P = ParamSpec("P")
T = TypeVar("T")


class _Company:
    """Bakes running in this process now. The grid is for company: a lone bake has no read to share, so
    its wake-ups are not put off to the next tick (up to a tick more per measurement, for nothing); while
    two or more bake, every wake-up goes on the grid, where their reads meet."""

    live = 0

    @staticmethod
    def counted(bake: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(bake)
        async def baking(*args: P.args, **kwargs: P.kwargs) -> T:
            _Company.live += 1
            try:
                return await bake(*args, **kwargs)
            finally:
                _Company.live -= 1

        return baking

    @staticmethod
    def grid(tick_seconds: float) -> float:
        return tick_seconds if _Company.live > 1 else 0.0


async def alarms_in_alarm(
    metrics: Metrics, account: str | None, names: Sequence[str]
) -> list[dict[str, str]]:
    """The named alarms in ALARM, as [{"name", "reason"}]. A name that matches no alarm raises
    PlatformError: a typo must not silently switch a safety check off. No names: no call."""
    if not names:
        return []
    wanted = list(dict.fromkeys(names))
    found = {a.name: a for a in await metrics.alarms(account, wanted)}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise PlatformError(
            "CLOUDWATCH DescribeAlarms",
            "no such alarm: " + ", ".join(f'"{n}"' for n in missing) + " (check the analysis alarms setting)",
        )
    return [{"name": n, "reason": found[n].reason} for n in wanted if found[n].state == "ALARM"]


async def measure(
    metrics: Metrics,
    config: AnalysisConfig,
    *,
    account: str | None,
    canary: MetricScope | None,
    stable: MetricScope | None,
    clock: Clock,
    label: str,
    reader: Reader | None = None,
    due: float | None = None,
) -> Measurement:
    """Take and judge one measurement: ONE metrics request for both slots over the last window (and one
    alarms request when alarms are configured, concurrently). A PlatformError gives verdict "error".
    `reader` reads other groups than slots (a flag's variants) instead of `canary` and `stable`. `due`:
    the analysis tick it was due at, the window's end when the clock has not moved a tick past it (so every
    deployment woken by that tick reads the same window, however late its task ran)."""
    now = clock.now()
    at = float(math.floor(due if due is not None and 0 <= now - due < ANALYSIS_TICK_SECONDS else now))
    end = datetime.fromtimestamp(at, UTC)
    start = datetime.fromtimestamp(at - config.window_seconds, UTC)
    reading: Awaitable[dict[str, GroupMetrics]]
    if reader is None:
        assert canary is not None
        scopes = {"canary": canary} if stable is None else {"canary": canary, "stable": stable}
        reading = metrics.slot_metrics(account, scopes, start, end, config.latency_statistic)
    else:
        reading = reader(start, end)
    read, alarms = await asyncio.gather(
        reading,
        alarms_in_alarm(metrics, account, config.alarms),
        return_exceptions=True,
    )
    for result in (read, alarms):
        if isinstance(result, PlatformError):
            return error_measurement(config, result, at, label)
        if isinstance(result, BaseException):
            raise result
    assert not isinstance(read, BaseException) and not isinstance(alarms, BaseException)
    return judge(config, read["canary"], read.get("stable"), alarms, at, label)


async def measure_sequential(
    metrics: Metrics,
    config: AnalysisConfig,
    *,
    account: str | None,
    canary: MetricScope,
    stable: MetricScope,
    clock: Clock,
    label: str,
    since: float,
) -> Measurement:
    """One look of the sequential judge: ONE metrics request for both slots' whole minutes from the
    minute the bake began to the last whole minute (and the alarms, concurrently)."""
    at = float(math.floor(clock.now()))
    start = datetime.fromtimestamp(since - since % 60, UTC)
    end = datetime.fromtimestamp(at - at % 60, UTC)
    scopes = {"canary": canary, "stable": stable}
    read, alarms = await asyncio.gather(
        metrics.slot_minutes(account, scopes, start, end, config.latency_statistic),
        alarms_in_alarm(metrics, account, config.alarms),
        return_exceptions=True,
    )
    for result in (read, alarms):
        if isinstance(result, PlatformError):
            return error_measurement(config, result, at, label)
        if isinstance(result, BaseException):
            raise result
    assert not isinstance(read, BaseException) and not isinstance(alarms, BaseException)
    return sequential_measurement(config, minutes_of(read["canary"], read["stable"]), alarms, at, label)


def minutes_of(canary: dict[datetime, GroupMetrics], stable: dict[datetime, GroupMetrics]) -> list[Minute]:
    """The minutes either group has data for, in order; no 5XX datapoint with requests is zero errors."""
    none = GroupMetrics()
    out = []
    for ts in sorted({*canary, *stable}):
        c, s = canary.get(ts, none), stable.get(ts, none)
        out.append(
            Minute(
                canary_requests=c.requests or 0.0,
                canary_errors=c.errors or 0.0,
                stable_requests=s.requests or 0.0,
                stable_errors=s.errors or 0.0,
                canary_latency_ms=c.latency_ms,
                stable_latency_ms=s.latency_ms,
            )
        )
    return out


@_Company.counted
async def run_analysis(
    metrics: Metrics,
    config: AnalysisConfig,
    *,
    duration_seconds: float,
    clock: Clock,
    account: str | None,
    canary: MetricScope | None,
    stable: MetricScope | None,
    label: str,
    on_measurement: Callable[[Measurement], Awaitable[None]],
    checkpoint: Callable[[], Awaitable[None]] | None = None,
    analysis: Analysis | None = None,
    reader: Reader | None = None,
    tick_seconds: float = ANALYSIS_TICK_SECONDS,
    since: float | None = None,
    final: bool = True,
) -> Analysis:
    """The bake: a measurement every interval_seconds for duration_seconds (the first after one interval,
    so it sees the new weights; at least one, and never fewer than one per interval however slow a read
    was), each handed to on_measurement, stopping early once the run
    has failed or is inconclusive; one whose last measurement was an API error is measured again past its
    time. Time spent paused in checkpoint() does not count toward the bake.
    Pass `analysis` (rebuilt from stored measurements) to go on with a run after a restart. Each wake-up
    is put off to the next multiple of `tick_seconds` of the clock (at most one tick later; 0: not) while
    another bake runs in this process (alone, it has no read to share).

    With `judge = "sequential"` and a stable group (bot.domain.judging), each look reads the whole minutes
    since `since` (default: the bake's start; a canary passes its first step's, so evidence carries on
    across its weights), fails as soon as the evidence is there, and ends the bake early once the canary
    is shown no worse and min_bake_seconds have passed; it lasts until it has read one whole minute that
    began after it did (at most a minute past its time), and, undecided at its time, bakes on up to
    max_bake_seconds before it ends inconclusive. `final`: the last bake before 100%."""
    sequential = config.judge == "sequential" and stable is not None and reader is None
    run = analysis or (SequentialAnalysis(config, final=final) if sequential else Analysis(config))
    began = clock.now()
    deadline = began + max(0.0, duration_seconds)
    # the measurements a bake takes: one per interval (at least one), however late each one ran
    # (a slow read must not leave a step with fewer measurements than planned)
    planned = planned_measurements(duration_seconds, config.interval_seconds)
    taken = 0
    if sequential:  # CloudWatch's minutes: read at least one whole minute at this bake's weights
        deadline = max(deadline, began - began % 60 + (120 if began % 60 else 60))

    async def gate() -> None:
        nonlocal deadline
        if checkpoint is not None:
            before = clock.now()
            await checkpoint()
            deadline += clock.now() - before

    while True:
        await gate()
        now = clock.now()
        left = deadline - now  # past it (measuring again after an error): a whole interval
        due = on_tick(
            now + (config.interval_seconds if left <= 0 else min(config.interval_seconds, left)),
            _Company.grid(tick_seconds),
        )
        await clock.sleep(due - now)
        await gate()
        if sequential:
            assert canary is not None and stable is not None
            m = await measure_sequential(
                metrics,
                config,
                account=account,
                canary=canary,
                stable=stable,
                clock=clock,
                label=label,
                since=began if since is None else since,
            )
        else:
            m = await measure(
                metrics,
                config,
                account=account,
                canary=canary,
                stable=stable,
                clock=clock,
                label=label,
                reader=reader,
                due=due,
            )
        run.add(m)
        await on_measurement(m)
        taken += 1
        baked = duration_seconds - (deadline - clock.now())  # time paused is not baking
        extend = isinstance(run, SequentialAnalysis) and run.measure_on(baked)  # max_bake_seconds
        # A bake ends on data, not on an API error: past its time, a measurement that could not be
        # taken is taken again (the consecutive error limit still ends a run AWS will not answer).
        over = clock.now() >= deadline and (sequential or taken >= planned)
        if run.done or (over and m.verdict != "error" and not extend):
            break
        # Early promotion: shown no worse, and the minimum bake is over.
        if isinstance(run, SequentialAnalysis) and run.ready(baked):
            break
    run.finish()
    return run


def on_tick(at: float, tick: float) -> float:
    """`at`, or the first multiple of `tick` after it (an instant already on the grid stays)."""
    if tick <= 0:
        return at
    return math.ceil(round(at / tick, 6)) * tick
