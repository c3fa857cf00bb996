"""Reading request counts per hour to suggest low-traffic deploy windows."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from bot.app.ports import Metrics, MetricScope
from bot.domain.windows import Window, _aware, describe_windows, zone

# --------------------------------------------------------------------------------------------- traffic


async def lowest_traffic_hours(
    metrics: Metrics,
    account: str | None,
    scopes: list[MetricScope],
    *,
    now: datetime,
    tz: str,
    days: int = 14,
    top: int = 3,
) -> list[tuple[int, float]]:
    """The `top` quietest hours of the day in `tz` as (hour, average requests in that hour), quietest
    first, from requests per hour over the last `days` whole days summed across `scopes` (e.g. both
    slots): ONE metrics request (on CloudWatch one GetMetricData call, NextToken pages followed).

    An ALB publishes no RequestCount datapoint for an hour without requests, so from the first hour with
    data on, a missing hour counts as zero; each hour of the day is averaged over the times it occurred
    (a DST day has one hour twice and one not at all). No data at all: []."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not scopes:
        return []
    z = zone(tz)
    end = _aware(now, "now").replace(minute=0, second=0, microsecond=0)  # whole hours, aligned to the hour
    start = end - timedelta(days=days)
    per_hour = await metrics.requests_per_hour(account, scopes, start, end)
    if not per_hour:
        return []
    totals, seen = [0.0] * 24, [0] * 24
    bucket = max(min(per_hour), start)
    while bucket < end:
        hour = bucket.astimezone(z).hour
        totals[hour] += per_hour.get(bucket, 0.0)
        seen[hour] += 1
        bucket += timedelta(hours=1)
    averages = [(h, totals[h] / seen[h]) for h in range(24) if seen[h]]
    return sorted(averages, key=lambda hv: (hv[1], hv[0]))[:top]


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def suggest_text(windows: Collection[Window], hours: list[tuple[int, float]], tz: str, days: int = 14) -> str:
    """For Slack: the configured windows and the quietest hours, e.g. "Configured windows: Mon-Thu
    02:00-05:00 Europe/Berlin\nLowest traffic (last 14 days, Europe/Berlin): 03:00 (12 req/h), ..."."""
    lines = [f"Configured windows: {describe_windows(windows)}"]
    if hours:
        quiet = ", ".join(f"{h:02d}:00 ({_rate(v)} req/h)" for h, v in hours)
        lines.append(f"Lowest traffic (last {days} days, {zone(tz).key}): {quiet}")
    else:
        lines.append(f"Lowest traffic (last {days} days): no traffic data (CloudWatch RequestCount is empty)")
    return "\n".join(lines)
