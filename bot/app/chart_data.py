"""What an analysis chart shows, read from a deployment's audit: each measurement the bake recorded (error
rate and latency of the new and the stable version, its verdict, the traffic weight it was taken at, the
thresholds it was judged against) and whether and when it was rolled back. Pure: audit events in, points
out; handlers/ui/chart_render.py draws exactly these points."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.app.report import parse_instant
from bot.domain.model import Deployment, Event


@dataclass(frozen=True)
class Point:
    at: float  # epoch seconds: the end of the measurement's window
    label: str
    verdict: str
    weight: int | None  # % of the traffic on the new version then (None: not recorded)
    new_error_rate: float | None
    stable_error_rate: float | None
    new_latency_ms: float | None
    stable_latency_ms: float | None


@dataclass(frozen=True)
class ChartData:
    deployment_id: int
    title: str
    points: tuple[Point, ...]
    max_error_rate: float | None = None
    max_latency_ms: float | None = None
    rolled_back_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sample(details: dict[str, Any], group: str, key: str) -> float | None:
    sample = details.get(group)
    value = sample.get(key) if isinstance(sample, dict) else None
    return float(value) if isinstance(value, int | float) else None


def point(details: dict[str, Any]) -> Point:
    """One audited measurement (bot.domain.analysis.Measurement.to_dict, with the weight) as a point."""
    weight = details.get("weight")
    return Point(
        at=float(details["at"]),
        label=str(details.get("label", "")),
        verdict=str(details.get("verdict", "")),
        weight=int(weight) if isinstance(weight, int | float) else None,
        new_error_rate=_sample(details, "canary", "error_rate"),
        stable_error_rate=_sample(details, "stable", "error_rate"),
        new_latency_ms=_sample(details, "canary", "latency_ms"),
        stable_latency_ms=_sample(details, "stable", "latency_ms"),
    )


def charted(details: dict[str, Any]) -> bool:
    """A deployment's own bake measurement (not a repair's judgement of the old version, not a flag's)."""
    return "at" in details and not details.get("repair") and "flag" not in details


def chart_data(d: Deployment, events: Iterable[Event]) -> ChartData:
    points: list[Point] = []
    thresholds: dict[str, float] = {}
    rolled_back: float | None = None
    for e in events:
        if e.action == "measurement" and charted(e.details):
            points.append(point(e.details))
            thresholds.update(e.details.get("thresholds") or {})
        elif e.to_state == "rolling_back" and e.from_state != "rolling_back" and rolled_back is None:
            rolled_back = parse_instant(e.at).timestamp()
    return ChartData(
        deployment_id=d.id,
        title=f"#{d.id} {d.service} {d.version or ''} in {d.env} ({d.strategy})".replace("  ", " "),
        points=tuple(points),
        max_error_rate=thresholds.get("max_error_rate"),
        max_latency_ms=thresholds.get("max_latency_ms"),
        rolled_back_at=rolled_back,
    )
