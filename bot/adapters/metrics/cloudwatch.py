"""CloudWatch, implementing bot.app.ports.Metrics: ALB target-group metrics for a set of slots in ONE
GetMetricData call (shared with every other read of the same window at the same tick: metrics/batch.py), a flag's per-variant metrics (as applications publish them) in ONE, named alarms in
ONE DescribeAlarms call, hourly request counts in ONE GetMetricData call (NextToken pages followed). No
judgement here (bot.analysis, bot.app.measure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.adapters.aws import Caller
from bot.adapters.metrics.batch import MetricDataBatcher
from bot.app.ports import Alarm, MetricScope
from bot.config.flags import FlagMetrics
from bot.domain.analysis import GroupMetrics

NAMESPACE = "AWS/ApplicationELB"
# GetMetricData takes up to 500 queries per call; three per group.
MAX_GROUPS = 500 // 3


@dataclass(frozen=True)
class _Series:
    """Where a group's three series live: the namespace, the metric names and the latency's unit."""

    namespace: str
    requests: str
    errors: str
    latency: str
    latency_ms_per_unit: float  # ALB's TargetResponseTime is in seconds; flags publish milliseconds

    def queries(self, latency_statistic: str) -> tuple[tuple[str, str, str], ...]:
        """(id suffix, metric, statistic) of the three queries of a group."""
        return (
            ("requests", self.requests, "Sum"),
            ("errors", self.errors, "Sum"),
            ("latency", self.latency, latency_statistic),
        )


ALB = _Series(NAMESPACE, "RequestCount", "HTTPCode_Target_5XX_Count", "TargetResponseTime", 1000.0)


def dimensions(scope: MetricScope) -> list[dict[str, str]]:
    """A scope as CloudWatch dimensions, in the scope's order (moto matches dimensions by order)."""
    return [{"Name": k, "Value": v} for k, v in scope.labels]


def scope_of(dims: Sequence[Mapping[str, str]]) -> MetricScope:
    """CloudWatch dimensions ([{"Name", "Value"}]) as a scope, in their order."""
    return MetricScope(tuple((d["Name"], d["Value"]) for d in dims))


def flag_scope(metrics: FlagMetrics, flag: str, variant: str, env: str) -> MetricScope:
    """One variant's series as applications publish them, in the canonical order: flag, variant,
    environment (moto matches dimensions by order; publishers use this order too)."""
    return MetricScope(
        (
            (metrics.flag_dimension, flag),
            (metrics.variant_dimension, variant),
            (metrics.environment_dimension, env),
        )
    )


def _query(
    qid: str, metric: str, scope: MetricScope, period: int, stat: str, namespace: str = NAMESPACE
) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dimensions(scope)},
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


