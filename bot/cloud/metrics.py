"""The CloudWatch part of the AWS seam: ALB target-group metrics for a set of groups in one GetMetricData
call, and the named alarms that are in ALARM. Functions taking a Cloud; no judgement here (bot.analysis)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.cloud import Cloud, CloudError

NAMESPACE = "AWS/ApplicationELB"
# GetMetricData takes up to 500 queries per call; three per group.
MAX_GROUPS = 500 // 3


@dataclass(frozen=True)
class GroupMetrics:
    """One target group over one window. None means CloudWatch returned no datapoint: no data, not zero.

    An ALB publishes HTTPCode_Target_5XX_Count only when there were 5XX responses, so `errors` is None
    with `requests` set on a healthy group; the judgement reads that as zero errors. A percentile
    statistic (p99) gives `latency_ms` None under moto, which never computes ExtendedStatistics."""

    requests: float | None = None
    errors: float | None = None
    latency_ms: float | None = None


def alb_dimensions(target_group_arn: str, load_balancer_arn: str) -> list[dict[str, str]]:
    """The ALB metric dimensions for a target group, as AWS names them, in the one canonical order
    (TargetGroup, then LoadBalancer): moto matches dimensions by their order, AWS by the set."""
    tg = target_group_arn.split(":", 5)[-1]
    lb = load_balancer_arn.split(":", 5)[-1].removeprefix("loadbalancer/")
    if not tg.startswith("targetgroup/") or tg.count("/") != 2:
        raise ValueError(f"not a target group ARN: {target_group_arn!r}")
    if not lb.startswith("app/") or lb.count("/") != 2:
        raise ValueError(f"not an application load balancer ARN: {load_balancer_arn!r}")
    return [{"Name": "TargetGroup", "Value": tg}, {"Name": "LoadBalancer", "Value": lb}]


_QUERIES = (  # (suffix, metric, fixed statistic or None for the latency statistic)
    ("requests", "RequestCount", "Sum"),
    ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
    ("latency", "TargetResponseTime", None),
)


async def target_group_metrics(
    cloud: Cloud,
    role_arn: str | None,
    groups: dict[str, list[dict[str, str]]],
    start: datetime,
    end: datetime,
    latency_stat: str = "Average",
) -> dict[str, GroupMetrics]:
    """RequestCount, HTTPCode_Target_5XX_Count (Sums) and TargetResponseTime (`latency_stat`) for every
    group, keyed like `groups` (name -> dimensions), in ONE GetMetricData call (plus NextToken pages).

    The period is the window, so each query has one value. Should CloudWatch still split the window into
    several buckets (AWS rounds StartTime down to the minute), counts are summed, an Average latency is
    weighted by each bucket's requests, Minimum takes the least and Maximum or a percentile the greatest."""
    if not groups:
        return {}
    if len(groups) > MAX_GROUPS:
        raise ValueError(f"at most {MAX_GROUPS} target groups per call, got {len(groups)}")
    period = int((end - start).total_seconds())
    if period < 1:
        raise ValueError(f"the window must last at least one second, got {start} .. {end}")
    names = list(groups)
    queries = []
    for i, name in enumerate(names):
        for suffix, metric, stat in _QUERIES:
            queries.append(
                {
                    "Id": f"g{i}_{suffix}",
                    "MetricStat": {
                        "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": groups[name]},
                        "Period": period,
                        "Stat": stat or latency_stat,
                    },
                    "ReturnData": True,
                }
            )
    series = await metric_series(cloud, role_arn, queries, start, end)

    metrics = {}
    for i, name in enumerate(names):
        requests, errors, latency = (series[f"g{i}_{s}"] for s, _, _ in _QUERIES)
        metrics[name] = GroupMetrics(
            requests=sum(requests.values()) if requests else None,
            errors=sum(errors.values()) if errors else None,
            latency_ms=None if not latency else _combine_latency(latency, requests, latency_stat) * 1000,
        )
    return metrics


async def metric_series(
    cloud: Cloud, role_arn: str | None, queries: list[dict[str, Any]], start: datetime, end: datetime
) -> dict[str, dict[datetime, float]]:
    """One GetMetricData request (its pages followed): query id -> {timestamp: value}. A query CloudWatch
    answers Forbidden or InternalError raises CloudError; missing values are simply absent."""
    series: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
    params: dict[str, Any] = {
        "MetricDataQueries": queries,
        "StartTime": start,
        "EndTime": end,
        "ScanBy": "TimestampAscending",
    }
    while True:
        out = await cloud.call("cloudwatch", "get_metric_data", role_arn, **params)
        for result in out.get("MetricDataResults", []):
            if result.get("StatusCode") in ("Forbidden", "InternalError"):
                messages = "; ".join(m.get("Value", "") for m in out.get("Messages", [])) or "no message"
                raise CloudError(
                    "CLOUDWATCH GetMetricData", f"{result.get('Id')}: {result['StatusCode']}: {messages}"
                )
            values = series.setdefault(result["Id"], {})
            for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                if value is not None:
                    values[ts] = float(value)
        if not out.get("NextToken"):
            return series
        params["NextToken"] = out["NextToken"]


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


async def alarms_in_alarm(cloud: Cloud, role_arn: str | None, names: list[str]) -> list[dict[str, str]]:
    """The named CloudWatch alarms (metric or composite) in ALARM, as [{"name", "reason"}].

    One DescribeAlarms call by name (pages followed), filtered here rather than with StateValue: moto
    ignores StateValue when AlarmNames is given, and seeing every named alarm lets a name that matches no
    alarm raise CloudError; a typo must not silently switch a safety check off. No names: no call."""
    if not names:
        return []
    wanted = list(dict.fromkeys(names))
    found: dict[str, dict[str, Any]] = {}
    for i in range(0, len(wanted), 100):  # AlarmNames takes at most 100 names
        params: dict[str, Any] = {
            "AlarmNames": wanted[i : i + 100],
            "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
        }
        while True:
            out = await cloud.call("cloudwatch", "describe_alarms", role_arn, **params)
            for alarm in out.get("MetricAlarms", []) + out.get("CompositeAlarms", []):
                found[alarm["AlarmName"]] = alarm
            if not out.get("NextToken"):
                break
            params["NextToken"] = out["NextToken"]
    missing = [n for n in wanted if n not in found]
    if missing:
        raise CloudError(
            "CLOUDWATCH DescribeAlarms",
            "no such alarm: " + ", ".join(f'"{n}"' for n in missing) + " (check the analysis alarms setting)",
        )
    return [
        {"name": n, "reason": found[n].get("StateReason", "")}
        for n in wanted
        if found[n].get("StateValue") == "ALARM"
    ]
