"""CloudWatch, implementing bot.app.ports.Metrics: ALB target-group metrics for a set of slots in ONE
GetMetricData call, named alarms in ONE DescribeAlarms call, hourly request counts in ONE GetMetricData
call (NextToken pages followed). No judgement here (bot.analysis, bot.app.measure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.adapters.aws import Caller
from bot.app.ports import Alarm, MetricScope, PlatformError
from bot.domain.analysis import GroupMetrics

NAMESPACE = "AWS/ApplicationELB"
# GetMetricData takes up to 500 queries per call; three per group.
MAX_GROUPS = 500 // 3

_QUERIES = (  # (suffix, metric, fixed statistic or None for the latency statistic)
    ("requests", "RequestCount", "Sum"),
    ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
    ("latency", "TargetResponseTime", None),
)


def dimensions(scope: MetricScope) -> list[dict[str, str]]:
    """A scope as CloudWatch dimensions, in the scope's order (moto matches dimensions by order)."""
    return [{"Name": k, "Value": v} for k, v in scope.labels]


def scope_of(dims: Sequence[Mapping[str, str]]) -> MetricScope:
    """CloudWatch dimensions ([{"Name", "Value"}]) as a scope, in their order."""
    return MetricScope(tuple((d["Name"], d["Value"]) for d in dims))


def _query(qid: str, metric: str, scope: MetricScope, period: int, stat: str) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions(scope)},
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


class CloudWatchMetrics:
    """`aws` is bot.adapters.aws.Aws (or anything with its call())."""

    def __init__(self, aws: Caller):
        self.aws = aws

    async def slot_metrics(
        self,
        account: str | None,
        scopes: Mapping[str, MetricScope],
        start: datetime,
        end: datetime,
        latency_statistic: str = "Average",
    ) -> dict[str, GroupMetrics]:
        """RequestCount, HTTPCode_Target_5XX_Count (Sums) and TargetResponseTime (`latency_statistic`).

        The period is the window, so each query has one value. Should CloudWatch still split the window
        into several buckets (AWS rounds StartTime down to the minute), counts are summed, an Average
        latency is weighted by each bucket's requests, Minimum takes the least and Maximum or a percentile
        the greatest."""
        if not scopes:
            return {}
        if len(scopes) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} target groups per call, got {len(scopes)}")
        period = int((end - start).total_seconds())
        if period < 1:
            raise ValueError(f"the window must last at least one second, got {start} .. {end}")
        names = list(scopes)
        queries = [
            _query(f"g{i}_{suffix}", metric, scopes[name], period, stat or latency_statistic)
            for i, name in enumerate(names)
            for suffix, metric, stat in _QUERIES
        ]
        series = await self.series(account, queries, start, end)
        metrics = {}
        for i, name in enumerate(names):
            requests, errors, latency = (series[f"g{i}_{s}"] for s, _, _ in _QUERIES)
            metrics[name] = GroupMetrics(
                requests=sum(requests.values()) if requests else None,
                errors=sum(errors.values()) if errors else None,
                latency_ms=None
                if not latency
                else _combine_latency(latency, requests, latency_statistic) * 1000,
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
        """One GetMetricData request (its pages followed): query id -> {timestamp: value}. A query
        CloudWatch answers Forbidden or InternalError raises PlatformError; missing values are absent."""
        series: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
        params: dict[str, Any] = {
            "MetricDataQueries": queries,
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        while True:
            out = await self.aws.call("cloudwatch", "get_metric_data", account, **params)
            for result in out.get("MetricDataResults", []):
                if result.get("StatusCode") in ("Forbidden", "InternalError"):
                    messages = "; ".join(m.get("Value", "") for m in out.get("Messages", [])) or "no message"
                    raise PlatformError(
                        "CLOUDWATCH GetMetricData", f"{result.get('Id')}: {result['StatusCode']}: {messages}"
                    )
                values = series.setdefault(result["Id"], {})
                for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    if value is not None:
                        values[ts] = float(value)
            if not out.get("NextToken"):
                return series
            params["NextToken"] = out["NextToken"]

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