class CloudWatchMetrics:
    """`aws` is bot.adapters.aws.Aws (or anything with its call())."""

    def __init__(self, aws: Caller, batcher: MetricDataBatcher | None = None):
        self.aws = aws
        self.batcher = batcher or MetricDataBatcher(aws)

    async def slot_metrics(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        """RequestCount, HTTPCode_Target_5XX_Count (Sums) and TargetResponseTime (`latency_statistic`)."""
        return await self._groups(account, ALB, scopes, start, end, latency_statistic)

    async def slot_minutes(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, dict[datetime, GroupMetrics]]:
        """The three ALB series of every scope at a 60 s period, in ONE GetMetricData request (through
        series(), like every other read here): scope -> minute -> numbers."""
        if not scopes or end <= start:
            return {name: {} for name in scopes}
        if len(scopes) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups per call, got {len(scopes)}")
        names = list(scopes)
        kinds = ALB.queries(latency_statistic)
        queries = [
            _query(f"m{i}_{suffix}", metric, scopes[name], 60, stat)
            for i, name in enumerate(names)
            for suffix, metric, stat in kinds
        ]
        series = await self.series(account, queries, start, end)
        out: dict[str, dict[datetime, GroupMetrics]] = {}
        for i, name in enumerate(names):
            requests, errors, latency = (series[f"m{i}_{s}"] for s, _, _ in kinds)
            out[name] = {
                ts: GroupMetrics(
                    requests=requests.get(ts),
                    errors=errors.get(ts),
                    latency_ms=latency[ts] * ALB.latency_ms_per_unit if ts in latency else None,
                )
                for ts in sorted({*requests, *errors, *latency})
            }
        return out

    async def flag_metrics(
        self,
        account: str | None,
        metrics: FlagMetrics,
        flag: str,
        env: str,
        variants: Sequence[str],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        """Requests and errors (Sums) and latency in ms (`latency_statistic`) of each variant, named by
        `metrics` (namespace, dimensions, metric names)."""
        where = _Series(metrics.namespace, metrics.requests, metrics.errors, metrics.latency, 1.0)
        scopes = {v: flag_scope(metrics, flag, v, env) for v in dict.fromkeys(variants)}
        return await self._groups(account, where, scopes, start, end, latency_statistic)

    async def _groups(
        self,
        account: str | None,
        where: _Series,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str,
    ) -> dict[str, GroupMetrics]:
        """Requests, errors and latency of every scope in ONE GetMetricData request, keyed like `scopes`.

        The period is the window, so each query has one value. Should CloudWatch still split the window
        into several buckets (AWS rounds StartTime down to the minute), counts are summed, an Average
        latency is weighted by each bucket's requests, Minimum takes the least and Maximum or a percentile
        the greatest."""
        if not scopes:
            return {}
        if len(scopes) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups per call, got {len(scopes)}")
        period = int((end - start).total_seconds())
        if period < 1:
            raise ValueError(f"the window must last at least one second, got {start} .. {end}")
        names = list(scopes)
        kinds = where.queries(latency_statistic)
        queries = [
            _query(f"g{i}_{suffix}", metric, scopes[name], period, stat, where.namespace)
            for i, name in enumerate(names)
            for suffix, metric, stat in kinds
        ]
        series = await self.series(account, queries, start, end)
        metrics = {}
        for i, name in enumerate(names):
            requests, errors, latency = (series[f"g{i}_{s}"] for s, _, _ in kinds)
            metrics[name] = GroupMetrics(
                requests=sum(requests.values()) if requests else None,
                errors=sum(errors.values()) if errors else None,
                latency_ms=None
                if not latency
                else _combine_latency(latency, requests, latency_statistic) * where.latency_ms_per_unit,
            )
        return metrics

    async def requests_per_hour(
        self, account: str | None, scopes: Sequence[MetricScope], start: datetime, end: datetime
    ) -> dict[datetime, float]:
        if not scopes:
            return {}
        queries = [_query(f"r{i}", "RequestCount", s, 3600, "Sum") for i, s in enumerate(scopes)]
        per_hour: dict[datetime, float] = {}
        for values in (await self.series(account, queries, start, end)).values():
            for ts, value in values.items():
                bucket = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                per_hour[bucket] = per_hour.get(bucket, 0.0) + value
        return per_hour

    async def series(
        self, account: str | None, queries: list[dict[str, Any]], start: datetime, end: datetime
    ) -> dict[str, dict[datetime, float]]:
        """query id -> {timestamp: value} for `queries`, read in one GetMetricData request together with
        the other reads of the same window arriving at the same time (bot.adapters.metrics.batch; pages
        followed). A query CloudWatch answers Forbidden or InternalError raises PlatformError; missing
        values are absent."""
        return await self.batcher.get(account, queries, start, end)

    async def alarms(self, account: str | None, names: Sequence[str]) -> list[Alarm]:
        """DescribeAlarms by name (metric and composite; pages followed; 100 names a request), not by
        StateValue: moto ignores StateValue when AlarmNames is given, and seeing every named alarm tells a
        name that matches no alarm from one that is OK. No names: no call."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, Alarm] = {}
        for i in range(0, len(wanted), 100):
            params: dict[str, Any] = {
                "AlarmNames": wanted[i : i + 100],
                "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
            }
            while True:
                out = await self.aws.call("cloudwatch", "describe_alarms", account, **params)
                for a in out.get("MetricAlarms", []) + out.get("CompositeAlarms", []):
                    found[a["AlarmName"]] = Alarm(
                        a["AlarmName"], a.get("StateValue", ""), a.get("StateReason", "")
                    )
                if not out.get("NextToken"):
                    break
                params["NextToken"] = out["NextToken"]
        return [found[n] for n in wanted if n in found]


def _combine_latency(latency: dict[datetime, float], requests: dict[datetime, float], stat: str) -> float:
    if len(latency) == 1:
        return next(iter(latency.values()))
    if stat == "Minimum":
        return min(latency.values())
    if stat != "Average":  # Maximum, or a percentile: the worst bucket, so a bad minute is not averaged away
        return max(latency.values())
    weights = {ts: requests.get(ts, 0.0) for ts in latency}
    total = sum(weights.values())
    if total <= 0:
        return sum(latency.values()) / len(latency)
    return sum(latency[ts] * w for ts, w in weights.items()) / total
